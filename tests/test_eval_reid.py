"""Re-id CMC/mAP: a hand-ranked example, camera/junk rules, and a plain per-query reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from frlr.eval import reid_metrics

# --- a hand-computed example -------------------------------------------------------------
#
# Features are unit vectors at angle theta. Query q0 sits at angle 0, so it ranks the gallery
# by increasing theta; q1 sits at angle pi, so it ranks the gallery in the reverse order.
#
#   gallery  g0   g1   g2   g3   g4   g5   g6
#   id        1    2    1   -1    0    1    2
#   cam       1    2    2    2    3    3    1
#
# q0 (id 1, cam 1) ranks g0..g6. g0 is junk (same id, same camera), g3 is junk (id -1);
# g4 (id 0) is a distractor and stays as a wrong match. Filtered list:
#   rank 1 g1 wrong, rank 2 g2 GOOD, rank 3 g4 wrong, rank 4 g5 GOOD, rank 5 g6 wrong
#   CMC: first hit at rank 2.
#   torchreid AP = (1/2)(1/2 + 2/4) = 1/2
#   official AP  = (1/2)[(0/1 + 1/2)/2 + (1/3 + 2/4)/2] = (1/2)(1/4 + 5/12) = 1/3
# q1 (id 2, cam 2) ranks g6..g0. g1 is junk (same id, same camera), g3 junk. Filtered list:
#   rank 1 g6 GOOD, rank 2 g5, rank 3 g4, rank 4 g2, rank 5 g0
#   CMC: first hit at rank 1; both APs = 1 (official: (1 + 1)/2 with precision 1 above rank 1).
# q2 (id 3) has no match in the gallery: skipped and counted.
# Totals over the 2 valid queries: rank1 = 1/2, rank5 = 1, mAP official = (1/3 + 1)/2 = 2/3,
# mAP torchreid = (1/2 + 1)/2 = 3/4.

GALLERY_ANGLES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
GALLERY_IDS = np.array([1, 2, 1, -1, 0, 1, 2])
GALLERY_CAMS = np.array([1, 2, 2, 2, 3, 3, 1])
QUERY_ANGLES = np.array([0.0, math.pi, 0.05])
QUERY_IDS = np.array([1, 2, 3])
QUERY_CAMS = np.array([1, 2, 1])


def unit_vectors(angles: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def hand_example(**kwargs):
    return reid_metrics(
        unit_vectors(QUERY_ANGLES),
        unit_vectors(GALLERY_ANGLES),
        QUERY_IDS,
        GALLERY_IDS,
        QUERY_CAMS,
        GALLERY_CAMS,
        ranks=(1, 2, 5),
        **kwargs,
    )


@pytest.mark.parametrize("ap, expected_map", [("official", 2 / 3), ("torchreid", 3 / 4)])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_hand_computed_example(ap, expected_map, metric):
    result = hand_example(ap=ap, metric=metric)
    assert result["rank1"] == pytest.approx(0.5)
    assert result["rank2"] == pytest.approx(1.0)
    assert result["rank5"] == pytest.approx(1.0)
    assert result["mAP"] == pytest.approx(expected_map)
    assert result["num_valid_queries"] == 2
    assert result["num_skipped_queries"] == 1


def test_default_ranks_and_keys():
    result = reid_metrics(
        unit_vectors(QUERY_ANGLES),
        unit_vectors(GALLERY_ANGLES),
        QUERY_IDS,
        GALLERY_IDS,
        QUERY_CAMS,
        GALLERY_CAMS,
    )
    assert set(result) == {
        "rank1",
        "rank5",
        "rank10",
        "mAP",
        "num_valid_queries",
        "num_skipped_queries",
    }


def test_junk_images_count_as_absent():
    """Removing the id -1 images from the gallery changes nothing."""
    keep = GALLERY_IDS != -1
    for ap in ("official", "torchreid"):
        with_junk = hand_example(ap=ap)
        without = reid_metrics(
            unit_vectors(QUERY_ANGLES),
            unit_vectors(GALLERY_ANGLES[keep]),
            QUERY_IDS,
            GALLERY_IDS[keep],
            QUERY_CAMS,
            GALLERY_CAMS[keep],
            ranks=(1, 2, 5),
            ap=ap,
        )
        assert with_junk == pytest.approx(without)


def test_distractors_count_as_wrong_matches():
    """Relabelling the id-0 distractor g4 as junk lifts q0's second hit from rank 4 to 3."""
    gallery_ids = GALLERY_IDS.copy()
    gallery_ids[4] = -1
    result = reid_metrics(
        unit_vectors(QUERY_ANGLES),
        unit_vectors(GALLERY_ANGLES),
        QUERY_IDS,
        gallery_ids,
        QUERY_CAMS,
        GALLERY_CAMS,
        ap="torchreid",
    )
    # q0: hits at ranks 2 and 3 -> AP = (1/2 + 2/3)/2 = 7/12; q1: AP = 1
    assert result["mAP"] == pytest.approx((7 / 12 + 1) / 2)


