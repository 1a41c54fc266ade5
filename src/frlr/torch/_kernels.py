"""One per-block kernel per sigmoid-family loss: row losses and their gradient, in one pass.

For a block of logits ``z`` (M, C) -- whole rows, a row block, or a column chunk of a K-class
problem (the classes [c0, c0 + C)) -- each loss's block function returns the block's per-row
partial losses (M,) and, when asked, their gradient with respect to ``z`` (M, C). Every term
of these losses is a function of its own logit times per-row constants, so summing a block
function over column chunks gives the whole-row result exactly (up to float round-off):

* LR (Eq. 3):    pos_scale sum_k t_k softplus(-z_k) + neg_scale sum_k (1 - t_k) softplus(z_k)
* SS-LR (Eq. 6): the same with the negative term weighted by p_k^r, p = sigmoid(z)
* HS-LR (Eq. 5): the same with the negative term weighted by a selection sel_k in [0, 1]

each term times the class weight w_k. The per-row constants are passed in, never recomputed
from the block: ``pos_scale`` = 1/|P_i| (soft: 1 / sum_k t_k, 0 when that is 0),
``neg_scale`` = beta/|N_i| (SS-LR; soft: beta / sum_k (1 - t_k)) or beta/n_i (HS-LR), and for
HS-LR the per-row ``threshold`` (the n_i-th largest candidate logit of the whole row) with an
optional ``tie_share``. The eager losses, their row-blocked path, the compiled path
(``fused.py``), the NCD diagnostics and the logits-free chunked losses all call these.

Targets, in one of three forms:

* index: ``target`` int64 (M,), the local column of the row's positive in this block, and
  ``present`` bool (M,) or None: rows with ``present`` False have no positive in this block
  (their ``target`` entry is any valid placeholder column). None means every row's positive is
  here. Ignored rows of a loss also arrive with a placeholder and are masked by the caller;
* dense: ``target`` float (M, C) in [0, 1]: multi-hot, or soft -- class k carries positive mass
  t_k and negative mass 1 - t_k (``present`` must be None);
* None: no row has a positive in this block (every entry is a negative).

``weight`` is the per-class weight slice (C,), a per-entry weight (M, C) (used for gathered
blocks, such as HS-LR's selected negatives) or None.

Numerics: ``-log p = softplus(-z)`` and ``-log(1-p) = softplus(z)``; the gradient at a positive
entry is ``-sigmoid(-z)`` computed from ``z`` itself, never ``sigmoid(z) - 1`` (which rounds to 0
for a confident positive). No ``log(p + eps)``, no one-hot tensor, no sort. Memory: ``out`` (or
one fresh logits-sized tensor) holds the negative terms and then becomes the gradient; the
other temporaries are per-row, or (dense targets, SS-LR's sigmoid) block-sized.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_softplus_out = torch.ops.aten.softplus.out

Scale = float | Tensor  # a Python float for every row, or a (M,) per-row tensor
BlockResult = tuple[Tensor, Tensor | None]
# A loss's negative-term maths: negative(z, out) returns the negative terms (in ``out`` when
# given, else in one fresh logits-sized tensor) and the derivative maker, which turns that
# same buffer into scale * d(term)/dz in place -- times ``mass`` (M, C) when given, in which
# case the caller has already multiplied the terms by that mass in place.
Derivative = Callable[[Tensor, Scale, Tensor | None], Tensor]
Negative = Callable[[Tensor, Tensor | None], tuple[Tensor, Derivative]]


def _differentiable(x: Tensor) -> bool:
    """Whether ``x`` is being differentiated by autograd: the block functions' differentiable
    mode (second derivatives, see ``_RowLossFn``), where an ``out=`` call cannot be."""
    return x.requires_grad and torch.is_grad_enabled()


def softplus(x: Tensor, out: Tensor | None = None) -> Tensor:
    """log(1 + e^x), exact to float precision (PyTorch switches to x itself past x = 20).

    Into ``out`` (or one fresh tensor) by the ``out=`` operator; under autograd (``x``
    requires grad) by ``F.softplus``, the same values, which autograd can differentiate."""
    if out is None:
        if _differentiable(x):
            return torch.nn.functional.softplus(x, 1, 20)
        out = torch.empty_like(x)
    return _softplus_out(x, 1, 20, out=out)


def rowsum(x: Tensor, weight: Tensor | None) -> Tensor:
    """Sum over classes, weighted by a (C,) or (M, C) weight without a logits-sized temporary
    (a matrix-vector or a batched dot product). Public: the fused losses
    (``frlr.torch.fused``) weight their rows with it too."""
    if weight is None:
        return x.sum(1)
    if weight.dim() == 1:
        return x @ weight
    return torch.bmm(x.unsqueeze(1), weight.unsqueeze(2)).view(-1)


def _scaled_(x: Tensor, scale: Scale) -> Tensor:
    """x *= scale in place, per row; a Python 1.0 costs nothing."""
    if isinstance(scale, Tensor):
        return x.mul_(scale.unsqueeze(1) if x.dim() == 2 else scale)
    return x if scale == 1.0 else x.mul_(scale)


def _is_zero(scale: Scale) -> bool:
    """A Python 0.0 scale switches a term off (the diagnostics' positive / negative split)."""
    return not isinstance(scale, Tensor) and scale == 0.0


# ---------------------------------------------------------------------------------------------
# The positive term, shared by the three losses: t_k softplus(-z_k), gradient -t_k sigmoid(-z_k).
# ---------------------------------------------------------------------------------------------


def _positive_index(
    z_pos: Tensor, w_pos: Tensor | None, scale: Scale, present: Tensor | None, need_grad: bool
) -> BlockResult:
    """Per row, the positive entry's scaled term (M,) and its gradient (M, 1)."""
    if _is_zero(scale):
        zero = torch.zeros_like(z_pos)
        return zero.squeeze(1), zero if need_grad else None
    rows = _scaled_(softplus(-z_pos), scale)
    if w_pos is not None:
        rows.mul_(w_pos)
    rows = rows.squeeze(1)
    if present is not None:
        rows = torch.where(present, rows, 0.0)
    if not need_grad:
        return rows, None
    grad = _scaled_(torch.sigmoid(-z_pos).neg_(), scale)
    if w_pos is not None:
        grad.mul_(w_pos)
    return rows, grad


def _put_positive(dst: Tensor, y1: Tensor, value: Tensor | float, present: Tensor | None):
    """dst[i, y_i] = value_i for the rows whose positive is in this block."""
    if present is not None:
        if not isinstance(value, Tensor):
            value = torch.full_like(y1, value, dtype=dst.dtype)
        value = torch.where(present.unsqueeze(1), value, dst.gather(1, y1))
    dst.scatter_(1, y1, value)


def _index_block(
    z: Tensor,
    y: Tensor | None,
    present: Tensor | None,
    weight: Tensor | None,
    pos_scale: Scale,
    neg_scale: Scale,
    negative: Negative,
    need_grad: bool,
    out: Tensor | None,
) -> BlockResult:
    """Index (or no) targets: every entry computed as a negative, the positive column then
    overwritten by the positive term -- no mask, no one-hot."""
    if y is not None:
        y1 = y.unsqueeze(1)
        z_pos = z.gather(1, y1)
    grad = None
    if _is_zero(neg_scale):
        rows = z.new_zeros(z.shape[0])
        if need_grad:
            grad = out.zero_() if out is not None else torch.zeros_like(z)
    else:
        terms, derivative = negative(z, out)
        if y is not None:
            _put_positive(terms, y1, 0.0, present)  # negatives only from here on
        rows = _scaled_(rowsum(terms, weight), neg_scale)
        if need_grad:
            grad = derivative(terms, neg_scale, None)
            if weight is not None:
                grad.mul_(weight)
    if y is not None:
        if weight is None:
            w_pos = None
        else:
            w_pos = (weight[y] if weight.dim() == 1 else weight.gather(1, y1).squeeze(1))[:, None]
        pos_rows, pos_grad = _positive_index(z_pos, w_pos, pos_scale, present, need_grad)
        rows = rows + pos_rows
        if need_grad:
            _put_positive(grad, y1, pos_grad, present)
    return rows, grad


def _dense_block(
    z: Tensor,
    t: Tensor,
    weight: Tensor | None,
    pos_scale: Scale,
    neg_scale: Scale,
    negative: Negative,
    need_grad: bool,
    out: Tensor | None,
) -> BlockResult:
    """Dense (multi-hot or soft) targets: class k's positive term weighted by t_k, its negative
    term by 1 - t_k."""
    rows = z.new_zeros(z.shape[0])
    grad = None
    buffer = out
    if not _is_zero(neg_scale):
        terms, derivative = negative(z, buffer)
        buffer = None
        mass = torch.sub(1.0, t)  # the negative mass 1 - t, class-weighted
        if weight is not None:
            mass.mul_(weight)
        rows = _scaled_(terms.mul_(mass).sum(1), neg_scale)
        if need_grad:
            grad = derivative(terms, neg_scale, mass)
        del mass
    if not _is_zero(pos_scale):
        mass = t if weight is None else t * weight
        positive = softplus(-z, buffer if grad is None else None).mul_(mass)
        rows = rows + _scaled_(positive.sum(1), pos_scale)
        if need_grad:
            pos_grad = torch.sigmoid(-z, out=positive).mul_(mass)
            grad = (
                _scaled_(pos_grad.neg_(), pos_scale)
                if grad is None
                else grad.sub_(_scaled_(pos_grad, pos_scale))
            )
    if need_grad and grad is None:
        grad = out.zero_() if out is not None else torch.zeros_like(z)
    return rows, grad


def _block(
    z: Tensor,
    target: Tensor | None,
    present: Tensor | None,
    weight: Tensor | None,
    pos_scale: Scale,
    neg_scale: Scale,
    negative: Negative,
    need_grad: bool,
    out: Tensor | None,
) -> BlockResult:
    if target is not None and target.is_floating_point():
        if present is not None:
            raise ValueError("present applies to index targets only; a dense target has none")
        rows, grad = _dense_block(z, target, weight, pos_scale, neg_scale, negative, need_grad, out)
    else:
        rows, grad = _index_block(
            z, target, present, weight, pos_scale, neg_scale, negative, need_grad, out
        )
    return rows, grad  # with ``out``, every path has written the gradient into it


# ---------------------------------------------------------------------------------------------
# LR, Eq. (3): sum_k [ t_k softplus(-z_k) + (1 - t_k) softplus(z_k) ]
# d/dz softplus(z) = sigmoid(z)
# ---------------------------------------------------------------------------------------------


def _masked_(x: Tensor, mass: Tensor | None) -> Tensor:
    return x if mass is None else x.mul_(mass)


def _lr_negative(z: Tensor, out: Tensor | None) -> tuple[Tensor, Derivative]:
    """-log(1 - p_k) = softplus(z_k); derivative sigmoid(z_k)."""

    def derivative(buffer: Tensor, scale: Scale, mass: Tensor | None) -> Tensor:
        return _masked_(_scaled_(torch.sigmoid(z, out=buffer), scale), mass)

    return softplus(z, out), derivative


def lr_block(
    z: Tensor,
    target: Tensor | None,
    present: Tensor | None = None,
    weight: Tensor | None = None,
    pos_scale: Scale = 1.0,
    neg_scale: Scale = 1.0,
    *,
    need_grad: bool = True,
    out: Tensor | None = None,
) -> BlockResult:
    """LR's block: rows_i = sum_k w_k [ps_i t_k softplus(-z_k) + ns_i (1 - t_k) softplus(z_k)].

    The paper's LR has ps = ns = 1 (a 0.0 switches a part off, for the diagnostics' split).
    Returns (rows (M,), d rows / dz (M, C) or None); see the module docstring for the forms.
    Dense targets at ps = ns = 1 without ``out`` take torch's fused elementwise binary
    cross-entropy, the same terms in one pass (half the time of the general dense path).
    """
    dense = target is not None and target.is_floating_point()
    unit = not isinstance(pos_scale, Tensor) and not isinstance(neg_scale, Tensor)
    if dense and out is None and present is None and unit and pos_scale == neg_scale == 1.0:
        terms = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
        rows = rowsum(terms, weight)
        if not need_grad:
            return rows, None
        grad = torch.sigmoid(z, out=terms).sub_(target)  # d/dz = sigmoid(z) - t
        return rows, grad if weight is None else grad.mul_(weight)
    return _block(z, target, present, weight, pos_scale, neg_scale, _lr_negative, need_grad, out)


# ---------------------------------------------------------------------------------------------
# SS-LR, Eq. (6): ps sum_k t_k softplus(-z_k) + ns sum_k (1 - t_k) p_k^r softplus(z_k),
# ps = 1 / sum_k t_k, ns = beta / sum_k (1 - t_k) (|P_i| and |N_i| for {0, 1} targets).
# d/dz [s^r softplus(z)] = s^r (r (1 - s) softplus(z) + s),  s = sigmoid(z)
# ---------------------------------------------------------------------------------------------


def ss_lr_negative_value_(softplus_z: Tensor, s: Tensor, r: float, inplace: bool = True):
    """SS-LR's negative term s^r softplus(z); in place on ``softplus_z`` unless ``inplace`` is
    False (the compiled path, whose compiler fuses out-of-place arithmetic best)."""
    if r == int(r) and r <= 4:  # integer r by repeated multiplication (exact, no pow temporary)
        for _ in range(int(r)):
            softplus_z = softplus_z.mul_(s) if inplace else softplus_z * s
        return softplus_z
    return softplus_z.mul_(s.pow(r)) if inplace else softplus_z * s.pow(r)


def ss_lr_negative_derivative_(
    value: Tensor,
    s: Tensor,
    r: float,
    scale: Scale,
    mass: Tensor | None = None,
    inplace: bool = True,
) -> Tensor:
    """scale * d/dz [s^r softplus(z)] = scale (r (1 - s) value + s^(r+1)), value = s^r softplus(z);
    in place on ``value`` and ``s`` (consumed) unless ``inplace`` is False. The scale is folded
    into the passes that need it. With ``mass`` the value arrives already times the mass, and
    the result is the derivative times the mass."""
    if isinstance(scale, Tensor):
        scale = scale.unsqueeze(1)
    mul, addcmul, pow_, add = (
        (Tensor.mul_, Tensor.addcmul_, Tensor.pow_, Tensor.add_)
        if inplace
        else (torch.mul, torch.addcmul, torch.pow, torch.add)
    )
    if r == 0:
        value = mul(value, 0.0)
    else:
        value = mul(value, scale * r)
        value = addcmul(value, s, value, value=-1.0)
    s = pow_(s, int(r) + 1 if r == int(r) else r + 1)  # an int power compiles to products
    if mass is not None:
        s = mul(s, mass)
    if isinstance(scale, Tensor):
        return add(value, mul(s, scale))
    return add(value, s, alpha=scale)


def ss_lr_negative(r: float) -> Negative:
    """SS-LR's negative term and its derivative, in place on one buffer."""

    def negative(z: Tensor, out: Tensor | None) -> tuple[Tensor, Derivative]:
        s = torch.sigmoid(z)
        terms = ss_lr_negative_value_(softplus(z, out), s, r)

        def derivative(value: Tensor, scale: Scale, mass: Tensor | None) -> Tensor:
            nonlocal s
            grad = ss_lr_negative_derivative_(value, s, r, scale, mass)
            s = None  # freed before the caller's next allocation, as the allocator recycles it
            return grad

        return terms, derivative

    return negative


def ss_lr_block(
    z: Tensor,
    target: Tensor | None,
    present: Tensor | None = None,
    weight: Tensor | None = None,
    pos_scale: Scale = 1.0,
    neg_scale: Scale = 1.0,
    r: float = 2.0,
    *,
    need_grad: bool = True,
    out: Tensor | None = None,
) -> BlockResult:
    """SS-LR's block: rows_i = sum_k w_k [ps_i t_k softplus(-z_k)
    + ns_i (1 - t_k) sigmoid(z_k)^r softplus(z_k)].

    Soft targets generalise Eq. (6) by the masses: ps = 1 / sum t (0 when sum t = 0) and
    ns = beta / M, M = sum (1 - t) (0 when M = 0); {0, 1} targets give Eq. (6) exactly.
    """
    return _block(
        z, target, present, weight, pos_scale, neg_scale, ss_lr_negative(r), need_grad, out
    )


# ---------------------------------------------------------------------------------------------
# HS-LR, Eq. (5): ps sum_k t_k softplus(-z_k) + ns sum_{k in S} (1 - t_k) softplus(z_k),
# S the n most probable negatives (t_k < 1) of the whole row, ns = beta / n.
# Probability is monotonic in the logit, so S is the n largest logits: per block it is
# sel_k = [z_k > tau] + share [z_k = tau] for the row's threshold tau (its n-th largest
# candidate logit) and share = (n - #{z > tau}) / #{z = tau}, independent of the chunking.
# ---------------------------------------------------------------------------------------------


def _selection(z: Tensor, threshold: Tensor | None, tie_share: Tensor | None) -> Tensor | None:
    """sel = [z > tau] + share [z = tau] as a float (M, C) mask (None: select all).

    [z > tau] is sign(z - tau) clamped at 0: IEEE subtraction keeps the sign and is zero only
    when z = tau; that costs half of a comparison to bool and its conversion. The tie term is
    added only when some row shares its threshold."""
    if threshold is None:
        return None
    tau = threshold.unsqueeze(1)
    if tie_share is None:
        return (z >= tau).to(z.dtype)
    if bool(torch.isneginf(threshold).any()):  # -inf - -inf would be NaN: compare instead
        return (z > tau).to(z.dtype).add_((z == tau).to(z.dtype).mul_(tie_share.unsqueeze(1)))
    selected = torch.sub(z.detach(), tau).sign_().clamp_(min=0.0)
    if not bool(tie_share.any()):
        return selected
    return selected.add_((z == tau).to(z.dtype).mul_(tie_share.unsqueeze(1)))


def hs_lr_negative(threshold: Tensor | None, tie_share: Tensor | None) -> Negative:
    """HS-LR's negative term sel_k softplus(z_k) and its derivative sel_k sigmoid(z_k)."""

    def negative(z: Tensor, out: Tensor | None) -> tuple[Tensor, Derivative]:
        selected = _selection(z, threshold, tie_share)
        terms = softplus(z, out)
        if selected is not None:
            terms.mul_(selected)

        def derivative(buffer: Tensor, scale: Scale, mass: Tensor | None) -> Tensor:
            grad = torch.sigmoid(z, out=buffer)
            if selected is not None:
                grad.mul_(selected)
            return _masked_(_scaled_(grad, scale), mass)

        return terms, derivative

    return negative


def hs_lr_block(
    z: Tensor,
    target: Tensor | None,
    present: Tensor | None = None,
    weight: Tensor | None = None,
    pos_scale: Scale = 1.0,
    neg_scale: Scale = 1.0,
    threshold: Tensor | None = None,
    tie_share: Tensor | None = None,
    *,
    need_grad: bool = True,
    out: Tensor | None = None,
) -> BlockResult:
    """HS-LR's block: rows_i = sum_k w_k [ps_i t_k softplus(-z_k)
    + ns_i sel_k (1 - t_k) softplus(z_k)].

    ``threshold`` (M,): the row's n_i-th largest candidate logit (see
    ``hard_negative_threshold``); entries above it are selected, entries equal to it with
    weight ``tie_share`` (M,) -- or fully when ``tie_share`` is None. ``threshold`` None selects
    every negative of the block (a block of already-selected, gathered negatives).

    Soft targets generalise Eq. (5): n = max(1, floor(m M / 100)), M = sum (1 - t), S the n
    largest logits among classes with t < 1, each weighted by its negative mass 1 - t_k;
    ps = 1 / sum t, ns = beta / n. {0, 1} targets give Eq. (5) exactly.
    """
    return _block(
        z,
        target,
        present,
        weight,
        pos_scale,
        neg_scale,
        hs_lr_negative(threshold, tie_share),
        need_grad,
        out,
    )


def hard_negatives_index(
    z: Tensor, y: Tensor, n: int, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The n highest-logit negatives per row: one unsorted top-n over a copy of the logits whose
    positive is set to -inf. Returns (values, indices), both (M, n), and that copy, which the
    caller may reuse as its gradient buffer (the one logits-sized allocation of the loss)."""
    masked = z.detach().clone() if out is None else out.copy_(z.detach())
    masked.scatter_(1, y.unsqueeze(1), float("-inf"))
    values, indices = masked.topk(n, dim=1, sorted=False)
    return values, indices, masked


def num_hard_negatives_rows(num_negative: Tensor, m: float) -> Tensor:
    """n_i = max(1, floor(m M_i / 100)), 0 where M_i = 0 (``frlr.catalogue.num_hard_negatives``'s
    rounding, per row, for a real negative mass M_i)."""
    n = torch.floor(num_negative * m / 100.0).clamp_(min=1)
    return torch.where(num_negative > 0, n, torch.zeros_like(n))


def _candidates(z: Tensor, target: Tensor) -> Tensor:
    """A copy of z with the non-candidates of hard selection (positives, t = 1) set to -inf."""
    if target.is_floating_point():
        return z.detach().masked_fill(target >= 1, float("-inf"))
    return z.detach().clone().scatter_(1, target.unsqueeze(1), float("-inf"))


def hard_negative_threshold(z: Tensor, target: Tensor, n: Tensor, bound: int):
    """Whole rows' HS-LR selection as per-row data: (threshold, tie_share), both (M,).

    ``n`` (M,) counts the negatives to select per row (at most ``bound``); rows with n = 0
    select nothing (threshold +inf). Used with ``hs_lr_block``, the selection is exactly
    the n largest candidate logits, ties at the threshold sharing the remaining places.
    """
    masked = _candidates(z, target)
    values = masked.topk(bound, dim=1, sorted=True).values
    place = (n.long() - 1).clamp(min=0).unsqueeze(1)
    tau = values.gather(1, place).squeeze(1)
    tau = torch.where(n > 0, tau, float("inf"))
    greater = (values > tau.unsqueeze(1)).sum(1)
    equal = (masked == tau.unsqueeze(1)).sum(1).clamp(min=1)
    return tau, (n - greater) / equal


def hs_lr_rows(
    z: Tensor,
    target: Tensor,
    present: Tensor | None,
    weight: Tensor | None,
    pos_scale: Scale,
    neg_scale: Scale,
    n: int | Tensor,
    bound: int,
    *,
    need_grad: bool,
    out: Tensor | None = None,
) -> BlockResult:
    """Materialised HS-LR over whole rows: one top-k gathers the selected negatives, and
    ``hs_lr_block`` runs on that gathered block (only n of K entries pay the softplus and
    sigmoid) and on the positives; its gradient is scattered back into one buffer.

    ``n``: an int for index targets, or per-row counts (M,) below ``bound`` for dense ones.
    """
    if target.is_floating_point():
        masked = _candidates(z, target)
        values, indices = masked.topk(bound, dim=1, sorted=True)
        keep = (torch.arange(bound, device=z.device) < n.unsqueeze(1)).to(z.dtype)
        values = values.masked_fill_(keep == 0, 0.0)  # no -inf reaches softplus' gradient
        selected_target = target.gather(1, indices)
        selected_weight = keep if weight is None else keep.mul_(weight[indices])
        buffer = masked if out is None else out
        if _differentiable(z):  # the selected logits, through the graph (not the detached copy)
            values, buffer = torch.where(keep > 0, z.gather(1, indices), 0.0), None
    else:
        values, indices, buffer = hard_negatives_index(z, target, n, out)
        if _differentiable(z):
            values = z.gather(1, indices)
        selected_target = None
        selected_weight = None if weight is None else weight[indices]
    negative_rows, negative_grad = hs_lr_block(
        values, selected_target, None, selected_weight, 0.0, neg_scale, need_grad=need_grad
    )
    rows, grad = hs_lr_block(
        z, target, present, weight, pos_scale, 0.0, need_grad=need_grad, out=buffer
    )
    if grad is not None:
        grad.scatter_add_(1, indices, negative_grad)
    return rows + negative_rows, grad


# ---------------------------------------------------------------------------------------------
# Row blocks: above this many logits the block function runs on row blocks of about _BLOCK
# elements, writing its gradient straight into the rows of one logits-sized buffer. Its
# temporaries (SS-LR's sigmoid, HS-LR's top-k values and int64 indices) are then block-sized,
# stay in cache and are recycled by the allocator. Below the threshold the loop's per-block
# cost does not pay (measured with python -m benchmarks.loss_speed).
# ---------------------------------------------------------------------------------------------

_BLOCKED_FROM = 1 << 22
_BLOCK = 1 << 20


def in_row_blocks(block, z: Tensor, target, present, weight, *rest, need_grad: bool):
    """``block(z, target, present, weight, *rest)`` over row blocks of a big input. Every
    tensor argument is per-row and cut with the rows, except a per-class (C,) ``weight``.
    LR runs whole: it keeps a single buffer and gains nothing from blocks (measured), while
    each block's operators cost a thread synchronisation on a busy machine."""
    if z.numel() < _BLOCKED_FROM or block is lr_block:
        return block(z, target, present, weight, *rest, need_grad=need_grad)
    step = max(1, _BLOCK // z.shape[1])
    rows = z.new_empty(z.shape[0])
    grad = torch.empty_like(z) if need_grad else None

    def cut(value, part: slice):
        return value[part] if isinstance(value, Tensor) and value.dim() > 0 else value

    for start in range(0, z.shape[0], step):
        part = slice(start, start + step)
        rows[part], _ = block(
            z[part],
            cut(target, part),
            cut(present, part),
            weight if weight is None or weight.dim() == 1 else weight[part],
            *(cut(value, part) for value in rest),
            need_grad=need_grad,
            out=None if grad is None else grad[part],
        )
    return rows, grad


# ---------------------------------------------------------------------------------------------
# The autograd bridge: the kernel has already computed d(row loss)/dz.
# ---------------------------------------------------------------------------------------------


def row_losses(block, z: Tensor, *args, divisor: int | None = None) -> Tensor:
    """``block``'s row losses (row-blocked), through autograd when a gradient is wanted.

    With ``divisor`` the rows are summed and divided by it inside the autograd Function, so a
    "mean" or "sum" loss is one graph node with a scalar gradient, not three.
    """
    if z.requires_grad and torch.is_grad_enabled():
        return _RowLossFn.apply(z, block, divisor, *args)
    rows, _ = in_row_blocks(block, z, *args, need_grad=False)
    return rows if divisor is None else rows.sum() / divisor


_KEEP_GRAPH_PROBE = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)


def graph_is_kept() -> bool:
    """Whether this backward pass keeps the graph (retain_graph / create_graph): only then may
    the saved gradient be needed again. Unknown (a private API gone, or inside a compiled graph,
    whose memory the compiler plans) counts as kept."""
    probe = _KEEP_GRAPH_PROBE
    return probe is None or torch.compiler.is_compiling() or bool(probe())


class _RowLossFn(torch.autograd.Function):
    """Per-row losses whose gradient the kernel computed analytically in the forward pass.

    Saves the logits and one logits-sized tensor (that gradient); backward scales the
    gradient's rows by the incoming per-row gradient, in place unless the graph is kept for
    another backward: a fresh logits-sized buffer per step costs page faults once the allocator
    returns freed memory to the system, which at N = 1024, K = 1000 is more than the arithmetic.

    Second derivatives (``create_graph=True``: gradient penalties, double backprop, MAML): the
    saved gradient is a number, not a graph, so there backward -- and only there, as autograd
    enables grad mode inside backward exactly under ``create_graph`` -- recomputes the row
    losses from the saved logits with the same block function in its differentiable mode and
    differentiates them with ``torch.autograd.grad(create_graph=True)``. That mode is the
    block function itself: its ``out=`` softplus becomes ``F.softplus`` when the logits require
    grad, and HS-LR takes its selected logits through a gather instead of the detached top-k
    copy (the selection itself is piecewise constant, so it carries no derivative). One
    definition of each loss's maths, at the cost of a second forward pass in that case only; the
    first-order step keeps the fused gradient (saving the logits adds no memory: they are an
    input, alive during the step anyway).
    """

    @staticmethod
    def forward(ctx, z: Tensor, block, divisor: int | None, *args):  # type: ignore[override]
        rows, grad = in_row_blocks(block, z, *args, need_grad=True)
        ctx.save_for_backward(z, grad)
        ctx.block, ctx.args = block, args
        ctx.divisor = divisor
        ctx.num_extra = len(args) + 2
        return rows if divisor is None else rows.sum() / divisor

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        z, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate a differentiable recompute
            with torch.enable_grad():
                rows, _ = ctx.block(z, *ctx.args, need_grad=False)
                out = rows if ctx.divisor is None else rows.sum() / ctx.divisor
                (grad,) = torch.autograd.grad(out, z, grad_out, create_graph=True)
            return (grad,) + (None,) * ctx.num_extra
        scale = grad_out.unsqueeze(1) if ctx.divisor is None else grad_out / ctx.divisor
        grad = grad * scale if graph_is_kept() else grad.mul_(scale)
        return (grad,) + (None,) * ctx.num_extra


__all__ = [
    "hard_negative_threshold",
    "hs_lr_block",
    "hs_lr_rows",
    "lr_block",
    "num_hard_negatives_rows",
    "row_losses",
    "ss_lr_block",
]
