"""Analytic forward+gradient kernels for the sigmoid-family losses.

Each kernel maps 2-D logits ``z`` (M, K) and targets to per-row losses (M,) and, when asked,
the gradient of those row losses with respect to ``z`` — computed in the same pass, so the
autograd Function keeps exactly one logits-sized tensor (the gradient) for backward.

Numerics: ``-log p = softplus(-z)`` and ``-log(1-p) = softplus(z)``; the gradient at a positive
entry is ``-sigmoid(-z)`` computed from ``z`` itself, never ``sigmoid(z) - 1`` (which rounds to 0
for a confident positive). No ``log(p + eps)``, no one-hot tensor, no sort.

Targets come in two kinds:
* index targets ``y`` (M,) int64 — single-label, one positive per row (ignored rows arrive with
  a valid placeholder class and are masked by the caller);
* dense targets ``t`` (M, K) float — multi-hot (and soft, for LR only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_softplus_out = torch.ops.aten.softplus.out


def softplus(x: Tensor, out: Tensor | None = None) -> Tensor:
    """log(1 + e^x), exact to float precision (PyTorch switches to x itself past x = 20)."""
    if out is None:
        out = torch.empty_like(x)
    return _softplus_out(x, 1, 20, out=out)


def _rowsum(x: Tensor, weight: Tensor | None) -> Tensor:
    """Sum over classes, per-class weighted by a matrix-vector product (no temporary)."""
    return x.sum(1) if weight is None else x @ weight


def _mul_sigmoid_power(x: Tensor, s: Tensor, r: float) -> None:
    """x *= s**r in place; integer r by repeated multiplication (exact, no pow temporary)."""
    if r == int(r) and r <= 4:
        for _ in range(int(r)):
            x.mul_(s)
    else:
        x.mul_(s.pow(r))


# Above this many logits, SS-LR and HS-LR run in row blocks of about _BLOCK elements: their
# temporaries (SS-LR's sigmoid and softplus, HS-LR's top-k values and int64 indices) are then
# block-sized, stay in cache and are recycled by the allocator, so the one logits-sized
# allocation is the gradient. Below the threshold the loop's per-block cost does not pay
# (measured with benchmarks/loss_speed.py). LR keeps a single buffer and gains nothing from it.
_BLOCKED_FROM = 1 << 22
_BLOCK = 1 << 20


def _in_row_blocks(block_kernel, z: Tensor, y: Tensor, weight: Tensor | None, *hyper, need_grad):
    if z.numel() < _BLOCKED_FROM:
        return block_kernel(z, y, weight, *hyper, need_grad=need_grad)
    step = max(1, _BLOCK // z.shape[1])
    rows = z.new_empty(z.shape[0])
    grad = torch.empty_like(z) if need_grad else None
    for start in range(0, z.shape[0], step):
        block = slice(start, start + step)
        rows[block], block_grad = block_kernel(
            z[block], y[block], weight, *hyper, need_grad=need_grad
        )
        if grad is not None:
            grad[block] = block_grad
    return rows, grad


# ---------------------------------------------------------------------------------------------
# LR, Eq. (3): sum_k [ t_k softplus(-z_k) + (1 - t_k) softplus(z_k) ]
# ---------------------------------------------------------------------------------------------


def lr_index(z: Tensor, y: Tensor, weight: Tensor | None, need_grad: bool):
    y1 = y.unsqueeze(1)
    z_pos = z.gather(1, y1)
    terms = softplus(z)
    terms.scatter_(1, y1, softplus(-z_pos))
    rows = _rowsum(terms, weight)
    if not need_grad:
        return rows, None
    grad = torch.sigmoid(z, out=terms)  # reuse the buffer: one logits-sized allocation per call
    grad.scatter_(1, y1, torch.sigmoid(-z_pos).neg_())
    if weight is not None:
        grad.mul_(weight)
    return rows, grad


def lr_dense(z: Tensor, t: Tensor, weight: Tensor | None, need_grad: bool):
    # max(z,0) - t z + log1p(exp(-|z|)): exact elementwise for hard and soft targets alike.
    terms = torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    rows = _rowsum(terms, weight)
    if not need_grad:
        return rows, None
    grad = torch.sigmoid(z, out=terms).sub_(t)
    if weight is not None:
        grad.mul_(weight)
    return rows, grad


# ---------------------------------------------------------------------------------------------
# SS-LR, Eq. (6): mean_{P} softplus(-z) + alpha * sum_{N} sigmoid(z)^r softplus(z)
# d/dz [sigmoid^r softplus] = sigmoid^r * (r (1 - sigmoid) softplus + sigmoid)
# ---------------------------------------------------------------------------------------------


def _ss_lr_index_block(
    z: Tensor, y: Tensor, weight: Tensor | None, r: float, alpha: float, need_grad: bool
):
    y1 = y.unsqueeze(1)
    z_pos = z.gather(1, y1)
    s = torch.sigmoid(z)
    terms = softplus(z)
    terms.scatter_(1, y1, 0.0)  # negatives only from here on
    _mul_sigmoid_power(terms, s, r)  # terms = s^r softplus(z) on negatives
    pos_rows = softplus(-z_pos).squeeze(1)
    if weight is not None:
        pos_rows = pos_rows * weight[y]
    rows = pos_rows + alpha * _rowsum(terms, weight)
    if not need_grad:
        return rows, None
    grad = terms
    if r == 0:
        grad.zero_()
    else:
        grad.mul_(r * alpha).addcmul_(s, grad, value=-1.0)  # r alpha (1 - s) s^r softplus
    s.pow_(r + 1)
    grad.add_(s, alpha=alpha)
    del s
    if weight is not None:
        grad.mul_(weight)
    pos_grad = torch.sigmoid(-z_pos).neg_()
    if weight is not None:
        pos_grad.mul_(weight[y].unsqueeze(1))
    grad.scatter_(1, y1, pos_grad)
    return rows, grad


def ss_lr_index(
    z: Tensor, y: Tensor, weight: Tensor | None, r: float, alpha: float, need_grad: bool
):
    return _in_row_blocks(_ss_lr_index_block, z, y, weight, r, alpha, need_grad=need_grad)


def ss_lr_dense(
    z: Tensor,
    t: Tensor,
    weight: Tensor | None,
    r: float,
    alpha: Tensor,
    pos_scale: Tensor,
    need_grad: bool,
):
    """``alpha`` (M,) and ``pos_scale`` (M,) are per-row: beta/|N_i| and 1/|P_i|."""
    s = torch.sigmoid(z)
    terms = softplus(z)
    terms.addcmul_(terms, t, value=-1.0)  # zero the positives
    _mul_sigmoid_power(terms, s, r)
    pos_terms = softplus(-z).mul_(t)
    rows = pos_scale * _rowsum(pos_terms, weight) + alpha * _rowsum(terms, weight)
    if not need_grad:
        return rows, None
    del pos_terms
    a = alpha.unsqueeze(1)
    grad = terms
    if r == 0:
        grad.zero_()
    else:
        grad.mul_(a * r).addcmul_(s, grad, value=-1.0)
    s.pow_(r + 1).mul_(a)
    s.addcmul_(s, t, value=-1.0)
    grad.add_(s)
    del s
    grad.sub_(torch.sigmoid(-z).mul_(t).mul_(pos_scale.unsqueeze(1)))
    if weight is not None:
        grad.mul_(weight)
    return rows, grad


# ---------------------------------------------------------------------------------------------
# HS-LR, Eq. (5): mean_{P} softplus(-z) + alpha * sum over the n most probable negatives of
# softplus(z). Probability is monotonic in the logit, so the selection is a top-k of logits.
# ---------------------------------------------------------------------------------------------


def hard_negatives_index(z: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The n highest-logit negatives per row: one unsorted top-n over a copy of the logits whose
    positive is set to -inf. Returns (values, indices), both (M, n), and that copy, which the
    caller may reuse as its gradient buffer (the one logits-sized allocation of the loss)."""
    masked = z.detach().clone()
    masked.scatter_(1, y.unsqueeze(1), float("-inf"))
    values, indices = masked.topk(n, dim=1, sorted=False)
    return values, indices, masked


