"""The linear losses' inputs: argument checks, the compute dtype, the chunk size, and the
targets as per-row class lists (the sparse form every loss of the package reads).

Everything here is local to one process: the class-parallel exchange of what was checked is
``frlr.torch.linear.exchange``."""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_BYTES = 8 << 20
"""The memory budget of one (N, chunk) buffer when ``chunk_size`` is None."""


def default_chunk_size(num_rows: int, num_classes: int, itemsize: int = 4) -> int:
    """Classes per chunk: one (num_rows, chunk) buffer of ``CHUNK_BYTES``, a multiple of 64."""
    chunk = CHUNK_BYTES // (itemsize * max(num_rows, 1))
    if chunk >= 64:
        chunk -= chunk % 64
    return max(1, min(num_classes, chunk))


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_tensors(features: object, weight: object, bias: object) -> None:
    """features (N, d) and weight (K, d) floating tensors, bias (K,) or None, on one device."""
    for name, value in (("features", features), ("weight", weight)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if value.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(value.shape)}")
    assert isinstance(features, Tensor) and isinstance(weight, Tensor)
    if features.shape[1] != weight.shape[1]:
        raise ValueError(
            f"weight must have shape (K, d) with d = features.shape[1] = {features.shape[1]}, "
            f"got weight of shape {tuple(weight.shape)}"
        )
    if weight.shape[0] < 1:
        raise ValueError(f"weight must hold at least one class, got shape {tuple(weight.shape)}")
    if bias is not None:
        if not isinstance(bias, Tensor) or not bias.is_floating_point():
            raise TypeError(f"bias must be a floating-point tensor or None, got {bias!r:.60}")
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, value in (("weight", weight), ("bias", bias)):
        if isinstance(value, Tensor) and value.device != features.device:
            raise ValueError(
                f"{name} is on {value.device} and features on {features.device}; put "
                "features, weight and bias on one device"
            )


def check_num_classes(num_classes: int) -> int:
    """K >= 2: a loss over one class has no negative (argmax, which has no loss, takes K = 1)."""
    check_int("num_classes", num_classes, 1)
    if num_classes < 2:
        raise ValueError(
            f"the classifier has {num_classes} class; the losses need K >= 2 (a (1, d) weight "
            "has no negative class)"
        )
    return num_classes


def compute_dtype(features: Tensor, weight: Tensor, bias: Tensor | None) -> torch.dtype:
    """float64 when any of the three is float64 (its precision is kept, as torch's type
    promotion keeps it), float32 otherwise: half-precision inputs accumulate in float32."""
    wide = any(t is not None and t.dtype == torch.float64 for t in (features, weight, bias))
    return torch.float64 if wide else torch.float32


def check_smoothing(label_smoothing: object) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(f"label_smoothing must be a real number, got {label_smoothing!r}")
    if not 0 <= label_smoothing < 1:  # NaN fails too
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def _check_target_kind(target: object, num_rows: int) -> Tensor:
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must be int64 class indices (N,) or positive lists (N, P), got dtype "
            f"{target.dtype}; a dense multi-hot target would itself be N x K"
        )
    if target.dim() not in (1, 2) or target.shape[0] != num_rows:
        raise ValueError(
            f"target must have shape ({num_rows},) or ({num_rows}, P) for features of "
            f"{num_rows} rows, got {tuple(target.shape)}"
        )
    return target


def _refuse_dense_integer(target: Tensor, num_classes: int) -> None:
    """An integer (N, K) target of 0s and 1s is a one-hot or multi-hot, not K-wide class lists:
    as lists it would repeat classes 0 and 1 (K > 2), and at K = 2 it reads both ways."""
    if target.dim() != 2 or target.shape[1] != num_classes or target.numel() == 0:
        return
    if not bool(((target == 0) | (target == 1)).all()):
        return
    if num_classes == 2:
        raise ValueError(
            "an integer (N, 2) target of 0s and 1s is ambiguous with 2 classes: a one-hot "
            "row [0, 1] means class 1, a class list [0, 1] means classes 0 and 1. Write class "
            "indices (N,) (target.argmax(1)), or positive lists padded with ignore_index "
            "(frlr.torch.positive_lists(target))"
        )
    raise ValueError(
        f"target of shape {tuple(target.shape)} holds only 0s and 1s: it looks like a one-hot "
        "or multi-hot (N, K) target, but the linear losses take class indices (N,) or positive "
        "lists (N, P); convert it with frlr.torch.positive_lists(target) (or target.argmax(1) "
        "for a one-hot)"
    )