def test_same_camera_matches_are_filtered():
    """A same-id same-camera image at rank 1 neither counts as a hit nor as a mistake."""
    gallery = unit_vectors(np.array([0.1, 0.2]))
    query = unit_vectors(np.array([0.0]))
    same_cam = reid_metrics(query, gallery, [5], [5, 5], [1], [1, 2], ranks=(1,))
    assert same_cam["rank1"] == 1.0 and same_cam["mAP"] == 1.0
    other_id = reid_metrics(query, gallery, [5], [4, 5], [1], [1, 2], ranks=(1,))
    assert other_id["rank1"] == 0.0 and other_id["mAP"] == pytest.approx(0.25)


def test_query_with_only_same_camera_matches_is_skipped():
    gallery = unit_vectors(np.array([0.1, 0.2, 0.3]))
    query = unit_vectors(np.array([0.0, 0.0]))
    result = reid_metrics(query, gallery, [7, 8], [7, 8, 9], [1, 1], [1, 2, 2], ranks=(1,))
    assert result["num_valid_queries"] == 1
    assert result["num_skipped_queries"] == 1
    assert result["rank1"] == 0.0  # q1's match g1 is behind g0 (id 7, another identity)


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match="no query has a valid match"):
        reid_metrics(unit_vectors(np.zeros(1)), unit_vectors(np.ones(2)), [1], [2, 3], [1], [1, 1])


# --- a plain reference: one query at a time, the MATLAB loop transliterated ----------------


def reference_metrics(qf, gf, q_ids, g_ids, q_cams, g_cams, metric, ap, ranks, normalize=True):
    qf, gf = qf.astype(np.float64), gf.astype(np.float64)
    if normalize:
        qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    cmc_total = np.zeros(max(ranks))
    ap_total, valid = 0.0, 0
    for i in range(len(qf)):
        if metric == "cosine":
            cos = gf @ qf[i] / (np.linalg.norm(gf, axis=1) * np.linalg.norm(qf[i]))
            dist = 1.0 - cos
        else:
            dist = np.sqrt(((gf - qf[i]) ** 2).sum(axis=1))
        index = np.argsort(dist, kind="stable")
        good = [g for g in index if g_ids[g] == q_ids[i] and g_cams[g] != q_cams[i]]
        good = [g for g in good if g_ids[g] != -1]
        junk = [
            g for g in index if g_ids[g] == -1 or (g_ids[g] == q_ids[i] and g_cams[g] == q_cams[i])
        ]
        if not good:
            continue
        valid += 1
        good, junk = set(good), set(junk)
        ranked = [g for g in index if g not in junk]
        first = next(r for r, g in enumerate(ranked) if g in good)
        cmc_total[first:] += 1
        # both APs walk the filtered list like compute_AP.m
        n_good, hits, old_recall, old_precision, total = len(good), 0, 0.0, 1.0, 0.0
        for j, g in enumerate(ranked):
            if g in good:
                hits += 1
            recall, precision = hits / n_good, hits / (j + 1)
            if ap == "official":
                total += (recall - old_recall) * (old_precision + precision) / 2
            elif g in good:
                total += precision / n_good
            old_recall, old_precision = recall, precision
            if hits == n_good:
                break
        ap_total += total
    result = {f"rank{k}": cmc_total[k - 1] / valid for k in ranks}
    result["mAP"] = ap_total / valid
    result["num_valid_queries"] = valid
    result["num_skipped_queries"] = len(qf) - valid
    return result


def random_split(seed, num_query=40, num_gallery=300, dim=8):
    rng = np.random.default_rng(seed)
    q_ids = rng.integers(1, 25, num_query)
    q_ids[0] = 25  # an identity absent from the gallery: a skipped query
    g_ids = rng.integers(-1, 25, num_gallery)  # includes junk (-1) and distractors (0)
    q_cams = rng.integers(1, 5, num_query)
    g_cams = rng.integers(1, 5, num_gallery)
    # features near an identity centre, so the ranking is informative but imperfect
    centres = rng.normal(size=(27, dim))
    qf = centres[q_ids + 1] + 0.9 * rng.normal(size=(num_query, dim))
    gf = centres[g_ids + 1] + 0.9 * rng.normal(size=(num_gallery, dim))
    return qf, gf, q_ids, g_ids, q_cams, g_cams


