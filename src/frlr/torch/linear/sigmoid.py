"""LR (Eq. 3) and SS-LR (Eq. 6) over chunks: sums over classes of terms that depend on one
logit and on per-row constants (1/|P_i|, beta/|N_i|), so each chunk's part is exact alone and
the block functions of ``frlr.torch._kernels`` (the materialised losses' own) compute it."""

from __future__ import annotations

import torch
from torch import Tensor

from frlr.catalogue import check_hyperparameters
from frlr.torch import _kernels as kernels
from frlr.torch import fused
from frlr.torch.linear.problem import Problem
from frlr.torch.linear.sweep import ChunkedLoss


def per_mass(numerator: float, mass: Tensor) -> Tensor:
    """numerator / mass per row, 0 where the mass is 0 (a term without mass is absent)."""
    return torch.where(mass > 0, numerator / mass.clamp(min=torch.finfo(mass.dtype).tiny), 0.0)


def positive_scale(problem: Problem) -> Tensor | float:
    """1 / sum_k t_k (|P_i| for lists; 0 without positive mass); 1 for index targets."""
    if not (problem.multi_label or problem.soft):
        return 1.0
    return per_mass(1.0, problem.positive_mass)


class LRLoss(ChunkedLoss):
    def block(self, problem, z, start, stop, need_grad):
        target, present = problem.target_block(start, stop)
        return kernels.lr_block(z, target, present, need_grad=need_grad)


class SSLRLoss(ChunkedLoss):
    """Eq. (6) per chunk by the block function; with ``compiled``, index targets in float32 take
    ``frlr.torch.fused.ss_lr_chunk`` instead: the same maths in one compiled loop that
    reads the chunk once and writes the rows and the already-weighted gradient."""

    def __init__(self, r: float, beta: float, compiled: bool = False) -> None:
        check_hyperparameters(beta=beta, r=r)
        self.r, self.beta, self.compiled = float(r), float(beta), self.check_compiled(compiled)

    @staticmethod
    def check_compiled(compiled: object) -> bool:
        if not isinstance(compiled, bool):
            raise TypeError(f"compiled must be True or False, got {compiled!r}")
        return compiled

    def prepare(self, problem):
        self.pos_scale = positive_scale(problem)
        if problem.multi_label or problem.soft:  # beta / M, M = sum_k (1 - t_k)
            self.neg_scale = per_mass(self.beta, problem.num_classes - problem.positive_mass)
        else:
            self.neg_scale = self.beta / (problem.num_classes - 1)
        self.fused = self.compiled and isinstance(self.neg_scale, float)
        self.fused = self.fused and problem.dtype == torch.float32
        if self.fused:  # a tensor, made once: a float would be a constant of the compiled code
            self.alpha = torch.full((1,), self.neg_scale, device=problem.x.device)

    def scaled_block(self, problem, z, start, stop, scale):
        if self.fused:
            column, present = problem.target_block(start, stop)
            y = torch.where(present, column, -1)
            found = fused.ss_lr_chunk(z, y, self.r, self.alpha, scale)
            if found is not None:
                return found
            self.fused = False  # torch.compile is unavailable here (it warned once)
        return super().scaled_block(problem, z, start, stop, scale)

    def block(self, problem, z, start, stop, need_grad):
        target, present = problem.target_block(start, stop)
        return kernels.ss_lr_block(
            z, target, present, None, self.pos_scale, self.neg_scale, self.r, need_grad=need_grad
        )