def _hs_lr_index_block(
    z: Tensor, y: Tensor, weight: Tensor | None, n: int, alpha: float, need_grad: bool
):
    y1 = y.unsqueeze(1)
    z_pos = z.gather(1, y1)
    values, indices, buffer = hard_negatives_index(z, y, n)
    selected_weight = None if weight is None else weight[indices]
    negative_terms = softplus(values)
    if selected_weight is not None:
        negative_terms.mul_(selected_weight)
    pos_rows = softplus(-z_pos).squeeze(1)
    if weight is not None:
        pos_rows = pos_rows * weight[y]
    rows = pos_rows + alpha * negative_terms.sum(1)
    if not need_grad:
        return rows, None
    del negative_terms
    selected_grad = torch.sigmoid(values).mul_(alpha)
    if selected_weight is not None:
        selected_grad.mul_(selected_weight)
    grad = buffer.zero_()
    grad.scatter_(1, indices, selected_grad)
    pos_grad = torch.sigmoid(-z_pos).neg_()
    if weight is not None:
        pos_grad.mul_(weight[y].unsqueeze(1))
    grad.scatter_(1, y1, pos_grad)
    return rows, grad


def hs_lr_index(z: Tensor, y: Tensor, weight: Tensor | None, n: int, alpha: float, need_grad: bool):
    return _in_row_blocks(_hs_lr_index_block, z, y, weight, n, alpha, need_grad=need_grad)


