"""Single-label classification accuracy: the paper's Table 1 reports top-1 (%), we add top-5.

Ties are broken deterministically, as a stable descending sort would: a target ranks after
every class scoring strictly higher and after every equal-scoring class of lower index. So the
number is the same on every device and run, and a constant model scores like one that always
predicts class 0, not 100% as a "strictly higher only" rule would give it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from frlr.eval._inputs import (
    as_tensor,
    check_float_matrix,
    check_integer_vector,
    check_positive_int,
    check_ranks,
)

__all__ = ["evaluate_classifier", "topk_accuracy"]


def _target_rank(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target under a stable descending sort of its row.

    rank_i = #{j : s_ij > s_iy} + #{j < y : s_ij = s_iy}, y = targets_i; O(N K), no sort.
    A row holding a NaN (a diverged model) gets rank K: wrong at every k, never silently right.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))
    class_index = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > target_scores) | (
        (scores == target_scores) & (class_index < targets.unsqueeze(1))
    )
    rank = ahead.sum(dim=1)
    return rank.masked_fill_(scores.isnan().any(dim=1), scores.shape[1])


def _check_targets(targets: torch.Tensor, num_rows: int, num_classes: int, name: str) -> None:
    check_integer_vector(targets, name, num_rows)
    if num_rows and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )


def topk_accuracy(
    logits_or_scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    k: int | Iterable[int] = (1, 5),
) -> dict[str, float]:
    """Fraction of rows whose target is among the k highest scores, for each k.

    top-k = (1/N) sum_i [rank_i < k], rank_i the target's 0-based rank (ties broken by class
    index, see the module docstring). Any monotone score works: logits, probabilities.

    Args:
        logits_or_scores: float (N, K) scores, a torch tensor or numpy array.
        targets: integer (N,) class indices in [0, K).
        k: one rank or several; each must be at most K.

    Returns:
        ``{"top1": ..., "top5": ...}`` (keys ``f"top{k}"``), fractions in [0, 1].

    Examples:
        >>> import torch
        >>> from frlr.eval import topk_accuracy
        >>> logits = torch.tensor([[0.1, 2.0, 0.3], [1.5, 0.2, 0.1]])
        >>> topk_accuracy(logits, torch.tensor([1, 1]), k=(1, 2))
        {'top1': 0.5, 'top2': 1.0}
    """
    scores = as_tensor(logits_or_scores, "logits_or_scores")
    labels = as_tensor(targets, "targets")
    check_float_matrix(scores, "logits_or_scores")
    if scores.shape[0] == 0:
        raise ValueError("logits_or_scores has no rows")
    _check_targets(labels, scores.shape[0], scores.shape[1], "targets")
    ks = check_ranks(k, "k")
    if max(ks) > scores.shape[1]:
        raise ValueError(f"k={max(ks)} exceeds the number of classes ({scores.shape[1]})")
    rank = _target_rank(scores, labels.to(device=scores.device, dtype=torch.int64))
    return {f"top{value}": float((rank < value).double().mean()) for value in ks}


def _default_model_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [0, 1]; float batches are taken as model-ready."""
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch


def _check_images(images: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    """The images as a tensor, and whether they are numpy (N, H, W, C), permuted per batch: a
    wrong layout fails here, naming the argument, not inside the model."""
    pixels = as_tensor(images, "images")
    if pixels.ndim < 2 or pixels.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch, got shape {tuple(pixels.shape)}")
    if pixels.dtype != torch.uint8 and not pixels.is_floating_point():
        raise ValueError(f"images must be uint8 or floating, got {pixels.dtype}")
    channels_last = isinstance(images, np.ndarray)
    if channels_last and (pixels.dtype != torch.uint8 or pixels.ndim != 4):
        raise ValueError(
            "numpy images must be uint8 (N, H, W, C) like ImageArrays.images, got "
            f"{images.dtype} {images.shape}; pass other layouts as a (N, C, H, W) tensor"
        )
    return pixels, channels_last


def _check_request(
    model: nn.Module,
    labels: torch.Tensor | np.ndarray | None,
    num_images: int,
    return_features: bool,
) -> torch.Tensor | None:
    """The labels as a tensor (None: features only), after checking that there is something
    to compute and that the model can compute it."""
    targets = None
    if labels is not None:
        targets = as_tensor(labels, "labels")
        check_integer_vector(targets, "labels", num_images)
    if labels is None and not return_features:
        raise ValueError("nothing to compute: give labels, return_features=True, or both")
    if return_features and not callable(getattr(model, "features", None)):
        raise ValueError(
            f"return_features=True needs a model.features(x) method; "
            f"{type(model).__name__} has none"
        )
    return targets


def _model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """``device``, else where the model's first parameter lives (the CPU for a bare model)."""
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    return torch.device(device)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block, then back in the mode it had, even on an error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _Tally:
    """What one pass over the batches adds up: the hits at each k, the sample-weighted loss
    sum, the feature chunks; kept on ``device``, so a batch costs no host synchronisation."""

    def __init__(self, k: int | Iterable[int], device: torch.device) -> None:
        self.k = k
        self.ks = check_ranks(k, "k")
        self.k_values = torch.tensor(self.ks, device=device)
        self.correct = torch.zeros(len(self.ks), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.features: list[torch.Tensor] = []
        self.num_classes: int | None = None

    def add(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    ) -> None:
        """One batch's logits against its labels ``y``; the first batch, which shows the class
        count, also checks every label and k against it."""
        if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
            raise ValueError(f"model output must be (batch, classes), got {tuple(logits.shape)}")
        if self.num_classes is None:
            self.num_classes = logits.shape[1]
            _check_targets(targets, targets.shape[0], self.num_classes, "labels")
            if min(self.ks) > self.num_classes:
                raise ValueError(f"every k in {self.k!r} exceeds {self.num_classes} classes")
        rank = _target_rank(logits, y)
        self.correct += (rank.unsqueeze(1) < self.k_values).sum(dim=0)
        if loss_fn is not None:
            self.loss_sum += loss_fn(logits, y).detach().double() * y.shape[0]

    def result(self, total: int, with_loss: bool, with_features: bool) -> dict[str, Any]:
        """``num_samples`` and what was scored: ``top{k}`` for each k within the class count,
        ``loss``, ``features``."""
        result: dict[str, Any] = {"num_samples": total}
        if self.num_classes is not None:
            for value, count in zip(self.ks, self.correct.tolist(), strict=True):
                if value <= self.num_classes:
                    result[f"top{value}"] = count / total
            if with_loss:
                result["loss"] = float(self.loss_sum) / total
        if with_features:
            result["features"] = torch.cat(self.features)
        return result


def evaluate_classifier(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    normalize_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    k: int | Iterable[int] = (1, 5),
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    return_features: bool = False,
) -> dict[str, Any]:
    """Run ``model`` over ``images`` in eval mode, in batches, and score it.

    Each batch is moved to ``device`` and turned into model input there, so the dataset can
    stay uint8 (4x smaller than float) until the last moment. The model's training/eval mode
    is restored afterwards. A row of logits holding a NaN counts as wrong, so a diverged run
    scores low instead of raising.

    Args:
        model: the classifier; ``model(x)`` returns (batch, K) logits.
        images: a torch tensor (N, C, H, W), as ``frlr.data.augment.images_to_tensor``
            returns, or a uint8 numpy array (N, H, W, C), as ``ImageArrays.images`` holds
            (permuted per batch, after the copy to ``device``).
        labels: integer (N,) class indices; None with ``return_features=True`` extracts re-id
            embeddings without computing logits.
        batch_size: images per forward pass.
        device: where to run (default: the model's).
        normalize_fn: turns the (N, C, H, W) batch, in its stored dtype, into model input (e.g.
            ``partial(frlr.data.augment.normalize, mean=..., std=...)``); without it uint8
            becomes float / 255 and float passes unchanged.
        k: the top-k accuracies to report; those above the class count are left out (so
            CIFAR-10 gets top5, a 3-class toy only top1).
        loss_fn: ``loss_fn(logits, labels)``, a batch mean; adds ``loss``, the sample-weighted
            mean over all images.
        return_features: add ``features``: ``model.features(x)`` for every image, on the CPU;
            this costs a second forward pass when labels are also given.

    Returns:
        A dict with ``num_samples`` and, as asked, ``top{k}``, ``loss`` and ``features``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from frlr.eval import evaluate_classifier
        >>> from frlr.torch import SSLRLoss
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
        >>> images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
        >>> labels = torch.randint(0, 10, (20,))
        >>> result = evaluate_classifier(model, images, labels, batch_size=8, loss_fn=SSLRLoss())
        >>> sorted(result)
        ['loss', 'num_samples', 'top1', 'top5']
        >>> result["num_samples"], 0.0 <= result["top1"] <= result["top5"] <= 1.0
        (20, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch_size = check_positive_int(batch_size, "batch_size")
    pixels, channels_last = _check_images(images)
    targets = _check_request(model, labels, pixels.shape[0], return_features)
    device = _model_device(model, device)
    tally = _Tally(k, device)
    to_model_input = normalize_fn if normalize_fn is not None else _default_model_input
    total = pixels.shape[0]
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, total, batch_size):
            batch = pixels[start : start + batch_size].to(device)
            x = to_model_input(batch.permute(0, 3, 1, 2) if channels_last else batch)
            if return_features:
                tally.features.append(model.features(x).float().cpu())
            if targets is not None:
                y = targets[start : start + batch_size].to(device=device, dtype=torch.int64)
                tally.add(model(x), y, targets, loss_fn)
    return tally.result(total, loss_fn is not None, return_features)
