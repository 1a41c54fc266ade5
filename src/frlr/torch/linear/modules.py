"""The module forms of the linear losses and their registry by the catalogue's loss names."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn

from frlr.catalogue import (
    HYPERPARAMETERS,
    LOSS_HYPERPARAMETERS,
    canonical_loss_name,
    check_hyperparameters,
)
from frlr.torch._conventions import Reduction, check_reduction
from frlr.torch.linear.functional import (
    linear_hs_lr_loss,
    linear_lr_loss,
    linear_sr_loss,
    linear_ss_lr_loss,
)
from frlr.torch.linear.inputs import check_smoothing
from frlr.torch.linear.sigmoid import SSLRLoss


def _paper_defaults(loss: str) -> dict[str, float]:
    """The catalogue's hyper-parameters of ``loss`` with the paper's defaults (beta, r / m)."""
    return {name: HYPERPARAMETERS[name].default for name in LOSS_HYPERPARAMETERS[loss]}  # type: ignore[misc]


class _LinearLoss(nn.Module):
    """Holds the options; ``forward(features, weight, target, bias=None, target_weights=None,
    *, label_smoothing=None)``, so one module serves any classifier (``loss(h, head.weight, y,
    head.bias)``); a per-call ``label_smoothing`` replaces the module's. Keyword-only options:
    the loss's hyper-parameters (``_hyper``, with the paper's defaults) and the shared ones of
    the functional form (label_smoothing, reduction, ignore_index, chunk_size, process_group,
    class_offset, num_classes)."""

    _fn: Callable[..., Tensor]
    _hyper: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        ignore_index: int = -100,
        chunk_size: int | None = None,
        process_group: object = None,
        class_offset: int = 0,
        num_classes: int | None = None,
        **hyper: float,
    ) -> None:
        super().__init__()
        unknown = sorted(set(hyper) - set(self._hyper))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected option(s) {unknown}; its "
                f"hyper-parameters are {sorted(self._hyper)}"
            )
        check_hyperparameters(**hyper)
        check_reduction(reduction)
        self.options = {
            **self._hyper,
            **hyper,
            "label_smoothing": check_smoothing(label_smoothing),
            "reduction": reduction,
            "ignore_index": ignore_index,
            "chunk_size": chunk_size,
            "process_group": process_group,
            "class_offset": class_offset,
            "num_classes": num_classes,
        }

    def forward(
        self,
        features: Tensor,
        weight: Tensor,
        target: Tensor,
        bias: Tensor | None = None,
        target_weights: Tensor | None = None,
        *,
        label_smoothing: float | None = None,
    ) -> Tensor:
        options = self.options
        if label_smoothing is not None:
            options = {**options, "label_smoothing": label_smoothing}
        return type(self)._fn(
            features, weight, target, bias=bias, target_weights=target_weights, **options
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "process_group")


class LinearLRLoss(_LinearLoss):
    """Module form of [`linear_lr_loss`][].

    Args:
        label_smoothing: as in [`linear_lr_loss`][] (a call may pass its own), keyword-only.
        reduction, ignore_index, chunk_size, process_group, class_offset, num_classes: as in
            [`linear_lr_loss`][], keyword-only.
        hyper: the loss's hyper-parameters by name (none), default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearLRLoss()
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_lr_loss)


class LinearSSLRLoss(_LinearLoss):
    """Module form of [`linear_ss_lr_loss`][] (r = 2, beta = 10 as in the paper).

    Args:
        compiled: as in [`linear_ss_lr_loss`][], keyword-only.
        options: keyword-only, as for the other linear modules: label_smoothing (a call may
            pass its own), reduction, ignore_index, chunk_size, process_group, class_offset,
            num_classes as in [`linear_lr_loss`][], and the hyper-parameters r and beta,
            default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearSSLRLoss(r=1.0)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_ss_lr_loss)
    _hyper: ClassVar[dict[str, float]] = _paper_defaults("ss-lr")

    def __init__(self, *, compiled: bool = False, **options) -> None:
        super().__init__(**options)
        self.options["compiled"] = SSLRLoss.check_compiled(compiled)


class LinearHSLRLoss(_LinearLoss):
    """Module form of [`linear_hs_lr_loss`][] (beta = 10, m = 25 as in the paper).

    Args:
        label_smoothing: as in [`linear_lr_loss`][] (a call may pass its own), keyword-only.
        reduction, ignore_index, chunk_size, process_group, class_offset, num_classes: as in
            [`linear_lr_loss`][], keyword-only.
        hyper: the loss's hyper-parameters by name (beta, m), default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearHSLRLoss(m=10.0)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_hs_lr_loss)
    _hyper: ClassVar[dict[str, float]] = _paper_defaults("hs-lr")


class LinearSRLoss(_LinearLoss):
    """Module form of [`linear_sr_loss`][] (softmax cross-entropy, the baseline).

    Args:
        label_smoothing: as in [`linear_lr_loss`][] (a call may pass its own), keyword-only.
        reduction, ignore_index, chunk_size, process_group, class_offset, num_classes: as in
            [`linear_lr_loss`][], keyword-only.
        hyper: the loss's hyper-parameters by name (none), default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearSRLoss()
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_sr_loss)


LINEAR_LOSSES: dict[str, type[_LinearLoss]] = {
    "sr": LinearSRLoss,
    "lr": LinearLRLoss,
    "hs-lr": LinearHSLRLoss,
    "ss-lr": LinearSSLRLoss,
}


def get_linear_loss(name: str, **options) -> nn.Module:
    """The logits-free loss module for ``name`` ("sr", "lr", "hs-lr", "ss-lr"; the same
    spellings as [`get_loss`][frlr.torch.get_loss]).

    Args:
        name: the loss, in any of the catalogue's spellings ("SS_LR", "ss-lr").
        options: keyword arguments of its module (hyper-parameters, reduction, chunk_size...).

    Examples:
        >>> import frlr.torch as frlr
        >>> frlr.get_linear_loss("SS_LR", r=1.0).options["r"]
        1.0
    """
    key = canonical_loss_name(name)
    if key not in LINEAR_LOSSES:
        raise ValueError(f"unknown linear loss name {name!r}; known: {', '.join(LINEAR_LOSSES)}")
    try:
        return LINEAR_LOSSES[key](**options)
    except TypeError as error:
        raise TypeError(f"linear loss {name!r}: {error}") from None
