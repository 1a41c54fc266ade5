"""The logistic losses' rows with an analytic gradient, and HS-LR's threshold by counting (JAX).

Autodiff of ``_maths.Terms.rows`` differentiates two softplus terms, a focal power and the
coefficient products separately, and keeps their intermediates: 3-8x the backend's
cross-entropy (``docs/benchmarks/keras_speed.md``). Every logistic row is

    row_i = sum_k a_ik softplus(-z_ik) + b_ik g_r(z_ik)

with a, b constant in z (``_maths`` module docstring), so the forward pass computes the value
and the gradient d row / dz = -a sigmoid(-z) + b g'(z) together, and backward only scales the
gradient. Class-index targets (``index``) give a at each row's target column and b at the
others, as sparse cross-entropy does: no dense one-hot, and one softplus and one sigmoid per
logit for LR.

Each backend computes it the way it runs fastest:

* JAX (one XLA program): one e = exp(-|z|) gives all of it, softplus(+-z) = log1p(e) +
  relu(+-z) and sigmoid(+-z) = e / (1 + e) or 1 / (1 + e); p^r = sigmoid(z)^r for whole r
  (exp(-r softplus(-z)) otherwise). The target column is a ``where``: XLA fuses it.
* TensorFlow (a graph of kernels, XLA off in ``tf.function``): each operation is a pass over
  (M, K), so the fewest: the fused ``softplus`` and ``sigmoid`` kernels, and the target column
  written by one ``tensor_scatter_nd_update``.
* torch (eager): each new (M, K) tensor is an allocation and a pass, so the same kernels
  write into buffers the forward pass owns (in-place operations), and the target column is a
  ``scatter_``. Its CPU ``softplus`` alone costs about one Keras cross-entropy.

Where r is not whole, TensorFlow and torch take p^r = exp(r log sigmoid(z)): their CPU ``pow``
is a scalar loop. A teacher-differentiable a or b takes the keras.ops form (torch) or
computes its gradient in backward, which graph mode prunes when no tape asks (TensorFlow).

Second derivatives stay exact: JAX takes a ``custom_jvp`` whose rule is made of jnp
operations (any order), TensorFlow a nested ``tf.custom_gradient`` whose inner gradient is the
Hessian's diagonal (the rows are sums of functions of one logit each), torch an
``autograd.Function`` that, under ``create_graph``, recomputes the gradient with
differentiable operations. The coefficients a and b get their gradients too (soft targets
from a differentiable teacher): value-only there, second order through them is not provided
on TensorFlow and torch.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import numpy as np
from keras import ops

Tensor = Any
WHOLE_POWERS = (1.0, 2.0, 3.0, 4.0)  # p^r as a product of sigmoids; other r take one more exp


# ---------------------------------------------------------------------------------------------
# The maths in keras.ops: JAX's rule, torch's double backward, TensorFlow's second order.
# ---------------------------------------------------------------------------------------------


def _sigmoids(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(e = exp(-|z|), sigmoid(z), sigmoid(-z)), each sigmoid e / (1 + e) or 1 / (1 + e)."""
    e = ops.exp(-ops.abs(z))
    inv = 1.0 / (1.0 + e)
    nonneg = ops.greater_equal(z, 0.0)
    small = e * inv
    return e, ops.where(nonneg, inv, small), ops.where(nonneg, small, inv)


def _power(s: Tensor, sp_neg: Tensor, r: float) -> Tensor:
    """p^r: sigmoid(z)^r for whole r, else exp(-r softplus(-z)) (finite gradient as p -> 0)."""
    if r in WHOLE_POWERS:
        out = s
        for _ in range(int(r) - 1):
            out = out * s
        return out
    return ops.exp(-r * sp_neg)


def _focal(s: Tensor, s_neg: Tensor, sp_pos: Tensor, sp_neg: Tensor, r: float):
    """(g, g') = (p^r softplus(z), p^r (r sigmoid(-z) softplus(z) + p)), p = sigmoid(z)."""
    if r == 0:
        return sp_pos, s
    power = _power(s, sp_neg, r)
    return power * sp_pos, power * (r * s_neg * sp_pos + s)


def _column(z: Tensor, index: Tensor | None) -> Tensor | None:
    """(M, K) bool, True at each row's target column; None for per-entry coefficients."""
    if index is None:
        return None
    return ops.equal(ops.arange(z.shape[1])[None, :], index[:, None])


