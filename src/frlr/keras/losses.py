"""Softmax and (focus-rectified) logistic-regression losses for Keras 3, on any backend.

Dong, Zhu and Gong, "Single-Label Multi-Class Image Classification by Deep Logistic
Regression", AAAI 2019. For sample i with positive classes P_i and negative classes N_i
(single-label: P_i = {y_i}, |N_i| = K - 1) and p = sigmoid(z):

* LR (Eq. 3):    sum_{k in P_i} -log p_k + sum_{k in N_i} -log(1 - p_k)
* HS-LR (Eq. 5): mean_{k in P_i} -log p_k + (beta / n_i) sum_{k in top n_i of N_i} -log(1 - p_k),
                 n_i = max(1, floor(m/100 |N_i|)), "top" = most probable
* SS-LR (Eq. 6): mean_{k in P_i} -log p_k + (beta / |N_i|) sum_{k in N_i} p_k^r (-log(1 - p_k))
* SR (Eq. 4):    -log softmax(z)_y, the baseline
* HS-SR:         Eq. 5 on softmax probabilities, the paper's ablation

Written once with ``keras.ops`` (TensorFlow, JAX and PyTorch backends) and numerically the
same as ``frlr.torch``: -log p = softplus(-z) and -log(1 - p) = softplus(z), never
log(p + eps), so logits of 1e4 give finite losses and exact gradients. Only logits are
accepted (``from_logits=True``): a probability of 1 - 1e-9 is 1.0 in float32, and the
log-sigmoid forms need the logit to keep that tail. float16/bfloat16 logits are computed and
returned in float32.

``y_true`` follows Keras: integer class indices of shape (N,) or (N, 1) as for
``SparseCategoricalCrossentropy``, or a multi-hot target of y_pred's shape as for
``BinaryCrossentropy``; ``target="auto"`` tells them apart by shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import keras
from keras import ops

from frlr.catalogue import LOSS_NAMES, canonical_loss_name, num_hard_negatives
from frlr.keras._inputs import (
    HALF_DTYPES,
    Batch,
    check_options,
    check_reference_reduction,
    weight_list,
)

Tensor = Any


def _class_weight(weight: Tensor | None, indices: Tensor) -> Tensor | float:
    return 1.0 if weight is None else ops.take(weight, indices)


def _positive_term(batch: Batch, t: Tensor) -> Tensor:
    """mean over P_i of w_k softplus(-z_k); 0 for a sample without positives."""
    terms = t * ops.softplus(-batch.z)
    if batch.weight is not None:
        terms = terms * batch.weight
    return ops.sum(terms, axis=1) / ops.maximum(ops.sum(t, axis=1), 1.0)


def _logsumexp(x: Tensor) -> Tensor:
    """Row-wise log sum exp, (M, 1), whose gradient is exactly softmax(x).

    The shift is a constant (``stop_gradient``): differentiating through the max, as the
    torch backend's ``ops.logsumexp`` does, adds 1 - sum(softmax) to the arg-max's gradient,
    which float32 rounds to about K * 6e-8.
    """
    shift = ops.stop_gradient(ops.max(x, axis=1, keepdims=True))
    return shift + ops.log(ops.sum(ops.exp(x - shift), axis=1, keepdims=True))


def _hard_negatives_index(z: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The n highest-logit negatives per row: (values, indices, keep), each (M, n + 1).

    One top-k of n + 1 logits, then one slot is dropped: the positive if it is among them,
    else the smallest. With n = K - 1 every negative is kept and no top-k is needed.
    """
    num_classes = z.shape[1]
    if n >= num_classes - 1:
        indices = ops.zeros_like(z, dtype="int32") + ops.arange(num_classes, dtype="int32")
        return z, indices, ops.not_equal(indices, y[:, None])
    values, indices = ops.top_k(z, n + 1)
    indices = ops.cast(indices, "int32")
    is_pos = ops.equal(indices, y[:, None])
    not_last = ops.less(ops.arange(n + 1)[None, :], n)
    keep = ops.where(ops.any(is_pos, axis=1, keepdims=True), ops.logical_not(is_pos), not_last)
    return values, indices, keep


