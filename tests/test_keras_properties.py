"""Property tests for ``frlr.keras`` against the float64 references, on the in-process backend.

Hypothesis draws shapes (N = 0 included, K from 2), dtypes, index / multi-hot / soft targets,
options (m anywhere in (0, 100], whole numbers and not), class weights and logits up to 1e4;
values and gradients must match ``test_keras_reference`` (and ``soft_reference`` for soft
HS-LR/SS-LR targets). The hard-negative count must equal ``frlr.catalogue.num_hard_negatives``
exactly, and second derivatives (nested ``tf.GradientTape``, ``jax.hessian``, torch double
backward) the float64 reference Hessian.

This process runs whichever backend Keras picked (``KERAS_BACKEND``, else
``~/.keras/keras.json``: TensorFlow here). ``test_keras_backends`` runs :func:`run_all` in its
one subprocess per backend, with fewer examples, so every backend is covered.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import frlr.keras as fk  # noqa: E402
import soft_reference  # noqa: E402
import test_keras_reference as ref  # noqa: E402
from frlr.catalogue import num_hard_negatives  # noqa: E402
from frlr.keras import _maths  # noqa: E402

BACKEND = keras.backend.backend()
LOGISTIC = ("lr", "hs-lr", "ss-lr")
# m anywhere in (0, 100]: whole numbers (the 13, 26, 59 ...) and arbitrary floats.
M_VALUES = st.one_of(
    st.integers(1, 100),
    st.floats(0.0, 100.0, exclude_min=True, allow_nan=False),
)


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------------------------
# Autodiff on the backend: first and second order.
# ---------------------------------------------------------------------------------------------


def value_and_grad(fn: Callable[[Any], Any], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fn(z) and the gradient of its sum with respect to z, by the backend's autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(x)
            values = fn(x)
            total = tf.reduce_sum(values)
        grad = tape.gradient(total, x)
        grad = tf.zeros_like(x) if grad is None else grad
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def total(x):
            values = fn(x)
            return jnp.sum(values), values

        # one compiled program per call: op-by-op, each keras op compiles its own (most of
        # this check's time on JAX) and Keras' fit compiles the loss whole anyway
        (_, values), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(jnp.asarray(z))
    else:
        import torch

        x = torch.tensor(z, requires_grad=True)
        values = fn(x)
        (grad,) = torch.autograd.grad(values.sum(), x, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        values = values.detach()
    return _numpy(values), _numpy(grad)


def hessian(fn: Callable[[Any], Any], z: np.ndarray) -> np.ndarray:
    """d^2 sum(fn(z)) / dz dz as (N K, N K): nested ``tf.GradientTape``, ``jax.hessian`` or
    torch double backward (``create_graph=True``)."""
    size = z.size
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(z)
        with tf.GradientTape(persistent=True) as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                total = tf.reduce_sum(fn(x))
            grad = inner.gradient(total, x)
        result = outer.jacobian(grad, x, experimental_use_pfor=False)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        result = jax.jit(jax.hessian(lambda x: jnp.sum(fn(x))))(jnp.asarray(z))
    else:
        import torch

        x = torch.tensor(z, requires_grad=True)
        (grad,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        rows = []
        for entry in grad.reshape(-1):
            (row,) = torch.autograd.grad(entry, x, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(x) if row is None else row)
        result = torch.stack(rows)
    return _numpy(result).reshape(size, size)


# ---------------------------------------------------------------------------------------------
# The float64 reference for one problem.
# ---------------------------------------------------------------------------------------------


def reference(
    name: str, z: np.ndarray, target: np.ndarray, weight: np.ndarray | None, options: dict
) -> tuple[np.ndarray, np.ndarray]:
    """(per-sample values or the pooled scalar, gradient of their sum) in float64."""
    hyper = {k: v for k, v in options.items() if k != "normalization"}
    soft = target.ndim == 2 and np.any((target != 0) & (target != 1))
    if options.get("normalization") == "reference":
        if len(z) == 0:
            return np.float64(0.0), np.zeros(z.shape)
        loss, grad = ref.reference_mode(name, z, target, weight, **hyper)
        return np.float64(loss), grad
    if len(z) == 0:
        return np.zeros(0), np.zeros(z.shape)
    if soft and name in ("hs-lr", "ss-lr"):
        return soft_reference.per_sample(name, z, target, weight, **hyper)
    return ref.per_sample(name, z, target, weight, **hyper)


def assert_close(
    found: np.ndarray, expected: np.ndarray, rtol: float, what: str, atol: float = 1e-12
) -> None:
    """rtol of each entry, plus rtol / 100 of its row's largest entry (a loss of 1e-30 beside
    one of 1e4 need not match to rtol of itself)."""
    found, expected = np.asarray(found, np.float64), np.asarray(expected, np.float64)
    assert found.shape == expected.shape, (what, found.shape, expected.shape)
    assert np.isfinite(found).all(), (what, found)
    scale = np.abs(expected).max(axis=-1, keepdims=True) if expected.size else 0.0
    bad = np.abs(found - expected) > rtol * np.abs(expected) + rtol * 1e-2 * scale + atol
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} entries off, e.g. {at}: {found[at]!r} vs {expected[at]!r}"
        )


# ---------------------------------------------------------------------------------------------
# Problems: shapes, dtypes, targets, options, extreme logits.
# ---------------------------------------------------------------------------------------------

DTYPES = ("float32", "float16", "bfloat16") + (() if BACKEND == "jax" else ("float64",))


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(("lr", "hs-lr", "ss-lr", "sr", "hs-sr")))
    kind = "index" if name == "hs-sr" else draw(st.sampled_from(("index", "multi_hot", "soft")))
    n, k = draw(st.integers(0, 5)), draw(st.integers(2, 12))
    options: dict[str, Any] = {}
    if name in ("hs-lr", "ss-lr", "hs-sr"):
        options["beta"] = draw(st.floats(0.0, 20.0))
        options["alpha"] = draw(st.none() | st.floats(0.0, 5.0))
    if name in ("hs-lr", "hs-sr"):
        options["m"] = draw(M_VALUES)
    if name == "ss-lr":
        options["r"] = draw(st.floats(0.0, 4.0))
    if name in LOGISTIC and kind != "soft" and draw(st.booleans()):
        options["normalization"] = "reference"
        if name == "hs-lr":
            assume(int(k * options["m"] / 100.0) >= 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from((1.0, 8.0, 1e4)))
    dtype = draw(st.sampled_from(DTYPES))
    z = (rng.normal(size=(n, k)) * scale).astype(dtype).astype(np.float64)
    if name in ("hs-lr", "hs-sr"):  # hard selection is not differentiable at a tie
        assume(all(len(np.unique(row)) == k for row in z))
    if kind == "index":
        target = rng.integers(0, k, n)
    elif kind == "multi_hot":
        target = (rng.random((n, k)) < draw(st.sampled_from((0.0, 0.3, 1.0)))).astype(np.float32)
    else:  # multiples of 1/64: exact in every dtype, so both sides see the same mass M
        target = (rng.integers(0, 65, (n, k)) / 64.0).astype(np.float32)
        target[rng.random((n, k)) < 0.2] = 1.0
    weight = rng.uniform(0.0, 2.0, k).astype(np.float32) if draw(st.booleans()) else None
    return {
        "name": name,
        "z": z,
        "dtype": dtype,
        "target": target,
        "weight": weight,
        "options": options,
    }


def check_problem(problem: dict[str, Any]) -> None:
    """The Keras loss on one problem against the float64 reference: values, gradient, dtype."""
    name, dtype, target, weight = (problem[k] for k in ("name", "dtype", "target", "weight"))
    options = problem["options"]
    z = problem["z"]
    fn = fk.FUNCTIONAL[name]

    def loss(x):
        return fn(target, keras.ops.cast(x, dtype), weight=weight, **options)

    values, grad = value_and_grad(loss, z.astype("float64" if dtype == "float64" else "float32"))
    expected, expected_grad = reference(name, z, target, weight, options)
    rtol = 1e-9 if dtype == "float64" else 1e-5
    # The gradient reaches half-precision logits rounded to their dtype.
    grad_rtol = {"float16": 2e-3, "bfloat16": 2e-2}.get(dtype, 2e-5 if rtol > 1e-9 else rtol)
    label = f"{name} {options} {dtype} target {target.dtype}{target.shape}"
    assert values.dtype == (np.float64 if dtype == "float64" else np.float32), label
    atol, value_atol = softmax_atols(problem, dtype)
    assert_close(values, expected, rtol, label + ": value", value_atol)
    assert_close(
        grad, expected_grad, grad_rtol, label + ": gradient", atol + half_ulps(grad, dtype)
    )
    # The Loss class computes in its own dtype (float32 here, whatever the problem's dtype)
    # and reduces to one number, so it is held to float32's tolerance.
    reduced = _numpy(fk.get_loss(name, weight=weight, **options)(target, z.astype(np.float32)))
    assert reduced.shape == () and reduced.dtype == np.float32, (label, reduced)
    mean = np.mean(expected) if len(z) else 0.0
    assert_close(reduced, mean, 1e-5, label + ": Loss", softmax_atols(problem, "float32")[1])


def test_loss_class_of_a_float64_problem_is_held_to_float32():
    """Regression (Hypothesis replay): SR's loss of 2.3e-8 on a float64 problem, which the
    float32 Loss class rounds to 0, lse(z) - z_y."""
    z = np.array([[20.0, 3.1, -4.0], [35.0, 1.0, 2.0]])
    dtype = DTYPES[-1]  # float64 where the backend has it (not JAX without x64)
    for name in ("sr", "hs-sr"):
        problem = {"name": name, "z": z, "dtype": dtype, "target": np.array([0, 0])}
        check_problem({**problem, "weight": None, "options": {}})


def softmax_atols(problem: dict[str, Any], dtype: str) -> tuple[float, float]:
    """(gradient, value) absolute tolerances. Softmax losses are differences, lse(z) - z_y,
    and so are their gradients, q_y - 1: float32 rounds them to about its epsilon times the
    logits' size (values) or the row's total coefficient (gradients), however small the
    result. Logistic losses are sums of positive terms and need none."""
    name, z, weight, options = (problem[k] for k in ("name", "z", "weight", "options"))
    if name not in ("sr", "hs-sr") or dtype == "float64":
        return 1e-12, 1e-12
    coefficient = 1.0 + options.get("beta", 0.0) + (options.get("alpha") or 0.0) * z.shape[1]
    coefficient *= 1.0 if weight is None else max(1.0, float(weight.max()))
    atol = 4e-7 * coefficient
    return atol, atol * (1.0 + (np.abs(z).max() if z.size else 0.0))


def check_underflowing_sigmoid() -> None:
    """SS-LR with a fractional r where sigmoid(z) underflows to 0 (TensorFlow and torch take
    p^r = exp(r log sigmoid(z))): no 0 * log 0, even for an r below float32's range."""
    z = np.array([[1257.30224609, -1321.04858398], [3.0, -95.0]])
    for r in (5e-324, 0.05, 2.5):
        for y in ([0, 0], [1, 1]):
            problem = {"name": "ss-lr", "z": z, "dtype": "float32", "target": np.array(y)}
            check_problem({**problem, "weight": None, "options": {"beta": 3.0, "r": r}})


