"""Person re-identification: single-query CMC (Rank-k) and mAP, as the paper's Table 2 reports.

Protocol (the official Market-1501 evaluation, ``evaluation.m`` + ``compute_AP.m``; DukeMTMC-reID
uses the same code). For a query of identity q seen by camera c, the gallery ranked by distance
is split into

* good:  identity q, camera != c (the true matches to retrieve across cameras);
* junk:  identity -1 (Market-1501 "junk" detections), or identity q seen by camera c (trivial
  same-view matches). Junk is removed from the ranked list, as if it were not in the gallery;
* everything else, including identity 0 (Market-1501 "distractors"), stays as a wrong match.

Queries with no good image are skipped and counted (``num_skipped_queries``), as torchreid
does; the MATLAB code instead scores them AP = 0, CMC = 0 and keeps them in the mean, which
matters only for splits that have such queries (Market-1501 and DukeMTMC-reID have none).

Ranks are 1-based positions in the filtered list. CMC@k is the fraction of valid queries whose
first good image is at rank <= k. Equal distances are broken by gallery index (a stable sort,
like MATLAB's ``sort``), never by the sorting algorithm.

Two average precisions are in use, and they differ slightly, so a report must say which one it
used. With hits i = 1..n_good at filtered ranks r_1 < ... < r_n (1-based):

* ``ap="official"``: Market-1501 ``compute_AP.m`` (and the Python port ``compute_mAP`` in
  Person_reID_baseline_pytorch): trapezoids under the precision-recall curve,
  AP = (1/n_good) sum_i (p_{i-1} + p_i) / 2,  p_i = i / r_i,
  p_{i-1} = (i - 1) / (r_i - 1) the precision one rank above the hit (1 when r_i = 1);
* ``ap="torchreid"``: torchreid ``eval_market1501`` (also fast-reid, reid-strong-baseline),
  the uninterpolated mean of precision at each hit, AP = (1/n_good) sum_i i / r_i.

The computation is vectorised over a chunk of queries, with no per-query Python loop: one
(chunk, gallery) distance block with junk set to +inf, a stable sort per row, the good mask
gathered into rank order, and CMC/AP from the coordinates of its few true entries. Memory is
bounded by ``chunk_size x gallery`` elements whatever the number of queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import torch

from frlr.eval._inputs import (
    as_tensor,
    check_float_matrix,
    check_integer_vector,
    check_positive_int,
    check_ranks,
)

__all__ = ["AP_VARIANTS", "DISTANCE_METRICS", "JUNK_ID", "reid_metrics"]

DISTANCE_METRICS = ("cosine", "euclidean")
AP_VARIANTS = ("official", "torchreid")
JUNK_ID = -1
"""Gallery identity that is never a match nor a mistake (Market-1501 junk detections)."""

_CHUNK_ELEMENTS = 1 << 22
"""Default distance-block budget: about 130 MB of temporaries per chunk (~30 B per element)."""


def _distances(query: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    """(Q, G) distances: cosine 1 - <q, g>/(|q||g|) or euclidean |q - g| on the given rows."""
    inner = query @ gallery.T
    if metric == "cosine":
        query_norm = query.norm(dim=1, keepdim=True)
        gallery_norm = gallery.norm(dim=1)
        return 1.0 - inner / (query_norm * gallery_norm).clamp_min(1e-12)
    squared = query.square().sum(1, keepdim=True) + gallery.square().sum(1) - 2.0 * inner
    return squared.clamp_min_(0.0).sqrt_()


def _chunk_scores(
    distance: torch.Tensor,
    good: torch.Tensor,
    junk: torch.Tensor,
    ranks: tuple[int, ...],
    ap: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CMC hits (C, len(ranks)), AP (C,) and validity (C,) for one chunk of queries.

    Junk is given an infinite distance, so a stable sort puts it after every real image and
    leaves the others in the filtered order: the sorted column + 1 is then the rank r. The
    good images are few, so AP is summed over their (row, column) coordinates only.
    """
    num_queries, num_gallery = distance.shape
    order = torch.sort(distance.masked_fill(junk, float("inf")), dim=1, stable=True).indices
    row, column = good.gather(1, order).nonzero(as_tuple=True)  # row-major, so by rank per row
    num_good = torch.bincount(row, minlength=num_queries)
    valid = num_good > 0
    row_start = num_good.cumsum(0) - num_good
    hit = (torch.arange(row.numel(), device=row.device) - row_start[row] + 1).to(torch.float64)
    rank = (column + 1).to(torch.float64)

    precision = hit / rank  # p_i = i / r_i
    if ap == "official":
        above = torch.where(rank > 1, (hit - 1.0) / (rank - 1.0).clamp_min(1.0), 1.0)
        precision = (above + precision) / 2.0
    ap_sum = torch.zeros(num_queries, dtype=torch.float64, device=distance.device)
    ap_sum.index_add_(0, row, precision)
    average_precision = ap_sum / num_good.clamp_min(1).to(torch.float64)

    first_rank = torch.full((num_queries,), num_gallery + 1, device=distance.device)
    first_rank[valid] = column[row_start[valid]] + 1
    cmc = torch.stack([first_rank <= k for k in ranks], dim=1)
    return cmc, average_precision, valid


