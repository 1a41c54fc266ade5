"""frlr.keras losses against each backend's own cross-entropy and ``ops.top_k``, loss+gradient.

    python -m benchmarks.keras_speed                     # all backends, the "after" section
    python -m benchmarks.keras_speed --section before    # the "before" section of the record
    python -m benchmarks.keras_speed --quick             # tiny shapes, a smoke test (no file)
    python -m benchmarks.keras_speed --backends jax --no-write

Each backend runs in its own process (``KERAS_BACKEND`` is fixed at Keras's first import), as
a user would run it: JAX ``jax.jit(jax.value_and_grad(loss))``, TensorFlow a ``tf.function``
holding a ``GradientTape``, the torch backend eager autograd. Every row is a Keras ``Loss``
object called on (y_true, logits) with its default mean reduction; the baseline is
``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` on the class indices, the same
baseline for the multi-hot rows. ``ops.top_k`` is the forward selection alone, n = 25% of the
K - 1 negatives (HS-LR's default m), compiled the same way. Timings: best over interleaved
rounds of the mean per call, and the process CPU time of that round as a ratio to CE's (less
sensitive to other processes on a shared machine). Retracing: traces of the compiled step
over 20 calls at a fixed batch, and over 20 calls where every tenth batch is short (an
epoch's ragged last batch).

The record (``docs/benchmarks/keras_speed.md``) keeps one section per ``--section``; a run
rewrites its own section and keeps the others.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks._invocation import REPO, command_line, run_module

RECORD = REPO / "docs" / "benchmarks" / "keras_speed.md"
BACKENDS = ("jax", "tensorflow", "torch")
CE = "keras CE (sparse)"
TOP_K = "ops.top_k(n) alone"
FLOOR = "floor: softplus + sigmoid alone"
BCE = "keras BCE (multi-hot)"
XLA = ", XLA"  # TensorFlow rows compiled with jit_compile=True (model.fit's choice on a GPU)
INDEX_LOSSES = ("sr", "lr", "ss-lr", "hs-lr", "hs-sr")
MULTI_LOSSES = ("lr", "ss-lr", "hs-lr")


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {"n": 64, "ks": [50], "rounds": 1, "seconds": 0.0, "trace_calls": 10}
    return {"n": 1024, "ks": [1000, 10000], "rounds": 5, "seconds": 0.3, "trace_calls": 20}


# ---------------------------------------------------------------------------------------------
# The child: one backend.
# ---------------------------------------------------------------------------------------------


def _inputs(n: int, k: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed + k)
    z = (rng.normal(size=(n, k)) * 3).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    t = (rng.random((n, k)) < 2.0 / k).astype(np.float32)
    t[np.arange(n), y] = 1.0
    return z, y, t


class Stepper:
    """Loss+gradient (or top_k alone) of one method, compiled as a user of the backend would,
    with a Python-side trace counter."""

    def __init__(self, backend: str, fn, forward_only: bool = False, xla: bool = False) -> None:
        self.backend, self.traces = backend, 0
        if backend == "jax":
            import jax

            def traced(z, target):
                self.traces += 1
                return fn(target, z)

            self.step = jax.jit(traced if forward_only else jax.value_and_grad(traced))
        elif backend == "tensorflow":
            import tensorflow as tf

            @tf.function(jit_compile=xla)
            def step(z, target):
                self.traces += 1
                if forward_only:
                    return fn(target, z)
                with tf.GradientTape() as tape:
                    tape.watch(z)
                    value = fn(target, z)
                return value, tape.gradient(value, z)

            self.step = step
        else:
            import torch

            def step(z, target):
                if forward_only:
                    with torch.no_grad():
                        return fn(target, z)
                z = z.detach().requires_grad_(True)
                value = fn(target, z)
                (grad,) = torch.autograd.grad(value, z)
                return value, grad

            self.step = step

    def convert(self, z, target):
        if self.backend == "jax":
            import jax.numpy as jnp

            return jnp.asarray(z), jnp.asarray(target)
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.constant(z), tf.constant(target)
        import torch

        return torch.from_numpy(z), torch.from_numpy(target)

    def __call__(self, z, target) -> None:
        out = self.step(z, target)
        if self.backend == "jax":
            import jax

            jax.block_until_ready(out)


def _methods(backend: str, k: int) -> dict[str, tuple[Any, str, bool]]:
    """label -> (fn(target, z), target kind, forward only). The floor is the elementwise work
    LR cannot avoid, one softplus and one sigmoid per logit with the gradient written by hand
    (no autodiff); HS-LR's floor adds one top_k."""
    import keras

    import frlr.keras as fk
    from frlr.catalogue import num_hard_negatives

    n = num_hard_negatives(k - 1, 25.0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    methods: dict[str, tuple[Any, str, bool]] = {
        CE: (ce, "index", False),
        BCE: (bce, "multi_hot", False),
        TOP_K: (lambda target, z: keras.ops.top_k(z, n)[0], "index", True),
        FLOOR: (
            lambda target, z: (keras.ops.sum(keras.ops.softplus(z)), keras.ops.sigmoid(z)),
            "index",
            True,
        ),
    }
    for name in INDEX_LOSSES:
        methods[f"frlr {name}, index"] = (fk.get_loss(name), "index", False)
    for name in MULTI_LOSSES:
        methods[f"frlr {name}, multi-hot"] = (fk.get_loss(name), "multi_hot", False)
    if backend == "tensorflow":
        for label in (CE, "frlr lr, index", "frlr ss-lr, index", "frlr hs-lr, index"):
            methods[label + XLA] = methods[label]
    return methods


def _time(stepper: Stepper, args: tuple, seconds: float) -> tuple[float, float, int]:
    """(wall s per call, process CPU s per call, calls) of at least ``seconds``, 2 calls."""
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        stepper(*args)
        calls += 1
        wall = time.perf_counter() - start
        if calls >= 2 and wall >= seconds:
            return wall / calls, (time.process_time() - cpu) / calls, calls


def child(backend: str, quick: bool) -> dict[str, Any]:
    import keras

    cfg = plan(quick)
    results: dict[str, Any] = {"backend": backend, "keras": keras.__version__, "times": {}}
    results["version"] = _backend_version(backend)
    for k in cfg["ks"]:
        z, y, t = _inputs(cfg["n"], k)
        steppers, args = {}, {}
        for label, (fn, kind, forward_only) in _methods(backend, k).items():
            steppers[label] = stepper = Stepper(backend, fn, forward_only, label.endswith(XLA))
            args[label] = stepper.convert(z, y if kind == "index" else t)
            stepper(*args[label])  # compile / warm up
        best: dict[str, list[float]] = {label: [float("inf"), 0.0] for label in steppers}
        for _ in range(cfg["rounds"]):
            for label, stepper in steppers.items():
                wall, cpu, _ = _time(stepper, args[label], cfg["seconds"])
                if wall < best[label][0]:
                    best[label] = [wall, cpu]
        results["times"][str(k)] = best
    results["traces"] = _traces(backend, cfg)
    return results


def _traces(backend: str, cfg: dict[str, Any]) -> dict[str, list[int]] | None:
    """label -> [traces over the fixed-shape calls, over the calls with ragged last batches]."""
    if backend == "torch":
        return None  # eager: nothing is traced
    k, n, calls = cfg["ks"][0], cfg["n"], cfg["trace_calls"]
    z, y, t = _inputs(n, k)
    short = n - n // 3 - 1
    out: dict[str, list[int]] = {}
    for label, (fn, kind, forward_only) in _methods(backend, k).items():
        target = y if kind == "index" else t
        counts = []
        for ragged in (False, True):
            stepper = Stepper(backend, fn, forward_only, label.endswith(XLA))
            for call in range(calls):
                rows = short if ragged and call % 10 == 9 else n
                stepper(*stepper.convert(z[:rows], target[:rows]))
            counts.append(stepper.traces)
        out[label] = counts
    return out


def _backend_version(backend: str) -> str:
    module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}[backend]
    return f"{module} {__import__(module).__version__}"


