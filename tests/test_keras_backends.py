"""frlr.keras on every Keras backend: against the float64 NumPy reference and frlr.torch.

Keras fixes its backend when it is first imported, so each backend runs in one subprocess,
and this file is that subprocess's script too (``python tests/test_keras_backends.py
BACKEND WORKDIR``). The subprocess computes per-sample losses and their gradient with respect
to the logits with the backend's own autodiff (``tf.GradientTape``, ``jax.value_and_grad``,
torch autograd) for a grid of losses and inputs (single-label, multi-hot and soft targets,
K = 2 to 1000, logits up to 1e4), runs the Keras-side checks (``tf.function``/``jax.jit``,
reductions, serialisation, dtypes, ``model.fit`` on ``load_digits``, ``model.save``
and reload, bad input, and ``test_keras_properties.run_all``: property tests and second
derivatives), and writes what it found; the test then compares the arrays with
``test_keras_reference`` and with ``frlr.torch``, in this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BACKENDS = ("tensorflow", "jax", "torch")

# rtol for values and gradients, keras (float32) against float64 and against frlr.torch. The
# atol is 1e-2 * RTOL times the largest entry of the row (of the batch, for per-sample values),
# so an entry 1e-30 of its row's scale (p^r at a very negative logit, a loss of 1e-30 beside
# losses of 1e4) need not match to 1e-5 of itself.
RTOL = 1e-5
# frlr.torch's HS-SR gradient goes through torch.logsumexp, whose backward exp(z - lse) loses
# lse's float32 rounding (about 1e-3 at logits of 1e4): up to ~1e-4 relative where the row's
# arg-max is selected. frlr.keras shifts by a stop-gradient max instead and meets RTOL
# against float64, so only this one comparison is looser.
TORCH_GRAD_RTOL = {"hs-sr": 2e-4}


# ---------------------------------------------------------------------------------------------
# The inputs: float32 logits without ties (hard selection is not differentiable at a tie).
# ---------------------------------------------------------------------------------------------


def _distinct_logits(rng: np.random.Generator, n: int, k: int, scale: float) -> np.ndarray:
    while True:
        z = (rng.normal(size=(n, k)) * scale).astype(np.float32)
        if all(len(np.unique(row)) == k for row in z):
            return z


def make_cases() -> dict[str, dict[str, np.ndarray]]:
    """Named (logits, target, weight) triples; index targets are int64, others float32.

    Every case has 8 samples and K in {2, 5, 10, 1000}: few distinct shapes keep JAX's
    per-shape compilations (most of its run time here) few.
    """
    rng = np.random.default_rng(2019)
    cases: dict[str, dict[str, np.ndarray]] = {}

    def add(name: str, z: np.ndarray, target: np.ndarray) -> None:
        weight = rng.uniform(0.5, 2.0, size=z.shape[1]).astype(np.float32)
        cases[name] = {"z": z, "target": target, "weight": weight}

    add("index_k2", _distinct_logits(rng, 8, 2, 3.0), rng.integers(0, 2, 8))
    add("index_k10_1e4", _distinct_logits(rng, 8, 10, 1e4), rng.integers(0, 10, 8))
    z = _distinct_logits(rng, 8, 1000, 5.0)
    extreme = rng.random(z.shape) < 0.01
    z[extreme] = np.sign(rng.normal(size=extreme.sum())) * rng.uniform(5e3, 1e4, extreme.sum())
    y = rng.integers(0, 1000, 8)
    z[0, y[0]], z[1, y[1]] = 1e4, -1e4  # a confident right and a confident wrong positive
    add("index_k1000_mixed", z, y)
    zeros = rng.normal(size=(8, 5)).astype(np.float32)
    zeros[:, :3] = 0.0  # exact zeros: the kinks of max(z, 0) and |z| forms (not for HS)
    add("index_k5_zeros", zeros, rng.integers(0, 5, 8))
    t = (rng.random((8, 5)) < 0.4).astype(np.float32)
    t[0], t[1] = 0.0, 1.0  # a sample without positives, one without negatives
    add("multi_k5", _distinct_logits(rng, 8, 5, 4.0), t)
    t = (rng.random((8, 1000)) < 0.02).astype(np.float32)
    add("multi_k1000_1e4", _distinct_logits(rng, 8, 1000, 1e4), t)
    z = _distinct_logits(rng, 8, 10, 3.0)
    z[:, 0] = 0.0
    add("soft_k10", z, rng.random((8, 10)).astype(np.float32))
    return cases


def make_evaluations(cases: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Which loss, with which options, on which cases: every loss on every target kind."""
    index = ["index_k2", "index_k10_1e4", "index_k1000_mixed"]
    multi = ["multi_k5", "multi_k1000_1e4"]
    ref = {"normalization": "reference"}
    weighted = {"weight": True}
    plan: list[tuple[str, dict[str, Any], list[str]]] = [
        ("lr", {}, [*index, "index_k5_zeros", *multi, "soft_k10"]),
        ("lr", weighted, ["index_k10_1e4", "multi_k5", "soft_k10"]),
        ("lr", {**ref, **weighted}, ["index_k1000_mixed", "multi_k1000_1e4", "soft_k10"]),
        ("hs-lr", {}, [*index, *multi]),
        ("hs-lr", {"m": 60.0}, ["index_k1000_mixed", "multi_k5"]),
        ("hs-lr", {"m": 100.0}, ["index_k10_1e4", "multi_k5"]),
        ("hs-lr", {"m": 10.0, "alpha": 0.5}, ["index_k1000_mixed", "multi_k1000_1e4"]),
        ("hs-lr", weighted, ["index_k10_1e4", "multi_k5"]),
        ("hs-lr", ref, ["index_k1000_mixed", "multi_k5"]),
        ("hs-lr", {**ref, "m": 50.0, "alpha": 2.0, **weighted}, ["index_k2", "multi_k1000_1e4"]),
        ("ss-lr", {}, [*index, "index_k5_zeros", *multi]),
        ("ss-lr", {"r": 0.0}, ["index_k10_1e4", "multi_k5"]),
        ("ss-lr", {"r": 0.5, "beta": 3.0}, ["index_k1000_mixed", "multi_k1000_1e4"]),
        ("ss-lr", {"alpha": 0.5, **weighted}, ["index_k10_1e4", "multi_k5"]),
        ("ss-lr", ref, ["index_k1000_mixed", "multi_k1000_1e4"]),
        ("ss-lr", {**ref, "r": 1.0, "alpha": 2.0, **weighted}, ["multi_k5"]),
        ("sr", {}, [*index, "index_k5_zeros", "multi_k5", "soft_k10"]),
        ("sr", weighted, ["index_k10_1e4", "soft_k10"]),
        ("hs-sr", {}, index),
        ("hs-sr", {"m": 60.0, "beta": 2.0}, ["index_k1000_mixed"]),
        ("hs-sr", weighted, ["index_k10_1e4"]),
    ]
    evaluations = []
    for name, options, case_names in plan:
        for case_name in case_names:
            assert case_name in cases, case_name
            evaluations.append({"case": case_name, "loss": name, "options": options})
    for i, evaluation in enumerate(evaluations):
        evaluation["id"] = f"e{i}"
    return evaluations