def _join(column: Tensor | None, at_target: Tensor, elsewhere: Tensor) -> Tensor:
    """An (M, K) quantity from its positive and negative parts: ``at_target`` on the target
    column and ``elsewhere`` off it, or their sum for per-entry coefficients (``column`` None)."""
    if column is None:
        return at_target + elsewhere
    return ops.where(column, at_target, elsewhere)


def value_only(a: Tensor, b: Tensor, z: Tensor, r: float, index: Tensor | None) -> Tensor:
    """(M,) rows without the gradient's sigmoids (evaluation, no tape)."""
    log_term = ops.log1p(ops.exp(-ops.abs(z)))
    sp_pos, sp_neg = log_term + ops.relu(z), log_term + ops.relu(-z)
    if r == 0:
        g = sp_pos
    else:
        s = ops.sigmoid(z) if r in WHOLE_POWERS else None
        g = _power(s, sp_neg, r) * sp_pos
    return ops.sum(_join(_column(z, index), a * sp_neg, b * g), axis=1)


def value_and_pieces(
    a: Tensor, b: Tensor, z: Tensor, r: float, index: Tensor | None
) -> tuple[Tensor, ...]:
    """(rows (M,), d rows/dz, d rows/da, d rows/db), all but rows (M, K) before ``a`` and
    ``b`` are summed down to their own shapes."""
    e, s, s_neg = _sigmoids(z)
    log_term = ops.log1p(e)
    sp_pos, sp_neg = log_term + ops.relu(z), log_term + ops.relu(-z)
    g, dg = _focal(s, s_neg, sp_pos, sp_neg, r)
    column = _column(z, index)
    if column is not None:
        entries = ops.where(column, a * sp_neg, b * g)
    elif r != 0:
        # The where keeps the entries in one XLA loop: as a plain sum of products, XLA's CPU
        # hands the focal term's products to its YNNPACK reduction and first writes out each
        # of their inputs (SS-LR, multi-hot: 4.2x -> 3.2x CE; LR's sum fuses better as it is).
        entries = ops.where(ops.not_equal(a, 0.0), a * sp_neg, 0.0) + b * g
    else:
        entries = a * sp_neg + b * g
    rows = ops.sum(entries, axis=1)
    grad = _join(column, -a * s_neg, b * dg)
    if column is None:
        return rows, grad, sp_neg, g
    return rows, grad, ops.where(column, sp_neg, 0.0), ops.where(column, 0.0, g)


def gradient(a: Tensor, b: Tensor, z: Tensor, r: float, index: Tensor | None) -> Tensor:
    """d rows / dz alone, from differentiable operations (torch's double backward)."""
    return value_and_pieces(a, b, z, r, index)[1]


