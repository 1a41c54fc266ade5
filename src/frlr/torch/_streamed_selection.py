"""HS-LR's hard selection streamed over class chunks: the exact per-row top-n threshold of logits
that are never held whole.

HS-LR keeps, per row, the n_i negatives of highest logit (n_i = m% of the negatives: a quarter of
10^6 classes). A running top-n merge would hold N x n values and their int64 indices -- most of
a logits-sized tensor -- so the threshold is found by counting instead, in bounded memory:

1. **Sample.** The logits of ~1,000 evenly strided classes bound the threshold's quantile
   q_i = n_i / |N_i| to a band (lo_i, hi_i] (4 standard errors of a sample quantile either side).
2. **Histogram pass.** Over every chunk, count the negatives above hi_i and histogram those in
   the band into B bins by the monotone key floor((z - lo) B / (hi - lo)). The bin b* holding
   the n_i-th largest follows from the counts; it holds ~ K x band / B logits (~100 at K = 10^6).
   A row whose threshold fell outside the band, or whose bin holds more than ``cap`` logits
   (heavy ties, e.g. a zero-initialised classifier), is histogrammed again on its own over the
   narrower range -- the counts verify, so a bad sample costs time, never exactness.
3. The key is monotone in z, so bin b* is the value interval (t', t*] with t* the largest
   float32 whose key is b* (found by bisection on the float's bits). Logits above t* are
   selected, logits at or below t' are not; the few candidates in (t', t*] are collected by the
   gradient pass and resolved exactly afterwards (:func:`resolve_candidates`). When (t', t*]
   holds a single float value the row is a pure tie: threshold t*, tie share e / count, no
   candidates.

Everything is per-row counting, so the result is independent of the chunk size and, with the
counts summed over processes, of how the classes are sharded. Ties at the threshold share the
remaining places equally (the selection is symmetric in tied classes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

BINS = 1024  # histogram bins per row: the candidate bin holds ~ band / BINS of the classes
SAMPLE = 1024  # sampled classes per process for the band
CAP = 1024  # most candidates per row the gradient pass may collect; more refine the histogram
_SIGMAS = 4.0  # half-width of the band, in standard errors of the sample quantile
_MAX_ROUNDS = 10  # float64 has 2^64 values; each round divides the range by ~BINS


_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _ordered(x: Tensor) -> Tensor:
    """float -> int64 whose order is the floats' order (for a bisection over float values)."""
    bits = x.contiguous().view(_INT[x.dtype]).long()
    magnitude = bits & torch.iinfo(_INT[x.dtype]).max
    return torch.where(bits >= 0, bits, -magnitude - 1)


def _from_ordered(o: Tensor, dtype: torch.dtype) -> Tensor:
    """The inverse of :func:`_ordered`."""
    negative = (-(o + 1)) + torch.iinfo(_INT[dtype]).min  # the magnitude with the sign bit set
    return torch.where(o >= 0, o, negative).to(_INT[dtype]).view(dtype)