def _hyper(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in ("weight", "normalization")}


# ---------------------------------------------------------------------------------------------
# The test: one subprocess per backend, then the comparisons here.
# ---------------------------------------------------------------------------------------------


def _run_backend(backend: str, workdir: Path) -> tuple[dict[str, Any], float]:
    cases = make_cases()
    np.savez(
        workdir / "cases.npz", **{f"{c}/{k}": v for c, d in cases.items() for k, v in d.items()}
    )
    (workdir / "evaluations.json").write_text(json.dumps(make_evaluations(cases)))
    import frlr

    src = str(Path(frlr.__file__).resolve().parents[1])
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("CUDA_VISIBLE_DEVICES", "")  # keep the check on the CPU, where it is quick
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, backend, str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    report_path = workdir / "report.json"
    if proc.returncode != 0 or not report_path.exists():
        pytest.fail(f"{backend} subprocess failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(report_path.read_text()), elapsed


def _compare(found: np.ndarray, expected: np.ndarray, what: str, rtol: float = RTOL) -> str | None:
    found, expected = np.asarray(found, np.float64), np.asarray(expected, np.float64)
    if found.shape != expected.shape:
        return f"{what}: shape {found.shape} != {expected.shape}"
    if not np.isfinite(found).all():
        return f"{what}: not finite"
    scale = np.abs(expected).max(axis=-1, keepdims=True) if expected.size else 0.0
    tolerance = rtol * np.abs(expected) + rtol * 1e-2 * scale + 1e-12
    bad = np.abs(found - expected) > tolerance
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        return (
            f"{what}: {int(bad.sum())} of {bad.size} entries off, e.g. at {index} "
            f"{found[index]!r} vs {expected[index]!r}"
        )
    return None


_EXPECTED: dict[str, tuple] = {}  # evaluation id -> (float64 reference, frlr.torch results)


def _expected(evaluation: dict[str, Any], case: dict[str, np.ndarray]) -> tuple:
    """Computed once per process for all backends: the inputs are the same for each."""
    if evaluation["id"] not in _EXPECTED:
        _EXPECTED[evaluation["id"]] = (
            _numpy_reference(evaluation, case),
            _torch_results(evaluation, case),
        )
    return _EXPECTED[evaluation["id"]]


def _numpy_reference(evaluation: dict[str, Any], case: dict[str, np.ndarray]):
    import test_keras_reference as ref

    options = evaluation["options"]
    weight = case["weight"] if options.get("weight") else None
    if options.get("normalization") == "reference":
        return ref.reference_mode(
            evaluation["loss"], case["z"], case["target"], weight, **_hyper(options)
        )
    return ref.per_sample(evaluation["loss"], case["z"], case["target"], weight, **_hyper(options))


def _torch_results(evaluation: dict[str, Any], case: dict[str, np.ndarray]):
    import torch

    import frlr.torch as frlr_torch

    options = evaluation["options"]
    z = torch.tensor(case["z"], requires_grad=True)
    target = torch.tensor(case["target"])
    weight = torch.tensor(case["weight"]) if options.get("weight") else None
    kwargs = _hyper(options)
    if "normalization" in options:
        kwargs["normalization"] = options["normalization"]
    reference = options.get("normalization") == "reference"
    fn = frlr_torch.FUNCTIONAL[evaluation["loss"]]
    values = fn(z, target, weight=weight, reduction="mean" if reference else "none", **kwargs)
    values.sum().backward()
    module = frlr_torch.get_loss(evaluation["loss"], weight=weight, **kwargs)
    with torch.no_grad():
        mean = module(z, target)
    return values.detach().numpy(), z.grad.numpy(), float(mean)


def _missing(backend: str) -> str | None:
    for module in ("keras", backend):
        if importlib.util.find_spec(module) is None:
            return f'{module} is not installed (pip install "frlr[{backend}]")'
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_backend(backend, tmp_path):
    """Values and gradients match float64 and frlr.torch to 1e-5; the Keras checks pass."""
    if _missing(backend):
        pytest.skip(_missing(backend))
    report, elapsed = _run_backend(backend, tmp_path)
    cases = make_cases()
    evaluations = json.loads((tmp_path / "evaluations.json").read_text())
    arrays = np.load(tmp_path / "results.npz")
    problems = [
        f"check {name}: {result['error']}"
        for name, result in report["checks"].items()
        if not result["ok"]
    ]
    for evaluation in evaluations:
        label = f"{evaluation['loss']} {evaluation['options']} on {evaluation['case']}"
        case = cases[evaluation["case"]]
        if evaluation["id"] + "/class" not in arrays.files:
            continue  # the parity_grid check failed before it: reported above
        values, grad = arrays[evaluation["id"] + "/values"], arrays[evaluation["id"] + "/grad"]
        class_value = arrays[evaluation["id"] + "/class"]
        (ref_values, ref_grad), (torch_values, torch_grad, torch_mean) = _expected(evaluation, case)
        keras_mean = values if values.ndim == 0 else values.mean()
        sr_weighted = evaluation["loss"] == "sr" and evaluation["options"].get("weight")
        for problem in (
            _compare(values, ref_values, f"{label}: value vs float64"),
            _compare(grad, ref_grad, f"{label}: gradient vs float64"),
            _compare(values, torch_values, f"{label}: value vs frlr.torch"),
            _compare(
                grad,
                torch_grad,
                f"{label}: gradient vs frlr.torch",
                TORCH_GRAD_RTOL.get(evaluation["loss"], RTOL),
            ),
            _compare(class_value, keras_mean, f"{label}: Loss class vs functional mean"),
            # F.cross_entropy's weighted "mean" divides by sum w[y]; Keras divides by N.
            None
            if sr_weighted
            else _compare(class_value, torch_mean, f"{label}: Loss vs torch module"),
        ):
            if problem:
                problems.append(problem)
    timings = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in report["checks"].items())
    print(f"{backend}: subprocess {elapsed:.1f}s ({timings})")
    assert not problems, f"{len(problems)} problems on {backend}:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The subprocess: everything below runs with one Keras backend.
