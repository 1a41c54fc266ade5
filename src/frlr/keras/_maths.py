r"""The maths of every ``frlr.keras`` loss, written once, next to its equation.

Both users call these functions: ``frlr.keras.losses`` with ``keras.ops`` on backend tensors
(the logistic losses take their coefficients from here and their rows, with an analytic
gradient exact to second order, from ``_fast``; the softmax losses use the backend's
autodiff), and
``frlr.keras.diagnostics`` with ``NP``, the same operations on float64 NumPy arrays (the
NCD statistics, with the gradient written here beside each term). So the functions take the
array namespace ``xp`` as their first argument and use only the operations ``NumpyOps``
provides under ``keras.ops``'s names.

Rows are (M, K) logits z with a dense target t in [0, 1]^K, or class indices (an
``IndexTarget``, which the logistic losses never densify: their coefficients are one value at
the target column and one for the other columns, ``Terms.index``), and an optional (K,) class
weight w. p = sigmoid(z), -log p = softplus(-z), -log(1 - p) =
softplus(z). The logistic losses (LR, HS-LR, SS-LR, in either normalisation) are all

$$\mathrm{row}_i = \sum_k a_{ik} \operatorname{softplus}(-z_{ik}) + b_{ik}\, g(z_{ik}),
\qquad g(z) = p^r \operatorname{softplus}(z)$$

with coefficients a (positive mass) and b (negative mass) that do not depend on z, except
through HS-LR's selection, which is constant between ties (``Terms``). r = 0 (LR, HS-LR)
makes g = softplus. Soft targets: class k carries positive mass t_k and negative mass 1 - t_k.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from frlr.catalogue import num_hard_negatives

Tensor = Any


class NumpyOps:
    """The few ``keras.ops`` the loss maths uses, on NumPy arrays (float64 in the NCD path).

    ``top_k`` breaks ties by the lower index, as TensorFlow and JAX do; the maths never
    depends on how ties are broken (see ``top_n_selection``).
    """

    ones_like = staticmethod(np.ones_like)
    arange = staticmethod(np.arange)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    floor = staticmethod(np.floor)
    maximum = staticmethod(np.maximum)
    where = staticmethod(np.where)
    equal = staticmethod(np.equal)
    greater = staticmethod(np.greater)
    less = staticmethod(np.less)
    logical_and = staticmethod(np.logical_and)
    logical_not = staticmethod(np.logical_not)
    sum = staticmethod(np.sum)
    max = staticmethod(np.max)
    argmax = staticmethod(np.argmax)
    take = staticmethod(np.take)
    take_along_axis = staticmethod(np.take_along_axis)
    searchsorted = staticmethod(np.searchsorted)

    @staticmethod
    def softplus(x: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, x)

    @staticmethod
    def sigmoid(x: np.ndarray) -> np.ndarray:
        return np.exp(-np.logaddexp(0.0, -x))

    @staticmethod
    def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
        top = x.max(axis=axis, keepdims=True)
        return x - top - np.log(np.exp(x - top).sum(axis=axis, keepdims=True))

    @staticmethod
    def stop_gradient(x: np.ndarray) -> np.ndarray:
        return x

    @staticmethod
    def cast(x: Any, dtype: str) -> np.ndarray:
        return np.asarray(x).astype(dtype)

    @staticmethod
    def convert_to_tensor(x: Any, dtype: str | None = None) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    @staticmethod
    def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        indices = np.argsort(-x, axis=-1, kind="stable")[..., :k]
        return np.take_along_axis(x, indices, axis=-1), indices


NP = NumpyOps()


# ---------------------------------------------------------------------------------------------
# Per-element terms and their derivatives (the derivatives serve the NCD statistics; the
# losses differentiate the values with the backend's autodiff).
# ---------------------------------------------------------------------------------------------


def focal_negative(xp: Any, z: Tensor, r: float) -> Tensor:
    """g(z) = p^r (-log(1 - p)) = exp(-r softplus(-z)) softplus(z); softplus(z) when r = 0.

    p^r is exp(-r softplus(-z)), not sigmoid(z)**r: its gradient stays finite where p
    underflows, even for r < 1.
    """
    if r == 0:
        return xp.softplus(z)
    return xp.exp(-r * xp.softplus(-z)) * xp.softplus(z)


def focal_negative_derivative(xp: Any, z: Tensor, r: float) -> Tensor:
    """g'(z) = p^r (r (1 - p) softplus(z) + p), from d p^r/dz = r p^r (1 - p)."""
    if r == 0:
        return xp.sigmoid(z)
    return xp.exp(-r * xp.softplus(-z)) * (r * xp.sigmoid(-z) * xp.softplus(z) + xp.sigmoid(z))


