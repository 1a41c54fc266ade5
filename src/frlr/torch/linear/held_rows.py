"""HS-LR's exact fallback for the rows a bracket cannot plan (see
``frlr.torch.linear.selection``): each such row's logits are computed once, whole, and the
materialised loss's own row function (``frlr.torch._kernels.hs_lr_rows``) takes its value,
selection and gradient from those values -- the materialised loss's ties, NaN and inf included.

Rows go in groups whose (rows, K) logits fit ``HELD_BYTES``; class-parallel, every rank
gathers the group's columns and keeps its own classes' part of the gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from frlr.torch import _kernels as kernels
from frlr.torch.linear.inputs import CHUNK_BYTES
from frlr.torch.linear.problem import Grads, Problem

HELD_BYTES = 4 * CHUNK_BYTES
"""The memory of one group's (rows, K) logits."""

Scale = Tensor | float


def add_held_rows(
    problem: Problem,
    held: Tensor,
    n: Tensor,
    scales: tuple[Scale, Tensor],
    rows: Tensor,
    scale: Tensor | None,
    grads: Grads | None,
) -> None:
    """Add the rows ``held`` (indices) to ``rows`` and, with ``grads``, their gradients for
    per-row weights ``scale``. ``n``: negatives per row; ``scales``: (1 / positive mass,
    beta / n) per row."""
    group = max(1, HELD_BYTES // (problem.x.element_size() * problem.num_classes))
    for part in held.split(group):
        whole = problem.exchange.gather_columns(_logits(problem, part))
        target, present = problem.whole_target(part)
        pos, neg = scales
        pos = pos[part] if isinstance(pos, Tensor) else pos
        row_losses, grad = _whole_rows(whole, target, present, (pos, neg[part]), n[part], grads)
        if problem.exchange.rank == 0:  # the rows are summed over the ranks
            rows.index_add_(0, part, row_losses)
        if grads is not None and grad is not None:
            assert scale is not None
            offset = problem.class_offset
            own = grad[:, offset : offset + problem.local_classes] * scale[part, None]
            _add_gradients(problem, part, own, grads)


def _whole_rows(whole: Tensor, target: Tensor, present, scales, n: Tensor, grads):
    """The materialised HS-LR of whole rows, ties at the threshold sharing its places (as the
    sweep's ties); a row with a NaN logit is NaN, as the materialised top-k makes it."""
    tau, share = kernels.hard_negative_threshold(whole, target, n, int(n.max()))
    row_losses, grad = kernels.hs_lr_block(
        whole, target, present, None, *scales, tau, share, need_grad=grads is not None
    )
    nan = torch.isnan(whole).any(1)
    if bool(nan.any()):
        row_losses = torch.where(nan, torch.nan, row_losses)
        if grad is not None:
            grad[nan] = torch.nan
    return row_losses, grad


def _logits(problem: Problem, part: Tensor) -> Tensor:
    """(rows, K_r) logits of these rows against this rank's classes, each computed once."""
    x = problem.operand_rows(part)
    out = problem.x.new_empty(part.numel(), problem.local_classes)
    for start, stop in problem.chunks():
        out[:, start:stop] = problem.logits(start, stop, problem.classifier(start, stop), x)
    return out


def _add_gradients(problem: Problem, part: Tensor, own: Tensor, grads: Grads) -> None:
    """dW_c += G_c^T X, db_c += 1^T G_c, dX[part] += G_c W_c for these rows' gradient G."""
    x = problem.products.x[part]
    features = None if grads.features is None else problem.x.new_zeros(x.shape)
    for start, stop in problem.chunks():
        g = own[:, start:stop]
        weight = None if grads.weight is None else grads.weight[start:stop]
        w = problem.classifier(start, stop)
        problem.products.gradients(g, x, w, weight, features, accumulate=True)
        if grads.bias is not None:
            grads.bias[start:stop] += g.sum(0).to(grads.bias.dtype)
    if grads.features is not None and features is not None:
        grads.features.index_add_(0, part, features)