@dataclass
class Band:
    """Per-row bins of the logits between ``lo`` and ``hi`` (M,): the key floor((z - lo) B /
    (hi - lo)) clamped to [-1, B], -1 below the band and B above it. Monotone in z, so every
    set of keys is an interval of values; nothing else (no mask) decides what lies where."""

    lo: Tensor
    hi: Tensor
    bound: Tensor

    def __post_init__(self) -> None:
        # lo < hi strictly, so the scale is finite; an empty band (lo = hi) gets one value
        self.lo = torch.minimum(self.lo, torch.nextafter(self.hi, self.hi.new_tensor(-torch.inf)))
        self.inv = BINS / (self.hi - self.lo)

    def key(self, z: Tensor, inplace: bool = False) -> Tensor:
        """Float keys in [-1, B]. Same ops, same rounding for a (M, C) chunk and a (M,) probe;
        ``inplace`` overwrites ``z`` (a chunk nothing else reads)."""
        lo = self.lo if z.dim() == 1 else self.lo.unsqueeze(1)
        inv = self.inv if z.dim() == 1 else self.inv.unsqueeze(1)
        shifted = z.sub_(lo) if inplace else z - lo
        return shifted.mul_(inv).floor_().clamp_(-1, BINS)

    def largest_with_key_at_most(self, b: Tensor) -> Tensor:
        """Per row, the largest float x in [-bound, bound] with key(x) <= b (-bound when there
        is none): a bisection over the floats' order, a step per bit, on (M,) vectors."""
        low, high = _ordered(-self.bound), _ordered(self.bound)
        for _ in range(70):
            if not bool((high > low).any()):
                break
            # ceil((low + high) / 2) without overflowing int64 (float64 orders span 2^64)
            mid = (low >> 1) + (high >> 1) + (((low & 1) + (high & 1) + 1) >> 1)
            inside = self.key(_from_ordered(mid, self.lo.dtype)) <= b
            low = torch.where(inside, mid, low)
            high = torch.where(inside, high, mid - 1)
        return _from_ordered(low, self.lo.dtype)