# ---------------------------------------------------------------------------------------------
# The parent: one process per backend, the tables, the record.
# ---------------------------------------------------------------------------------------------


def run_backend(backend: str, quick: bool) -> dict[str, Any] | str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    argv = ["--child", backend] + (["--quick"] if quick else [])
    proc = run_module("benchmarks.keras_speed", argv, env=env)
    if proc.returncode != 0:
        return f"failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(value: float, base: float) -> str:
    return f"{value * 1e3:.2f} ({value / base:.2f}x)"


def tables(result: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    times = result["times"]
    ks = [str(k) for k in cfg["ks"]]
    lines = [
        f"### {result['backend']} ({result['version']}, keras {result['keras']}): "
        "loss+gradient ms per call (ratio to keras CE)",
        "",
        "| method | "
        + " | ".join(f"K={int(k):,}" for k in ks)
        + " | "
        + " | ".join(f"CPU time ratio, K={int(k):,}" for k in ks)
        + " |",
        "|---|" + "---:|" * 2 * len(ks),
    ]
    for label in times[ks[0]]:
        cells = [_ratio(times[k][label][0], times[k][CE][0]) for k in ks]
        cells += [f"{times[k][label][1] / times[k][CE][1]:.2f}x" for k in ks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Targets (" + result["backend"] + "):")
    for k in ks:
        ce, top_k = times[k][CE][0], times[k][TOP_K][0]
        floor = times[k].get(FLOOR, [float("nan")])[0]
        for label, (wall, _) in times[k].items():
            if not label.startswith("frlr") or "sr," in label or label.endswith(XLA):
                continue
            if "hs-lr" in label:
                bound, what, floor_of = top_k + 2 * ce, "one top_k + 2x CE", top_k + floor
            else:
                bound, what, floor_of = 2 * ce, "2.0x CE", floor
            verdict = "met" if wall <= bound else "MISSED"
            peer = f", {wall / times[k][BCE][0]:.2f}x keras BCE" if "multi-hot" in label else ""
            lines.append(
                f"- K={int(k):,} {label}: {wall / ce:.2f}x CE, "
                f"{wall * 1e3:.2f} ms vs {what} = {bound * 1e3:.2f} ms: {verdict}; "
                f"{wall / floor_of:.2f}x its floor ({floor_of * 1e3:.2f} ms){peer}"
            )
    traces = result.get("traces")
    lines.append("")
    if traces is None:
        lines.append("Retracing: none (the torch backend runs eagerly).")
    else:
        calls = cfg["trace_calls"]
        lines.append(
            f"Retracing at K={int(ks[0]):,}, traces over {calls} calls "
            "(fixed batch / every tenth batch short):"
        )
        lines.append("")
        lines.append("| method | fixed | ragged |")
        lines.append("|---|---:|---:|")
        for label, (fixed, ragged) in traces.items():
            lines.append(f"| {label} | {fixed} | {ragged} |")
    return lines


def section_text(name: str, results: list[Any], cfg: dict[str, Any], command: str) -> str:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    load = os.getloadavg()[0]
    head = [
        f"## {name.capitalize()}",
        "",
        f"Date: {datetime.date.today()}, commit {commit or 'unknown'}. Command: `{command}`. "
        f"N = {cfg['n']:,}, float32, best of {cfg['rounds']} interleaved rounds of at least "
        f"{cfg['seconds']} s of calls per method. Load average at the end: {load:.1f}.",
        "",
    ]
    body: list[str] = []
    for result in results:
        if isinstance(result, str):
            body += [result, ""]
        else:
            body += [*tables(result, cfg), ""]
    return "\n".join(head + body)


INTRO = """# Keras losses at the backend's speed

`benchmarks/keras_speed.py` (issue 28): every `frlr.keras` loss, loss and gradient together,
against the backend's own `SparseCategoricalCrossentropy(from_logits=True)` and against
`ops.top_k` alone (n = 25% of the negatives, HS-LR's default m), each backend in its own
process, compiled as a user would (`jax.jit(jax.value_and_grad(...))`, `tf.function` around a
`GradientTape`, eager torch). Targets: LR and SS-LR at most 2.0x CE, HS-LR at most one
`top_k` + 2x CE, one trace at a fixed shape and at most one more for a ragged last batch.
The floor row is the elementwise work LR cannot avoid: one softplus and one sigmoid per logit,
the gradient written by hand (no autodiff); HS-LR's floor adds one `top_k`. TensorFlow's
", XLA" rows are the same steps with `tf.function(jit_compile=True)`, which Keras's
`jit_compile="auto"` picks when a GPU is present (on a CPU it picks no XLA). The multi-hot
rows are also compared with the backend's `BinaryCrossentropy(from_logits=True)` on the same
targets, which is vanilla LR up to its normalisation (a mean over classes, not a sum).
"""


def write_record(name: str, text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else ""
    sections = dict(re.findall(r"<!-- section: (\w+) -->\n(.*?)<!-- end -->\n", old, re.S))
    sections[name] = text.rstrip() + "\n"
    order = ["after", "before", *sorted(set(sections) - {"after", "before"})]
    parts = [INTRO]
    for key in order:
        if key in sections:
            parts.append(f"<!-- section: {key} -->\n{sections[key]}<!-- end -->\n")
    path.write_text("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes; writes nothing")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--section", default="after", help="the record's section to rewrite")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--out", default=str(RECORD))
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return
    cfg = plan(args.quick)
    results = []
    for backend in args.backends.split(","):
        result = run_backend(backend, args.quick)
        results.append(result if isinstance(result, dict) else f"{backend}: {result}")
        block = tables(result, cfg) if isinstance(result, dict) else [results[-1]]
        print("\n".join(block) + "\n", flush=True)
    command = command_line("benchmarks.keras_speed")
    if not args.quick and not args.no_write:
        write_record(
            args.section, section_text(args.section, results, cfg, command), Path(args.out)
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