class IndexTarget(NamedTuple):
    """Class-index targets kept as indices: sample i's one positive class is ``y[i]``.

    The logistic losses build their coefficients from it without a dense one-hot (``Terms``
    with ``index``), as the backends' sparse cross-entropy does. An index outside
    {0, ..., K - 1} (possible only in a graph, where values are not checked) matches no
    column: a row without a positive, as its one-hot would be.
    """

    y: Tensor  # (M,) int32
    num_classes: int

    def column(self, xp: Any) -> Tensor:
        """(M, K) bool: True at each row's target column."""
        return target_column(xp, self.y, self.num_classes)

    def dense(self, xp: Any, dtype: str) -> Tensor:
        """The (M, K) one-hot target."""
        return xp.cast(self.column(xp), dtype)

    def column_weight(self, xp: Any, weight: Tensor | None) -> Tensor | float:
        """(M, 1): w_{y_i}, the class weight of each row's target; 1 without class weights."""
        if weight is None:
            return 1.0
        # Unused for a row whose index matches no column; gathered in range (TensorFlow's CPU
        # gather raises on the others).
        in_range = xp.logical_and(xp.greater(self.y, -1), xp.less(self.y, self.num_classes))
        return xp.take(weight, xp.where(in_range, self.y, 0))[:, None]


def target_column(xp: Any, index: Tensor, num_classes: int) -> Tensor:
    """(M, K) bool: k == index_i."""
    return xp.equal(xp.arange(num_classes)[None, :], index[:, None])


class Terms(NamedTuple):
    """row_i = sum_k positive_ik softplus(-z_ik) + negative_ik g_r(z_ik) (module docstring).

    With ``index`` (M,) set, the coefficients are given per column kind instead of per entry:
    ``positive`` (broadcast to (M, 1)) at each row's target column k = index_i, where the
    negative coefficient is 0, and ``negative`` (broadcast to (M, K)) at every other column,
    where the positive coefficient is 0. ``dense`` gives the per-entry form.
    """

    positive: Tensor
    negative: Tensor
    r: float = 0.0
    index: Tensor | None = None

    def dense(self, xp: Any, num_classes: int) -> Terms:
        """The same terms with (M, K) per-entry coefficients."""
        if self.index is None:
            return self
        column = target_column(xp, self.index, num_classes)
        return Terms(
            xp.where(column, self.positive, 0.0), xp.where(column, 0.0, self.negative), self.r
        )

    def parts(self, xp: Any, z: Tensor) -> tuple[Tensor, Tensor]:
        """The (M, K) positive and negative contributions."""
        terms = self.dense(xp, z.shape[1])
        return terms.positive * xp.softplus(-z), terms.negative * focal_negative(xp, z, self.r)

    def rows(self, xp: Any, z: Tensor) -> Tensor:
        """The (M,) row losses."""
        positive, negative = self.parts(xp, z)
        return xp.sum(positive + negative, axis=1)

    def gradient(self, xp: Any, z: Tensor) -> Tensor:
        """d rows / d z, (M, K): -a sigmoid(-z) + b g'(z), the selection held fixed."""
        terms = self.dense(xp, z.shape[1])
        return -terms.positive * xp.sigmoid(-z) + terms.negative * focal_negative_derivative(
            xp, z, self.r
        )


# ---------------------------------------------------------------------------------------------
# Shared pieces: the positive mean, the hard-negative count, the top-n selection.
# ---------------------------------------------------------------------------------------------


def _weighted(t: Tensor, weight: Tensor | None) -> Tensor:
    return t if weight is None else t * weight


def _safe(xp: Any, x: Tensor) -> Tensor:
    """x where x > 0, else 1: the divisor of a sum that is 0 whenever x is."""
    return xp.where(xp.greater(x, 0.0), x, 1.0)


def _at_least_one(xp: Any, x: Tensor) -> Tensor:
    """max(x, 1), written with ``where``: Keras's torch ``maximum`` returns float32 for float64
    input."""
    return xp.where(xp.greater(x, 1.0), x, 1.0)


def positive_mean(xp: Any, t: Tensor, weight: Tensor | None) -> Tensor:
    """a_ik = w_k t_ik / sum_k t_ik: the mean over P_i of -log p_k (soft: weighted by t_k);
    0 for a row without positive mass."""
    return _weighted(t, weight) / _safe(xp, xp.sum(t, axis=1, keepdims=True))


