"""What a task is to the training loop and to ``frlr compare``: its labels and its metrics.

The paper tests the losses in three settings: single-label classification (Table 1, top-1
accuracy), person re-identification (Table 2, Rank-1 and mAP) and multi-label attributes
(Table 3, mAP and balanced accuracy). The training loop is the same for all three; what differs
is how labels become loss targets, how a batch's training accuracy is counted, and which metrics
are computed on the evaluation splits. A :class:`Task` holds exactly those differences, so a new
setting plugs in by writing one class and adding it to :data:`TASKS`.

==============  =============================  ==================================  ==========
task            loss targets                   test metrics                        baseline
==============  =============================  ==================================  ==========
classification  class indices                  top1, top5                          SR
reid            training identities (indices)  rank1, rank5, rank10, mAP of the    SR
                                               L2-normalised features
multilabel      float multi-hot rows           mAP, balanced_acc_image,            LR
                                               balanced_acc_class (top-5)
==============  =============================  ==================================  ==========

Every task computes the same numbers on every DDP rank: the model's outputs are computed on
1/world of the evaluation images per rank and gathered (or, for classification, the counts are
summed), then scored identically everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from frlr.data import DatasetInfo, ImageArrays
from frlr.eval import evaluate_classifier, multilabel_metrics, reid_metrics

KNOWN_TASKS = ("classification", "reid", "multilabel")
"""Every setting of the paper; :data:`TASKS` maps each to its class."""


class UnsupportedTaskError(NotImplementedError):
    """A task the toolkit does not train (kept for callers that catch it; every task of the
    paper is implemented)."""


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
    the one ``frlr compare`` reports first, and ``tested_metrics`` (primary first) are tested
    for significance against ``baseline`` (higher is better). ``unsupported_losses`` maps a
    loss that cannot train this task to the reason; ``evaluation`` is one sentence naming the
    protocol, written into the results. Under DDP every rank calls ``metrics`` and every rank
    gets the same numbers.
    """

    name: str
    primary_metric: str
    metric_names: tuple[str, ...]
    tested_metrics: tuple[str, ...]
    baseline: str
    unsupported_losses: Mapping[str, str]
    evaluation: str
    hold_out: str
    """How ``--val-fraction`` carves validation from training (:mod:`frlr.data.validation`)."""

    def eval_splits(self, info: DatasetInfo) -> tuple[str, ...]:
        """The splits of the dataset the model is evaluated on."""
        ...

    def targets(self, arrays: ImageArrays) -> torch.Tensor:
        """The loss targets of a split (class indices, multi-hot rows, identities)."""
        ...

    def batch_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Correct predictions in a training batch (a 0-d tensor, no device sync)."""
        ...

    def prediction_correct(self, top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``batch_correct`` from each sample's top-scoring class ``top`` (N,) instead of the
        logits (a chunked classifier never forms them)."""
        ...

    def metrics(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        """Score ``model`` (in eval mode) on the evaluation splits."""
        ...


_NONE: Mapping[str, str] = MappingProxyType({})


def _class_indices(arrays: ImageArrays, task: str) -> torch.Tensor:
    labels = np.asarray(arrays.labels)
    if labels.ndim != 1:
        raise ValueError(
            f"{task} needs one class index per image, got labels of shape {labels.shape} "
            "(a multi-label dataset? use --task multilabel)"
        )
    return torch.from_numpy(labels.astype(np.int64))


class ClassificationTask:
    """Single-label classification (the paper's Table 1): top-1 and top-5 accuracy.

    Under DDP each rank scores its own strided share of the test split and the correct
    counts are summed, so evaluation costs 1/world of a single process and every rank gets
    the exact single-process numbers.
    """

    name = "classification"
    primary_metric = "top1"
    metric_names = ("top1", "top5")
    tested_metrics = ("top1",)
    baseline = "sr"
    unsupported_losses = _NONE
    hold_out = "class"
    evaluation = "top-k accuracy of the logits on the test split (ties to the lower class index)"

    def eval_splits(self, info: DatasetInfo) -> tuple[str, ...]:
        return info.eval_splits[:1]

    def targets(self, arrays: ImageArrays) -> torch.Tensor:
        return _class_indices(arrays, "classification")

    def batch_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.prediction_correct(logits.argmax(dim=1), targets)

    def prediction_correct(self, top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (top == targets).sum()

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


class ReidTask:
    """Person re-identification (the paper's Table 2): Rank-k and mAP of unseen identities.

    The identity classifier over the training identities is only a training device: the test
    identities are new, so the model is scored by retrieval. Query and gallery images are
    embedded by ``model.features(x)``, L2-normalised, and every query ranks the gallery by
    cosine distance (:func:`frlr.eval.reid_metrics`, single-query mode, Market-1501 camera
    filtering: gallery images of the query's identity and camera, and junk identity -1, are
    removed; distractors 0 count as wrong). AP is the Market-1501 ``compute_AP.m`` variant
    (``ap``), which the results name because the torchreid variant differs slightly.
    """

    name = "reid"
    primary_metric = "rank1"
    metric_names = ("rank1", "rank5", "rank10", "mAP")
    tested_metrics = ("rank1", "mAP")
    baseline = "sr"
    unsupported_losses = _NONE
    ap = "official"
    hold_out = "identity"
    evaluation = (
        "single-query re-id: query and gallery embedded by model.features, L2-normalised, "
        "ranked by cosine distance; gallery images of the query's identity and camera and "
        "junk (id -1) removed; CMC Rank-k and mAP with the official Market-1501 AP "
        "(compute_AP.m trapezoids, ap='official')"
    )

    def eval_splits(self, info: DatasetInfo) -> tuple[str, ...]:
        if len(info.eval_splits) != 2:
            raise ValueError(
                f"task reid needs a query and a gallery split, but dataset {info.name!r} "
                f"evaluates on {info.eval_splits}"
            )
        return info.eval_splits

    def targets(self, arrays: ImageArrays) -> torch.Tensor:
        """Training identities 0..K-1 (train), raw person ids (query, gallery)."""
        return _class_indices(arrays, "reid")

    def batch_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Identity-classification hits on the training identities."""
        return self.prediction_correct(logits.argmax(dim=1), targets)

    def prediction_correct(self, top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (top == targets).sum()

    def metrics(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        query_name, gallery_name = data.splits
        missing = [s for s in (query_name, gallery_name) if s not in data.cams]
        if missing:
            raise ValueError(f"task reid needs camera ids for splits {missing} in EvalData.cams")
        query_images, query_ids = data.splits[query_name]
        gallery_images, gallery_ids = data.splits[gallery_name]
        query = _features(model, query_images, data)
        same = query_images is gallery_images or (
            query_images.shape == gallery_images.shape and torch.equal(query_images, gallery_images)
        )
        gallery = query if same else _features(model, gallery_images, data)
        scores = reid_metrics(
            query,
            gallery,
            query_ids,
            gallery_ids,
            data.cams[query_name],
            data.cams[gallery_name],
            metric="cosine",
            ap=self.ap,
            ranks=(1, 5, 10),
        )
        return {name: float(scores[name]) for name in self.metric_names}


class MultilabelTask:
    """Sparse multi-label attributes (the paper's Table 3): mAP and top-5 balanced accuracy.

    Targets are float multi-hot rows, which the LR losses take as they are; SR and HS-SR do
    not apply (a softmax makes the labels compete for one positive), so LR is the baseline.
    Scores are the logits of every test image; :func:`frlr.eval.multilabel_metrics` ranks
    them for mAP and predicts each image's top ``k`` = 5 labels for the balanced accuracies.
    Training accuracy counts a sample as correct when its top-1 label is one of its positives
    (precision at 1), the multi-label reading of "the arg-max is right".
    """

    name = "multilabel"
    primary_metric = "mAP"
    metric_names = ("mAP", "balanced_acc_image", "balanced_acc_class")
    tested_metrics = ("mAP", "balanced_acc_image", "balanced_acc_class")
    baseline = "lr"
    k = 5
    hold_out = "image"
    unsupported_losses: Mapping[str, str] = MappingProxyType(
        {
            "sr": "a softmax makes the labels compete for a single positive, and a multi-label "
            "sample has several (the paper compares the LR variants against LR here)",
            "hs-sr": "it is hard selection on softmax probabilities, which are single-label",
        }
    )
    evaluation = (
        "multi-label: mAP of the logits per label (scikit-learn average precision, labels "
        "without positives excluded); balanced accuracy (mean of TPR and TNR) of each image's "
        "top-5 labels, averaged per image and per label"
    )

    def eval_splits(self, info: DatasetInfo) -> tuple[str, ...]:
        return info.eval_splits[:1]

    def targets(self, arrays: ImageArrays) -> torch.Tensor:
        labels = np.asarray(arrays.labels)
        if labels.ndim != 2:
            raise ValueError(
                f"multilabel needs multi-hot label rows (N, K), got labels of shape "
                f"{labels.shape} (a single-label dataset? use --task classification)"
            )
        return torch.from_numpy(labels.astype(np.float32))

    def batch_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Samples whose top-1 label is a positive (sum of precision at 1)."""
        return self.prediction_correct(logits.argmax(dim=1), targets)

    def prediction_correct(self, top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return targets.gather(1, top.unsqueeze(1)).sum()

    def metrics(self, model: nn.Module, data: EvalData) -> dict[str, float]:
        (images, targets), *_ = data.splits.values()
        scores = _outputs(model, model, images, data)
        k = min(self.k, scores.shape[1])
        values = multilabel_metrics(scores.cpu().numpy(), targets.cpu().numpy(), k=k)
        return {name: float(values[name]) for name in self.metric_names}


def _features(model: nn.Module, images: torch.Tensor, data: EvalData) -> torch.Tensor:
    """L2-normalised ``model.features`` of every image (float32, on the images' device)."""
    features = getattr(model, "features", None)
    if not callable(features):
        raise ValueError(f"task reid needs model.features(x); {type(model).__name__} has none")
    embedding = _outputs(model, features, images, data)
    return nn.functional.normalize(embedding, dim=1)


def _outputs(
    model: nn.Module,
    function: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    data: EvalData,
) -> torch.Tensor:
    """``function(x)`` for every image, in eval mode, as float32 rows in image order.

    Under DDP each rank runs its strided share and the shares are gathered, so every rank
    returns the same full tensor at 1/world of the cost. Non-finite outputs (a diverged run)
    become finite extremes, so such a run scores low instead of failing the metric's checks.
    """
    rank, world = _rank_and_world()
    share = images[rank::world]
    if not len(share):  # fewer images than ranks: run one image for the output shape
        share = images[:1]
    chunks = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), data.autocast():
            for start in range(0, len(share), data.batch_size):
                x = data.transform(share[start : start + data.batch_size])
                chunks.append(function(x).float())
    finally:
        model.train(was_training)
    local = torch.nan_to_num(torch.cat(chunks)[: len(images[rank::world])])
    if world == 1:
        return local
    per_rank = -(-len(images) // world)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    # rank r's i-th row is image i * world + r: interleave the parts back into image order
    return torch.stack(parts, dim=1).reshape(per_rank * world, *local.shape[1:])[: len(images)]


def _num_outputs(model: nn.Module) -> int:
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    return 5  # unknown head: ask for top-5 and let evaluate_classifier drop what exceeds K


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


TASKS: dict[str, type] = {
    "classification": ClassificationTask,
    "reid": ReidTask,
    "multilabel": MultilabelTask,
}
"""Implemented tasks, by name: every setting of the paper."""


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name`` (one of :data:`KNOWN_TASKS`)."""
    if name in TASKS:
        return TASKS[name]()
    raise ValueError(f"unknown task {name!r}; known: {', '.join(KNOWN_TASKS)}")