def _check_features(
    query_features: torch.Tensor | np.ndarray,
    gallery_features: torch.Tensor | np.ndarray,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature matrices checked, on the query's device in its precision (at least
    float32), L2-normalised when ``normalize``."""
    query = as_tensor(query_features, "query_features")
    gallery = as_tensor(gallery_features, "gallery_features")
    check_float_matrix(query, "query_features")
    check_float_matrix(gallery, "gallery_features")
    if query.shape[0] == 0 or gallery.shape[0] == 0:
        raise ValueError(
            f"query_features and gallery_features need rows, got {query.shape[0]} and "
            f"{gallery.shape[0]}"
        )
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_features have dimension {query.shape[1]} but gallery_features "
            f"{gallery.shape[1]}"
        )
    dtype = torch.promote_types(query.dtype, torch.float32)
    query = query.to(dtype)
    gallery = gallery.to(device=query.device, dtype=dtype)
    if normalize:
        query = torch.nn.functional.normalize(query, dim=1)
        gallery = torch.nn.functional.normalize(gallery, dim=1)
    return query, gallery


class _Labels(NamedTuple):
    """The identities and cameras of the queries and the gallery, int64 on one device."""

    query_ids: torch.Tensor
    gallery_ids: torch.Tensor
    query_cams: torch.Tensor
    gallery_cams: torch.Tensor

    @classmethod
    def checked(
        cls,
        query_ids: torch.Tensor | np.ndarray,
        gallery_ids: torch.Tensor | np.ndarray,
        query_cams: torch.Tensor | np.ndarray,
        gallery_cams: torch.Tensor | np.ndarray,
        query: torch.Tensor,
        gallery: torch.Tensor,
    ) -> _Labels:
        """Each one an integer vector as long as its side's features (``query``, ``gallery``),
        else an error naming it; moved to the query's device."""
        vectors = []
        for name, value, length in (
            ("query_ids", query_ids, query.shape[0]),
            ("gallery_ids", gallery_ids, gallery.shape[0]),
            ("query_cams", query_cams, query.shape[0]),
            ("gallery_cams", gallery_cams, gallery.shape[0]),
        ):
            labels = as_tensor(value, name)
            check_integer_vector(labels, name, length)
            vectors.append(labels.to(device=query.device, dtype=torch.int64))
        return cls(*vectors)


def _score(
    query: torch.Tensor,
    gallery: torch.Tensor,
    labels: _Labels,
    metric: str,
    ap: str,
    ranks: tuple[int, ...],
    step: int,
) -> tuple[torch.Tensor, float, int]:
    """CMC hits per rank, the AP sum and the count of valid queries, ``step`` queries at a
    time: the memory stays ``step x gallery`` elements whatever the number of queries."""
    device = query.device
    gallery_is_junk = labels.gallery_ids == JUNK_ID
    cmc_hits = torch.zeros(len(ranks), dtype=torch.int64, device=device)
    ap_total = torch.zeros((), dtype=torch.float64, device=device)
    num_valid = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, query.shape[0], step):
        stop = min(start + step, query.shape[0])
        same_id = labels.query_ids[start:stop, None] == labels.gallery_ids
        same_cam = labels.query_cams[start:stop, None] == labels.gallery_cams
        junk = gallery_is_junk | (same_id & same_cam)
        good = same_id & ~junk
        distance = _distances(query[start:stop], gallery, metric)
        cmc, average_precision, valid = _chunk_scores(distance, good, junk, ranks, ap)
        cmc_hits += (cmc & valid[:, None]).sum(0)
        ap_total += torch.where(valid, average_precision, 0.0).sum()
        num_valid += valid.sum()
    return cmc_hits, float(ap_total), int(num_valid)


