"""Multi-label metrics: hand-computed cases for each, and mAP against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from frlr.eval import multilabel_metrics

# 3 images x 4 classes, k = 2.
#   image 0: targets [1 0 0 1], scores [.9 .8 .1 .2] -> predicted [1 1 0 0]
#   image 1: targets [0 1 0 0], scores [.3 .2 .7 .1] -> predicted [1 0 1 0]
#   image 2: targets [1 1 0 0], scores [.6 .4 .5 .3] -> predicted [1 0 1 0]
TARGETS = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]])
SCORES = np.array([[0.9, 0.8, 0.1, 0.2], [0.3, 0.2, 0.7, 0.1], [0.6, 0.4, 0.5, 0.3]])

# Per class (class 2 has no positive and is excluded everywhere):
#   c0: TP 2 FN 0 TN 0 FP 1 -> TPR 1, TNR 0 -> balanced 1/2, recall 1
#   c1: TP 0 FN 2 TN 0 FP 1 -> TPR 0, TNR 0 -> balanced 0,   recall 0
#   c3: TP 0 FN 1 TN 2 FP 0 -> TPR 0, TNR 1 -> balanced 1/2, recall 0
BALANCED_CLASS = (1 / 2 + 0 + 1 / 2) / 3
RECALL_CLASS = 1 / 3
# Per image:
#   i0: TPR 1/2 (c0 hit, c3 missed), TNR 1/2 (c1 false, c2 right)  -> 1/2,  recall 1/2
#   i1: TPR 0,                       TNR 1/3 (c0, c2 false; c3 ok) -> 1/6,  recall 0
#   i2: TPR 1/2,                     TNR 1/2 (c2 false, c3 right)  -> 1/2,  recall 1/2
BALANCED_IMAGE = (1 / 2 + 1 / 6 + 1 / 2) / 3
RECALL_IMAGE = (1 / 2 + 0 + 1 / 2) / 3
# AP per class, ranking images by score:
#   c0: + + -          -> 1
#   c1: - + +          -> (1/2 + 2/3)/2 = 7/12
#   c3: - + -          -> 1/2
MAP = (1 + 7 / 12 + 1 / 2) / 3


def test_hand_computed_case():
    result = multilabel_metrics(SCORES, TARGETS, k=2)
    assert result["mAP"] == pytest.approx(MAP)
    assert result["balanced_acc_class"] == pytest.approx(BALANCED_CLASS)
    assert result["balanced_acc_image"] == pytest.approx(BALANCED_IMAGE)
    assert result["recall_at_k_class"] == pytest.approx(RECALL_CLASS)
    assert result["recall_at_k_image"] == pytest.approx(RECALL_IMAGE)
    assert result["num_classes_with_positives"] == 3
    assert result["num_images_with_positives"] == 3
    assert result["k"] == 2


def test_torch_and_bool_inputs_match_numpy():
    expected = multilabel_metrics(SCORES, TARGETS, k=2)
    got = multilabel_metrics(
        torch.tensor(SCORES, dtype=torch.float32), torch.tensor(TARGETS, dtype=torch.bool), k=2
    )
    assert got == pytest.approx(expected)
    assert multilabel_metrics(SCORES, TARGETS.astype(np.float32), k=2) == pytest.approx(expected)


def test_perfect_scores():
    targets = np.eye(6, dtype=np.int64)[[0, 1, 2, 3, 4, 5, 0, 1]]
    result = multilabel_metrics(targets.astype(np.float64), targets, k=1)
    for name in ("mAP", "balanced_acc_class", "balanced_acc_image"):
        assert result[name] == 1.0
    assert result["recall_at_k_class"] == result["recall_at_k_image"] == 1.0


def test_ap_ties_enter_together():
    """Scores .5 (+), .5 (-), .2 (+): thresholds .5 -> P 1/2 R 1/2, .2 -> P 2/3 R 1."""
    scores = np.array([[0.5], [0.5], [0.2]])
    targets = np.array([[1], [0], [1]])
    expected = 0.5 * 0.5 + 0.5 * (2 / 3)
    assert multilabel_metrics(scores, targets, k=1)["mAP"] == pytest.approx(expected)
    assert expected == pytest.approx(average_precision_score(targets[:, 0], scores[:, 0]))


def test_topk_ties_go_to_lower_index():
    scores = np.zeros((1, 3))
    first = multilabel_metrics(scores, np.array([[1, 0, 0]]), k=1)
    last = multilabel_metrics(scores, np.array([[0, 0, 1]]), k=1)
    assert first["recall_at_k_image"] == 1.0
    assert last["recall_at_k_image"] == 0.0


def test_undefined_groups_are_excluded():
    # class 1 is positive in every image (no negative): in mAP and recall, not balanced_acc_class;
    # image 1 is positive in every class (no negative): out of balanced_acc_image only.
    targets = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 0]])
    scores = np.array([[0.9, 0.1, 0.0], [0.3, 0.2, 0.1], [0.8, 0.7, 0.6]])
    result = multilabel_metrics(scores, targets, k=1)
    # predictions (k=1): i0 -> c0, i1 -> c0, i2 -> c0
    # c0: TP 2 FN 0 TN 0 FP 1 -> 1/2;  c2: TP 0 FN 1 TN 2 FP 0 -> 1/2;  c1 excluded
    assert result["balanced_acc_class"] == pytest.approx(1 / 2)
    # i0: TPR 1/2 TNR 1 -> 3/4;  i2: TPR 0 TNR 1/2 -> 1/4;  i1 excluded
    assert result["balanced_acc_image"] == pytest.approx(1 / 2)
    assert result["recall_at_k_class"] == pytest.approx((1 + 0 + 0) / 3)
    assert result["recall_at_k_image"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)


def test_empty_average_is_nan():
    result = multilabel_metrics(np.array([[0.3, 0.1]]), np.array([[1, 1]]), k=1)
    assert np.isnan(result["balanced_acc_image"])
    assert np.isnan(result["balanced_acc_class"])
    assert result["recall_at_k_image"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_images, num_classes = 200, 30
    targets = (rng.random((num_images, num_classes)) < 0.08).astype(np.int64)
    targets[:, :3] = 0  # classes without positives are excluded from the mean
    scores = np.round(rng.normal(size=targets.shape) + targets, 1)  # rounding makes ties
    expected = np.mean(
        [
            average_precision_score(targets[:, c], scores[:, c])
            for c in range(num_classes)
            if targets[:, c].any()
        ]
    )
    result = multilabel_metrics(scores, targets, k=5)
    assert result["mAP"] == pytest.approx(expected, rel=1e-12)
    assert result["num_classes_with_positives"] == int(targets.any(axis=0).sum())


def test_balanced_accuracy_matches_a_plain_loop():
    rng = np.random.default_rng(7)
    targets = (rng.random((60, 12)) < 0.2).astype(np.int64)
    scores = rng.normal(size=targets.shape)
    k = 3
    predicted = np.zeros_like(targets)
    for i in range(len(scores)):
        predicted[i, np.argsort(-scores[i], kind="stable")[:k]] = 1

    def balanced(t, p):
        tpr = ((t == 1) & (p == 1)).sum() / (t == 1).sum()
        tnr = ((t == 0) & (p == 0)).sum() / (t == 0).sum()
        return (tpr + tnr) / 2

    per_class = [
        balanced(targets[:, c], predicted[:, c])
        for c in range(targets.shape[1])
        if 0 < targets[:, c].sum() < len(targets)
    ]
    per_image = [
        balanced(targets[i], predicted[i])
        for i in range(len(targets))
        if 0 < targets[i].sum() < targets.shape[1]
    ]
    result = multilabel_metrics(scores, targets, k=k)
    assert result["balanced_acc_class"] == pytest.approx(np.mean(per_class))
    assert result["balanced_acc_image"] == pytest.approx(np.mean(per_image))


@pytest.mark.parametrize(
    "scores, targets, k, message",
    [
        (SCORES, TARGETS * 2, 2, r"targets must contain only 0 and 1, found \[2\]"),
        (SCORES, TARGETS[:2], 2, "targets must have the shape of scores"),
        (SCORES.astype(np.int64), TARGETS, 2, "scores must have a floating dtype"),
        (SCORES[0], TARGETS[0], 2, "scores must be a non-empty"),
        (np.full_like(SCORES, np.nan), TARGETS, 2, "scores contains NaN"),
        (SCORES, TARGETS, 0, "k must be a positive integer, got 0"),
        (SCORES, TARGETS, 5, "k=5 exceeds the number of classes"),
        (SCORES, np.zeros_like(TARGETS), 2, "no positive label"),
    ],
)
def test_rejects_bad_inputs(scores, targets, k, message):
    with pytest.raises(ValueError, match=message):
        multilabel_metrics(scores, targets, k=k)


def test_rejects_non_arrays():
    with pytest.raises(TypeError, match=r"scores must be a torch\.Tensor"):
        multilabel_metrics("scores", TARGETS)