def _count_floor(m: float, num_negatives: np.ndarray) -> np.ndarray:
    """floor(m * M / 100) in float64 with the operations of ``frlr.catalogue.num_hard_negatives``
    (the tests check the two agree), vectorised over M."""
    return np.floor(m * num_negatives / 100.0)


@functools.lru_cache(maxsize=64)
def count_thresholds(m: float, num_classes: int, dtype: str) -> np.ndarray:
    """T_j, j = 2..J: the smallest ``dtype`` value M with floor(m M / 100) >= j.

    n(M) = max(1, floor(m M / 100)) is a step function of M, so n(M) = 1 + #{j : T_j <= M}
    for 0 < M <= K, exactly, with no arithmetic on M at all: the thresholds are found here
    in float64, from a first guess 100 j / m moved by single ulps of ``dtype`` until it is the
    first value where the count reaches j. A float32 product in the graph misrounds instead:
    450 * float32(26 / 100) = 116.99999 kept 116 negatives where floor(26 * 450 / 100) = 117.
    Cached per (m, K, dtype): callers must not modify the array.
    """
    top = int(_count_floor(m, np.float64(num_classes)))
    if top < 2:
        return np.zeros(0, dtype)  # n = 1 for every M > 0
    j = np.arange(2, top + 1, dtype=np.float64)
    guess = (100.0 * j / m).astype(dtype)

    def reaches(values: np.ndarray) -> np.ndarray:
        return _count_floor(m, values.astype(np.float64)) >= j

    up, down = np.asarray(np.inf, dtype), np.asarray(-np.inf, dtype)
    while not (ok := reaches(guess)).all():
        guess = np.where(ok, guess, np.nextafter(guess, up))
    while (lower := reaches(below := np.nextafter(guess, down))).any():
        guess = np.where(lower, below, guess)
    return guess


def hard_negative_count(
    xp: Any, num_negatives: Tensor, m: float, num_classes: int, dtype: str
) -> Tensor:
    """n_i = max(1, floor(m M_i / 100)) for M_i > 0, else 0, exactly (``count_thresholds``).

    M_i is the row's negative mass: an integer for {0, 1} targets, real for soft targets. The
    result equals ``frlr.catalogue.num_hard_negatives(M_i, m)`` for every m in (0, 100] and every
    M_i representable in ``dtype``.
    """
    thresholds = count_thresholds(m, num_classes, dtype)
    if thresholds.size:
        above = xp.searchsorted(xp.convert_to_tensor(thresholds, dtype), num_negatives, "right")
        n = 1.0 + xp.cast(above, dtype)
    else:
        n = xp.convert_to_tensor(1.0, dtype)
    return xp.where(xp.greater(num_negatives, 0.0), n, 0.0)


def nth_largest(xp: Any, masked: Tensor, n: Tensor | int, bound: int) -> Tensor:
    """(M, 1): each row's n_i-th largest entry (n_i >= 1; -inf past the allowed entries).

    One ``top_k`` of ``bound`` values, except on JAX, where XLA's ``top_k`` costs about 50
    cross-entropies on a CPU (``docs/benchmarks/keras_speed.md``): there the exact value is
    found by counting comparisons (``_fast.counted_threshold``), with no ``top_k`` or sort.
    """
    if xp is not NP and _backend() == "jax" and masked.dtype != "float64":
        from frlr.keras._fast import counted_threshold

        return counted_threshold(masked, n)
    values, _ = xp.top_k(masked, bound)
    if isinstance(n, int):
        return values[:, n - 1 : n]
    last = xp.cast(xp.maximum(n - 1.0, 0.0), "int32")[:, None]
    return xp.take_along_axis(values, last, axis=1)


def _backend() -> str:
    import keras

    return keras.backend.backend()


def top_n_selection(xp: Any, key: Tensor, allowed: Tensor, n: Tensor | int, bound: int) -> Tensor:
    """(M, K) weights: 1 on the n_i allowed entries of largest key, 0 elsewhere.

    Entries tied with the n_i-th largest share what is left of n_i equally, so the weights
    sum to n_i (to the number of allowed entries when fewer) whatever the ties, and the
    result does not depend on how ``top_k`` orders them. ``bound`` >= every n_i is the static
    size of the ``top_k``. The weights come from comparisons: no gradient flows through them.
    """
    masked = xp.where(allowed, xp.stop_gradient(key), -np.inf)
    tau = nth_largest(xp, masked, n, bound)
    above = xp.logical_and(allowed, xp.greater(masked, tau))
    tie = xp.logical_and(allowed, xp.equal(masked, tau))
    dtype = key.dtype
    count_above = xp.sum(xp.cast(above, dtype), axis=1, keepdims=True)
    count_tie = xp.sum(xp.cast(tie, dtype), axis=1, keepdims=True)
    n_col = n if isinstance(n, int) else n[:, None]
    share = (n_col - count_above) / _at_least_one(xp, count_tie)
    return xp.where(above, 1.0, xp.where(tie, share, 0.0))


