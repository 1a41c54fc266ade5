"""Multi-label attribute metrics for DeepFashion (the paper's Table 3).

The paper reports mAP and the "balanced classification accuracy" of Dong, Gong and Zhu
(ICCV 2017; TPAMI 2018) and Huang et al. (CVPR 2016), "per-image and per-class ... of top-5
class predictions". We read that as: each image predicts its k = 5 highest-scored attributes
as positive and the rest negative (DeepFashion images carry about 3 of 1,000 attributes, which
a fixed score threshold serves poorly), and those binary predictions are scored by balanced
accuracy, the mean of the true-positive and true-negative rates. Balanced accuracy is what the
cited imbalanced-learning papers use because plain accuracy is ~99.7% for a model that predicts
nothing; averaging TPR and TNR weighs the rare positives as much as the abundant negatives.
"Per-class" averages it over attributes (Dong et al.'s class-balanced accuracy; the paper
quotes their 54.5 per-class as the prior state of the art), "per-image" over images. The
original DeepFashion measure, top-k recall, is returned as well: it costs nothing and older
tables use it.

The paper does not spell the protocol out further; this reading is an assumption, stated here
so that a results table can cite it. Top-k ties are broken by attribute index (a stable
descending sort), so results are deterministic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from frlr.eval._inputs import as_array, check_positive_int

__all__ = ["multilabel_metrics"]

_BLOCK_ELEMENTS = 1 << 22
"""Rows x columns handled per block: about 150 MB of temporaries, whatever N x K is."""


def _check_inputs(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"scores must have a floating dtype, got {scores.dtype}")
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (images, classes) matrix, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contains NaN or infinite values")
    if targets.shape != scores.shape:
        raise ValueError(
            f"targets must have the shape of scores {scores.shape}, got {targets.shape}"
        )
    if targets.dtype != np.bool_ and not np.issubdtype(targets.dtype, np.number):
        raise ValueError(f"targets must be numeric or bool, got {targets.dtype}")
    binary = targets.astype(bool)
    if not np.array_equal(binary, targets):
        bad = np.unique(targets[binary != targets])[:5]
        raise ValueError(f"targets must contain only 0 and 1, found {bad.tolist()}")
    return binary


def _average_precision_per_class(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of each column, scikit-learn's ``average_precision_score`` without interpolation.

    AP_c = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds t_n in descending
    order, with P_n, R_n the precision and recall of predicting s >= t_n; tied scores enter
    together. Written as a sum over positives: each positive contributes P(t)/n_pos at the
    threshold t of its own score. NaN for columns without positives.
    """
    num_rows, num_cols = scores.shape
    block = max(1, _BLOCK_ELEMENTS // num_rows)
    row = np.arange(num_rows)[:, None]
    result = np.empty(num_cols, dtype=np.float64)
    for start in range(0, num_cols, block):
        s = scores[:, start : start + block]
        order = np.argsort(-s, axis=0, kind="stable")
        s = np.take_along_axis(s, order, axis=0)
        t = np.take_along_axis(targets[:, start : start + block], order, axis=0)
        precision = np.cumsum(t, axis=0, dtype=np.float64) / (row + 1)
        # the last row of each tie group holds the precision of that group's threshold
        group_end = np.ones(s.shape, dtype=bool)
        group_end[:-1] = s[:-1] != s[1:]
        end_row = np.where(group_end, row, num_rows)
        end_row = np.minimum.accumulate(end_row[::-1], axis=0)[::-1]
        threshold_precision = np.take_along_axis(precision, end_row, axis=0)
        num_positive = t.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[start : start + block] = (threshold_precision * t).sum(axis=0) / num_positive
    return result


def _topk_predictions(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean (N, K): the k highest scores of each row, ties to the lower attribute index."""
    num_rows, num_cols = scores.shape
    predicted = np.zeros(scores.shape, dtype=bool)
    block = max(1, _BLOCK_ELEMENTS // num_cols)
    for start in range(0, num_rows, block):
        top = np.argsort(-scores[start : start + block], axis=1, kind="stable")[:, :k]
        np.put_along_axis(predicted[start : start + block], top, True, axis=1)
    return predicted


def _mean_over(values: np.ndarray, keep: np.ndarray) -> float:
    return float(values[keep].mean()) if keep.any() else float("nan")


class _Rates(NamedTuple):
    """The top-k predictions scored along one axis: per class (counted over images) or per
    image (counted over classes); NaN where a denominator is 0."""

    recall: np.ndarray  # TP / (TP + FN)
    balanced: np.ndarray  # (TP / (TP + FN) + TN / (TN + FP)) / 2
    has_positive: np.ndarray
    has_negative: np.ndarray


def _rates(predicted: np.ndarray, binary: np.ndarray, axis: int) -> _Rates:
    """Recall and balanced accuracy per class (``axis=0``) or per image (``axis=1``): one
    function for both, so the two averages cannot drift apart."""
    positives = binary.sum(axis=axis)
    negatives = binary.shape[axis] - positives
    true_pos = (predicted & binary).sum(axis=axis)
    true_neg = negatives - (predicted & ~binary).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = true_pos / positives
        balanced = (recall + true_neg / negatives) / 2.0
    return _Rates(recall, balanced, positives > 0, negatives > 0)


def multilabel_metrics(
    scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    k: int = 5,
) -> dict[str, float | int]:
    """mAP, balanced accuracy and recall of the top-k predictions, per class and per image.

    Predictions: ŷ_ic = 1 for the k highest scores of image i, else 0. With TP, FN, TN, FP
    counted over images for a class, or over classes for an image:

    * ``mAP``: mean over classes with >= 1 positive of AP_c = sum_n (R_n - R_{n-1}) P_n
      (scikit-learn ``average_precision_score``, no interpolation; ranks the raw scores, not
      the top-k predictions). Classes with no positive have undefined AP and are excluded.
    * ``balanced_acc_class``: mean over classes with >= 1 positive and >= 1 negative of
      (TP/(TP+FN) + TN/(TN+FP)) / 2.
    * ``balanced_acc_image``: the same per image across its K labels, averaged over images
      with >= 1 positive and >= 1 negative label.
    * ``recall_at_k_class``: mean over classes with >= 1 positive of TP/(TP+FN), the
      per-attribute top-k recall of the DeepFashion benchmark.
    * ``recall_at_k_image``: mean over images with >= 1 positive of TP/(TP+FN).

    All are fractions in [0, 1]; an average over an empty set is NaN. Also returned:
    ``num_classes_with_positives``, ``num_images_with_positives`` (the mAP and recall
    denominators) and ``k``.

    Args:
        scores: float (N, K), any monotone score (logits or probabilities); a torch tensor or
            numpy array.
        targets: (N, K) in {0, 1} (bool, integer or float); at least one positive.
        k: how many labels each image predicts, at most K.

    Returns:
        The metrics above by name, plus the two denominators and ``k``.

    Examples:
        >>> import numpy as np
        >>> from frlr.eval import multilabel_metrics
        >>> scores = np.array([[2.0, 1.0, -1.0, 0.5], [0.1, 3.0, 0.2, -2.0], [1.0, -1.0, 2.5, 0.0]])
        >>> targets = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]])
        >>> metrics = multilabel_metrics(scores, targets, k=2)
        >>> metrics["mAP"], metrics["recall_at_k_class"], metrics["k"]
        (1.0, 0.75, 2)
    """
    score_array = as_array(scores, "scores")
    target_array = as_array(targets, "targets")
    binary = _check_inputs(score_array, target_array)
    k = check_positive_int(k, "k")
    num_classes = binary.shape[1]
    if k > num_classes:
        raise ValueError(f"k={k} exceeds the number of classes ({num_classes})")
    if not binary.any():
        raise ValueError("targets has no positive label: every metric here is undefined")

    predicted = _topk_predictions(score_array, k)
    per_class = _rates(predicted, binary, axis=0)
    per_image = _rates(predicted, binary, axis=1)
    average_precision = _average_precision_per_class(score_array, binary)
    return {
        "mAP": _mean_over(average_precision, per_class.has_positive),
        "balanced_acc_class": _mean_over(
            per_class.balanced, per_class.has_positive & per_class.has_negative
        ),
        "balanced_acc_image": _mean_over(
            per_image.balanced, per_image.has_positive & per_image.has_negative
        ),
        "recall_at_k_class": _mean_over(per_class.recall, per_class.has_positive),
        "recall_at_k_image": _mean_over(per_image.recall, per_image.has_positive),
        "num_classes_with_positives": int(per_class.has_positive.sum()),
        "num_images_with_positives": int(per_image.has_positive.sum()),
        "k": k,
    }
