"""What a task is to the training loop and to ``frlr compare``: its labels and its metrics.

The paper tests the losses in three settings: single-label classification (Table 1, top-1
accuracy), person re-identification (Table 2, Rank-1 and mAP) and multi-label attributes
(Table 3, mAP and balanced accuracy). The training loop is the same for all three; what differs
is how labels become loss targets, how a batch's training accuracy is counted, and which metrics
are computed on the evaluation splits. A :class:`Task` holds exactly those differences, so a new
setting plugs in by writing one class and adding it to :data:`TASKS`::

    class ReidTask:
        name = "reid"
        primary_metric = "rank1"
        metric_names = ("rank1", "mAP")
        def eval_splits(self, info): return ("query", "gallery")
        def targets(self, arrays): ...
        def batch_correct(self, logits, targets): ...
        def metrics(self, model, data): ...   # frlr.eval.reid_metrics on features

Only classification is implemented today; ``get_task("reid")`` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from frlr.data import DatasetInfo, ImageArrays
from frlr.eval import evaluate_classifier

KNOWN_TASKS = ("classification", "reid", "multilabel")
"""Every setting of the paper; :data:`TASKS` holds the implemented ones."""


class UnsupportedTaskError(NotImplementedError):
    """A task of the paper that the toolkit does not train yet."""


@dataclass
class EvalData:
    """The evaluation split(s), on the training device, and how to feed them to the model.

    splits: split name -> (uint8 (N, C, H, W) images, labels), as the task's
        :meth:`Task.eval_splits` names them.
    transform: uint8 batch -> model input (normalisation, memory format).
    batch_size: images per forward pass.
    autocast: a factory of the autocast context the model runs under.
    cams: split name -> camera ids, for re-identification.
    """

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    transform: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 512
    autocast: Callable[[], AbstractContextManager] = nullcontext
    cams: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """A setting of the paper: how labels train the model and how the model is scored.

    ``metrics`` returns fractions in [0, 1] keyed by ``metric_names``; ``primary_metric`` is
    the one ``frlr compare`` tabulates and tests for significance (higher is better).
    Under DDP every rank calls ``metrics`` and every rank gets the same numbers.
    """

    name: str
    primary_metric: str
    metric_names: tuple[str, ...]

    def eval_splits(self, info: DatasetInfo) -> tuple[str, ...]:
        """The splits of the dataset the model is evaluated on."""
        ...

    def targets(self, arrays: ImageArrays) -> torch.Tensor:
        """The loss targets of a split (class indices, multi-hot rows, identities)."""
        ...

    def batch_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Correct predictions in a training batch (a 0-d tensor, no device sync)."""
        ...

    def metrics(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        """Score ``model`` (in eval mode) on the evaluation splits."""
        ...


class ClassificationTask:
    """Single-label classification (the paper's Table 1): top-1 and top-5 accuracy.

    Under DDP each rank scores its own strided share of the test split and the correct
    counts are summed, so evaluation costs 1/world of a single process and every rank gets
    the exact single-process numbers.
    """

    name = "classification"
    primary_metric = "top1"
    metric_names = ("top1", "top5")

    def eval_splits(self, info: DatasetInfo) -> tuple[str, ...]:
        return info.eval_splits[:1]

    def targets(self, arrays: ImageArrays) -> torch.Tensor:
        labels = np.asarray(arrays.labels)
        if labels.ndim != 1:
            raise ValueError(
                f"classification needs one class index per image, got labels of shape "
                f"{labels.shape} (a multi-label dataset? use --task multilabel)"
            )
        return torch.from_numpy(labels.astype(np.int64))

    def batch_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(dim=1) == targets).sum()

    def metrics(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        (images, labels), *_ = data.splits.values()
        rank, world = _rank_and_world()
        share = slice(rank, None, world)
        num_classes = _num_outputs(model)
        ks = tuple(k for k in (1, 5) if k <= num_classes)
        counts = torch.zeros(len(ks) + 1, dtype=torch.float64, device=images.device)
        if len(images[share]):
            with data.autocast():
                scores = evaluate_classifier(
                    model,
                    images[share],
                    labels[share],
                    batch_size=data.batch_size,
                    normalize_fn=data.transform,
                    k=ks,
                )
            n = scores["num_samples"]
            counts[0] = n
            for i, k in enumerate(ks):
                counts[i + 1] = round(scores[f"top{k}"] * n)
        if world > 1:
            torch.distributed.all_reduce(counts)
        total = float(counts[0])
        return {f"top{k}": float(counts[i + 1]) / total for i, k in enumerate(ks)}


def _num_outputs(model: nn.Module) -> int:
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    return 5  # unknown head: ask for top-5 and let evaluate_classifier drop what exceeds K


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


TASKS: dict[str, type] = {"classification": ClassificationTask}
"""Implemented tasks, by name."""


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; the paper's re-id and multi-label settings are named
    but not implemented yet, and raise :class:`UnsupportedTaskError` saying so."""
    if name in TASKS:
        return TASKS[name]()
    if name in KNOWN_TASKS:
        raise UnsupportedTaskError(
            f"task {name!r} is not yet supported: only {', '.join(TASKS)} trains today "
            f"(its metrics exist in frlr.eval; the Task class that uses them is to come)"
        )
    raise ValueError(f"unknown task {name!r}; known: {', '.join(KNOWN_TASKS)}")