# ---------------------------------------------------------------------------------------------
# The losses' coefficients. ``t`` is a dense target or an ``IndexTarget``; ``index``: the dense
# rows come from class indices (one positive each, |N_i| = K - 1 known statically), as an
# ``IndexTarget``'s always do.
# ---------------------------------------------------------------------------------------------


def _uniform(weight: Tensor | None) -> Tensor | float:
    """The coefficient every negative column shares before scaling: w_k, or 1."""
    return 1.0 if weight is None else weight


def lr_terms(xp: Any, t: Tensor | IndexTarget, weight: Tensor | None) -> Terms:
    """LR, Eq. 3: row_i = sum_k w_k (t_k softplus(-z_k) + (1 - t_k) softplus(z_k)).

    Soft targets are the binary cross-entropy against t_k.
    """
    if isinstance(t, IndexTarget):
        return Terms(t.column_weight(xp, weight), _uniform(weight), index=t.y)
    return Terms(_weighted(t, weight), _weighted(1.0 - t, weight))


def ss_lr_terms(
    xp: Any,
    z: Tensor,
    t: Tensor | IndexTarget,
    weight: Tensor | None,
    *,
    beta: float,
    r: float,
    alpha: float | None,
    index: bool,
) -> Terms:
    """SS-LR, Eq. 6: row_i = mean_{k in P_i} -log p_k + alpha_i sum_{k in N_i} p_k^r (-log(1-p_k)),
    alpha_i = beta / |N_i| unless ``alpha`` is given.

    Soft targets (t in [0, 1]^K, negative mass M_i = sum_k (1 - t_k)):
    row_i = sum_k t_k softplus(-z_k) / sum_k t_k + beta / M_i sum_k (1 - t_k) p_k^r softplus(z_k),
    the first term 0 when sum_k t_k = 0, the second when M_i = 0. {0, 1} targets give Eq. 6.
    """
    if isinstance(t, IndexTarget):
        coefficient = beta / (t.num_classes - 1) if alpha is None else alpha
        return Terms(t.column_weight(xp, weight), coefficient * _uniform(weight), r, t.y)
    num_classes = t.shape[1]
    if alpha is not None:
        coefficient = alpha
    elif index:
        coefficient = beta / (num_classes - 1)
    else:
        coefficient = beta / _safe(xp, xp.sum(1.0 - t, axis=1, keepdims=True))
    return Terms(positive_mean(xp, t, weight), coefficient * _weighted(1.0 - t, weight), r)


def hs_lr_terms(
    xp: Any,
    z: Tensor,
    t: Tensor | IndexTarget,
    weight: Tensor | None,
    *,
    beta: float,
    m: float,
    alpha: float | None,
    index: bool,
) -> Terms:
    """HS-LR, Eq. 5: row_i = mean_{k in P_i} -log p_k + alpha_i sum_{k in S_i} -log(1 - p_k).

    S_i holds the n_i = max(1, floor(m |N_i| / 100)) negatives of highest probability, i.e.
    of highest logit (sigmoid is monotonic), and alpha_i = beta / n_i unless ``alpha`` is given.

    Soft targets (negative mass M_i = sum_k (1 - t_k), real): n_i = max(1, floor(m M_i / 100))
    (0 when M_i = 0); S_i = the n_i classes of largest logit among those with t_k < 1;
    row_i = sum_k t_k softplus(-z_k) / sum_k t_k + beta / n_i sum_{k in S_i} (1 - t_k)
    softplus(z_k). {0, 1} targets give Eq. 5.
    """
    if isinstance(t, IndexTarget):
        return _hs_lr_index_terms(xp, z, t, weight, beta=beta, m=m, alpha=alpha)
    num_classes = t.shape[1]
    allowed = xp.less(t, 1.0)
    if index:
        n = num_hard_negatives(num_classes - 1, m)
        selected = 1.0 - t if n >= num_classes - 1 else top_n_selection(xp, z, allowed, n, bound=n)
        coefficient = beta / n if alpha is None else alpha
    else:
        mass = xp.sum(1.0 - t, axis=1)
        n = hard_negative_count(xp, mass, m, num_classes, _float_name(z.dtype))
        bound = min(num_classes, num_hard_negatives(num_classes, m))  # n_i <= n(K)
        selected = top_n_selection(xp, z, allowed, n, bound)
        coefficient = beta / _at_least_one(xp, n)[:, None] if alpha is None else alpha
    negative = coefficient * _weighted((1.0 - t) * selected, weight)
    return Terms(positive_mean(xp, t, weight), negative)