def _reference(
    name: str,
    batch: Batch,
    *,
    beta: float,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
) -> Tensor:
    """The batch-pooled normalisation of the authors' released code, with exact numerics.

    positive = sum over all positive entries of w softplus(-z) / number of positive entries;
    negative = SS: sum over all negative entries of w p^r softplus(z) / number of negatives,
               HS: mean over N * k of the k = int(K m/100) largest (1 - t) w softplus(z) per row;
    loss = positive + alpha negative, alpha = beta unless given.
    """
    z, t = batch.z, batch.dense_target()
    a = beta if alpha is None else alpha
    pos_terms = t * ops.softplus(-z)
    neg_terms = (1.0 - t) * ops.softplus(z)
    if batch.weight is not None:
        pos_terms, neg_terms = pos_terms * batch.weight, neg_terms * batch.weight
    positive = ops.sum(pos_terms) / ops.maximum(ops.sum(t), 1.0)
    if name == "hs-lr":
        k = int(batch.num_classes * m / 100.0)
        if k == 0:
            raise ValueError(
                f"normalization='reference' keeps int(K*m/100) = 0 negatives for "
                f"K={batch.num_classes}, m={m} (the authors' code returns NaN there); raise m "
                "or use normalization='paper'"
            )
        negative = ops.mean(neg_terms if k == batch.num_classes else ops.top_k(neg_terms, k)[0])
    else:
        if r != 0:
            neg_terms = neg_terms * ops.exp(-r * ops.softplus(-z))
        negative = ops.sum(neg_terms) / ops.maximum(ops.sum(1.0 - t), 1.0)
    return positive + a * negative


# ---------------------------------------------------------------------------------------------
# Functional API: per-sample losses of shape y_pred.shape[:-1] ("reference": one scalar).
# ---------------------------------------------------------------------------------------------


def lr_loss(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = True,
    *,
    weight: Tensor | None = None,
    target: str = "auto",
    normalization: str = "paper",
) -> Tensor:
    """Vanilla logistic regression, Eq. (3): one sigmoid binary cross-entropy per class.

    loss_i = sum_{k in P_i} softplus(-z_k) + sum_{k in N_i} softplus(z_k), summed over classes.
    Soft targets t in [0, 1] give sum_k t_k softplus(-z_k) + (1 - t_k) softplus(z_k): two
    non-negative terms, so nothing cancels, and the gradient sigmoid(z) - t is exact even at
    z = 0 (where the max(z, 0) - t z + log1p(exp(-|z|)) form has kinks that autodiff resolves
    differently on each backend).

    Args:
        y_true: class indices (N,) / (N, 1), or a multi-hot or soft target of y_pred's shape.
        y_pred: logits (N, K) or (N, ..., K).
        weight: optional (K,) per-class weight on class k's term (the BinaryCrossentropy
            convention).
        target: "auto" (by shape), "index" or "multi_hot".
        normalization: "paper" or "reference": the mean of the elementwise binary
            cross-entropy over all N*K entries (a scalar), the conventional multi-label
            implementation (the authors released no LR code).
    """
    check_options(from_logits=from_logits, target=target, normalization=normalization)
    batch = Batch(y_true, y_pred, target=target, weight=weight, hard_targets=False)
    t = batch.dense_target()
    terms = t * ops.softplus(-batch.z) + (1.0 - t) * ops.softplus(batch.z)
    if batch.weight is not None:
        terms = terms * batch.weight
    if normalization == "reference":
        return ops.mean(terms)
    return batch.per_sample(ops.sum(terms, axis=1))