def second_pieces(
    a: Tensor, b: Tensor, z: Tensor, r: float, index: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """d grad / da = -sigmoid(-z), d grad / db = g'(z), d grad / dz = a s s_ + b g''(z).

    g'' = p^r s_ (r softplus(z) (r s_ - s) + (2 r + 1) s), s = sigmoid(z), s_ = sigmoid(-z):
    from g' = p^r (r s_ softplus(z) + s), d p^r / dz = r p^r s_, ds/dz = s s_.
    """
    _, s, s_neg = _sigmoids(z)
    if r == 0:
        dg, ddg = s, s * s_neg
    else:
        sp_neg = ops.softplus(-z)
        sp_pos = sp_neg + z
        power = _power(s, sp_neg, r)
        dg = power * (r * s_neg * sp_pos + s)
        ddg = power * s_neg * (r * sp_pos * (r * s_neg - s) + (2.0 * r + 1.0) * s)
    column = _column(z, index)
    zero = ops.zeros_like(z)
    return (
        _join(column, -s_neg, zero),
        _join(column, zero, dg),
        _join(column, a * s * s_neg, b * ddg),
    )


def _unbroadcast(grad: Tensor, like: Tensor) -> Tensor:
    """``grad`` summed down to ``like``'s shape (a coefficient broadcast over rows, columns
    or all)."""
    shape = tuple(like.shape)
    if len(shape) == 0:
        return ops.sum(grad)
    if shape[0] == 1 and grad.shape[0] != 1:
        grad = ops.sum(grad, axis=0, keepdims=True)
    if len(shape) == 2 and shape[1] == 1 and grad.shape[1] != 1:
        grad = ops.sum(grad, axis=1, keepdims=True)
    if len(shape) == 1:
        grad = ops.sum(grad, axis=0)
    return grad


# ---------------------------------------------------------------------------------------------
# JAX: one custom_jvp, the rule in jnp operations.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _jax_rows(r: float):
    import jax
    from jax.custom_derivatives import SymbolicZero

    @jax.custom_jvp
    def rows(a, b, z, index):
        return value_only(a, b, z, r, index)

    def rule(primals, tangents):
        a, b, z, index = primals
        da, db, dz, _ = tangents
        value, grad, d_a, d_b = value_and_pieces(a, b, z, r, index)
        parts = []
        if not isinstance(dz, SymbolicZero):
            parts.append(grad * dz)
        if not isinstance(da, SymbolicZero):
            parts.append(d_a * da)
        if not isinstance(db, SymbolicZero):
            parts.append(d_b * db)
        if not parts:
            return value, ops.zeros_like(value)
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return value, ops.sum(total, axis=1)

    rows.defjvp(rule, symbolic_zeros=True)
    return rows


# ---------------------------------------------------------------------------------------------
# TensorFlow: the fused kernels, a scatter at the target column, a nested custom_gradient.
# ---------------------------------------------------------------------------------------------


def _is_one(x: Tensor) -> bool:
    """Whether a coefficient is the scalar 1 (its product is skipped: one pass less)."""
    import tensorflow as tf

    return x.shape.rank == 0 and tf.get_static_value(x) == 1


def _tf_forward(a: Tensor, b: Tensor, z: Tensor, r: float, index: Tensor | None):
    """(rows, d rows / dz) from ``tf.math.softplus`` and ``tf.math.sigmoid``: LR with class
    indices is four passes over (M, K) (softplus, sigmoid, the scatter, the row sum)."""
    import tensorflow as tf

    sp_pos, s = tf.math.softplus(z), tf.math.sigmoid(z)
    s_neg = sp_neg = None
    if r != 0 or index is None:
        neg_z = -z
        s_neg = tf.math.sigmoid(neg_z)
        if index is None:
            sp_neg = tf.math.softplus(neg_z)
    g, dg = _tf_negative_terms(b, s, s_neg, sp_pos, r)
    if index is None:
        return tf.reduce_sum(a * sp_neg + g, axis=1), dg - a * s_neg
    # An index out of range (unchecked in a graph) matches no column, as in the other
    # backends: its row's column 0 is written back unchanged.
    in_range = (index >= 0) & (index < z.shape[1])
    rows_index = tf.range(tf.shape(index)[0], dtype=index.dtype)
    cells = tf.stack([rows_index, tf.where(in_range, index, 0)], axis=1)
    z_y = tf.gather_nd(z, cells)[:, None]
    value_y = tf.where(
        in_range, tf.reshape(a * tf.math.softplus(-z_y), [-1]), tf.gather_nd(g, cells)
    )
    grad_y = tf.where(
        in_range, tf.reshape(-a * tf.math.sigmoid(-z_y), [-1]), tf.gather_nd(dg, cells)
    )
    rows = tf.reduce_sum(tf.tensor_scatter_nd_update(g, cells, value_y), axis=1)
    return rows, tf.tensor_scatter_nd_update(dg, cells, grad_y)


def _tf_negative_terms(b, s, s_neg, sp_pos, r: float) -> tuple[Tensor, Tensor]:
    """(b g, b g') in the fewest passes: b folded into p^r = sigmoid(z)^r, r into the one
    product it scales. Where r is not whole, p^r = exp(r log sigmoid(z)): ``pow`` is a scalar
    loop in TensorFlow's and torch's CPU kernels (5x an ``exp``). Where sigmoid(z) underflows
    to 0, softplus(z) is 0 or subnormal too, and p^r only scales those two: sigmoid(z) floored
    at the smallest normal keeps 0 * log 0 (an r below the dtype's range) from giving NaN and
    changes only subnormal results."""
    import tensorflow as tf

    one = _is_one(b)
    if r == 0:
        return (sp_pos, s) if one else (b * sp_pos, b * s)
    if r in WHOLE_POWERS:
        power = _power(s, None, r)
    else:
        power = tf.exp(r * tf.math.log(tf.maximum(s, np.finfo(s.dtype.as_numpy_dtype).tiny)))
    if not one:
        power = b * power
    inner = s_neg * sp_pos
    if r != 1:
        inner = r * inner
    return power * sp_pos, power * (inner + s)


def _tf_rows(a: Tensor, b: Tensor, z: Tensor, r: float, index: Tensor | None) -> Tensor:
    import tensorflow as tf

    @tf.custom_gradient
    def rows(a, b, z):
        value, grad = _tf_forward(a, b, z, r, index)

        @tf.custom_gradient
        def first_order(a, b, z):
            def second_order(upstream):
                da, db, dz = second_pieces(a, b, z, r, index)
                return (
                    _unbroadcast(upstream * da, a),
                    _unbroadcast(upstream * db, b),
                    upstream * dz,
                )

            return tf.identity(grad), second_order

        def backward(upstream):
            u = upstream[:, None]
            # The coefficients' gradients: only computed where a tape asks for them (graph
            # mode prunes the rest).
            _, _, d_a, d_b = value_and_pieces(a, b, z, r, index)
            return (
                _unbroadcast(u * d_a, a),
                _unbroadcast(u * d_b, b),
                u * first_order(a, b, z),
            )

        return value, backward

    return rows(a, b, z)


# ---------------------------------------------------------------------------------------------
# torch: the fused kernels into buffers the forward pass owns.
# ---------------------------------------------------------------------------------------------


def _scale(x: Tensor, c: Tensor | float) -> Tensor:
    """x * c in x's buffer; x itself when c is the float 1."""
    if isinstance(c, float) and c == 1.0:
        return x
    return x.mul_(c)


def _torch_forward(a, b, z, r: float, index):
    """(rows, d rows / dz) from torch's softplus and sigmoid kernels, into buffers this
    function owns: about four (M, K) tensors in all, where the keras.ops form makes 20."""
    import torch
    import torch.nn.functional as F

    s, s_neg, sp_neg = torch.sigmoid(z), None, None
    if index is None:  # both softplus from one log1p(exp(-|z|)): torch's softplus is slow
        log_term = torch.abs(z).neg_().exp_().log1p_()
        sp_pos = torch.relu(z).add_(log_term)
        sp_neg = log_term.add_(torch.neg(z).relu_())
    else:
        sp_pos = F.softplus(z)
    if r != 0 or index is None:
        s_neg = torch.neg(z).sigmoid_()
    g, dg = _torch_negative_terms(b, s, s_neg, sp_pos, r, s_neg_free=index is not None)
    if index is None:
        value = _scale(sp_neg, a).add_(g).sum(1)
        return value, dg.sub_(_scale(s_neg, a))
    column = index.long()[:, None]
    z_y = z.gather(1, column)
    g = g.scatter_(1, column, a * F.softplus(-z_y))
    return g.sum(1), dg.scatter_(1, column, -a * torch.sigmoid(-z_y))


def _torch_negative_terms(b, s, s_neg, sp_pos, r: float, s_neg_free: bool):
    """(b g, b g') as ``_tf_negative_terms``; overwrites ``sp_pos`` and ``s`` (and ``s_neg``
    when ``s_neg_free``)."""
    import torch

    if r == 0:
        return _scale(sp_pos, b), _scale(s, b)
    inner = s_neg.mul_(sp_pos) if s_neg_free else s_neg * sp_pos
    inner = _scale(inner, r).add_(s)  # r sigmoid(-z) softplus(z) + p
    if r in WHOLE_POWERS:
        power = s.pow_(r)
    else:  # as _tf_negative_terms
        power = s.clamp_min_(torch.finfo(s.dtype).tiny).log_().mul_(r).exp_()
    power = _scale(power, b)
    return sp_pos.mul_(power), inner.mul_(power)


@functools.cache
def _torch_function():
    import torch

    class Rows(torch.autograd.Function):
        """Forward: rows and the gradient; backward: the saved gradient, scaled (recomputed
        with differentiable operations under ``create_graph``)."""

        @staticmethod
        def forward(ctx, a, b, z, r, index):
            keep = any(ctx.needs_input_grad[:2])  # a and b from a differentiable teacher
            if keep:
                value, grad, d_a, d_b = value_and_pieces(a, b, z, r, index)
            else:
                value, grad = _torch_forward(a, b, z, r, index)
            ctx.r = r
            a, b = (torch.as_tensor(x, dtype=z.dtype, device=z.device) for x in (a, b))
            ctx.save_for_backward(a, b, z, grad, index)
            ctx.coefficient_parts = (d_a, d_b) if keep else None
            return value

        @staticmethod
        def backward(ctx, upstream):
            a, b, z, grad, index = ctx.saved_tensors
            if torch.is_grad_enabled():  # create_graph: a differentiable gradient
                grad = gradient(a, b, z, ctx.r, index)
            u = upstream[:, None]
            da = db = None
            if ctx.coefficient_parts is not None:
                d_a, d_b = ctx.coefficient_parts
                da = _unbroadcast(u * d_a, a) if ctx.needs_input_grad[0] else None
                db = _unbroadcast(u * d_b, b) if ctx.needs_input_grad[1] else None
            return da, db, u * grad, None, None

    return Rows


def logistic_rows(a: Tensor, b: Tensor, z: Tensor, r: float, index: Tensor | None = None) -> Tensor:
    """(M,) rows sum_k a softplus(-z) + b g_r(z) with the analytic gradient (module docstring).

    ``a`` and ``b`` broadcast against the (M, K) logits ``z`` and are constant in z. With
    ``index`` (M,) (class indices), ``a`` (broadcast to (M, 1)) is the coefficient at each
    row's target column k = index_i and ``b`` the coefficient at every other column
    (``_maths.Terms``).
    """
    r = float(r)
    backend = keras.backend.backend()
    if backend == "torch":
        a, b = (x if isinstance(x, float) else ops.convert_to_tensor(x, z.dtype) for x in (a, b))
        return _torch_function().apply(a, b, z, r, index)
    a = ops.convert_to_tensor(a, z.dtype)
    b = ops.convert_to_tensor(b, z.dtype)
    if backend == "jax":
        return _jax_rows(r)(a, b, z, index)
    if backend == "tensorflow":
        return _tf_rows(a, b, z, r, index)
    return value_only(a, b, z, r, index)  # pragma: no cover - numpy backend: no gradients


# ---------------------------------------------------------------------------------------------
# HS-LR's threshold by counting (JAX).
# ---------------------------------------------------------------------------------------------

_SIGN = np.uint32(0x80000000)


def _key(x):
    """float32 -> uint32 in the floats' order (x without -0.0)."""
    import jax

    bits = jax.lax.bitcast_convert_type(x, np.uint32)
    negative = (bits & _SIGN) != 0
    return jax.numpy.where(negative, ~bits, bits | _SIGN)


def _float(key):
    """The inverse of ``_key``."""
    import jax

    negative = (key & _SIGN) == 0
    bits = jax.numpy.where(negative, ~key, key & ~_SIGN)
    return jax.lax.bitcast_convert_type(bits, np.float32)


def counted_threshold(masked: Tensor, n: Tensor, max_passes: int = 80) -> Tensor:
    """(M, 1): each row's n_i-th largest value of ``masked``, by ``counting``.

    Jitted once per shape: outside ``jax.jit`` (eager JAX) the loop would otherwise be traced
    and compiled again at every call.
    """
    import jax.numpy as jnp

    n = jnp.asarray(n, jnp.float32)
    return _jitted_counting(max_passes)(masked, n)[0]


@functools.cache
def _jitted_counting(max_passes: int):
    import jax

    return jax.jit(functools.partial(counting, max_passes=max_passes))


def _counting_pass(x: Tensor, n: Tensor, first: Tensor, state: tuple) -> tuple:
    """One pass of ``counting``'s ``while_loop``: probe each row not done, count the
    entries >= the probe, and narrow the row's bracket to the row values either side of it."""
    import jax.numpy as jnp

    lo, hi, c_lo, c_hi, done, bisect, passes = state
    # The probe: the counts' linear interpolation between lo and hi (a few passes on any
    # smooth distribution), or, after an interpolation that did not halve the counts
    # between them, the middle of the values; the middle in order where neither lies
    # strictly inside (at most 32 such halvings).
    lo_f, hi_f = _float(lo), _float(hi)
    guess = lo_f + (hi_f - lo_f) * ((c_lo - n + 0.5) / (c_lo - c_hi))
    guess = jnp.where(passes == 0, first, jnp.where(bisect, 0.5 * lo_f + 0.5 * hi_f, guess))
    guess_key = _key(jnp.where(guess == 0, jnp.float32(0.0), guess))
    inside = jnp.isfinite(guess) & (guess_key > lo) & (guess_key < hi)
    middle = lo + (hi - lo) // 2  # strictly inside (lo, hi) while hi - lo >= 2
    probe_key = jnp.where(inside, guess_key, middle)
    probe = _float(probe_key)[:, None]
    above = x >= probe
    count = jnp.sum(above, axis=1, dtype=jnp.float32)
    enough = count >= n
    # Snapped to the row: the smallest value >= probe keeps count >= n; above the largest
    # value < probe the count is the probe's, < n.
    next_up = jnp.min(jnp.where(above, x, jnp.inf), axis=1)
    next_down = jnp.max(jnp.where(above, -jnp.inf, x), axis=1)
    new_lo = jnp.where(enough, _key(next_up), lo)
    new_hi = jnp.where(enough, hi, _key(next_down) + 1)
    new_c_lo = jnp.where(enough, count, c_lo)
    new_c_hi = jnp.where(enough, c_hi, count)
    slow = (2 * (new_c_lo - new_c_hi) > c_lo - c_hi) & (passes > 0)
    finished = new_hi - new_lo <= 1
    keep = lambda old, new: jnp.where(done, old, new)  # noqa: E731
    return (
        keep(lo, new_lo),
        keep(hi, new_hi),
        keep(c_lo, new_c_lo),
        keep(c_hi, new_c_hi),
        done | finished,
        slow & ~bisect,
        passes + 1,
    )


def counting(masked: Tensor, n: Tensor, max_passes: int = 80) -> tuple[Tensor, Tensor]:
    """(M, 1): each row's n_i-th largest value of ``masked`` (float32, -inf where not allowed),
    exactly, by counting: no ``top_k``, no sort.

    Bisection on the values' order (their bits as ordered integers), snapped to the row's own
    values: each pass counts the entries >= a probe and finds the nearest values either side of
    it, in one sweep. The bracket keeps count(>= lo) >= n > count(>= hi), lo a row value, and
    no row value strictly between lo and hi's predecessor; a row is done when hi = lo + 1 (in
    order), so lo is the n-th largest. At most 32 passes (the ordered integers' bits); about
    log2(range / gap at the threshold) in practice, as the snapping skips empty ranges.
    Rows with n_i = 0 (no allowed entry) return -inf. XLA's CPU flushes subnormals to zero,
    and so compares them as 0 here, as in the selection that uses the threshold.
    Returns the thresholds and the number of passes.
    """
    import jax
    import jax.numpy as jnp

    x = jnp.where(masked == 0, jnp.float32(0.0), masked.astype(jnp.float32))  # no -0.0
    n = jnp.broadcast_to(jnp.asarray(n, jnp.float32), x.shape[:1])
    finite = x > -jnp.inf
    count_allowed = jnp.sum(finite, axis=1, dtype=jnp.float32)
    top = jnp.max(x, axis=1)
    low = jnp.min(jnp.where(finite, x, jnp.inf), axis=1)
    at_top = jnp.sum(x >= top[:, None], axis=1, dtype=jnp.float32)
    # The first probe: the normal quantile of the row's mean and spread; then interpolation.
    safe_count = jnp.maximum(count_allowed, 1.0)
    mean = jnp.sum(jnp.where(finite, x, 0.0), axis=1) / safe_count
    spread = jnp.sqrt(
        jnp.sum(jnp.where(finite, (x - mean[:, None]) ** 2, 0.0), axis=1) / safe_count
    )
    upper = jnp.clip((n - 0.5) / safe_count, 1e-6, 1.0 - 1e-6)
    first = mean + spread * jax.scipy.special.ndtri(1.0 - upper)
    done = (n < 1) | (count_allowed < n) | (at_top >= n)
    lo = jnp.where(at_top >= n, _key(top), _key(low))
    hi = _key(top)
    state = (lo, hi, count_allowed, at_top, done, jnp.zeros_like(done), jnp.int32(0))

    def cond(state):
        done, passes = state[4], state[6]
        return jnp.logical_not(jnp.all(done)) & (passes < max_passes)

    body = functools.partial(_counting_pass, x, n, first)
    final = jax.lax.while_loop(cond, body, state)
    tau = jnp.where((n >= 1) & (count_allowed >= n), _float(final[0]), -jnp.inf)
    return tau[:, None].astype(masked.dtype), final[6]