def _hs_lr_index_terms(
    xp: Any,
    z: Tensor,
    t: IndexTarget,
    weight: Tensor | None,
    *,
    beta: float,
    m: float,
    alpha: float | None,
) -> Terms:
    """``hs_lr_terms`` for class indices: the n hardest of the K - 1 other columns."""
    n = num_hard_negatives(t.num_classes - 1, m)
    selected = 1.0  # every other column
    if n < t.num_classes - 1:
        allowed = xp.logical_not(t.column(xp))
        selected = top_n_selection(xp, z, allowed, n, bound=n)
    coefficient = beta / n if alpha is None else alpha
    return Terms(t.column_weight(xp, weight), coefficient * _weighted(selected, weight), 0.0, t.y)


def _float_name(dtype: Any) -> str:
    """The compute dtype's name from any backend's dtype object."""
    return "float64" if "64" in str(dtype) else "float32"


def reference_terms(
    xp: Any,
    name: str,
    z: Tensor,
    t: Tensor | IndexTarget,
    weight: Tensor | None,
    *,
    beta: float,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
) -> Terms:
    """normalization="reference", the authors' released code: one batch-pooled number.

    LR:  the mean of the elementwise binary cross-entropy over all N K entries.
    SS:  sum of w t softplus(-z) / sum t + alpha sum of w (1 - t) p^r softplus(z) / sum (1 - t),
         sums over the whole batch (divisors at least 1), alpha = beta unless given.
    HS:  the positive pool as SS + alpha / (N k) sum, over each row's k = int(K m / 100)
         largest w (1 - t) softplus(z), alpha = beta unless given.
    An empty batch gives 0.
    """
    num_classes = z.shape[1]
    if isinstance(t, IndexTarget):
        t = t.dense(xp, _float_name(z.dtype))
    size = xp.sum(xp.ones_like(t))  # N K, also where N is only known at run time
    if name == "lr":
        pooled = 1.0 / _at_least_one(xp, size)
        return Terms(_weighted(t, weight) * pooled, _weighted(1.0 - t, weight) * pooled)
    a = beta if alpha is None else alpha
    positive = _weighted(t, weight) / _at_least_one(xp, xp.sum(t))
    if name == "ss-lr":
        negative = _weighted(1.0 - t, weight) * (a / _at_least_one(xp, xp.sum(1.0 - t)))
        return Terms(positive, negative, r)
    k = int(num_classes * m / 100.0)
    if k == 0:
        raise ValueError(
            f"normalization='reference' keeps int(K*m/100) = 0 negatives for K={num_classes}, "
            f"m={m} (the authors' code returns NaN there); raise m or use normalization='paper'"
        )
    neg_key = _weighted(1.0 - t, weight) * xp.softplus(z)
    everything = xp.greater(xp.ones_like(t), 0.0)
    selected = top_n_selection(xp, xp.stop_gradient(neg_key), everything, k, bound=k)
    per_entry = a / _at_least_one(xp, size / num_classes * k)
    return Terms(positive, _weighted((1.0 - t) * selected, weight) * per_entry)


# ---------------------------------------------------------------------------------------------
# Softmax: SR (Eq. 4) and the HS-SR ablation.
# ---------------------------------------------------------------------------------------------


def logsumexp(xp: Any, x: Tensor) -> Tensor:
    """Row-wise log sum exp, (M, 1), whose gradient is exactly softmax(x).

    The shift is a constant (``stop_gradient``): differentiating through the max, as the
    torch backend's ``ops.logsumexp`` does, adds 1 - sum(softmax) to the arg-max's gradient,
    which float32 rounds to about K * 6e-8. The value does not depend on the shift, so every
    derivative is exact.
    """
    # initial: Keras refuses the max of an empty tensor, and a batch may have no rows.
    shift = xp.stop_gradient(xp.max(x, axis=1, keepdims=True, initial=-np.inf))
    return shift + xp.log(xp.sum(xp.exp(x - shift), axis=1, keepdims=True))