def reid_metrics(
    query_features: torch.Tensor | np.ndarray,
    gallery_features: torch.Tensor | np.ndarray,
    query_ids: torch.Tensor | np.ndarray,
    gallery_ids: torch.Tensor | np.ndarray,
    query_cams: torch.Tensor | np.ndarray,
    gallery_cams: torch.Tensor | np.ndarray,
    metric: str = "cosine",
    ap: str = "official",
    ranks: Iterable[int] = (1, 5, 10),
    chunk_size: int | None = None,
    *,
    normalize: bool = True,
) -> dict[str, float | int]:
    """Single-query CMC and mAP with Market-1501 camera filtering (see the module docstring).

    Features are L2-normalised first (``normalize=True``, the usual re-id practice), so
    ``"cosine"`` (1 - cos) and ``"euclidean"`` (sqrt(2 - 2 cos)) rank identically; with
    ``normalize=False`` euclidean uses the raw features. ``ap`` picks "official"
    (Market-1501 ``compute_AP.m`` trapezoids) or "torchreid" (mean precision at hits).
    ``chunk_size`` queries are scored at once (default: about 4M distance elements per chunk).
    Computation runs on ``query_features``' device in its precision (at least float32).

    Args:
        query_features: float (Q, D) query embeddings, a torch tensor or numpy array.
        gallery_features: float (G, D) gallery embeddings.
        query_ids: integer (Q,) identities of the queries.
        gallery_ids: integer (G,) identities of the gallery; -1 is junk, 0 a distractor.
        query_cams: integer (Q,) camera of each query.
        gallery_cams: integer (G,) camera of each gallery image; a gallery image of the
            query's identity and camera is junk.
        metric: "cosine" or "euclidean".
        ap: "official" or "torchreid" (see the module docstring for both equations).
        ranks: the CMC ranks k to report, each >= 1.
        chunk_size: queries scored at once; None sizes chunks to about 4M distances.
        normalize: L2-normalise the features first.

    Returns:
        ``rank{k}`` for each k in ``ranks`` and ``mAP`` (fractions in [0, 1], averaged over
        valid queries), ``num_valid_queries`` and ``num_skipped_queries``.

    Examples:
        Two queries seen by camera 0; identity 1's true match is ranked second, behind an
        image of identity 2:

        >>> import numpy as np
        >>> from frlr.eval import reid_metrics
        >>> query = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> gallery = np.array([[0.9, 0.1], [0.1, 0.9], [0.05, 1.0]])
        >>> reid_metrics(query, gallery, query_ids=np.array([0, 1]),
        ...              gallery_ids=np.array([0, 1, 2]), query_cams=np.array([0, 0]),
        ...              gallery_cams=np.array([1, 1, 2]), ranks=(1, 2))
        {'rank1': 0.5, 'rank2': 1.0, 'mAP': 0.625, 'num_valid_queries': 2, 'num_skipped_queries': 0}
    """
    if metric not in DISTANCE_METRICS:
        raise ValueError(f"metric must be one of {DISTANCE_METRICS}, got {metric!r}")
    if ap not in AP_VARIANTS:
        raise ValueError(f"ap must be one of {AP_VARIANTS}, got {ap!r}")
    ranks = check_ranks(ranks, "ranks")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    query, gallery = _check_features(query_features, gallery_features, normalize)
    labels = _Labels.checked(query_ids, gallery_ids, query_cams, gallery_cams, query, gallery)
    step = chunk_size or max(1, _CHUNK_ELEMENTS // gallery.shape[0])
    cmc_hits, ap_total, valid_count = _score(query, gallery, labels, metric, ap, ranks, step)
    if valid_count == 0:
        raise ValueError(
            "no query has a valid match (same identity, another camera, identity != -1) "
            "in the gallery; check query_ids/gallery_ids and the camera ids"
        )
    result: dict[str, float | int] = {
        f"rank{k}": float(hits) / valid_count
        for k, hits in zip(ranks, cmc_hits.tolist(), strict=True)
    }
    result["mAP"] = ap_total / valid_count
    result["num_valid_queries"] = valid_count
    result["num_skipped_queries"] = query.shape[0] - valid_count
    return result
