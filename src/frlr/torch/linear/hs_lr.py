"""HS-LR (Eq. 5) over chunks: the selection planned by counting (``selection``), then one
sweep that decides every logit on the one value it computes for it.

Per row the plan is a bracket (lo, hi]. The sweep selects its logits above hi, collects those
in (lo, hi] and counts those above hi; at its end, with a = that count, the n - a largest
collected logits are selected (ties at the last one sharing its places, as the materialised
loss's ties: same value, a symmetric subgradient). No value of the plan's passes is compared
with one of the sweep: when a row's count shows the bracket missed its threshold in the sweep's
own values (0 <= n - a <= collected fails), the row is held and the sweep runs again; held rows
-- and the rows the plan could not bracket -- are computed whole by ``held_rows``."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from frlr.catalogue import check_hyperparameters, num_hard_negatives
from frlr.torch import _kernels as kernels
from frlr.torch.linear import selection
from frlr.torch.linear.held_rows import add_held_rows
from frlr.torch.linear.inputs import CHUNK_BYTES
from frlr.torch.linear.problem import Grads, Problem
from frlr.torch.linear.sigmoid import positive_scale
from frlr.torch.linear.sweep import ChunkedLoss

_SPREAD = 8.0
"""delta per row: _SPREAD sqrt(d) u ||x|| max ||w|| + 4 u bound, the most two products of one
logit are expected to differ by (rounding errors add like a random walk; the sweep checks)."""


class HSLRLoss(ChunkedLoss):
    """Eq. (5) over chunks, as the module docstring says."""

    float32_logits = True  # half-precision logits would tie by the thousand at the threshold

    def __init__(self, beta: float, m: float) -> None:
        check_hyperparameters(beta=beta, m=m)
        self.beta, self.m = float(beta), float(m)

    def prepare(self, problem):
        self.pos_scale = positive_scale(problem)
        if problem.multi_label or problem.soft:  # n from the negative mass M = K - sum_k t_k
            n = kernels.num_hard_negatives_rows(problem.num_classes - problem.positive_mass, self.m)
        else:
            n = torch.full_like(
                problem.positive_mass, num_hard_negatives(problem.num_classes - 1, self.m)
            )
        self.n = torch.where(problem.counted, n, 0.0)
        self.neg_scale = torch.where(self.n > 0, self.beta / self.n.clamp(min=1), 0.0)
        bound, delta = _bound(problem)
        ceiling = torch.finfo(problem.dtype).max / 16
        held = (self.n > 0) & ~(torch.isfinite(bound) & (bound <= ceiling))
        found = selection.find_brackets(
            lambda rows: _negative_chunks(problem, rows),
            _sample(problem),
            self.n,
            problem.num_classes - problem.num_certain,  # the candidates, t < 1
            bound,
            delta,
            held,
            problem.exchange,
        )
        self._plan(problem, found.lo, found.hi, found.held, found.expected)

    def _plan(self, problem: Problem, lo: Tensor, hi: Tensor, held: Tensor, expected: int):
        """The sweep's per-row data: brackets, held rows (no bracket, no positive term)."""
        lo, hi = torch.where(held, torch.inf, lo), torch.where(held, torch.inf, hi)
        self.brackets = selection.Brackets(lo, hi, held, expected)
        self.held = held
        self.held_index = held.nonzero()[:, 0]
        self.no_share = torch.zeros_like(hi)
        pos = self.pos_scale
        if self.held_index.numel():
            ones = torch.ones_like(hi)
            pos = torch.where(held, 0.0, pos * ones if isinstance(pos, float) else pos)
        self.sweep_pos_scale = pos

    def start_sweep(self, problem):
        """Candidate buffers sized by the plan, filled chunk by chunk (grown if a row collects
        more than planned): small tensors kept from every chunk would pin the heap between
        the chunk-sized buffers (glibc then grows RSS by megabytes per chunk)."""
        total = self.brackets.expected
        index = torch.empty(total, dtype=torch.int64, device=problem.x.device)
        self._found = [index, torch.empty_like(index), problem.x.new_empty(total)]
        if problem.soft:
            self._found.append(problem.x.new_empty(total))
        self._filled = 0
        self._above = torch.zeros(problem.x.shape[0], dtype=torch.int64, device=problem.x.device)
        self._mask: Tensor | None = None

    def block(self, problem, z, start, stop, need_grad):
        target, present = problem.target_block(start, stop)
        if self.held_index.numel():  # held rows are computed whole, apart
            z.index_fill_(0, self.held_index, 0.0)
        hi = self.brackets.hi
        rows, grad = kernels.hs_lr_block(
            z, target, present, None, self.sweep_pos_scale, self.neg_scale, hi, self.no_share,
            need_grad=need_grad,
        )  # fmt: skip
        certain = problem.certain_in(start, stop)
        self._count_above(z, hi, certain)
        found_rows, found_cols = self.brackets.candidates(z, certain)
        values = z[found_rows, found_cols]
        t = None
        if len(self._found) > 3:  # soft targets: each candidate's t, its negative mass 1 - t
            t = values.new_zeros(values.shape) if target is None else target[found_rows, found_cols]
        self._store(found_rows, found_cols + start, values, t)
        return rows, grad

    def _count_above(self, z: Tensor, hi: Tensor, certain: tuple[Tensor, Tensor]) -> None:
        """Per row, the negatives this chunk selects whole: z > hi, the classes with t = 1
        (never negatives) left out. Counted as a float mask times ones (a matrix-vector
        product, exact below 2^24 per chunk): summing a bool mask costs ~8 times more."""
        if self._mask is None or self._mask.shape != z.shape:
            dtype = z.dtype if z.shape[1] < 2**24 else torch.float64
            self._mask = torch.empty(z.shape, dtype=dtype, device=z.device)
            self._ones = self._mask.new_ones(z.shape[1])
        mask = torch.gt(z, hi[:, None], out=self._mask)
        self._above += (mask @ self._ones).long()
        r, c = certain
        if r.numel():
            over = z[r, c] > hi[r]
            self._above -= torch.bincount(r[over], minlength=z.shape[0])

    def _store(self, rows: Tensor, columns: Tensor, values: Tensor, t: Tensor | None) -> None:
        end = self._filled + rows.numel()
        if end > self._found[0].numel():
            grow = max(end, 2 * self._found[0].numel()) - self._found[0].numel()
            self._found = [torch.cat([b, b.new_empty(grow)]) for b in self._found]
        for buffer, part in zip(self._found, (rows, columns, values, t), strict=False):
            buffer[self._filled : end] = part
        self._filled = end

    def after_sweep(self, problem, rows, scale, grads):
        cand_rows, cand_cols, values, *soft = (t[: self._filled] for t in self._found)
        del self._found
        self._mask = None
        exchange, num_rows = problem.exchange, problem.x.shape[0]
        above = exchange.reduce_sum(self._above)
        every_rows = exchange.gather_ragged(cand_rows)
        every_values = exchange.gather_ragged(values)
        counts = torch.bincount(every_rows, minlength=num_rows)
        bracketed = torch.isfinite(self.brackets.hi)
        wanted = torch.where(bracketed, self.n.long() - above, 0)
        missed = bracketed & ((wanted < 0) | (wanted > counts))
        if bool(missed.any()):  # the sweep's own values disagree with the plan: hold them
            held = self.held | missed
            self._plan(problem, self.brackets.lo, self.brackets.hi, held, self.brackets.expected)
            return False
        u, share = selection.resolve_candidates(every_values, every_rows, wanted, num_rows)
        if values.numel():
            target = soft[0] if soft else None
            self._add_candidates(problem, (cand_rows, cand_cols, values, target), u, share)
            self._candidate_terms(problem, rows, scale, grads)
        if self.held_index.numel():
            scales = (self.pos_scale, self.neg_scale)
            add_held_rows(problem, self.held_index, self.n, scales, rows, scale, grads)
        return True

    def _add_candidates(self, problem, found, u: Tensor, share: Tensor) -> None:
        """This rank's candidates as a padded (M, width) block of the same block function."""
        cand_rows, cand_cols, values, target = found
        num_rows = problem.x.shape[0]
        order = cand_rows.argsort(stable=True)
        cand_rows, cand_cols, values = cand_rows[order], cand_cols[order], values[order]
        counts = torch.bincount(cand_rows, minlength=num_rows)
        place = torch.arange(cand_rows.numel(), device=cand_rows.device)
        place -= (counts.cumsum(0) - counts)[cand_rows]
        block = values.new_full((num_rows, int(counts.max())), -torch.inf)
        block[cand_rows, place] = values
        dense = None
        if target is not None:  # the candidates' targets, in the same layout (padding: t = 0)
            dense = torch.zeros_like(block)
            dense[cand_rows, place] = target[order]
        self._block = (block, dense, u, share, cand_rows, cand_cols, place)

    def _candidate_terms(self, problem, rows: Tensor, scale, grads: Grads | None) -> None:
        block, dense, u, share, cand_rows, cand_cols, place = self._block
        del self._block
        extra, grad = kernels.hs_lr_block(
            block, dense, None, None, 0.0, self.neg_scale, u, share, need_grad=grads is not None
        )
        rows += extra
        if grads is None or grad is None:
            return
        g = grad[cand_rows, place] * scale[cand_rows]
        if grads.bias is not None:
            grads.bias.index_add_(0, cand_cols, g.to(grads.bias.dtype))
        # (candidates, d) temporaries, in slices of about one chunk buffer
        step = max(1, CHUNK_BYTES // (problem.x.element_size() * problem.x.shape[1]))
        for start in range(0, g.numel(), step):
            part = slice(start, start + step)
            r, c, gp = cand_rows[part], cand_cols[part], g[part].unsqueeze(1)
            if grads.features is not None:
                grads.features.index_add_(0, r, gp * problem.weight[c].to(problem.dtype))
            if grads.weight is not None:
                grads.weight.index_add_(0, c, (gp * problem.x[r]).to(grads.weight.dtype))


def _negative_chunks(problem: Problem, rows: Tensor) -> Iterator[Tensor]:
    """The logits of ``rows`` chunk by chunk, the classes with t = 1 at -inf (a plan's pass:
    its values are never compared with the sweep's)."""
    whole = rows.numel() == problem.x.shape[0]
    x = problem.products.x_logits if whole else problem.operand_rows(rows)
    for start, stop in problem.chunks():
        z = problem.logits(start, stop, problem.classifier(start, stop), x)
        r, c = problem.certain_in(start, stop, None if whole else rows)
        z[r, c] = -torch.inf
        yield z


def _sample(problem: Problem) -> Tensor:
    """Logits of ~selection.SAMPLE evenly strided classes of this rank, t = 1 at -inf."""
    stride = -(-problem.local_classes // selection.SAMPLE)
    columns = torch.arange(0, problem.local_classes, stride, device=problem.x.device)
    w = problem.products.classifier(problem.weight[columns])
    bias = None if problem.bias is None else problem.bias[columns]
    z = problem.products.logits(problem.products.x_logits, w, bias)
    local = problem.certain - problem.class_offset
    hit = (local >= 0) & (local < problem.local_classes) & (local % stride == 0)
    r, p = hit.nonzero(as_tuple=True)
    z[r, local[r, p] // stride] = -torch.inf
    return z


def _bound(problem: Problem) -> tuple[Tensor, Tensor]:
    """Per row, float64: |z_ik| <= ||x_i|| max_k ||w_k|| + max_k |b_k| (norms in float64, so
    no square overflows; not finite where x, W or b is not; of the operands as the logits'
    products take them) and delta, how far two products of one logit may be apart (see
    ``_SPREAD``)."""
    peaks = problem.x.new_zeros(2, dtype=torch.float64)
    for start, stop in problem.chunks():
        w = problem.classifier(start, stop)
        norms = torch.linalg.vector_norm(w, dim=1, dtype=torch.float64)
        peaks[0] = torch.maximum(peaks[0], norms.max())
    if problem.bias is not None:
        peaks[1] = problem.bias.abs().max().double()
    peaks = torch.where(torch.isfinite(peaks), peaks, torch.inf)  # NaN survives a MAX as inf
    peaks = problem.exchange.reduce_max(peaks)
    x_norms = torch.linalg.vector_norm(problem.products.x_logits, dim=1, dtype=torch.float64)
    product = x_norms * peaks[0]
    bound = (product + peaks[1]) * (1 + 1e-6)
    u = problem.rounding_unit()
    delta = u * (_SPREAD * problem.x.shape[1] ** 0.5 * product + 4 * bound)
    return bound, delta