class SoftmaxTerms(NamedTuple):
    """SR and HS-SR: row_i = sum_k -positive_ik log q_ik - negative_ik log(1 - q_ik),
    q = softmax(z_i); ``negative`` is 0 for SR (Eq. 4)."""

    positive: Tensor
    negative: Tensor | None = None

    def parts(self, xp: Any, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """The (M, K) positive and negative contributions (negative None for SR)."""
        positive = -self.positive * xp.log_softmax(z, axis=1)
        if self.negative is None:
            return positive, None
        return positive, -self.negative * log1m_softmax(xp, z)

    def rows(self, xp: Any, z: Tensor) -> Tensor:
        positive, negative = self.parts(xp, z)
        if negative is None:
            return xp.sum(positive, axis=1)
        return xp.sum(positive + negative, axis=1)

    def gradient(self, z: np.ndarray) -> np.ndarray:
        """d rows / d z in NumPy (the NCD statistics).

        SR: sum_k a_k q - a. HS-SR adds, with c the negative coefficients and -log(1 - q_k) =
        lse(z) - lse(z without k), sum_k c_k (q_j - [j != k] q_j / (1 - q_k)) = c_j q_j - q_j
        sum_{k != j} c_k q_k / (1 - q_k), summed without overflowing the odds q_k / (1 - q_k)
        where q_k -> 1 (only the row's arg-max can have q_k > 1/2).
        """
        log_q = NP.log_softmax(z, axis=1)
        q = np.exp(log_q)
        grad = self.positive.sum(1, keepdims=True) * q - self.positive
        if self.negative is None:
            return grad
        c = self.negative
        log1m = log1m_softmax(NP, z)
        big = (q > 0.5) & (c != 0)
        with np.errstate(over="ignore"):
            odds_small = np.where(big | (c == 0), 0.0, c * np.exp(log_q - log1m))
        c_big = np.where(big, c, 0.0).sum(1, keepdims=True)
        log_odds_big = np.where(big, log_q - log1m, 0.0).sum(1, keepdims=True)
        cross_big = np.where(big, 0.0, c_big * np.exp(np.where(big, 0.0, log_q + log_odds_big)))
        return grad + c * q - q * (odds_small.sum(1, keepdims=True) - odds_small) - cross_big


def sr_terms(t: Tensor, weight: Tensor | None) -> SoftmaxTerms:
    """SR, Eq. 4: row_i = -sum_k w_k t_k log softmax(z)_k (soft targets are class
    probabilities, not renormalised)."""
    return SoftmaxTerms(_weighted(t, weight))


def log1m_softmax(xp: Any, z: Tensor) -> Tensor:
    """log(1 - q_k), (M, K), q = softmax(z).

    log1p(-q_k) where q_k <= 1/2; where q_k > 1/2 (only the row's arg-max can be) it is
    logsumexp over the other classes minus logsumexp over all, exact as q_k -> 1.
    """
    num_classes = z.shape[1]
    lse_all = logsumexp(xp, z)
    q = xp.exp(xp.log_softmax(z, axis=1))
    big = xp.greater(q, 0.5)
    arg_max = xp.equal(xp.arange(num_classes)[None, :], xp.argmax(z, axis=1)[:, None])
    lse_others = logsumexp(xp, xp.where(arg_max, -np.inf, z))
    return xp.where(big, lse_others - lse_all, xp.log1p(-xp.where(big, 0.0, q)))


def hs_sr_terms(
    xp: Any,
    z: Tensor,
    t: Tensor,
    weight: Tensor | None,
    *,
    beta: float,
    m: float,
    alpha: float | None,
) -> SoftmaxTerms:
    """HS-SR, Eq. 5 on q = softmax(z) (single-label, the paper's ablation):
    row_i = -w_y log q_y - alpha sum_{k in S_i} w_k log(1 - q_k), S_i the n = max(1,
    floor(m (K - 1) / 100)) negatives of highest logit, alpha = beta / n unless given."""
    num_classes = z.shape[1]
    n = num_hard_negatives(num_classes - 1, m)
    a = beta / n if alpha is None else alpha
    negatives = xp.less(t, 1.0)
    selected = 1.0 - t if n >= num_classes - 1 else top_n_selection(xp, z, negatives, n, bound=n)
    return SoftmaxTerms(_weighted(t, weight), a * _weighted(selected, weight))