def hs_lr_loss(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = True,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    alpha: float | None = None,
    weight: Tensor | None = None,
    target: str = "auto",
    normalization: str = "paper",
) -> Tensor:
    """Focus-rectified LR by negative-class hard selection (HS-LR), Eq. (5).

    loss_i = mean_{k in P_i} softplus(-z_k) + alpha_i sum_{k in S_i} softplus(z_k)

    S_i holds the n_i = max(1, floor(m/100 |N_i|)) negatives of highest probability, i.e.
    highest logit (the sigmoid is monotonic, so this is one ``top_k`` over logits, never a
    sort), and alpha_i = beta / n_i unless ``alpha`` is given. A multi-hot sample without
    positives has a zero positive term; one without negatives a zero negative term.

    Args:
        beta: the balance weight, 10 in the paper.
        m: the percentage of negative classes kept, in (0, 100]; 25 in the paper.
        alpha: overrides beta / n_i when given.
        normalization: "paper" (per sample) or "reference", the authors' released code: a
            scalar, the positive term pooled over all positive entries of the batch plus alpha
            times the mean, over N * k entries, of the k = int(K m/100) largest (1 - t) w
            softplus(z) per sample; alpha defaults to beta there.
        y_true, y_pred, weight, target: as in :func:`lr_loss` (multi-hot values in {0, 1}).
    """
    check_options(
        from_logits=from_logits,
        target=target,
        normalization=normalization,
        beta=beta,
        m=m,
        alpha=alpha,
    )
    batch = Batch(y_true, y_pred, target=target, weight=weight, hard_targets=True)
    if normalization == "reference":
        return _reference("hs-lr", batch, beta=beta, m=m, alpha=alpha)
    z, num_classes = batch.z, batch.num_classes
    if batch.index:
        n = num_hard_negatives(num_classes - 1, m)
        a = beta / n if alpha is None else alpha
        z_pos = ops.take_along_axis(z, batch.y[:, None], axis=1)[:, 0]
        positive = ops.softplus(-z_pos) * _class_weight(batch.weight, batch.y)
        values, indices, keep = _hard_negatives_index(z, batch.y, n)
        terms = ops.where(keep, ops.softplus(values), 0.0) * _class_weight(batch.weight, indices)
        return batch.per_sample(positive + a * ops.sum(terms, axis=1))

    t = batch.t
    num_neg = num_classes - ops.sum(t, axis=1)
    if m == 100:
        n_rows = num_neg
        values, keep, indices = z, ops.equal(t, 0.0), None
    else:
        n_rows = ops.where(num_neg > 0, ops.maximum(ops.floor(num_neg * (m / 100.0)), 1.0), 0.0)
        bound = min(num_classes, math.floor(m * num_classes / 100.0) + 1)  # >= every n_i
        _, indices = ops.top_k(ops.where(t > 0, float("-inf"), z), bound)
        values = ops.take_along_axis(z, indices, axis=1)
        keep = ops.less(ops.arange(bound, dtype=batch.dtype)[None, :], n_rows[:, None])
    a = beta / ops.maximum(n_rows, 1.0) if alpha is None else alpha
    terms = ops.where(keep, ops.softplus(values), 0.0)
    if batch.weight is not None:
        terms = terms * (batch.weight if indices is None else ops.take(batch.weight, indices))
    return batch.per_sample(_positive_term(batch, t) + a * ops.sum(terms, axis=1))


