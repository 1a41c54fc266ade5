"""HS-LR's hard selection streamed over class chunks: per row, a bracket (lo, hi] of logit
values that holds the n_i-th largest negative and few others, found by counting in bounded
memory. The bracket is a plan, not a decision: the gradient sweep decides every logit on the
one value it computes for it (``frlr.torch.linear.hs_lr``).

1. **Sample.** The logits of ~1,000 evenly strided classes bound the threshold's quantile
   q_i = n_i / |N_i| to a band (4 standard errors of a sample quantile either side).
2. **Histogram passes.** Over every chunk, bin the row's logits in the band into B bins
   (below and above the band: one bin each). The bin holding the n_i-th largest gives the
   bracket: that bin widened by ``delta``, the most two matrix products of one logit may
   differ by (a sweep computes its logits again, in other shapes), so the bracket holds the
   threshold in the sweep's values too. The bins within 2 ``delta`` of it count the candidates
   the sweep will collect; while they are more than ``CAP``, the band narrows to them.
3. A row the passes cannot bracket -- its threshold amid more than ``CAP`` logits within a
   few ``delta`` (a zero, repeated or near-repeated classifier), or a logit bound that is not
   finite (NaN or inf in x, W or b, or an overflow) -- is **held**: computed whole, exactly,
   by ``frlr.torch.linear.held_rows``.

Every count is summed over the processes, so every rank plans alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from frlr.torch.linear.exchange import Exchange

BINS = 1024  # histogram bins per row
SAMPLE = 1024  # sampled classes per process for the band
CAP = 1024  # most candidates per row a bracket may plan to collect
_SIGMAS = 4.0  # half-width of the band, in standard errors of the sample quantile
_MAX_ROUNDS = 8  # each round narrows the band ~BINS-fold, down to ~16 delta

Chunks = Callable[[Tensor], Iterator[Tensor]]
"""negative_chunks(rows): the logits of the given rows chunk by chunk, with the classes that
are never negatives (t = 1) set to -inf."""


class Band:
    """Per-row bins of the values in (lo, hi] (float64 (M,), at least 16 ``delta`` wide): the
    key floor((z - lo) B / (hi - lo)) clamped to [-1, B], -1 below the band and B above it,
    computed in the logits' dtype; ``slack`` bounds the key's rounding in value units."""

    def __init__(self, lo: Tensor, hi: Tensor, delta: Tensor, bound: Tensor, dtype) -> None:
        info = torch.finfo(dtype)
        floor = max(64 * BINS / info.max, 64 * BINS * info.tiny)  # 1 / width stays finite
        self.min_width = (16 * delta).clamp(min=floor)
        width = torch.maximum(hi - lo, self.min_width)
        centre = (lo + hi) / 2
        self.lo_key = (centre - width / 2).to(dtype)
        self.inv_key = (BINS / width).to(dtype)
        self.lo, self.inv = self.lo_key.double(), self.inv_key.double()
        self.width = BINS / self.inv
        self.slack = 2 * info.eps * (bound + self.lo.abs()) + info.eps * self.width

    def key(self, z: Tensor) -> Tensor:
        """Float keys in [-1, B] of a (M, C) chunk, in place (a chunk nothing else reads)."""
        return z.sub_(self.lo_key[:, None]).mul_(self.inv_key[:, None]).floor_().clamp_(-1, BINS)

    def edge(self, b: Tensor) -> Tensor:
        """The value where key b starts, float64."""
        return self.lo + b / self.inv

    def key_of(self, value: Tensor) -> Tensor:
        """The key of float64 values (M,), as an int64 in [-1, B]."""
        return torch.floor((value - self.lo) * self.inv).clamp(-1, BINS).long()


@dataclass
class Brackets:
    """Per row, the bracket (``lo``, ``hi``] in the logits' dtype (+inf: no bracket), whether
    the row is ``held``, and ``expected``: the candidates planned over all processes."""

    lo: Tensor
    hi: Tensor
    held: Tensor
    expected: int

    def __post_init__(self) -> None:
        # (lo, hi] as a centre and a half-width wide enough that every value in it passes
        # |z - centre| <= half despite the subtraction's rounding; no bracket: half = -1.
        lo, hi = self.lo.double(), self.hi.double()
        has = torch.isfinite(lo) & torch.isfinite(hi)
        centre = torch.where(has, (lo + hi) / 2, 0.0).to(self.lo.dtype)
        c64 = centre.double()
        half = torch.maximum(hi - c64, c64 - lo) * (1 + 16 * torch.finfo(centre.dtype).eps)
        half = half + torch.finfo(centre.dtype).tiny
        self._centre = centre.unsqueeze(1)
        self._half = torch.where(has, half, -1.0).to(centre.dtype).unsqueeze(1)

    def candidates(self, z: Tensor, excluded: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """(rows, columns) of a (M, C) chunk's logits in (lo, hi], but the ``excluded``
        (rows, columns): one comparison of |z - centre| finds a superset, the exact test runs
        on the few it finds."""
        near = torch.sub(z, self._centre).abs_() <= self._half
        near[excluded] = False
        rows, columns = near.nonzero(as_tuple=True)
        values = z[rows, columns]
        exact = (values > self.lo[rows]) & (values <= self.hi[rows])
        return rows[exact], columns[exact]


def find_brackets(
    negative_chunks: Chunks,
    sample: Tensor,
    n: Tensor,
    num_negatives: Tensor,
    bound: Tensor,
    delta: Tensor,
    held: Tensor,
    exchange: Exchange,
) -> Brackets:
    """The brackets of the n_i largest negatives of each row.

    Args:
        negative_chunks: see ``Chunks``.
        sample: (M, S) logits of strided classes of this process, t = 1 at -inf.
        n: (M,) float, negatives to select per row (0: the row selects nothing).
        num_negatives: (M,) float, |N_i| over all classes.
        bound: (M,) float64, |z| <= bound per row (finite where not ``held``).
        delta: (M,) float64, the most two computations of one logit of the row may differ by.
        held: (M,) bool, rows already known to need the whole-row computation.
        exchange: the sums and extremes over processes.
    """
    m, dtype = n.shape[0], sample.dtype
    lo_out = torch.full((m,), torch.inf, dtype=dtype, device=n.device)
    hi_out = lo_out.clone()
    held = held.clone()
    active = (n > 0) & ~held
    lo, hi = _sample_band(sample, n, num_negatives, bound, exchange)
    expected = 0
    rows = torch.arange(m, device=n.device)
    for _ in range(_MAX_ROUNDS):
        if not bool(active.any()):  # every process takes the same branch: counts are summed
            break
        index = rows[active]
        band = Band(lo[index], hi[index], delta[index], bound[index], dtype)
        hist = exchange.reduce_sum(histogram(negative_chunks, index, band))
        plan = _plan(band, hist, n[index].long(), delta[index], bound[index])
        done, low, high, count, new_lo, new_hi, stuck = plan
        lo_out[index[done]] = _rounded(low[done], dtype, down=True)
        hi_out[index[done]] = _rounded(high[done], dtype, down=False)
        expected += int(count[done].sum())
        lo[index], hi[index] = new_lo, new_hi
        active[index] = ~done & ~stuck
        held[index[stuck]] = True
    held |= active  # not bracketed in _MAX_ROUNDS: computed whole
    return Brackets(lo_out, hi_out, held, expected)


def _plan(band: Band, hist: Tensor, need: Tensor, delta: Tensor, bound: Tensor):
    """From one round's counts: (done, bracket lo, bracket hi, planned candidates, next band
    lo, next band hi, stuck) per row."""
    at_or_above = hist.flip(1).cumsum(1).flip(1)  # #(key >= b) at column b + 1, b = -1 .. B
    b_star = (at_or_above >= need.unsqueeze(1)).sum(1) - 2  # the threshold's key
    high_miss, low_miss = b_star == BINS, b_star == -1
    b = b_star.clamp(0, BINS - 1).double()
    margin = band.slack + delta
    low, high = band.edge(b) - margin, band.edge(b + 1) + margin
    k_lo = band.key_of(low - margin)  # every value a candidate of the sweep may have here
    k_hi = band.key_of(high + margin)
    beyond = at_or_above.gather(1, (k_hi + 2).clamp(max=BINS + 1)[:, None])[:, 0]
    count = at_or_above.gather(1, (k_lo + 1)[:, None])[:, 0] - torch.where(k_hi < BINS, beyond, 0)
    missed = high_miss | low_miss
    done = ~missed & (count <= CAP)
    new_lo, new_hi = low - margin, high + margin
    narrower = torch.maximum(new_hi - new_lo, band.min_width)  # the next band's width
    stuck = ~missed & ~done & (narrower >= 0.5 * band.width)
    top, bottom = band.edge(torch.full_like(b, BINS)), band.edge(torch.zeros_like(b))
    new_lo = torch.where(high_miss, top - 2 * margin, torch.where(low_miss, -bound, new_lo))
    new_hi = torch.where(high_miss, bound, torch.where(low_miss, bottom + 2 * margin, new_hi))
    return done, low, high, count, new_lo, new_hi, stuck


def _rounded(value: Tensor, dtype: torch.dtype, down: bool) -> Tensor:
    """float64 values in ``dtype``, rounded outwards (down or up)."""
    near = value.to(dtype)
    if dtype == torch.float64:
        return near
    towards = near.new_tensor(-torch.inf if down else torch.inf)
    outside = near.double() > value if down else near.double() < value
    return torch.where(outside, torch.nextafter(near, towards), near)


def _sample_band(
    sample: Tensor, n: Tensor, num_negatives: Tensor, bound: Tensor, exchange: Exchange
) -> tuple[Tensor, Tensor]:
    """(lo, hi] around the sample's q-quantile, q = n / |N|, 4 standard errors either side,
    float64, widened to every process's band."""
    count = torch.isfinite(sample).sum(1).clamp(min=1).float()
    ordered = sample.sort(dim=1, descending=True).values.double()
    q = (n / num_negatives.clamp(min=1)).clamp(0, 1)
    half = _SIGMAS * torch.sqrt(q * (1 - q) / count) + 1.0 / count
    at_hi = torch.floor((q - half) * count).long()
    at_lo = torch.ceil((q + half) * count).long()
    last = count.long() - 1
    hi = ordered.gather(1, torch.minimum(at_hi.clamp(min=0), last).unsqueeze(1))[:, 0]
    lo = ordered.gather(1, torch.minimum(at_lo.clamp(min=0), last).unsqueeze(1))[:, 0]
    hi = torch.where((at_hi >= 0) & torch.isfinite(hi), hi, bound)
    lo = torch.where((at_lo <= last) & torch.isfinite(lo), lo, -bound)
    finite = torch.isfinite(bound)
    lo = torch.where(finite, torch.minimum(lo, hi), 0.0)
    hi = torch.where(finite, hi, 0.0)
    return exchange.reduce_min(lo.clone()), exchange.reduce_max(hi.clone())


def histogram(negative_chunks: Chunks, index: Tensor, band: Band) -> Tensor:
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
    exact = m * width < 2 ** (1 + (23 if band.lo_key.dtype == torch.float32 else 52))
    base_float = base.to(band.lo_key.dtype)
    ones = flat = torch.empty(0, dtype=torch.int32, device=index.device)
    for z in negative_chunks(index):
        key = band.key(z)
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
    ``wanted`` (0 <= wanted <= the row's candidates) of them: (u (M,), share (M,)); u = +inf
    where nothing is wanted."""
    u = torch.full((num_rows,), torch.inf, dtype=values.dtype, device=values.device)
    if values.numel() == 0:
        return u, torch.zeros_like(u)
    counts = torch.bincount(rows, minlength=num_rows)
    want = wanted.long()
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