@dataclass
class Selection:
    """Per-row HS-LR selection for the gradient pass, float32 (M,) each.

    Logits above ``threshold`` are selected, logits equal to it with weight ``tie_share``; the
    logits in (``candidate_lo``, ``candidate_hi``] are candidates whose selection is decided
    once they are collected (the threshold's tie share is 0 for them); ``wanted`` is how many of
    the candidates each row selects."""

    threshold: Tensor
    tie_share: Tensor
    candidate_lo: Tensor
    candidate_hi: Tensor
    wanted: Tensor
    expected: int = 0  # candidates over all processes: a bound on what one process collects

    def __post_init__(self) -> None:
        # The candidate interval (lo, hi] as a centre and a half-width wide enough that every
        # candidate passes |z - centre| <= half despite the subtraction's rounding (float64
        # arithmetic, then rounded outwards); rows without candidates get half = -1.
        lo, hi = self.candidate_lo.double(), self.candidate_hi.double()
        has = torch.isfinite(lo) & torch.isfinite(hi)
        centre = torch.where(has, (lo + hi) / 2, 0.0).to(self.candidate_lo.dtype)
        c64 = centre.double()
        half = torch.maximum(hi - c64, c64 - lo) * (1 + 16 * torch.finfo(centre.dtype).eps)
        half = half + torch.finfo(centre.dtype).tiny
        self._centre = centre.unsqueeze(1)
        self._half = torch.where(has, half, -1.0).to(centre.dtype).unsqueeze(1)

    def candidates(
        self, negatives: Tensor, excluded: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """(rows, columns) of a (M, C) chunk's logits to collect, those in (lo, hi] but the
        ``excluded`` (rows, columns): one comparison of |z - centre| finds a superset (half the
        passes of two comparisons and an and), the exact test runs on the few it finds."""
        near = torch.sub(negatives, self._centre).abs_() <= self._half
        near[excluded] = False
        rows, columns = near.nonzero(as_tuple=True)
        values = negatives[rows, columns]
        exact = (values > self.candidate_lo[rows]) & (values <= self.candidate_hi[rows])
        return rows[exact], columns[exact]


Chunks = Callable[[Tensor | None], Iterator[Tensor]]
"""negative_chunks(rows): the logits of the given rows (all when None), chunk by chunk, with
positives (and every entry of a row that selects nothing) set to -inf."""


def find_selection(
    negative_chunks: Chunks,
    sample: Tensor,
    n: Tensor,
    num_negatives: Tensor,
    bound: Tensor,
    reduce_sum: Callable[[Tensor], Tensor],
    reduce_band: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
) -> Selection:
    """The exact selection of the n_i largest negatives of each row.

    Args:
        negative_chunks: see :data:`Chunks`.
        sample: (M, S) logits of strided classes of this process, positives -inf.
        n: (M,) float, negatives to select per row (0: the row selects nothing).
        num_negatives: (M,) float, |N_i| over all classes.
        bound: (M,) float32, a bound on |z| per row (||x_i|| max_k ||w_k|| + max |b|).
        reduce_sum: sums a tensor over processes in place (identity on one process).
        reduce_band: (lo, hi) -> (min lo, max hi) over processes.
    """
    m = n.shape[0]
    inf = torch.full_like(bound, torch.inf)
    threshold, tie_share = inf.clone(), torch.zeros_like(bound)
    candidate_lo, candidate_hi, wanted = inf.clone(), inf.clone(), torch.zeros_like(bound)
    expected = 0
    active = n > 0
    band = _sample_band(sample, n, num_negatives, bound, reduce_band)
    rows = torch.arange(m, device=n.device)
    for _ in range(_MAX_ROUNDS):
        # Every process takes the same branch: the counts and bands are reduced over them.
        if not bool(active.any()):
            break
        index = rows[active]
        part = Band(band.lo[index], band.hi[index], bound[index])
        hist = reduce_sum(_histogram(negative_chunks, index, part))  # keys -1 .. B
        need = n[index].long()
        at_or_above = hist.flip(1).cumsum(1).flip(1)  # #(key >= b), b = -1 .. B
        # the threshold's key: the largest b with #(key >= b) >= need
        b_star = (at_or_above >= need.unsqueeze(1)).sum(1) - 2
        high_miss = b_star == BINS  # the threshold lies above the band
        low_miss = b_star == -1  # ... or below it
        b_star = b_star.clamp(0, BINS - 1)
        in_bin = hist.gather(1, b_star.unsqueeze(1) + 1).squeeze(1)
        above_bin = at_or_above.gather(1, b_star.unsqueeze(1) + 1).squeeze(1) - in_bin
        b_value = b_star.to(bound.dtype)
        t_star = part.largest_with_key_at_most(b_value)  # the bin is the interval (t', t*]
        t_prime = part.largest_with_key_at_most(b_value - 1)
        missed = high_miss | low_miss
        single = (_ordered(t_star) - _ordered(t_prime) <= 1) & ~missed
        small = (in_bin <= CAP) & ~missed & ~single
        done = single | small
        keep = need - above_bin  # places left for the bin's logits
        # pure ties: the bin is one float value, shared equally
        threshold[index] = torch.where(done, t_star, threshold[index])
        tie_share[index] = torch.where(single, keep / in_bin.clamp(min=1), 0.0).to(bound.dtype)
        candidate_lo[index] = torch.where(small, t_prime, candidate_lo[index])
        candidate_hi[index] = torch.where(small, t_star, candidate_hi[index])
        wanted[index] = torch.where(small, keep.to(bound.dtype), wanted[index])
        expected += int(in_bin[small].sum())
        # the rest: a narrower band (the bin) or, after a miss, the side of the band it lies on
        new_lo, new_hi = t_prime, t_star
        if bool(missed.any()):
            top = part.largest_with_key_at_most(torch.full_like(b_value, BINS - 1))
            bottom = part.largest_with_key_at_most(torch.full_like(b_value, -1))
            new_lo = torch.where(high_miss, top, torch.where(low_miss, -bound[index], t_prime))
            new_hi = torch.where(high_miss, bound[index], torch.where(low_miss, bottom, t_star))
        band.lo[index], band.hi[index] = new_lo, new_hi
        active[index] = ~done
    else:
        raise RuntimeError("hard selection did not converge; please report this input")
    return Selection(threshold, tie_share, candidate_lo, candidate_hi, wanted, int(expected))


def _sample_band(
    sample: Tensor,
    n: Tensor,
    num_negatives: Tensor,
    bound: Tensor,
    reduce_band: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
) -> Band:
    """(lo, hi] around the sample's q-quantile, q = n / |N|, 4 standard errors either side."""
    count = torch.isfinite(sample).sum(1).clamp(min=1).float()
    ordered = sample.sort(dim=1, descending=True).values
    q = (n / num_negatives.clamp(min=1)).clamp(0, 1)
    half = _SIGMAS * torch.sqrt(q * (1 - q) / count) + 1.0 / count
    at_hi = torch.floor((q - half) * count).long()
    at_lo = torch.ceil((q + half) * count).long()
    last = count.long() - 1
    hi = ordered.gather(1, torch.minimum(at_hi.clamp(min=0), last).unsqueeze(1))[:, 0]
    lo = ordered.gather(1, torch.minimum(at_lo.clamp(min=0), last).unsqueeze(1))[:, 0]
    hi = torch.where(at_hi >= 0, hi, bound)
    lo = torch.where(at_lo <= last, lo, -bound)
    hi = torch.where(torch.isfinite(hi), hi, bound)
    lo = torch.where(torch.isfinite(lo), lo, -bound)
    lo, hi = reduce_band(lo, hi)
    return Band(lo.clone(), hi.clone(), bound)


def _histogram(negative_chunks: Chunks, index: Tensor, band: Band) -> Tensor:
    """Per row, the count of logits per key -1 .. B (M, B + 2): the keys offset by the row (in
    the float itself while the offsets are exact there) scattered into one count buffer.

    A ``bincount`` per chunk would zero, convert and add an (M, B + 2) array per chunk: as much
    memory traffic as the chunk itself at small d. ``scatter_add_`` adds in place instead."""
    m = index.shape[0]
    width = BINS + 2
    # int32 counts: half the bytes of the all-reduce (a row holds fewer than 2^31 classes)
    counts = torch.zeros(m * width, dtype=torch.int32, device=index.device)
    base = torch.arange(m, dtype=torch.int64, device=index.device).mul_(width).add_(1)
    base = base.unsqueeze(1)
    exact = m * width < 2 ** (1 + (23 if band.lo.dtype == torch.float32 else 52))
    base_float = base.to(band.lo.dtype)
    ones = flat = torch.empty(0, dtype=torch.int32, device=index.device)
    for z in negative_chunks(index):
        key = band.key(z, inplace=True)
        if flat.numel() < key.numel():  # one buffer each: fresh int64 chunks cost page faults
            ones = torch.ones(key.numel(), dtype=torch.int32, device=index.device)
            flat = torch.empty(key.numel(), dtype=torch.int64, device=index.device)
        indices = flat[: key.numel()].view(key.shape)
        if exact:
            indices.copy_(key.add_(base_float))
        else:
            indices.copy_(key).add_(base)
        counts.scatter_add_(0, indices.view(-1), ones[: key.numel()])
    return counts.view(m, width)


def resolve_candidates(
    values: Tensor, rows: Tensor, wanted: Tensor, num_rows: int
) -> tuple[Tensor, Tensor]:
    """Per row, the threshold u and tie share among collected candidates that selects exactly
    ``wanted`` of them: (u (M,), share (M,)); u = +inf where nothing is wanted."""
    u = torch.full((num_rows,), torch.inf, dtype=values.dtype, device=values.device)
    counts = torch.bincount(rows, minlength=num_rows)
    want = wanted.long()
    if bool((want > counts).any()):
        raise RuntimeError("hard selection collected fewer candidates than it counted")
    if values.numel() == 0:
        return u, torch.zeros_like(u)
    order = values.argsort(descending=True, stable=True)
    order = order[rows[order].argsort(stable=True)]
    values, rows = values[order], rows[order]
    starts = counts.cumsum(0) - counts
    has = want > 0
    at = (starts + want - 1).clamp(0, max(values.numel() - 1, 0))
    u = torch.where(has, values[at], u)
    above = torch.bincount(rows, weights=(values > u[rows]).double(), minlength=num_rows)
    equal = torch.bincount(rows, weights=(values == u[rows]).double(), minlength=num_rows)
    share = torch.where(has, (want - above) / equal.clamp(min=1), 0.0).to(values.dtype)
    return u, share