def ss_lr_loss(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = True,
    *,
    beta: float = 10.0,
    r: float = 2.0,
    alpha: float | None = None,
    weight: Tensor | None = None,
    target: str = "auto",
    normalization: str = "paper",
) -> Tensor:
    """Focus-rectified LR by negative-class soft selection (SS-LR), Eq. (6).

    loss_i = mean_{k in P_i} softplus(-z_k) + alpha_i sum_{k in N_i} p_k^r softplus(z_k)

    with alpha_i = beta / |N_i| unless ``alpha`` is given. p_k^r is computed as
    exp(-r softplus(-z_k)), whose gradient stays finite where p_k underflows (even for
    r < 1), and it is not detached: the gradient flows through it, as in the authors' code.
    r = 0 equals HS-LR at m = 100.

    Args:
        beta: the balance weight, 10 in the paper.
        r: the attending power, >= 0; 2 in the paper.
        alpha: overrides beta / |N_i| when given.
        normalization: "paper" (per sample) or "reference", the authors' released code: a
            scalar, the positive term pooled over all positive entries of the batch plus alpha
            times the negative term pooled over all negative entries; alpha defaults to beta.
        y_true, y_pred, weight, target: as in :func:`lr_loss` (multi-hot values in {0, 1}).
    """
    check_options(
        from_logits=from_logits,
        target=target,
        normalization=normalization,
        beta=beta,
        r=r,
        alpha=alpha,
    )
    batch = Batch(y_true, y_pred, target=target, weight=weight, hard_targets=True)
    if normalization == "reference":
        return _reference("ss-lr", batch, beta=beta, r=r, alpha=alpha)
    z, t = batch.z, batch.dense_target()
    terms = (1.0 - t) * ops.softplus(z)
    if r != 0:
        terms = terms * ops.exp(-r * ops.softplus(-z))
    if batch.weight is not None:
        terms = terms * batch.weight
    if alpha is not None:
        a = alpha
    elif batch.index:
        a = beta / (batch.num_classes - 1)
    else:
        a = beta / ops.maximum(batch.num_classes - ops.sum(t, axis=1), 1.0)
    return batch.per_sample(_positive_term(batch, t) + a * ops.sum(terms, axis=1))


def sr_loss(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = True,
    *,
    weight: Tensor | None = None,
    target: str = "auto",
) -> Tensor:
    """Softmax regression, Eq. (4): loss_i = -sum_k w_k t_k log softmax(z)_k = -w_y log q_y.

    Soft or multi-hot targets are class probabilities (``CategoricalCrossentropy``), not
    renormalised. Per-sample values equal ``frlr.torch.sr_loss(..., reduction="none")``; the
    Loss class then divides by N like every Keras loss, where ``F.cross_entropy``'s "mean"
    with a class weight and index targets divides by sum_i w[y_i].
    """
    check_options(from_logits=from_logits, target=target)
    batch = Batch(y_true, y_pred, target=target, weight=weight, hard_targets=False)
    log_q = ops.log_softmax(batch.z, axis=1)
    if batch.index:
        rows = -ops.take_along_axis(log_q, batch.y[:, None], axis=1)[:, 0]
        return batch.per_sample(rows * _class_weight(batch.weight, batch.y))
    terms = batch.t * log_q
    if batch.weight is not None:
        terms = terms * batch.weight
    return batch.per_sample(-ops.sum(terms, axis=1))


def hs_sr_loss(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = True,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    alpha: float | None = None,
    weight: Tensor | None = None,
    target: str = "auto",
) -> Tensor:
    """Hard selection (Eq. 5) applied to softmax probabilities q = softmax(z): the ablation.

    loss_i = -log q_y + (beta / n) sum_{k in top n negatives} -log(1 - q_k),
    n = max(1, floor(m/100 (K - 1))). log(1 - q_k) is log1p(-q_k) where q_k <= 1/2 and
    logsumexp over the other classes minus logsumexp over all where q_k > 1/2 (only the row's
    arg-max can be), so it stays exact as q_k -> 1. Class-index targets only.
    """
    check_options(from_logits=from_logits, target=target, beta=beta, m=m, alpha=alpha)
    batch = Batch(y_true, y_pred, target=target, weight=weight, hard_targets=True)
    if not batch.index:
        raise ValueError("hs_sr_loss takes class-index targets only: softmax is single-label")
    z, y, num_classes = batch.z, batch.y, batch.num_classes
    n = num_hard_negatives(num_classes - 1, m)
    a = beta / n if alpha is None else alpha
    log_q = ops.log_softmax(z, axis=1)
    positive = -ops.take_along_axis(log_q, y[:, None], axis=1)[:, 0]
    _, indices, keep = _hard_negatives_index(z, y, n)
    q_sel = ops.exp(ops.take_along_axis(log_q, indices, axis=1))
    big = q_sel > 0.5
    arg_max = ops.equal(ops.arange(num_classes)[None, :], ops.argmax(z, axis=1)[:, None])
    lse_all = _logsumexp(z)
    lse_others = _logsumexp(ops.where(arg_max, float("-inf"), z))
    log1m_q = ops.where(big, lse_others - lse_all, ops.log1p(-ops.where(big, 0.0, q_sel)))
    terms = ops.where(keep, log1m_q, 0.0) * _class_weight(batch.weight, indices)
    positive = positive * _class_weight(batch.weight, y)
    return batch.per_sample(positive - a * ops.sum(terms, axis=1))


