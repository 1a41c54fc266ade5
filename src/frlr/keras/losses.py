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

Written once with ``keras.ops`` (TensorFlow, JAX and PyTorch backends), in ``_maths``, whose
functions ``NCDCallback`` calls too, and numerically the same as ``frlr.torch``: -log p =
softplus(-z) and -log(1 - p) = softplus(z), never log(p + eps), so logits of 1e4 give finite
losses and exact gradients. LR, HS-LR and SS-LR compute their rows and gradient together, in
each backend's fewest passes (class indices stay indices), and backward only scales it
(``_fast``: ``jax.custom_jvp``, nested
``tf.custom_gradient``, ``torch.autograd.Function``; second derivatives stay exact); HS-LR's
selection is made once, in the forward pass (JAX: an exact threshold found by counting, no
``top_k``; TensorFlow and torch: one ``top_k``). Only
logits are accepted (``from_logits=True``): a probability of 1 - 1e-9 is 1.0 in float32, and
the log-sigmoid forms need the logit to keep that tail. float16/bfloat16 logits are computed
and returned in float32.

``y_true`` follows Keras: integer class indices of shape (N,) or (N, 1) as for
``SparseCategoricalCrossentropy``, or a multi-hot target of y_pred's shape as for
``BinaryCrossentropy``; ``target="auto"`` tells them apart by shape. LR, HS-LR and SS-LR
also take soft targets in [0, 1] (each function's docstring gives the generalisation). An
empty batch (N = 0) gives 0 with every reduction but "none", and a zero gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import Parameter
from typing import Any, ClassVar

import keras
from keras import ops

from frlr.catalogue import (
    HYPERPARAMETERS,
    LOSS_NAMES,
    canonical_loss_name,
    check_option_names,
    option_parameters,
    sign_constructor,
)
from frlr.keras import _fast, _maths
from frlr.keras._inputs import (
    HALF_DTYPES,
    Batch,
    check_options,
    check_reference_reduction,
    weight_list,
)

Tensor = Any


def _logistic(batch: Batch, terms: _maths.Terms, normalization: str) -> Tensor:
    """Rows of a logistic loss from its coefficients (``_maths``); "reference" sums them all."""
    rows = _fast.logistic_rows(terms.positive, terms.negative, batch.z, terms.r, terms.index)
    if normalization == "reference":
        return ops.sum(rows)
    return batch.per_sample(rows)


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
    r"""Vanilla logistic regression, Eq. (3): one sigmoid binary cross-entropy per class.

    $$\mathrm{loss}_i = \sum_{k \in P_i} \operatorname{softplus}(-z_k)
    + \sum_{k \in N_i} \operatorname{softplus}(z_k),$$

    summed over classes. Soft targets $t \in [0, 1]$ give
    $\sum_k t_k \operatorname{softplus}(-z_k) + (1 - t_k) \operatorname{softplus}(z_k)$: two
    non-negative terms, so nothing cancels, and the gradient sigmoid(z) - t is exact even at
    z = 0 (where the max(z, 0) - t z + log1p(exp(-|z|)) form has kinks that autodiff resolves
    differently on each backend). The maths: ``_maths.lr_terms``.

    Args:
        y_true: integer class indices (N, ...) or (N, ..., 1), or a float target of y_pred's
            shape: multi-hot {0, 1} or soft, every value in [0, 1].
        y_pred: logits (N, K) or (N, ..., K), classes last, K >= 2; float16/bfloat16 are
            computed in float32.
        from_logits: must be True (the default): only logits are accepted, anything else is
            a ValueError (drop the final sigmoid/softmax).
        weight: optional (K,) per-class weight on class k's term (the BinaryCrossentropy
            convention), finite and >= 0; default None.
        target: "auto" (default: index or multi-hot by shape), "index" or "multi_hot".
        normalization: "paper" (default) or "reference": the mean of the elementwise binary
            cross-entropy over all N*K entries (a scalar), the conventional multi-label
            implementation (the authors released no LR code).

    Returns:
        Per-sample losses, a backend tensor of shape ``y_pred.shape[:-1]`` ("reference": one).

    Examples:
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits = np.array([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> y_true = np.array([0, 2])
        >>> [round(float(v), 4) for v in frlr.lr_loss(y_true, logits)]
        [3.5898, 8.156]
        >>> soft = np.array([[0.9, 0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.8, 0.0, 0.2]])
        >>> [round(float(v), 4) for v in frlr.lr_loss(soft, logits)]
        [3.8898, 7.156]
    """
    check_options(from_logits=from_logits, target=target, normalization=normalization)
    batch = Batch(y_true, y_pred, target=target, weight=weight)
    t = batch.target()
    if normalization == "reference":
        terms = _maths.reference_terms(ops, "lr", batch.z, t, batch.weight, beta=0.0)
    else:
        terms = _maths.lr_terms(ops, t, batch.weight)
    return _logistic(batch, terms, normalization)


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
    r"""Focus-rectified LR by negative-class hard selection (HS-LR), Eq. (5).

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \alpha_i \sum_{k \in S_i} \operatorname{softplus}(z_k)$$

    S_i holds the n_i = max(1, floor(m |N_i| / 100)) negatives of highest probability, i.e.
    highest logit (the sigmoid is monotonic, so this is one selection over logits, never a
    sort: one ``top_k``, on JAX an exact threshold found by counting; made once, in the
    forward pass, and reused by the gradient), and alpha_i = beta / n_i unless ``alpha`` is
    given. n_i is exactly ``frlr.catalogue.num_hard_negatives(|N_i|, m)``, as in
    ``frlr.torch``, for every m (by comparison with precomputed thresholds, not float32
    arithmetic in the graph). A multi-hot sample without positives has a zero positive term;
    one without negatives a zero negative term. The maths: ``_maths.hs_lr_terms``.

    Soft targets t in [0, 1]^K (class k: positive mass t_k, negative mass 1 - t_k) generalise
    it, reducing to Eq. 5 exactly for {0, 1} targets:

    $$\mathrm{loss}_i = \frac{\sum_k t_k \operatorname{softplus}(-z_k)}{\sum_k t_k}
    + \frac{\beta}{n_i} \sum_{k \in S_i} (1 - t_k) \operatorname{softplus}(z_k)$$

    with M_i = sum_k (1 - t_k), n_i = max(1, floor(m M_i / 100)) (0 when M_i = 0), S_i the n_i
    classes of largest logit among those with t_k < 1, the first term 0 when sum_k t_k = 0.

    Args:
        y_true, y_pred, from_logits, weight, target: as in [`lr_loss`][]: class indices,
            multi-hot or soft targets in [0, 1]; logits only; weight (K,) >= 0 or None.
        beta: the balance weight, finite and >= 0; 10 (the paper's) by default.
        m: the percentage of negative classes kept, in (0, 100]; 25 (the paper's) by default.
        alpha: a fixed weight >= 0 that replaces beta / n_i when given; default None.
        normalization: "paper" (default, per sample) or "reference", the authors' released
            code: a scalar, the positive term pooled over all positive entries of the batch
            plus alpha times the mean, over N * k entries, of the k = int(K m/100) largest
            (1 - t) w softplus(z) per sample; alpha defaults to beta there.

    Examples:
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits = np.array([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> y_true = np.array([0, 2])
        >>> [round(float(v), 4) for v in frlr.hs_lr_loss(y_true, logits, m=50.0)]
        [13.5044, 23.9362]

        The first sample keeps n = floor(50 * 4 / 100) = 2 negatives, classes 3 and 2:

        >>> softplus = lambda x: np.log1p(np.exp(x))
        >>> z = logits[0]
        >>> round(float(softplus(-z[0]) + 10 / 2 * (softplus(z[3]) + softplus(z[2]))), 4)
        13.5044
    """
    check_options(
        from_logits=from_logits,
        target=target,
        normalization=normalization,
        beta=beta,
        m=m,
        alpha=alpha,
    )
    batch = Batch(y_true, y_pred, target=target, weight=weight)
    z, t = batch.z, batch.target()
    if normalization == "reference":
        terms = _maths.reference_terms(
            ops, "hs-lr", z, t, batch.weight, beta=beta, m=m, alpha=alpha
        )
    else:
        terms = _maths.hs_lr_terms(
            ops, z, t, batch.weight, beta=beta, m=m, alpha=alpha, index=batch.index
        )
    return _logistic(batch, terms, normalization)


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
    r"""Focus-rectified LR by negative-class soft selection (SS-LR), Eq. (6).

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \alpha_i \sum_{k \in N_i} p_k^r \operatorname{softplus}(z_k)$$

    with alpha_i = beta / |N_i| unless ``alpha`` is given. p_k^r is computed as
    exp(-r softplus(-z_k)), whose gradient stays finite where p_k underflows (even for
    r < 1), and it is not detached: the gradient flows through it, as in the authors' code.
    r = 0 equals HS-LR at m = 100.

    Soft targets t in [0, 1]^K (class k: positive mass t_k, negative mass 1 - t_k) generalise
    it, reducing to Eq. 6 exactly for {0, 1} targets:

    $$\mathrm{loss}_i = \frac{\sum_k t_k \operatorname{softplus}(-z_k)}{\sum_k t_k}
    + \frac{\beta}{M_i} \sum_k (1 - t_k) p_k^r \operatorname{softplus}(z_k),
    \qquad M_i = \sum_k (1 - t_k)$$

    (the first term 0 when sum_k t_k = 0, the second when M_i = 0). The maths:
    ``_maths.ss_lr_terms``.

    Args:
        y_true, y_pred, from_logits, weight, target: as in [`lr_loss`][]: class indices,
            multi-hot or soft targets in [0, 1]; logits only; weight (K,) >= 0 or None.
        beta: the balance weight, finite and >= 0; 10 (the paper's) by default.
        r: the attending power, finite and >= 0; 2 (the paper's) by default.
        alpha: a fixed weight >= 0 that replaces beta / |N_i| when given; default None.
        normalization: "paper" (default, per sample) or "reference", the authors' released
            code: a scalar, the positive term pooled over all positive entries of the batch
            plus alpha times the negative term pooled over all negative entries; alpha
            defaults to beta.

    Examples:
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits = np.array([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> y_true = np.array([0, 2])
        >>> [round(float(v), 4) for v in frlr.ss_lr_loss(y_true[:, None], logits)]  # (N, 1)
        [4.1392, 12.174]

        The first sample by Eq. 6, with alpha = beta / (K - 1) = 10 / 4:

        >>> softplus, p = (lambda x: np.log1p(np.exp(x))), 1 / (1 + np.exp(-logits[0]))
        >>> z = logits[0]
        >>> round(float(softplus(-z[0]) + 10 / 4 * np.sum(p[1:] ** 2 * softplus(z[1:]))), 4)
        4.1392
    """
    check_options(
        from_logits=from_logits,
        target=target,
        normalization=normalization,
        beta=beta,
        r=r,
        alpha=alpha,
    )
    batch = Batch(y_true, y_pred, target=target, weight=weight)
    z, t = batch.z, batch.target()
    if normalization == "reference":
        terms = _maths.reference_terms(
            ops, "ss-lr", z, t, batch.weight, beta=beta, r=r, alpha=alpha
        )
    else:
        terms = _maths.ss_lr_terms(
            ops, z, t, batch.weight, beta=beta, r=r, alpha=alpha, index=batch.index
        )
    return _logistic(batch, terms, normalization)


def sr_loss(
    y_true: Tensor,
    y_pred: Tensor,
    from_logits: bool = True,
    *,
    weight: Tensor | None = None,
    target: str = "auto",
) -> Tensor:
    r"""Softmax regression, Eq. (4): Keras's categorical cross-entropy with this library's checks.

    $$\mathrm{loss}_i = -\sum_k w_k t_k \log q_k = -w_y \log q_y,
    \qquad q = \operatorname{softmax}(z).$$

    Soft or multi-hot targets are class probabilities (``CategoricalCrossentropy``), not
    renormalised. Per-sample values equal ``frlr.torch.sr_loss(..., reduction="none")``; the
    Loss class then divides by N like every Keras loss, where ``F.cross_entropy``'s "mean"
    with a class weight and index targets divides by sum_i w[y_i]. The maths:
    ``_maths.sr_terms``.

    Args:
        y_true: integer class indices (N, ...) or (N, ..., 1), or class probabilities of
            y_pred's shape (one-hot, multi-hot or soft, values in [0, 1]).
        y_pred: logits (N, K) or (N, ..., K), classes last, K >= 2.
        from_logits: must be True (the default): only logits are accepted.
        weight: optional (K,) per-class weight w, finite and >= 0; default None.
        target: "auto" (default: by shape), "index" or "multi_hot".

    Examples:
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits = np.array([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> y_true = np.array([0, 2])
        >>> [round(float(v), 4) for v in frlr.sr_loss(y_true, logits)]
        [0.6737, 5.2421]
        >>> import keras
        >>> keras_sr = keras.losses.sparse_categorical_crossentropy(y_true, logits, True)
        >>> [round(float(v), 4) for v in keras_sr]  # Keras's own, for index targets
        [0.6737, 5.2421]
    """
    check_options(from_logits=from_logits, target=target)
    batch = Batch(y_true, y_pred, target=target, weight=weight)
    terms = _maths.sr_terms(batch.dense_target(), batch.weight)
    return batch.per_sample(terms.rows(ops, batch.z))


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
    r"""Hard selection (Eq. 5) applied to softmax probabilities: the paper's ablation.

    $$\mathrm{loss}_i = -\log q_y
    + \frac{\beta}{n} \sum_{k \in \text{top } n \text{ negatives}} -\log(1 - q_k),
    \qquad q = \operatorname{softmax}(z),
    \quad n = \max(1, \lfloor \tfrac{m}{100} (K - 1) \rfloor).$$

    log(1 - q_k) is log1p(-q_k) where q_k <= 1/2 and
    logsumexp over the other classes minus logsumexp over all where q_k > 1/2 (only the row's
    arg-max can be), so it stays exact as q_k -> 1. Class-index targets only. The maths:
    ``_maths.hs_sr_terms``.

    Args:
        y_true: integer class indices (N, ...) or (N, ..., 1) only: a multi-hot or soft
            target is a ValueError (softmax is single-label).
        y_pred: logits (N, K) or (N, ..., K), classes last, K >= 2.
        from_logits: must be True (the default): only logits are accepted.
        beta: the balance weight, finite and >= 0; default 10.
        m: the percentage of negative classes kept, in (0, 100]; default 25.
        alpha: a fixed weight >= 0 that replaces beta / n when given; default None.
        weight: optional (K,) per-class weight on the positive term and on each selected
            negative's term, finite and >= 0; default None.
        target: "auto" (default) or "index".

    Examples:
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits = np.array([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> y_true = np.array([0, 2])
        >>> [round(float(v), 4) for v in frlr.hs_sr_loss(y_true, logits)]
        [4.373, 20.6116]
    """
    check_options(from_logits=from_logits, target=target, beta=beta, m=m, alpha=alpha)
    batch = Batch(y_true, y_pred, target=target, weight=weight)
    if not batch.index:
        raise ValueError("hs_sr_loss takes class-index targets only: softmax is single-label")
    terms = _maths.hs_sr_terms(
        ops, batch.z, batch.dense_target(), batch.weight, beta=beta, m=m, alpha=alpha
    )
    return batch.per_sample(terms.rows(ops, batch.z))


# ---------------------------------------------------------------------------------------------
# keras.losses.Loss classes: serialisable, usable in model.compile(loss=...).
# ---------------------------------------------------------------------------------------------


class _FocusLoss(keras.losses.Loss):
    """A thin Loss over a functional loss, ``function``: the constructor takes the function's
    options and Keras's (reduction, name, dtype) by keyword, checks them and holds them.

    The options' names and defaults are written once, in the function's signature.
    ``reduction`` is Keras's ("sum_over_batch_size" = the mean over samples = torch's "mean");
    ``normalization="reference"`` gives one batch-pooled scalar and allows only
    "sum_over_batch_size"/"mean" and no ``sample_weight``.
    """

    function: ClassVar[Callable[..., Tensor]]
    defaults: ClassVar[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        keyword = Parameter.KEYWORD_ONLY
        options = [
            *option_parameters(cls.function, skip=("y_true", "y_pred")),
            # keras.losses.Loss's own; a loss is named after its function
            Parameter("reduction", keyword, default="sum_over_batch_size", annotation="str | None"),
            Parameter("name", keyword, default=cls.function.__name__, annotation="str"),
            Parameter("dtype", keyword, default=None, annotation="Any"),
        ]
        cls.defaults = {p.name: p.default for p in options}
        sign_constructor(cls, options)

    def __init__(self, **options: Any) -> None:
        check_option_names(type(self).__name__, options, self.defaults)
        o = {**self.defaults, **options}
        hyper = {name: o[name] for name in o if name in HYPERPARAMETERS}
        normalization = o.get("normalization")  # the LR family's
        check_options(
            from_logits=o["from_logits"],
            target=o["target"],
            normalization=normalization or "paper",
            **hyper,
        )
        check_reference_reduction(normalization or "paper", o["reduction"])
        dtype = o["dtype"]
        self._init_dtype = dtype.name if isinstance(dtype, keras.DTypePolicy) else dtype
        policy = keras.dtype_policies.get(dtype or keras.backend.floatx())
        super().__init__(
            name=o["name"],
            reduction=o["reduction"],
            dtype="float32" if policy.compute_dtype in HALF_DTYPES else dtype,
        )
        self.from_logits = True
        self.target = o["target"]
        self.weight = weight_list(o["weight"])
        self.normalization = normalization
        self.hyper = hyper

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
        value = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        if self.reduction not in (None, "none") and tuple(value.shape) == (0,):
            # Keras returns an empty batch's (0,) per-sample losses unreduced; the mean (and
            # sum) of no samples is 0, with a zero gradient.
            value = ops.sum(value)
        return value

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(from_logits=True, dtype=self._init_dtype, **self._options())
        return config


@keras.saving.register_keras_serializable(package="frlr")
class LRLoss(_FocusLoss):
    """Loss form of [`lr_loss`][] (Eq. 3): for ``model.compile(loss=...)``; called as
    ``loss(y_true, y_pred, sample_weight=None)`` with class indices, multi-hot or soft targets.

    Args:
        **options: [`lr_loss`][]'s options and Keras's, by keyword (below); one it does not
            take is a TypeError.

    Other Parameters:
        from_logits: must be True (the default): these losses take logits only.
        target: "auto" (default: class indices or multi-hot by shape), "index" or "multi_hot".
        weight: optional (K,) per-class weight, finite and >= 0, kept as a list (serialised).
        normalization: "paper" (default) or "reference", as in [`lr_loss`][]; "reference"
            needs a mean reduction and no sample_weight.
        reduction: Keras's: "sum_over_batch_size" (default, the mean over samples), "sum",
            "mean", "mean_with_sample_weight" or None / "none" (per-sample losses).
        name: the loss's name in logs and configs; default the function's, "lr_loss".
        dtype: the dtype policy of the computation; float16/bfloat16 compute in float32.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits, y_true = np.array([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]]), np.array([0, 2])
        >>> mean = keras.ops.mean(frlr.lr_loss(y_true, logits))  # "sum_over_batch_size"
        >>> bool(np.isclose(float(frlr.LRLoss()(y_true, logits)), float(mean)))
        True
    """

    function = staticmethod(lr_loss)


@keras.saving.register_keras_serializable(package="frlr")
class HSLRLoss(_FocusLoss):
    r"""Loss form of [`hs_lr_loss`][] (Eq. 5; beta = 10, m = 25 as in the paper):

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \frac{\beta}{n_i} \sum_{k \in \text{top } n_i \text{ of } N_i} \operatorname{softplus}(z_k).$$

    Args:
        **options: [`hs_lr_loss`][]'s options and Keras's, by keyword (below); one it does
            not take is a TypeError.

    Other Parameters:
        beta: the balance weight, finite and >= 0; default 10.
        m: the percentage of negative classes kept, in (0, 100]; default 25.
        alpha: a fixed weight >= 0 in place of beta / n_i; default None.
        normalization: "paper" (default) or "reference", as in [`hs_lr_loss`][].
        from_logits, target, weight, reduction, name, dtype: as in [`LRLoss`][] (defaults
            True, "auto", None, "sum_over_batch_size", "hs_lr_loss", None).

    Examples:
        >>> import frlr.keras as frlr
        >>> config = frlr.HSLRLoss(m=50.0).get_config()  # model.save() keeps it
        >>> frlr.HSLRLoss.from_config(config).hyper
        {'beta': 10.0, 'm': 50.0, 'alpha': None}
    """

    function = staticmethod(hs_lr_loss)


@keras.saving.register_keras_serializable(package="frlr")
class SSLRLoss(_FocusLoss):
    r"""Loss form of [`ss_lr_loss`][] (Eq. 6; beta = 10, r = 2 as in the paper):

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \frac{\beta}{|N_i|} \sum_{k \in N_i} p_k^r \operatorname{softplus}(z_k).$$

    Args:
        **options: [`ss_lr_loss`][]'s options and Keras's, by keyword (below); one it does
            not take is a TypeError.

    Other Parameters:
        beta: the balance weight, finite and >= 0; default 10.
        r: the attending power, finite and >= 0; default 2.
        alpha: a fixed weight >= 0 in place of beta / |N_i|; default None.
        normalization: "paper" (default) or "reference", as in [`ss_lr_loss`][].
        from_logits, target, weight, reduction, name, dtype: as in [`LRLoss`][] (defaults
            True, "auto", None, "sum_over_batch_size", "ss_lr_loss", None).

    Examples:
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits, y_true = np.array([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]]), np.array([0, 2])
        >>> loss = frlr.SSLRLoss()  # model.compile(optimizer="sgd", loss=loss)
        >>> value = loss(y_true, logits, sample_weight=np.array([1.0, 0.0]))
        >>> bool(np.isclose(float(value), float(frlr.ss_lr_loss(y_true, logits)[0]) / 2))
        True
    """

    function = staticmethod(ss_lr_loss)


@keras.saving.register_keras_serializable(package="frlr")
class SRLoss(_FocusLoss):
    """Loss form of [`sr_loss`][] (Eq. 4, softmax cross-entropy, the baseline): Keras's
    ``SparseCategoricalCrossentropy(from_logits=True)`` for class indices and
    ``CategoricalCrossentropy(from_logits=True)`` for class probabilities.

    Args:
        **options: [`sr_loss`][]'s options and Keras's, by keyword (below); one it does not
            take is a TypeError.

    Other Parameters:
        from_logits, target, weight, reduction, name, dtype: as in [`LRLoss`][] (defaults
            True, "auto", None, "sum_over_batch_size", "sr_loss", None).

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits, y_true = np.array([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]]), np.array([0, 2])
        >>> keras_sr = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        >>> bool(np.isclose(float(frlr.SRLoss()(y_true, logits)), float(keras_sr(y_true, logits))))
        True
    """

    function = staticmethod(sr_loss)


@keras.saving.register_keras_serializable(package="frlr")
class HSSRLoss(_FocusLoss):
    r"""Loss form of [`hs_sr_loss`][] (hard selection on softmax, the ablation), class
    indices only:

    $$-\log q_y + \frac{\beta}{n} \sum_{k \in \text{top } n \text{ negatives}} -\log(1 - q_k).$$

    Args:
        **options: [`hs_sr_loss`][]'s options and Keras's, by keyword (below); one it does
            not take is a TypeError.

    Other Parameters:
        beta: the balance weight, finite and >= 0; default 10.
        m: the percentage of negative classes kept, in (0, 100]; default 25.
        alpha: a fixed weight >= 0 in place of beta / n; default None.
        from_logits, target, weight, reduction, name, dtype: as in [`LRLoss`][] (defaults
            True, "auto", None, "sum_over_batch_size", "hs_sr_loss", None).

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> logits, y_true = np.array([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]]), np.array([0, 2])
        >>> value = frlr.HSSRLoss(alpha=1.0, reduction="sum")(y_true, logits)
        >>> total = keras.ops.sum(frlr.hs_sr_loss(y_true, logits, alpha=1.0))
        >>> bool(np.isclose(float(value), float(total)))
        True
    """

    function = staticmethod(hs_sr_loss)


LOSSES: dict[str, type[_FocusLoss]] = dict(
    zip(LOSS_NAMES, (SRLoss, LRLoss, HSLRLoss, SSLRLoss, HSSRLoss), strict=True)
)
"""Registry name (``frlr.catalogue.LOSS_NAMES``) -> Loss class."""

FUNCTIONAL: dict[str, Callable[..., Tensor]] = dict(
    zip(LOSS_NAMES, (sr_loss, lr_loss, hs_lr_loss, ss_lr_loss, hs_sr_loss), strict=True)
)
"""Registry name -> functional form."""


def get_loss(name: str, **kwargs: Any) -> keras.losses.Loss:
    """The Loss registered under ``name`` ("sr", "lr", "hs-lr", "ss-lr", "hs-sr").

    Keyword arguments go to the class's constructor; one it does not take is a TypeError.

    Args:
        name: a registry name, in any case and with "_" or "-" ("SS_LR" is "ss-lr"); an
            unknown name is a ValueError.
        **kwargs: the constructor's arguments ([`SRLoss`][], [`LRLoss`][],
            [`HSLRLoss`][], [`SSLRLoss`][], [`HSSRLoss`][]): beta, m, r, alpha,
            from_logits, target, weight, normalization, reduction, name or dtype, as it takes.

    Returns:
        The ``keras.losses.Loss``, for ``model.compile(loss=...)``.

    Examples:
        >>> import frlr.keras as frlr
        >>> loss = frlr.get_loss("SS_LR", r=1.0)
        >>> type(loss).__name__, loss.hyper
        ('SSLRLoss', {'beta': 10.0, 'r': 1.0, 'alpha': None})
        >>> frlr.get_loss("hs-lr", r=1.0)
        Traceback (most recent call last):
        ...
        TypeError: loss 'hs-lr': HSLRLoss takes no option 'r'; it takes alpha, beta, ...
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
