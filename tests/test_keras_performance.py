"""Performance tests of ``frlr.keras``, not timed: what the compiled loss+gradient contains.

Per loss, the selections (``top_k``, ``sort``) in the traced graph of loss and gradient
(JAX's jaxpr, TensorFlow's graph and its function library), and the number of traces of a
compiled step at a fixed shape and with a ragged last batch (issue 28). Keras fixes its backend
at import, so each backend runs in one subprocess: this file is that subprocess's script too
(``python tests/test_keras_performance.py BACKEND``, which prints one JSON line).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

LOSSES = ("sr", "lr", "ss-lr", "hs-lr", "hs-sr")
SELECTIONS = ("top_k", "topkv2", "sort", "approx_top_k", "argsort")
N, K = 32, 200


def _inputs(n: int = N):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, K)).astype(np.float32)
    y = rng.integers(0, K, n).astype(np.int32)
    t = (rng.random((n, K)) < 0.05).astype(np.float32)
    return z, y, t


def _cases():
    import frlr.keras as fk

    for name in LOSSES:
        yield f"{name} index", fk.get_loss(name), "index"
        if name not in ("sr", "hs-sr"):
            yield f"{name} multi-hot", fk.get_loss(name), "multi_hot"


# ---------------------------------------------------------------------------------------------
# The subprocess.
# ---------------------------------------------------------------------------------------------


def _jax_ops(loss, z, target) -> dict[str, int]:
    import jax
    from jax.extend.core import jaxprs_in_params

    def walk(jaxpr, counts):
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
            for sub in jaxprs_in_params(eqn.params):
                walk(sub, counts)
        return counts

    closed = jax.make_jaxpr(jax.value_and_grad(lambda x: loss(target, x)))(z)
    return walk(closed.jaxpr, {})


def _tf_ops(loss, z, target) -> dict[str, int]:
    import tensorflow as tf

    @tf.function
    def step(x, t):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(t, x)
        return value, tape.gradient(value, x)

    graph = step.get_concrete_function(
        tf.TensorSpec((None, K), tf.float32), tf.TensorSpec((None, *target.shape[1:]), target.dtype)
    ).graph.as_graph_def()
    counts: dict[str, int] = {}
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    for node in nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def _compiled_step(backend: str, loss, traces: list[int]):
    """Loss+gradient as a user compiles it, counting its traces in ``traces[0]``."""
    if backend == "jax":
        import jax

        def body(x, t):
            traces[0] += 1
            return loss(t, x)

        return jax.jit(jax.value_and_grad(body))
    import tensorflow as tf

    @tf.function
    def step(x, t):
        traces[0] += 1
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(t, x)
        return value, tape.gradient(value, x)

    return step


def _traces(backend: str, loss, target_of) -> list[int]:
    """Traces of a compiled loss+gradient step over 20 calls: a fixed batch; every tenth short."""
    counts = []
    for ragged in (False, True):
        traces = [0]
        step = _compiled_step(backend, loss, traces)
        for call in range(20):
            n = N - 7 if ragged and call % 10 == 9 else N
            z, y, t = _inputs(n)
            step(z, target_of(y, t))
        counts.append(traces[0])
    return counts


def _threshold_mismatches() -> int:
    """JAX's counted threshold against NumPy's sort: ties, -0.0, +-inf, masked entries, n = 0."""
    import jax

    from frlr.keras._fast import counted_threshold

    rng = np.random.default_rng(28)
    step = jax.jit(counted_threshold)
    bad = 0
    for _ in range(200):
        z = (rng.normal(size=(4, 23)) * rng.choice([1.0, 1e4, 1e-30])).astype(np.float32)
        if rng.random() < 0.4:
            z = np.round(z)  # ties
        z[:, :5] = rng.choice([0.0, -0.0, np.inf, 3.0], size=(4, 5))
        masked = np.where(rng.random(z.shape) < 0.8, z, -np.inf).astype(np.float32)
        n = rng.integers(0, 24, 4).astype(np.float32)
        found = np.asarray(step(masked, n))[:, 0]
        for row, count, tau in zip(masked, n, found, strict=True):
            ordered = np.sort(row)[::-1]
            allowed = int(np.sum(row > -np.inf))
            want = ordered[int(count) - 1] if 1 <= count <= allowed else -np.inf
            bad += int(tau != want)
    return bad


def child(backend: str) -> dict[str, Any]:
    z, y, t = _inputs()
    out: dict[str, Any] = {}
    if backend == "jax":
        out["threshold mismatches"] = _threshold_mismatches()
    for label, loss, kind in _cases():
        target = y if kind == "index" else t
        counts = _jax_ops(loss, z, target) if backend == "jax" else _tf_ops(loss, z, target)
        selections = {k: v for k, v in counts.items() if k.lower() in SELECTIONS}

        def target_of(y, t, kind=kind):
            return y if kind == "index" else t

        out[label] = {
            "selections": selections,
            "loops": counts.get("while", 0) + counts.get("While", 0),
            "traces": _traces(backend, loss, target_of),
        }
    return out


# ---------------------------------------------------------------------------------------------
# The tests.
# ---------------------------------------------------------------------------------------------

_RESULTS: dict[str, dict[str, Any]] = {}


def _run(backend: str) -> dict[str, Any]:
    if backend not in _RESULTS:
        for module in ("keras", backend):
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{module} is not installed")
        import frlr

        src = str(Path(frlr.__file__).resolve().parents[1])
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        proc = subprocess.run(
            [sys.executable, __file__, backend],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        _RESULTS[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _RESULTS[backend]


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_selections_in_the_graph_of_loss_and_gradient(backend):
    """HS-LR and HS-SR select once (TensorFlow: one top_k; JAX: a counted threshold, no top_k
    or sort at all); the gradient adds none; no other loss selects."""
    results = dict(_run(backend))
    assert results.pop("threshold mismatches", 0) == 0
    for label, found in results.items():
        total = sum(found["selections"].values())
        if label.startswith(("hs-lr", "hs-sr")):
            if backend == "jax":
                assert total == 0 and found["loops"] == 1, (label, found)
            else:
                assert found["selections"] == {"TopKV2": 1}, (label, found)
        else:
            assert total == 0, (label, found)


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_fixed_shape_traces_once_and_a_ragged_last_batch_once_more(backend):
    for label, found in _run(backend).items():
        if isinstance(found, dict):
            assert found["traces"] == [1, 2], (label, found["traces"])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(json.dumps(child(sys.argv[1])))