@pytest.mark.parametrize("ap", ["official", "torchreid"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(seed, metric, ap):
    split = random_split(seed)
    ranks = (1, 3, 5, 10)
    expected = reference_metrics(*split, metric=metric, ap=ap, ranks=ranks)
    assert expected["num_skipped_queries"] >= 1
    for chunk_size in (1, 7, 40, None):
        got = reid_metrics(*split, metric=metric, ap=ap, ranks=ranks, chunk_size=chunk_size)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_reference_differs_between_ap_variants():
    split = random_split(2)
    official = reid_metrics(*split, ap="official")["mAP"]
    torchreid = reid_metrics(*split, ap="torchreid")["mAP"]
    assert official != pytest.approx(torchreid, abs=1e-6)
    assert abs(official - torchreid) < 0.05


def test_unnormalised_euclidean_matches_reference():
    split = random_split(3)
    scaled = (split[0] * np.arange(1, 41)[:, None], split[1] * 3.0, *split[2:])
    expected = reference_metrics(
        *scaled, metric="euclidean", ap="official", ranks=(1, 5), normalize=False
    )
    got = reid_metrics(*scaled, metric="euclidean", ranks=(1, 5), normalize=False)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_cosine_and_euclidean_rank_alike_on_normalised_features():
    split = random_split(4)
    for ap in ("official", "torchreid"):
        cosine = reid_metrics(*split, metric="cosine", ap=ap)
        euclidean = reid_metrics(*split, metric="euclidean", ap=ap)
        assert cosine == pytest.approx(euclidean, rel=1e-12, abs=1e-12)


def test_torch_float32_inputs_agree_with_numpy():
    qf, gf, q_ids, g_ids, q_cams, g_cams = random_split(5)
    expected = reid_metrics(qf, gf, q_ids, g_ids, q_cams, g_cams)
    got = reid_metrics(
        torch.tensor(qf, dtype=torch.float32),
        torch.tensor(gf, dtype=torch.float32),
        torch.tensor(q_ids),
        torch.tensor(g_ids, dtype=torch.int32),
        torch.tensor(q_cams),
        torch.tensor(g_cams),
    )
    assert got == pytest.approx(expected, abs=1e-6)


def test_ties_keep_gallery_order():
    """Equal distances rank by gallery index, as MATLAB's stable sort does."""
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[0.0, 1.0], [0.0, 1.0]])
    first_wrong = reid_metrics(query, gallery, [1], [2, 1], [1], [2, 2], ranks=(1,))
    first_right = reid_metrics(query, gallery, [1], [1, 2], [1], [2, 2], ranks=(1,))
    assert first_wrong["rank1"] == 0.0 and first_right["rank1"] == 1.0


# --- validation -------------------------------------------------------------------------


def valid_args():
    return [
        unit_vectors(QUERY_ANGLES),
        unit_vectors(GALLERY_ANGLES),
        QUERY_IDS,
        GALLERY_IDS,
        QUERY_CAMS,
        GALLERY_CAMS,
    ]


@pytest.mark.parametrize(
    "position, value, message",
    [
        (0, unit_vectors(QUERY_ANGLES)[:, :1], "dimension"),
        (0, np.zeros(3), "query_features must be 2-D"),
        (1, np.full((7, 2), np.nan), "gallery_features contains NaN"),
        (1, np.zeros((7, 2), dtype=np.int64), "gallery_features must have a floating"),
        (2, QUERY_IDS[:2], "query_ids has 2 entries"),
        (3, GALLERY_IDS.astype(np.float32), "gallery_ids must have an integer"),
        (4, QUERY_CAMS[:, None], "query_cams must be 1-D"),
        (5, GALLERY_CAMS[:3], "gallery_cams has 3 entries"),
        (2, "123", "query_ids must be a torch.Tensor or numpy.ndarray"),
    ],
)
def test_rejects_bad_arrays(position, value, message):
    args = valid_args()
    args[position] = value
    with pytest.raises((ValueError, TypeError), match=message):
        reid_metrics(*args)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "l1"}, "metric must be one of .* got 'l1'"),
        ({"ap": "voc"}, "ap must be one of .* got 'voc'"),
        ({"ranks": (1, 0)}, "ranks must be a positive integer, got 0"),
        ({"ranks": ()}, "ranks must name"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer, got 0"),
    ],
)
def test_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reid_metrics(*valid_args(), **kwargs)