# ---------------------------------------------------------------------------------------------
# keras.losses.Loss classes: serialisable, usable in model.compile(loss=...).
# ---------------------------------------------------------------------------------------------


class _FocusLoss(keras.losses.Loss):
    """A thin Loss over a functional loss: the constructor holds the hyper-parameters.

    ``reduction`` is Keras's ("sum_over_batch_size" = the mean over samples = torch's "mean");
    ``normalization="reference"`` gives one batch-pooled scalar and allows only
    "sum_over_batch_size"/"mean" and no ``sample_weight``.
    """

    function: ClassVar[Callable[..., Tensor]]
    hyper_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        from_logits: bool,
        target: str,
        weight: Any,
        reduction: str | None,
        name: str,
        dtype: Any,
        normalization: str | None = None,
        **hyper: Any,
    ) -> None:
        check_options(
            from_logits=from_logits,
            target=target,
            normalization=normalization or "paper",
            **hyper,
        )
        check_reference_reduction(normalization or "paper", reduction)
        self._init_dtype = dtype.name if isinstance(dtype, keras.DTypePolicy) else dtype
        policy = keras.dtype_policies.get(dtype or keras.backend.floatx())
        super().__init__(
            name=name,
            reduction=reduction,
            dtype="float32" if policy.compute_dtype in HALF_DTYPES else dtype,
        )
        self.from_logits = True
        self.target = target
        self.weight = weight_list(weight)
        self.normalization = normalization
        self.hyper = dict(hyper)

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"target": self.target, "weight": self.weight, **self.hyper}
        if self.normalization is not None:
            options["normalization"] = self.normalization
        return options

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        return type(self).function(y_true, y_pred, **self._options())

    def __call__(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None):
        dtype = getattr(y_pred, "dtype", None)
        if dtype is not None and not keras.backend.standardize_dtype(dtype).startswith(
            ("float", "bfloat")
        ):
            raise TypeError(
                f"y_pred must hold floating-point logits, got dtype "
                f"{keras.backend.standardize_dtype(dtype)}"
            )
        if self.normalization == "reference" and sample_weight is not None:
            raise ValueError(
                "normalization='reference' pools the batch into one number, so sample_weight "
                "cannot weight its samples; use normalization='paper'"
            )
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(from_logits=True, dtype=self._init_dtype, **self._options())
        return config


@keras.saving.register_keras_serializable(package="frlr")
class LRLoss(_FocusLoss):
    """Loss form of :func:`lr_loss` (Eq. 3)."""

    function = staticmethod(lr_loss)

    def __init__(
        self,
        from_logits: bool = True,
        target: str = "auto",
        weight: Any = None,
        normalization: str = "paper",
        reduction: str | None = "sum_over_batch_size",
        name: str = "lr_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            target=target,
            weight=weight,
            normalization=normalization,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )


