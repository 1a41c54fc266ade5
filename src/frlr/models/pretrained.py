"""Loading pretrained weights from a local state-dict file (no downloads).

ResNet-50 and the DenseNets keep torchvision's parameter names, so a torchvision checkpoint
(``resnet50-0676ba61.pth``, ``densenet201-c1103571.pth``, ...) loads as it is. What cannot fit is
left at its initialisation and reported: the classifier when the class count differs, the stem
when the model uses the small-input stem or ``in_channels != 3``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

# torchvision's DenseNet checkpoints were saved when the layers were named "norm.1", "conv.2" ...
# torchvision renames them on load with this same pattern.
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass(frozen=True)
class PretrainedLoadReport:
    """What :func:`load_pretrained` did with each key.

    Every model key is in exactly one of loaded, missing, mismatched.

    loaded: keys copied from the file into the model.
    missing: model keys the file does not provide (left at their initialisation).
    unexpected: file keys the model does not have (ignored).
    mismatched: keys in both with different shapes (not loaded, left at their initialisation).
    classifier_dropped: the file's classifier did not fit ``num_classes`` and was not loaded.
    """

    path: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]
    classifier_dropped: bool

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        if self.classifier_dropped:
            lines.append("classifier not loaded (class count differs), kept at initialisation")
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if keys:
                lines.append(f"{label} ({len(keys)}): {', '.join(keys)}")
        return "\n".join(lines)


def _unwrap_checkpoint(obj: object, path: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, or one under "state_dict"/"model"; strip a DDP "module." prefix."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    state: dict[str, torch.Tensor] = OrderedDict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = OrderedDict((k[len("module.") :], v) for k, v in state.items())
    renamed: dict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        match = _LEGACY_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def _head_prefix(model: nn.Module) -> str | None:
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        return None
    return next((name for name, m in model.named_modules() if m is head), None)


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> PretrainedLoadReport:
    """Load the local state dict at ``path`` into ``model``, keeping whatever fits.

    Tensors whose shapes differ from the model's are skipped (the classifier when ``num_classes``
    differs from the checkpoint's, the stem for the small-input stem or one input channel); the
    rest loads with ``strict=False``. Returns a :class:`PretrainedLoadReport`, logs it, and warns
    when anything other than the classifier was missing, unexpected or mismatched, since that
    usually means the file belongs to another architecture.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    path_str = os.fspath(path)
    if not os.path.isfile(path_str):
        raise FileNotFoundError(f"path {path_str!r} is not a file")
    state = _unwrap_checkpoint(
        torch.load(path_str, map_location="cpu", weights_only=True), path_str
    )

    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    skipped = set(mismatched)
    fitting = OrderedDict((k, v) for k, v in state.items() if k not in skipped)
    result = model.load_state_dict(fitting, strict=False)

    head = _head_prefix(model)

    def in_head(key: str) -> bool:
        return head is not None and key.startswith(head + ".")

    report = PretrainedLoadReport(
        path=path_str,
        loaded=tuple(k for k in fitting if k in own),
        missing=tuple(k for k in result.missing_keys if k not in skipped),
        unexpected=tuple(result.unexpected_keys),
        mismatched=tuple(mismatched),
        classifier_dropped=any(in_head(k) for k in mismatched),
    )
    logger.info("%s", report)
    backbone_problems = [
        k for k in (*report.missing, *report.unexpected, *report.mismatched) if not in_head(k)
    ]
    if backbone_problems:
        warnings.warn(
            f"load_pretrained: {len(backbone_problems)} backbone tensors did not load from "
            f"{path_str} (first: {backbone_problems[:5]}); see the returned report",
            stacklevel=2,
        )
    return report