def hs_lr_dense(
    z: Tensor,
    t: Tensor,
    weight: Tensor | None,
    m: float,
    beta: float,
    alpha: float | None,
    need_grad: bool,
):
    """Multi-hot: each row keeps n_i = max(1, floor(m% |N_i|)) negatives (0 when |N_i| = 0)."""
    num_classes = z.shape[1]
    num_pos = t.sum(1)
    num_neg = num_classes - num_pos
    n_rows = torch.where(
        num_neg > 0, torch.floor(num_neg * m / 100.0).clamp_(min=1), torch.zeros_like(num_neg)
    )
    k = min(num_classes, max(1, math.floor(m * num_classes / 100.0)))  # static bound on n_i
    masked = z.masked_fill(t.bool(), float("-inf"))
    values, indices = masked.topk(k, dim=1, sorted=True)
    del masked
    keep = torch.arange(k, device=z.device) < n_rows.unsqueeze(1)
    values = values.masked_fill(~keep, 0.0)  # no -inf reaches softplus' gradient
    alpha_rows = beta / n_rows.clamp(min=1) if alpha is None else torch.full_like(n_rows, alpha)
    coef = keep.to(z.dtype) * alpha_rows.unsqueeze(1)
    if weight is not None:
        coef = coef * weight[indices]
    pos_scale = 1.0 / num_pos.clamp(min=1)
    pos_terms = softplus(-z).mul_(t)
    rows = pos_scale * _rowsum(pos_terms, weight) + (softplus(values) * coef).sum(1)
    if not need_grad:
        return rows, None
    del pos_terms
    grad = torch.sigmoid(-z).mul_(t).mul_(pos_scale.unsqueeze(1)).neg_()
    if weight is not None:
        grad.mul_(weight)
    grad.scatter_add_(1, indices, torch.sigmoid(values).mul_(coef))
    return rows, grad


# ---------------------------------------------------------------------------------------------
# The autograd bridge: the kernel has already computed d(row loss)/dz.
# ---------------------------------------------------------------------------------------------


def row_losses(kernel, z: Tensor, *args, divisor: int | None = None) -> Tensor:
    """Run ``kernel`` through autograd when a gradient is wanted, else forward-only.

    With ``divisor`` the rows are summed and divided by it inside the autograd Function, so a
    "mean" or "sum" loss is one graph node with a scalar gradient, not three.
    """
    if z.requires_grad and torch.is_grad_enabled():
        return _RowLossFn.apply(z, kernel, divisor, *args)
    rows, _ = kernel(z, *args, need_grad=False)
    return rows if divisor is None else rows.sum() / divisor


_KEEP_GRAPH_PROBE = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)


def _graph_is_kept() -> bool:
    """Whether this backward pass keeps the graph (retain_graph / create_graph): only then may
    the saved gradient be needed again. Unknown (a private API gone, or inside a compiled graph,
    whose memory the compiler plans) counts as kept."""
    probe = _KEEP_GRAPH_PROBE
    return probe is None or torch.compiler.is_compiling() or bool(probe())


class _RowLossFn(torch.autograd.Function):
    """Per-row losses whose gradient the kernel computed analytically in the forward pass.

    Saves one logits-sized tensor (that gradient); backward scales its rows by the incoming
    per-row gradient, in place unless the graph is kept for another backward: a fresh
    logits-sized buffer per step costs page faults once the allocator returns freed memory to
    the system, which at N = 1024, K = 1000 is more than the arithmetic.
    ``once_differentiable``: no optimiser here needs a Hessian, and saying so loudly beats
    returning a wrong one.
    """

    @staticmethod
    def forward(ctx, z: Tensor, kernel, divisor: int | None, *args):  # type: ignore[override]
        rows, grad = kernel(z, *args, need_grad=True)
        ctx.save_for_backward(grad)
        ctx.divisor = divisor
        ctx.num_extra = len(args) + 2
        return rows if divisor is None else rows.sum() / divisor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        scale = grad_out.unsqueeze(1) if ctx.divisor is None else grad_out / ctx.divisor
        grad = grad * scale if _graph_is_kept() else grad.mul_(scale)
        return (grad,) + (None,) * ctx.num_extra