def local_targets(
    target: object,
    num_rows: int,
    num_classes: int,
    ignore_index: int,
    single_label_only: bool,
    weighted: bool = False,
) -> tuple[Tensor, Tensor, bool]:
    """(positives (N, P) int64 with -1 for none, counted (N,) bool, multi_label) of one rank.
    ``weighted``: ``target_weights`` come with the lists, which may then repeat a class."""
    target = _check_target_kind(target, num_rows)
    multi_label = target.dim() == 2
    if weighted and not multi_label:
        raise ValueError(
            "target_weights pair with positive lists (N, P); index targets (N,) are one class "
            "per row with weight 1 (soften them with label_smoothing)"
        )
    if not weighted:
        _refuse_dense_integer(target, num_classes)
    if multi_label and single_label_only and not weighted:
        raise ValueError(
            "linear_sr_loss takes class indices (N,): softmax is single-label, got a target of "
            f"shape {tuple(target.shape)}"
        )
    positives = target.long() if multi_label else target.long().unsqueeze(1)
    listed = positives != ignore_index
    bad = listed & ((positives < 0) | (positives >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"target holds class {positives[bad][0].item()} outside [0, num_classes="
            f"{num_classes}) (ignore_index={ignore_index})"
        )
    positives = torch.where(listed, positives, -1)
    if multi_label and positives.shape[1] > 1 and not weighted:
        ordered = positives.sort(1).values
        twice = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
        if bool(twice.any()):
            row = int(twice.any(1).nonzero()[0])
            raise ValueError(
                f"target row {row} lists class {ordered[row, 1:][twice[row]][0].item()} twice; "
                "positive lists hold distinct classes"
            )
    counted = torch.ones_like(listed[:, 0]) if multi_label else listed[:, 0]
    return positives, counted, multi_label


def _check_weights_tensor(target_weights: object, target: Tensor) -> Tensor:
    if not isinstance(target_weights, Tensor):
        raise TypeError(
            f"target_weights must be a torch.Tensor or None, got {type(target_weights).__name__}"
        )
    if not target_weights.is_floating_point():
        raise TypeError(f"target_weights must be a float tensor, got dtype {target_weights.dtype}")
    if target_weights.shape != target.shape:
        raise ValueError(
            f"target_weights must have the shape of target {tuple(target.shape)}, got "
            f"{tuple(target_weights.shape)}"
        )
    return target_weights


def local_weights(
    target_weights: object, target: Tensor, positives: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(classes (N, P), weights (N, P)) of one rank: each row's classes distinct (-1 padding,
    weight 0), a class listed twice carrying the sum of its weights.

    The sum must stay <= 1 (a target is a probability per class); a sum of several weights
    within float round-off of 1 counts as exactly 1, as lam + (1 - lam) of a mixup pair whose
    two labels agree is meant to (the dense mix lerp(e_y, e_y, lam) is e_y exactly)."""
    target_weights = _check_weights_tensor(target_weights, target)
    listed = positives >= 0
    weights = target_weights.detach().to(device=positives.device, dtype=dtype)
    bad = listed & ~((weights >= 0) & (weights <= 1))  # NaN included
    if bool(bad.any()):
        raise ValueError(f"target_weights must lie in [0, 1], got {weights[bad][0].item()}")
    weights = torch.where(listed, weights, 0.0)
    if positives.shape[1] < 2:
        return positives, weights
    classes, order = positives.sort(1)
    weights = weights.gather(1, order)
    starts = torch.ones_like(listed)
    starts[:, 1:] = classes[:, 1:] != classes[:, :-1]
    run = starts.long().cumsum(1) - 1  # each entry's place among the row's distinct classes
    summed = torch.zeros_like(weights).scatter_add_(1, run, weights)
    repeats = torch.zeros_like(run).scatter_add_(1, run, torch.ones_like(run))
    merged = torch.full_like(positives, -1).scatter_(1, run, classes)
    summed = torch.where(merged >= 0, summed, 0.0)
    rounding = max(torch.finfo(target_weights.dtype).eps, torch.finfo(dtype).eps)
    slack = positives.shape[1] * rounding  # of P weights, rounded to the compute dtype
    if bool((summed > 1 + slack).any()):
        row, place = (summed > 1 + slack).nonzero()[0].tolist()
        raise ValueError(
            f"target_weights of class {merged[row, place].item()} in target row {row} sum to "
            f"{summed[row, place].item()} > 1; a class listed more than once carries the sum "
            "of its weights, which must stay <= 1"
        )
    rounded = (repeats > 1) & ((summed - 1).abs() <= slack)
    return merged, torch.where(rounded, 1.0, summed.clamp(max=1.0))


def positive_lists(multi_hot: Tensor, ignore_index: int = -100) -> Tensor:
    """A multi-hot target (N, K) as the positive lists (N, P) the linear losses take: each row's
    positive classes in increasing order, padded with ``ignore_index`` to the longest row.

    Args:
        multi_hot: (N, K) {0, 1} (float, bool or integer).
        ignore_index: the padding.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> frlr.positive_lists(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
        tensor([[   1,    2],
                [   0, -100]])
    """
    if not isinstance(multi_hot, Tensor) or multi_hot.dim() != 2:
        raise ValueError(f"multi_hot must be a (N, K) tensor, got {multi_hot!r:.80}")
    hot = multi_hot > 0.5
    width = max(int(hot.sum(1).max()) if hot.numel() else 0, 1)
    # stable sort of "not hot" puts each row's positives first, in class order
    order = (~hot).to(torch.int8).argsort(dim=1, stable=True)[:, :width]
    return torch.where(hot.gather(1, order), order, ignore_index)
