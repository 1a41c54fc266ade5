"""SR, the softmax baseline, over chunks: the log-sum-exp online (running max, rescaled sum),
over ranks by a MAX then a SUM; then d/dz = softmax(z) - onehot(y) chunk by chunk. A soft
target t gives -sum_k t_k log softmax(z)_k = (sum_k t_k) lse - sum_k t_k z_k, d/dz =
(sum_k t_k) softmax(z) - t."""

from __future__ import annotations

import torch
from torch import Tensor

from frlr.torch.linear.problem import Problem
from frlr.torch.linear.sweep import ChunkedLoss


class SRLoss(ChunkedLoss):
    """Softmax cross-entropy: the rows come from ``prepare``, the sweep only differentiates."""

    single_label = True
    sweeps_for_rows = False

    def prepare(self, problem):
        """lse = peak + log(total) online; the rows as sum_k t_k (peak - z_k) + (sum_k t_k)
        log(total): each logit's distance to the peak is exact where it matters (Sterbenz),
        whereas lse - z_y would cancel two rounded numbers of the logits' size (2^-9 apart at
        2e4). ``gap`` holds sum_k t_k (peak - z_k) over the classes seen; when the peak grows
        by g, every earlier term grows by g (``mass`` g)."""
        rows = problem.x.shape[0]
        peak = problem.x.new_full((rows,), -torch.inf)
        total, gap, mass = (problem.x.new_zeros(rows) for _ in range(3))
        for start, stop in problem.chunks():
            z = problem.logits(start, stop, problem.classifier(start, stop))
            new_peak = torch.maximum(peak, z.amax(1))
            grow = new_peak - peak  # +inf at the first chunk, where total and mass are 0
            total = total * torch.exp(-grow) + torch.exp(z - new_peak[:, None]).sum(1)
            gap += torch.where(mass > 0, mass * grow, 0.0)
            peak = new_peak
            gap_here, mass_here = self._target_terms(problem, z, peak, start, stop)
            gap += gap_here
            mass += mass_here
        if problem.exchange.sharded:
            shared = problem.exchange.reduce_max(peak.clone())
            grow = shared - peak
            total *= torch.exp(-grow)
            gap += torch.where(mass > 0, mass * grow, 0.0)
            peak = shared
            problem.exchange.reduce_sum(total)
            problem.exchange.reduce_sum(gap)
        self.peak, self.total = peak, total
        if problem.soft:
            self.rows = gap + problem.positive_mass * torch.log(total)
        else:
            self.rows = gap + torch.log(total)

    @staticmethod
    def _target_terms(problem: Problem, z: Tensor, peak: Tensor, start: int, stop: int):
        """This chunk's sum_k t_k (peak - z_k) and sum_k t_k."""
        if problem.soft:
            t = problem.soft_block(start, stop)
            if t is None:
                return 0.0, 0.0
            return torch.linalg.vecdot(torch.sub(peak[:, None], z), t), t.sum(1)
        column, present = problem.index_columns(start, stop)  # each row's class in one chunk
        here = peak - z.gather(1, column[:, None])[:, 0]
        return torch.where(present, here, 0.0), present.to(z.dtype)

    def block(self, problem, z, start, stop, need_grad):
        rows = z.new_zeros(z.shape[0])
        if not need_grad:
            return rows, None
        # softmax = exp(z - peak) / total, the subtraction exact near the peak
        grad = torch.sub(z, self.peak[:, None]).exp_().div_(self.total[:, None])
        if problem.soft:
            grad.mul_(problem.positive_mass[:, None])
            t = problem.soft_block(start, stop)
            return rows, grad if t is None else grad.sub_(t)
        column, present = problem.index_columns(start, stop)
        grad.scatter_add_(1, column[:, None], present[:, None].to(grad.dtype).neg_())
        return rows, grad

    def finish(self, problem, rows):
        return self.rows