@keras.saving.register_keras_serializable(package="frlr")
class HSLRLoss(_FocusLoss):
    """Loss form of :func:`hs_lr_loss` (Eq. 5; beta = 10, m = 25 as in the paper)."""

    function = staticmethod(hs_lr_loss)

    def __init__(
        self,
        beta: float = 10.0,
        m: float = 25.0,
        alpha: float | None = None,
        from_logits: bool = True,
        target: str = "auto",
        weight: Any = None,
        normalization: str = "paper",
        reduction: str | None = "sum_over_batch_size",
        name: str = "hs_lr_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            target=target,
            weight=weight,
            normalization=normalization,
            reduction=reduction,
            name=name,
            dtype=dtype,
            beta=beta,
            m=m,
            alpha=alpha,
        )


@keras.saving.register_keras_serializable(package="frlr")
class SSLRLoss(_FocusLoss):
    """Loss form of :func:`ss_lr_loss` (Eq. 6; beta = 10, r = 2 as in the paper)."""

    function = staticmethod(ss_lr_loss)

    def __init__(
        self,
        beta: float = 10.0,
        r: float = 2.0,
        alpha: float | None = None,
        from_logits: bool = True,
        target: str = "auto",
        weight: Any = None,
        normalization: str = "paper",
        reduction: str | None = "sum_over_batch_size",
        name: str = "ss_lr_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            target=target,
            weight=weight,
            normalization=normalization,
            reduction=reduction,
            name=name,
            dtype=dtype,
            beta=beta,
            r=r,
            alpha=alpha,
        )


@keras.saving.register_keras_serializable(package="frlr")
class SRLoss(_FocusLoss):
    """Loss form of :func:`sr_loss` (softmax cross-entropy, the baseline)."""

    function = staticmethod(sr_loss)

    def __init__(
        self,
        from_logits: bool = True,
        target: str = "auto",
        weight: Any = None,
        reduction: str | None = "sum_over_batch_size",
        name: str = "sr_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            target=target,
            weight=weight,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )


@keras.saving.register_keras_serializable(package="frlr")
class HSSRLoss(_FocusLoss):
    """Loss form of :func:`hs_sr_loss` (hard selection on softmax, the ablation)."""

    function = staticmethod(hs_sr_loss)

    def __init__(
        self,
        beta: float = 10.0,
        m: float = 25.0,
        alpha: float | None = None,
        from_logits: bool = True,
        target: str = "auto",
        weight: Any = None,
        reduction: str | None = "sum_over_batch_size",
        name: str = "hs_sr_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            from_logits=from_logits,
            target=target,
            weight=weight,
            reduction=reduction,
            name=name,
            dtype=dtype,
            beta=beta,
            m=m,
            alpha=alpha,
        )


LOSSES: dict[str, type[_FocusLoss]] = dict(
    zip(LOSS_NAMES, (SRLoss, LRLoss, HSLRLoss, SSLRLoss, HSSRLoss), strict=True)
)
"""Registry name (:data:`frlr.catalogue.LOSS_NAMES`) -> Loss class."""

FUNCTIONAL: dict[str, Callable[..., Tensor]] = dict(
    zip(LOSS_NAMES, (sr_loss, lr_loss, hs_lr_loss, ss_lr_loss, hs_sr_loss), strict=True)
)
"""Registry name -> functional form."""


def get_loss(name: str, **kwargs: Any) -> keras.losses.Loss:
    """The Loss registered under ``name`` ("sr", "lr", "hs-lr", "ss-lr", "hs-sr").

    Keyword arguments go to the class's constructor; one it does not take is a TypeError.
    """
    key = canonical_loss_name(name)
    if key is None:
        raise ValueError(f"unknown loss name {name!r}; known: {', '.join(LOSSES)}")
    try:
        return LOSSES[key](**kwargs)
    except TypeError as error:
        raise TypeError(f"loss {name!r}: {error}") from None


__all__ = [
    "FUNCTIONAL",
    "LOSSES",
    "HSLRLoss",
    "HSSRLoss",
    "LRLoss",
    "SRLoss",
    "SSLRLoss",
    "get_loss",
    "hs_lr_loss",
    "hs_sr_loss",
    "lr_loss",
    "sr_loss",
    "ss_lr_loss",
]