# ---------------------------------------------------------------------------------------------


Call = tuple[Callable[..., Any], Any, dict[str, Any]]  # (functional, Loss instance, options)


def _values_and_grads(calls: list[Call], z: np.ndarray, target: np.ndarray) -> list[tuple]:
    """Per call: fn(target, z), the gradient of its sum w.r.t. z by the backend's autodiff
    (tf.GradientTape, jax.value_and_grad, torch autograd), and the Loss's reduced value.

    JAX runs one ``jax.jit`` per case: eager JAX compiles every op for every new shape, which
    costs more than the losses themselves.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def run(logits):
            results = []
            for fn, loss, options in calls:

                def total(x, fn=fn, options=options):
                    values = fn(target, x, **options)
                    return jnp.sum(values), values

                (_, values), grad = jax.value_and_grad(total, has_aux=True)(logits)
                results.append((values, grad, loss(target, logits)))
            return results

        return jax.tree.map(np.asarray, jax.jit(run)(jnp.asarray(z)))
    results = []
    for fn, loss, options in calls:
        if backend == "tensorflow":
            import tensorflow as tf

            logits = tf.constant(z)
            with tf.GradientTape() as tape:
                tape.watch(logits)
                values = fn(target, logits, **options)
                total = tf.reduce_sum(values)
            grad = tape.gradient(total, logits)
        else:
            import torch

            logits = torch.tensor(z, requires_grad=True)
            values = fn(target, logits, **options)
            values.sum().backward()
            grad, values = logits.grad, values.detach()
        class_value = loss(target, z)
        results.append(tuple(keras.ops.convert_to_numpy(a) for a in (values, grad, class_value)))
    return results


def _check_parity_inputs(workdir: Path, out: dict[str, np.ndarray]) -> None:
    import frlr.keras as fk

    stored = np.load(workdir / "cases.npz")
    by_case: dict[str, list[dict[str, Any]]] = {}
    for evaluation in json.loads((workdir / "evaluations.json").read_text()):
        by_case.setdefault(evaluation["case"], []).append(evaluation)
    for case_name, evaluations in by_case.items():
        calls = []
        for evaluation in evaluations:
            options = dict(evaluation["options"])
            if options.pop("weight", False):
                options["weight"] = stored[case_name + "/weight"]
            loss = fk.get_loss(evaluation["loss"], **options)
            calls.append((fk.FUNCTIONAL[evaluation["loss"]], loss, options))
        z, target = stored[case_name + "/z"], stored[case_name + "/target"]
        results = _values_and_grads(calls, z, target)
        for evaluation, (values, grad, class_value) in zip(evaluations, results, strict=True):
            out[evaluation["id"] + "/values"] = values
            out[evaluation["id"] + "/grad"] = grad
            out[evaluation["id"] + "/class"] = class_value


def _check_compiled() -> None:
    """The functional losses on raw backend tensors, targets included, inside tf.function
    (with an unknown batch size) and jax.jit."""
    import keras

    import frlr.keras as fk

    rng = np.random.default_rng(1)
    z = (rng.normal(size=(16, 50)) * 4).astype(np.float32)
    y = rng.integers(0, 50, 16).astype(np.int32)
    t = (rng.random((16, 50)) < 0.1).astype(np.float32)
    calls = [
        (fk.hs_lr_loss, y, {}),
        (fk.hs_lr_loss, t, {"m": 40.0}),
        (fk.ss_lr_loss, y, {"normalization": "reference"}),
        (fk.hs_sr_loss, y, {}),
    ]
    backend = keras.backend.backend()
    if backend == "jax":
        calls = calls[:2]  # the parity grid runs every loss under jax.jit with constant targets
    for fn, target, kwargs in calls:
        eager = keras.ops.convert_to_numpy(fn(target, z, **kwargs))
        if backend == "tensorflow":
            import tensorflow as tf

            spec_t = tf.TensorSpec((None, *target.shape[1:]), tf.as_dtype(target.dtype))
            compiled = tf.function(
                lambda tt, zz, fn=fn, kwargs=kwargs: fn(tt, zz, **kwargs),
                input_signature=[spec_t, tf.TensorSpec((None, 50), tf.float32)],
            )
            assert isinstance(compiled(target, z), tf.Tensor)
            got = compiled(target, z).numpy()
        elif backend == "jax":
            import jax

            compiled = jax.jit(lambda tt, zz, fn=fn, kwargs=kwargs: fn(tt, zz, **kwargs))
            got = np.asarray(compiled(jax.numpy.asarray(target), jax.numpy.asarray(z)))
        else:
            return  # torch tensors are eager; the parity grid already calls on torch.Tensor
        np.testing.assert_allclose(got, eager, rtol=1e-6, atol=1e-6, err_msg=fn.__name__)
    if backend == "tensorflow":  # out-of-range indices can only be checked eagerly
        import tensorflow as tf

        got = tf.function(lambda zz: fk.lr_loss(tf.constant([0, 60]), zz))(z[:2]).numpy()
        # Unchecked in a graph, index 60 of K = 50 matches no class: a row with no positive.
        no_positive = np.zeros((2, 50), np.float32)
        no_positive[0, 0] = 1
        want = keras.ops.convert_to_numpy(fk.lr_loss(no_positive, z[:2]))
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg="out-of-range index in a graph")


def _check_shapes_and_reductions() -> None:
    import keras

    import frlr.keras as fk

    rng = np.random.default_rng(2)
    z = rng.normal(size=(2, 3, 4, 6)).astype(np.float32)
    y = rng.integers(0, 6, (2, 3, 4))
    flat = keras.ops.convert_to_numpy(fk.hs_lr_loss(y.reshape(-1), z.reshape(-1, 6)))
    spatial = keras.ops.convert_to_numpy(fk.hs_lr_loss(y, z))
    assert spatial.shape == (2, 3, 4), spatial.shape
    np.testing.assert_allclose(spatial.reshape(-1), flat, rtol=1e-6)
    column = keras.ops.convert_to_numpy(fk.hs_lr_loss(y.reshape(-1, 1), z.reshape(-1, 6)))
    np.testing.assert_allclose(column, flat, rtol=1e-6)
    as_float = keras.ops.convert_to_numpy(
        fk.hs_lr_loss(y.reshape(-1).astype("float32"), z.reshape(-1, 6))
    )
    np.testing.assert_allclose(as_float, flat, rtol=1e-6)

    z2, y2 = z.reshape(-1, 6), y.reshape(-1)
    per = keras.ops.convert_to_numpy(fk.ss_lr_loss(y2, z2))
    sw = rng.uniform(0, 2, len(y2)).astype(np.float32)
    expected = {
        "sum_over_batch_size": per.mean(),
        "mean": per.mean(),
        "sum": per.sum(),
        "none": per,
        None: per,
    }
    for reduction, value in expected.items():
        got = keras.ops.convert_to_numpy(fk.SSLRLoss(reduction=reduction)(y2, z2))
        np.testing.assert_allclose(got, value, rtol=1e-6, err_msg=str(reduction))
    got = keras.ops.convert_to_numpy(fk.SSLRLoss()(y2, z2, sample_weight=sw))
    np.testing.assert_allclose(got, (per * sw).mean(), rtol=1e-6)
    got = keras.ops.convert_to_numpy(fk.SSLRLoss(reduction="mean_with_sample_weight")(y2, z2, sw))
    np.testing.assert_allclose(got, (per * sw).sum() / sw.sum(), rtol=1e-6)
    loss = fk.SSLRLoss(normalization="reference", reduction="mean")
    got = keras.ops.convert_to_numpy(loss(y2, z2))
    np.testing.assert_allclose(got, per.mean(), rtol=1e-5)  # single-label: the modes agree
    # m = 100 keeps every negative, exactly SS-LR at r = 0 (the paper's remark).
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fk.hs_lr_loss(y2, z2, m=100.0)),
        keras.ops.convert_to_numpy(fk.ss_lr_loss(y2, z2, r=0.0)),
        rtol=1e-6,
    )


def _check_dtypes() -> None:
    """float16/bfloat16 logits are computed and returned in float32; float64 stays float64."""
    import keras

    import frlr.keras as fk

    rng = np.random.default_rng(3)
    z = (rng.normal(size=(8, 20)) * 30).astype(np.float32)
    y = rng.integers(0, 20, 8)
    for half in ("float16", "bfloat16"):
        z_half = keras.ops.convert_to_tensor(z, dtype=half)
        z_up = keras.ops.cast(z_half, "float32")
        for name, fn in fk.FUNCTIONAL.items():
            out = fn(y, z_half)
            assert keras.backend.standardize_dtype(out.dtype) == "float32", (name, half, out.dtype)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(out),
                keras.ops.convert_to_numpy(fn(y, z_up)),
                rtol=1e-6,
                err_msg=f"{name} {half}",
            )
        out = fk.HSLRLoss(dtype=f"mixed_{half}")(y, z_half)
        assert keras.backend.standardize_dtype(out.dtype) == "float32", (half, out.dtype)
    if keras.backend.backend() == "jax":
        return  # float64 needs jax_enable_x64
    import test_keras_reference as ref

    z64 = z.astype(np.float64)
    for name, fn in fk.FUNCTIONAL.items():
        out = fn(y, z64)
        assert keras.backend.standardize_dtype(out.dtype) == "float64", (name, out.dtype)
        expected = ref.per_sample(name, z64, y)[0]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-7)


def _check_serialisation() -> None:
    import keras

    import frlr.keras as fk

    losses = [
        fk.SRLoss(weight=[1.0, 2.0, 0.5]),
        fk.LRLoss(normalization="reference", name="lr_ref"),
        fk.HSLRLoss(beta=5.0, m=40.0, alpha=0.3, target="index", weight=np.array([1, 2, 3.0])),
        fk.SSLRLoss(r=0.5, reduction="sum", target="multi_hot"),
        fk.HSSRLoss(m=60.0),
    ]
    for loss in losses:
        config = loss.get_config()
        json.dumps(config)
        again = type(loss).from_config(config)
        assert again.get_config() == config, (config, again.get_config())
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(restored) is type(loss) and restored.get_config() == config
        assert keras.saving.get_registered_name(type(loss)) == f"frlr>{type(loss).__name__}"
    for name, cls in fk.LOSSES.items():
        assert type(fk.get_loss(name)) is cls
        assert type(fk.get_loss(name.upper().replace("-", "_"))) is cls


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:512] / 16.0).astype(np.float32)[..., None]
    return x, digits.target[:512].astype(np.int64)


def _convnet(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def _compile(model, loss) -> None:
    import keras

    jit = False if keras.backend.backend() == "tensorflow" else "auto"  # XLA compile is slow
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, jit_compile=jit)


def _check_fit(name: str) -> Callable[[], None]:
    def check() -> None:
        import keras

        import frlr.keras as fk

        x, y = _digits()
        model = _convnet(0)
        loss = fk.get_loss(name)
        _compile(model, loss)
        before = float(keras.ops.convert_to_numpy(loss(y, model(x))))
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        after = float(keras.ops.convert_to_numpy(loss(y, model(x))))
        assert math.isfinite(after) and after < 0.95 * before, (name, before, after)

    return check


def _check_save_and_reload(workdir: Path) -> Callable[[], None]:
    def check() -> None:
        import keras

        import frlr.keras as fk

        x, y = _digits()
        model = _convnet(1)
        loss = fk.HSLRLoss(beta=5.0, m=40.0, weight=np.linspace(0.5, 1.5, 10), name="hs")
        _compile(model, loss)
        model.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)
        path = workdir / "model.keras"
        model.save(path)
        reloaded = keras.models.load_model(path)
        assert type(reloaded.loss) is fk.HSLRLoss, type(reloaded.loss)
        assert reloaded.loss.get_config() == loss.get_config(), reloaded.loss.get_config()
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(reloaded.loss(y, reloaded(x))),
            keras.ops.convert_to_numpy(loss(y, model(x))),
            rtol=1e-6,
        )

    return check


def _check_bad_input() -> None:
    import keras

    import frlr.keras as fk

    z = np.zeros((4, 5), np.float32)
    y = np.array([0, 1, 2, 4])
    t = np.zeros((4, 5), np.float32)
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: fk.lr_loss(y, z.astype(np.int32)), TypeError, "floating-point logits"),
        (lambda: fk.LRLoss()(y, z.astype(np.int32)), TypeError, "floating-point logits"),
        (lambda: fk.lr_loss(y, z[0]), ValueError, "shape (N, K)"),
        (lambda: fk.sr_loss(np.array([0, 1, 2]), z), ValueError, "y_true"),
        (lambda: fk.hs_lr_loss(y[:, None, None], z), ValueError, "y_true"),
        (lambda: fk.ss_lr_loss(y, z[:, :1]), ValueError, "K >= 2"),
        (lambda: fk.lr_loss(np.array([0, 1, 2, 5]), z), ValueError, "class index 5"),
        (lambda: fk.hs_lr_loss(np.array([0, -1, 2, 3]), z), ValueError, "class index -1"),
        (lambda: fk.hs_sr_loss(np.array([0, 1.5, 2, 3]), z), ValueError, "class index 1.5"),
        (lambda: fk.lr_loss(t[:, :4], z), ValueError, "must have shape (4, 5)"),
        (lambda: fk.lr_loss(t, z, target="index"), ValueError, "class-index target"),
        (lambda: fk.lr_loss(y, z, target="multi_hot"), ValueError, "multi-hot target"),
        (lambda: fk.hs_lr_loss(t + 1.5, z), ValueError, "[0, 1]"),
        (lambda: fk.ss_lr_loss(t - 0.5, z), ValueError, "[0, 1]"),
        (lambda: fk.lr_loss(t + 1.5, z), ValueError, "[0, 1]"),
        (lambda: fk.hs_sr_loss(t, z), ValueError, "class-index targets only"),
        (lambda: fk.hs_lr_loss(y, z, m=0), ValueError, "m is a percentage"),
        (lambda: fk.HSLRLoss(m=100.5), ValueError, "got 100.5"),
        (lambda: fk.SSLRLoss(r=-1.0), ValueError, "r must be >= 0"),
        (lambda: fk.SSLRLoss(beta=-1.0), ValueError, "beta must be >= 0"),
        (lambda: fk.HSLRLoss(alpha=-2.0), ValueError, "alpha must be >= 0"),
        (lambda: fk.HSLRLoss(beta="10"), TypeError, "beta must be a real number"),
        (lambda: fk.LRLoss(reduction="average"), ValueError, "reduction"),
        (lambda: fk.LRLoss(normalization="authors"), ValueError, "normalization"),
        (lambda: fk.LRLoss(target="one_hot"), ValueError, "target must be one of"),
        (lambda: fk.SRLoss(from_logits=False), ValueError, "from_logits=False"),
        (lambda: fk.lr_loss(y, z, from_logits=False), ValueError, "from_logits=False"),
        (lambda: fk.get_loss("focal"), ValueError, "unknown loss name 'focal'"),
        (lambda: fk.get_loss("lr", beta=1.0), TypeError, "beta"),
        (lambda: fk.lr_loss(y, z, weight=[1.0, 2.0]), ValueError, "weight must have shape (5,)"),
        (lambda: fk.LRLoss(weight=np.ones((2, 2))), ValueError, "weight must be a 1-D"),
        (lambda: fk.SSLRLoss(normalization="reference", reduction="sum"), ValueError, "'sum'"),
        (
            lambda: fk.SSLRLoss(normalization="reference")(y, z, sample_weight=np.ones(4)),
            ValueError,
            "sample_weight",
        ),
        (
            lambda: fk.hs_lr_loss(y % 3, z[:, :3], m=10.0, normalization="reference"),
            ValueError,
            "int(K*m/100) = 0",
        ),
    ]
    failures = []
    for i, (call, error, words) in enumerate(cases):
        try:
            call()
        except error as caught:
            if words not in str(caught):
                failures.append(f"case {i}: {error.__name__} without {words!r}: {caught}")
        except Exception as caught:
            failures.append(
                f"case {i}: {type(caught).__name__} instead of {error.__name__}: {caught}"
            )
        else:
            failures.append(f"case {i}: no {error.__name__} ({words!r})")
    assert not failures, "\n".join(failures)
    assert keras.backend.backend() in BACKENDS


def _check_properties() -> None:
    """test_keras_properties on this backend, with few examples: values and gradients against
    float64 on drawn problems, the exact hard-negative count, the empty batch, and second
    derivatives (nested tf.GradientTape, jax.hessian, torch double backward)."""
    import test_keras_properties

    test_keras_properties.run_all(max_examples=12)


def _subprocess_main(backend: str, workdir: Path) -> None:
    import keras

    assert keras.backend.backend() == backend, keras.backend.backend()
    arrays: dict[str, np.ndarray] = {}
    checks: list[tuple[str, Callable[[], None]]] = [
        ("parity_grid", lambda: _check_parity_inputs(workdir, arrays)),
        ("compiled", _check_compiled),
        ("shapes_and_reductions", _check_shapes_and_reductions),
        ("dtypes", _check_dtypes),
        ("serialisation", _check_serialisation),
        ("bad_input", _check_bad_input),
        *[(f"fit_{name}", _check_fit(name)) for name in ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")],
        ("save_and_reload", _check_save_and_reload(workdir)),
        ("properties_and_second_derivatives", _check_properties),
    ]
    report: dict[str, Any] = {"checks": {}}
    for name, check in checks:
        start = time.perf_counter()
        try:
            check()
            result = {"ok": True, "error": ""}
        except Exception:
            result = {"ok": False, "error": traceback.format_exc(limit=-4)}
        result["seconds"] = time.perf_counter() - start
        report["checks"][name] = result
    np.savez(workdir / "results.npz", **arrays)
    (workdir / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    os.environ["KERAS_BACKEND"] = sys.argv[1]
    _subprocess_main(sys.argv[1], Path(sys.argv[2]))