def test_fractional_r_where_sigmoid_underflows():
    check_underflowing_sigmoid()


def half_ulps(grad: np.ndarray, dtype: str, ulps: float = 2.0) -> np.ndarray | float:
    """A few units in the last place of a half-precision gradient at its magnitude, subnormals
    included: the gradient reaches float16/bfloat16 logits through their dtype, where below
    the smallest normal (6.1e-5 in float16) the spacing is fixed, 6e-8, and no rtol covers it
    (3.58e-7 for 3.79e-7 is one subnormal step)."""
    if dtype not in ("float16", "bfloat16"):
        return 0.0
    info = ml_dtypes.finfo(dtype)
    magnitude = np.abs(np.asarray(grad, np.float64))
    return ulps * np.maximum(float(info.eps) * magnitude, float(info.smallest_subnormal))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems())
def test_losses_match_the_float64_reference(problem):
    check_problem(problem)


def test_soft_reference_gradient_matches_finite_differences():
    rng = np.random.default_rng(17)
    z = rng.normal(size=(4, 9)) * 2
    t = rng.random((4, 9))
    t[0] = 0.0
    t[1, :3] = 1.0
    w = rng.uniform(0.5, 2.0, 9)
    for name, hyper in (("ss-lr", {"r": 1.5}), ("hs-lr", {"m": 40.0}), ("hs-lr", {"alpha": 2})):
        _, grad = soft_reference.per_sample(name, z, t, w, **hyper)
        numeric = ref._numeric_grad(
            lambda x, name=name, hyper=hyper: soft_reference.per_sample(name, x, t, w, **hyper)[
                0
            ].sum(),
            z,
        )
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_soft_reference_is_eqs_5_and_6_on_hard_targets():
    rng = np.random.default_rng(18)
    z = rng.normal(size=(5, 11)) * 3
    t = (rng.random((5, 11)) < 0.3) * 1.0
    t[0], t[1] = 0.0, 1.0
    w = rng.uniform(0.5, 2.0, 11)
    for name, hyper in (("ss-lr", {"r": 0.5}), ("hs-lr", {"m": 37.5}), ("hs-lr", {"alpha": 3})):
        soft = soft_reference.per_sample(name, z, t, w, **hyper)
        hard = ref.per_sample(name, z, t, w, **hyper)
        np.testing.assert_allclose(soft[0], hard[0], rtol=1e-12)
        np.testing.assert_allclose(soft[1], hard[1], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# The hard-negative count (issue 19): exactly num_hard_negatives, for every m and count.
# ---------------------------------------------------------------------------------------------


def check_count(m: float, num_classes: int, dtype: str) -> None:
    counts = np.arange(num_classes + 1, dtype=dtype)
    rng = np.random.default_rng(num_classes)
    real = (rng.random(64) * num_classes).astype(dtype)  # soft targets: a real mass M
    masses = np.concatenate([counts, real])
    found = _numpy(
        _maths.hard_negative_count(
            keras.ops, keras.ops.convert_to_tensor(masses), m, num_classes, dtype
        )
    )
    expected = [num_hard_negatives(float(c), m) if c > 0 else 0 for c in masses]
    bad = np.flatnonzero(found != np.asarray(expected))
    assert not bad.size, (m, num_classes, dtype, masses[bad[:5]], found[bad[:5]])


@settings(max_examples=80, deadline=None)
@given(M_VALUES, st.integers(2, 3000))
def test_hard_negative_count_is_the_shared_function(m, num_classes):
    check_count(m, num_classes, "float32")
    if BACKEND != "jax":
        check_count(m, num_classes, "float64")


def test_every_whole_m_keeps_the_right_number_of_negatives():
    """The issue's case: K = 451, one positive, m = 26 kept 116 negatives instead of 117
    (13, 21, 39, ... were affected too). Every whole m now matches the float64 reference."""
    rng = np.random.default_rng(451)
    z = rng.normal(size=(1, 451)).astype(np.float32) * 3
    t = np.zeros((1, 451), np.float32)
    t[0, 7] = 1.0
    for m in range(1, 101):
        expected, _ = ref.per_sample("hs-lr", z, t, m=m)
        assert_close(_numpy(fk.hs_lr_loss(t, z, m=m)), expected, 1e-5, f"m={m}")
    check_count(26, 451, "float32")


# ---------------------------------------------------------------------------------------------
# Empty batches, options, class weights (issue 19).
# ---------------------------------------------------------------------------------------------


def check_empty_batch() -> None:
    """N = 0 gives 0 with Keras's default reduction and "sum", for every target kind and
    normalisation, and a zero gradient of shape (0, K)."""
    z = np.zeros((0, 5), np.float32)
    targets = {
        "index": np.zeros((0,), np.int64),
        "column": np.zeros((0, 1), np.int64),
        "multi_hot": np.zeros((0, 5), np.float32),
    }
    for name, fn in fk.FUNCTIONAL.items():
        for kind, target in targets.items():
            if name == "hs-sr" and kind == "multi_hot":
                continue
            modes = ("paper", "reference") if name in LOGISTIC else (None,)
            for mode in modes:
                options = {} if mode is None else {"normalization": mode}
                reductions = ("sum_over_batch_size", "mean") + (
                    ("sum",) if mode != "reference" else ()
                )
                for reduction in reductions:
                    loss = fk.get_loss(name, reduction=reduction, **options)
                    value, grad = value_and_grad(lambda x, f=loss, t=target: f(t, x), z)
                    label = (name, kind, mode, reduction)
                    assert value.shape == () and value == 0.0, (label, value)
                    assert grad.shape == (0, 5), (label, grad.shape)
                values, grad = value_and_grad(lambda x, f=fn, t=target, o=options: f(t, x, **o), z)
                assert values.shape == ((0,) if mode != "reference" else ()), (name, values.shape)
                assert np.all(values == 0.0) and grad.shape == (0, 5)


def test_empty_batch_gives_zero():
    check_empty_batch()


@pytest.mark.parametrize("option", ["beta", "m", "r", "alpha"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_options_are_refused_by_name(option, value):
    name = "ss-lr" if option == "r" else "hs-lr"
    z, y = np.zeros((2, 4), np.float32), np.array([0, 1])
    calls = [
        lambda: fk.FUNCTIONAL[name](y, z, **{option: value}),
        lambda: fk.get_loss(name, **{option: value}),
        lambda: fk.ncd_stats_numpy(z, y, name, **{option: value}),
        lambda: fk.NCDCallback(z, y, name, **{option: value}),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=rf"\b{option}\b"):
            call()


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_class_weights_are_refused(bad):
    z, y = np.zeros((2, 3), np.float32), np.array([0, 1])
    weight = np.array([1.0, bad, 0.5], np.float32)
    calls = [
        lambda: fk.lr_loss(y, z, weight=weight),
        lambda: fk.ss_lr_loss(y, z, weight=keras.ops.convert_to_tensor(weight)),
        lambda: fk.HSLRLoss(weight=list(weight)),
        lambda: fk.ncd_stats_numpy(z, y, "sr", weight=weight),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"weight\[1\]"):
            call()
    zero = fk.lr_loss(y, z, weight=np.zeros(3, np.float32))  # 0 is allowed: class switched off
    assert np.all(_numpy(zero) == 0.0)


# ---------------------------------------------------------------------------------------------
# Second derivatives (issue 19): the backend's against the float64 reference Hessian.
# ---------------------------------------------------------------------------------------------


def _reference_hessian(name: str, z: np.ndarray, target: np.ndarray, weight, options: dict):
    """Central differences of the float64 reference's hand-written gradient."""

    def grad(x: np.ndarray) -> np.ndarray:
        return reference(name, x, target, weight, options)[1].reshape(-1)

    h = 1e-5
    columns = []
    for index in range(z.size):
        step = np.zeros(z.size)
        step[index] = h
        step = step.reshape(z.shape)
        columns.append((grad(z + step) - grad(z - step)) / (2 * h))
    return np.stack(columns, axis=1)


SECOND_ORDER_CASES = [
    ("lr", {}),
    ("hs-lr", {}),
    ("hs-lr", {"m": 60.0, "alpha": 0.7}),
    ("ss-lr", {}),
    ("ss-lr", {"r": 0.5, "beta": 3.0}),
    ("ss-lr", {"normalization": "reference"}),
]


def check_second_derivatives(name: str, options: dict[str, Any], kind: str) -> None:
    rng = np.random.default_rng(5)
    z = (rng.normal(size=(3, 6)) * 2 + np.arange(6) * 0.05).astype(np.float32)
    if kind == "index":
        target = rng.integers(0, 6, 3)
    elif kind == "multi_hot":
        target = (rng.random((3, 6)) < 0.4).astype(np.float32)
    else:
        target = (rng.integers(0, 9, (3, 6)) / 8.0).astype(np.float32)
    weight = rng.uniform(0.5, 2.0, 6).astype(np.float32)
    fn = fk.FUNCTIONAL[name]
    found = hessian(lambda x: fn(target, x, weight=weight, **options), z)
    expected = _reference_hessian(name, z.astype(np.float64), target, weight, options)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        found, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name} {options} {kind}"
    )


# The float64 reference of the pooled ("reference") normalisation takes {0, 1} targets only.
SECOND_ORDER_PLAN = [
    (name, options, kind)
    for name, options in SECOND_ORDER_CASES
    for kind in ("index", "multi_hot", "soft")
    if not (kind == "soft" and options.get("normalization") == "reference")
]


@pytest.mark.parametrize(("name", "options", "kind"), SECOND_ORDER_PLAN)
def test_second_derivatives_match_the_reference(name, options, kind):
    check_second_derivatives(name, options, kind)


# ---------------------------------------------------------------------------------------------
# A differentiable teacher: gradients with respect to soft targets and class weights.
# ---------------------------------------------------------------------------------------------

COEFFICIENT_CASES = [("lr", {}), ("ss-lr", {}), ("ss-lr", {"r": 0.5}), ("hs-lr", {"m": 37.0})]


def _numeric_gradient(total: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    h, grad = 1e-6, np.zeros(x.shape)
    for at in np.ndindex(x.shape):
        step = np.zeros(x.shape)
        step[at] = h
        grad[at] = (total(x + step) - total(x - step)) / (2 * h)
    return grad


def check_coefficient_gradients(name: str, options: dict[str, Any]) -> None:
    """d loss / d t (soft targets) and d loss / d w (class weights, index and soft targets)
    against central differences of the float64 reference: the losses' analytic gradients
    carry the coefficients' too. m = 37 keeps every soft negative mass (eighths) off a step
    of HS-LR's count."""
    rng = np.random.default_rng(7)
    z = (rng.normal(size=(3, 5)) * 2).astype(np.float32)
    soft = (rng.integers(1, 8, (3, 5)) / 8.0).astype(np.float32)
    y = rng.integers(0, 5, 3)
    weight = rng.uniform(0.5, 2.0, 5).astype(np.float32)
    fn, z64 = fk.FUNCTIONAL[name], z.astype(np.float64)
    cases = {
        "soft target": (lambda t: fn(t, z, **options), soft, lambda t: (t, None)),
        "weight, index": (lambda w: fn(y, z, weight=w, **options), weight, lambda w: (y, w)),
        "weight, soft": (lambda w: fn(soft, z, weight=w, **options), weight, lambda w: (soft, w)),
    }
    for label, (loss, x, arguments) in cases.items():
        _, grad = value_and_grad(loss, x)
        numeric = _numeric_gradient(
            lambda v, a=arguments: float(np.sum(reference(name, z64, *a(v), options)[0])),
            x.astype(np.float64),
        )
        np.testing.assert_allclose(
            grad, numeric, rtol=1e-4, atol=1e-5 * np.abs(numeric).max(), err_msg=label
        )


@pytest.mark.parametrize(("name", "options"), COEFFICIENT_CASES)
def test_coefficient_gradients_match_the_reference(name, options):
    check_coefficient_gradients(name, options)


# ---------------------------------------------------------------------------------------------
# The same checks in a backend subprocess of test_keras_backends, with fewer examples.
# ---------------------------------------------------------------------------------------------


def run_all(max_examples: int = 12) -> None:
    """Every check of this file, for ``test_keras_backends``'s subprocess on one backend."""
    few = settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    few(given(problems())(check_problem))()
    few(given(M_VALUES, st.integers(2, 3000))(lambda m, k: check_count(m, k, "float32")))()
    check_count(26, 451, "float32")
    check_empty_batch()
    check_underflowing_sigmoid()
    for name, options, kind in SECOND_ORDER_PLAN:
        check_second_derivatives(name, options, kind)
    for name, options in COEFFICIENT_CASES:
        check_coefficient_gradients(name, options)
