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

    It is long because this docstring defines each metric it returns.

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
    num_images, num_classes = binary.shape
    if k > num_classes:
        raise ValueError(f"k={k} exceeds the number of classes ({num_classes})")
    if not binary.any():
        raise ValueError("targets has no positive label: every metric here is undefined")

    predicted = _topk_predictions(score_array, k)
    true_pos = predicted & binary
    false_pos = predicted & ~binary

    class_pos = binary.sum(axis=0)
    class_neg = num_images - class_pos
    class_tp = true_pos.sum(axis=0)
    class_tn = class_neg - false_pos.sum(axis=0)
    image_pos = binary.sum(axis=1)
    image_neg = num_classes - image_pos
    image_tp = true_pos.sum(axis=1)
    image_tn = image_neg - false_pos.sum(axis=1)

    with np.errstate(invalid="ignore", divide="ignore"):
        class_recall = class_tp / class_pos
        class_balanced = (class_recall + class_tn / class_neg) / 2.0
        image_recall = image_tp / image_pos
        image_balanced = (image_recall + image_tn / image_neg) / 2.0

    has_class_pos = class_pos > 0
    has_image_pos = image_pos > 0
    average_precision = _average_precision_per_class(score_array, binary)
    return {
        "mAP": _mean_over(average_precision, has_class_pos),
        "balanced_acc_class": _mean_over(class_balanced, has_class_pos & (class_neg > 0)),
        "balanced_acc_image": _mean_over(image_balanced, has_image_pos & (image_neg > 0)),
        "recall_at_k_class": _mean_over(class_recall, has_class_pos),
        "recall_at_k_image": _mean_over(image_recall, has_image_pos),
        "num_classes_with_positives": int(has_class_pos.sum()),
        "num_images_with_positives": int(has_image_pos.sum()),
        "k": k,
    }
