"""Forward+backward time and peak memory of the logits-free losses at 10^5 to 10^7 classes.

    python -m benchmarks.huge_k                # the CPU record, writes docs/benchmarks/huge_k.md
    python -m benchmarks.huge_k --quick        # tiny shapes, a smoke test (writes nothing)
    python -m benchmarks.huge_k --device cuda  # the GPU record, docs/benchmarks/huge_k_cuda.md
    python -m benchmarks.huge_k --device cuda --quick --seconds 60 --out gpu.md

On the CPU each (method, shape) runs in a fresh process: peak memory is that process's VmHWM
growth over one forward+backward, beyond the inputs; its time, with one thread, the CPU time of
that thread (wall time beside it). The *floor* is what any method must allocate: the
gradients of the weight and of the features, (K + N) d in the inputs' dtype. Every method runs
in float32 and, its row marked ``[bf16]``, with bfloat16 features and weight, in the same
interleaved rounds (``--dtypes``; ``--bf16-rounds``, default 1: the bf16 rows take one call in
each of that many of the rounds, since where bf16 products are emulated one materialised call
takes minutes); ``--bf16-products`` adds the chunked losses with their products forced into
bf16 (``[bf16, bf16 products]``: on a CPU without native bf16, frlr's default multiplies bf16
values as float32, see ``frlr.torch.linear.products``). Methods:

* ``F.cross_entropy(x @ W.T)``, materialised;
* PyTorch's ``F.linear_cross_entropy``, its default (the reference path) and with
  ``LinearCrossEntropyOptions(batch_chunk_size=128)`` (chunks of the batch, not the classes);
* the materialised frlr losses ``frlr.torch.<loss>(x @ W.T, y)``;
* the chunked ``frlr.torch.linear_<loss>`` with the default ``chunk_size``, and SS-LR's with
  ``compiled=True`` (compiled in the warm-up call, for the batch, a whole chunk and the ragged
  last chunk: the compilation is a one-time cost and not counted; the peak restarts after it);
* the *matmul floor*: the three products of every chunk alone (the logits, G^T X, G W with the
  logits standing in for G), in the inputs' dtype: the least any chunked method computes, and
  so the floor of a missed time target.

A method whose estimated peak exceeds ``--memory-budget-gb`` is not run, and the record says
so. The class-parallel section runs 2 and 3 gloo processes (one shard of classes each) and
compares their loss and gradients with one process; it reports the bytes each rank sends.

On CUDA (``--device cuda``; N = 4,096, d = 512 and 1,024, K = 10^5 and 10^6) every method runs
in this one process (a CUDA process takes seconds to start): one warm-up call on the measured
shape (it compiles the compiled loss, whose first call the record gives apart), then the best of
a few calls, each between ``torch.cuda.synchronize()`` calls; peak memory is
``torch.cuda.max_memory_allocated()`` above the inputs, restarted after the warm-up. The budget
is 90% of the GPU's free memory. A ``chunk_size`` sweep of ``linear_lr`` and ``linear_ss_lr``
follows (the default was chosen for CPU caches). ``--in-process`` runs this layout on the CPU,
the check of the CUDA path a machine without a GPU can make. ``--seconds`` starts no measurement
after that many seconds (the record says what was not run); the record is rewritten after each
table, so that a run stopped by a time limit leaves the tables it finished; a method that fails
gets its row, and the run exits 1 at its end. Without CUDA, ``--device cuda`` prints one line
and exits 2, as for any request it cannot honour (``gpu_check.sh`` checks for CUDA first and
exits 0 with its own line).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

import frlr.torch as frlr
from benchmarks._invocation import command_line, run_module
from benchmarks._machine import cpu_and_torch, current_rss_mb, peak_rss_mb, reset_peak_rss
from frlr.provenance import cpu_model
from frlr.torch.linear import default_chunk_size, products

MB = 2**20
CPU = torch.device("cpu")
Row = dict | str
"""One method's result: its times and peak, or why it has none."""


def _ce_chunked(x, w, y):
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=128)
    return F.linear_cross_entropy(x, w, y, options=options)


def _matmul_floor(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
    """The three products of every default chunk in the inputs' dtype, nothing else (the logits
    stand in for the per-logit gradient); no backward to call."""
    del y
    with torch.no_grad():
        x, w = x.detach(), w.detach()
        chunk = default_chunk_size(x.shape[0], w.shape[0])
        grad_w, grad_x = torch.empty_like(w), torch.zeros_like(x)
        for start in range(0, w.shape[0], chunk):
            part = w[start : start + chunk]
            z = x @ part.T
            torch.mm(z.T, x, out=grad_w[start : start + chunk])
            grad_x.addmm_(z, part)


METHODS: dict[str, tuple[Callable, float]] = {
    # name: (loss(x, W, y), logits-sized tensors it holds at its peak, for the memory estimate)
    "F.cross_entropy(x @ W.T)": (lambda x, w, y: F.cross_entropy(x @ w.T, y), 3.0),
    "F.linear_cross_entropy (default)": (lambda x, w, y: F.linear_cross_entropy(x, w, y), 3.0),
    "F.linear_cross_entropy (batch_chunk_size=128)": (_ce_chunked, 0.0),
    "frlr lr (materialised)": (lambda x, w, y: frlr.lr_loss(x @ w.T, y), 3.0),
    "frlr ss-lr (materialised)": (lambda x, w, y: frlr.ss_lr_loss(x @ w.T, y), 3.0),
    "frlr hs-lr (materialised)": (lambda x, w, y: frlr.hs_lr_loss(x @ w.T, y), 4.0),
    "frlr linear_lr": (frlr.linear_lr_loss, 0.0),
    "frlr linear_ss_lr": (frlr.linear_ss_lr_loss, 0.0),
    "frlr linear_ss_lr (compiled=True)": (partial(frlr.linear_ss_lr_loss, compiled=True), 0.0),
    "frlr linear_hs_lr": (frlr.linear_hs_lr_loss, 0.0),
    "frlr linear_sr": (frlr.linear_sr_loss, 0.0),
    "matmul floor (the 3 products, chunked)": (_matmul_floor, 0.0),
}
CHUNKED = (
    "frlr linear_lr",
    "frlr linear_ss_lr",
    "frlr linear_ss_lr (compiled=True)",
    "frlr linear_hs_lr",
    "frlr linear_sr",
)
BF16 = " [bf16]"
"""The suffix of a method's row with bfloat16 features and weight."""
FORCED = " [bf16, bf16 products]"
"""The suffix of a chunked loss's row with bfloat16 inputs and its products forced into bf16."""
SWEPT = ("frlr linear_lr", "frlr linear_ss_lr")
"""The losses of the chunk_size sweep."""
SWEEP_BUFFERS = 8
"""(N, chunk) float32 tensors a chunked loss is assumed to hold at its peak (an overestimate)."""
SPENT = "not run: the --seconds budget was spent"


def variant(name: str) -> tuple[str, torch.dtype, bool]:
    """A row's (method, inputs' dtype, products forced into bf16)."""
    if name.endswith(FORCED):
        return name.removesuffix(FORCED), torch.bfloat16, True
    if name.endswith(BF16):
        return name.removesuffix(BF16), torch.bfloat16, False
    return name, torch.float32, False


def rows_of(dtypes: tuple[str, ...], forced: bool, methods=None) -> list[str]:
    """Every method (of ``methods``, default all) in each of ``dtypes``, and with ``forced``
    the chunked losses with their products forced into bf16."""
    methods = list(METHODS) if methods is None else list(methods)
    names = [name for name in methods if "float32" in dtypes]
    names += [name + BF16 for name in methods if "bfloat16" in dtypes]
    if forced:
        names += [name + FORCED for name in methods if name in CHUNKED]
    return names


def floor_of(name: str, n: int, d: int, k: int) -> float:
    """The gradients of the weight and the features in the row's dtype, MB."""
    return (k + n) * d * variant(name)[1].itemsize / MB


def estimate_gb(name: str, n: int, d: int, k: int) -> float:
    """A rough peak: the weight and its gradient, plus the method's logits-sized tensors
    (PyTorch's batch chunks hold three (128, K) tensors), float32 (an overestimate in bf16)."""
    base, dtype, _ = variant(name)
    logits = METHODS[base][1] * n * k * 4
    if "batch_chunk" in base:
        logits = 3 * 128 * k * 4
    return (2 * k * d * dtype.itemsize + logits) / 2**30


# ---------------------------------------------------------------------------------------------
# What differs by device: the inputs, the clock, the peak memory and the budget
# ---------------------------------------------------------------------------------------------


def make_inputs(
    n: int, d: int, k: int, device: torch.device = CPU, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (n, d), a weight (k, d) scaled to unit-variance logits and index targets, made
    on ``device`` (a CPU would take seconds to draw a GPU's 10^9 weights)."""
    g = torch.Generator(device).manual_seed(seed)
    x = torch.randn(n, d, generator=g, device=device)
    w = torch.randn(k, d, generator=g, device=device) / d**0.5
    y = torch.randint(0, k, (n,), generator=g, device=device)
    return x, w, y


def shape_inputs(n: int, d: int, k: int, device: torch.device, dtype=torch.float32):
    """The inputs of one shape in ``dtype``, gradients wanted for the features and the weight."""
    x, w, y = make_inputs(n, d, k, device)
    return x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_(), y


def forward_backward(fn: Callable, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
    """One call and its backward (the matmul floor has none)."""
    out = fn(x, w, y)
    if out is not None:
        out.backward()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so that a clock measures them, not their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def start_peak(device: torch.device) -> float:
    """Restart the peak reading; the baseline in MB (the allocator's live bytes on CUDA, the
    resident set on the CPU)."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / MB
    reset_peak_rss()
    return current_rss_mb()


def peak_growth_mb(device: torch.device, base: float) -> float:
    """The peak since :func:`start_peak` above its baseline, MB."""
    synchronize(device)
    if device.type == "cuda":
        return max(torch.cuda.max_memory_allocated(device) / MB - base, 0.0)
    return max(peak_rss_mb() - base, 0.0)


def memory_budget(device: torch.device, cpu_budget_gb: float) -> tuple[float, str]:
    """The GB a method may need, and how a record says it was over: on CUDA 90% of the free
    memory now (the allocator's cache emptied first), on the CPU the given budget."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info(device)[0] / 2**30
        return 0.9 * free, f"over 90% of the {free:.0f} GB free on the GPU"
    return cpu_budget_gb, f"over the {cpu_budget_gb:g} GB budget"


def timed_calls(
    fn: Callable, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, calls: int,
    device: torch.device, cpu_time: bool,
) -> dict:  # fmt: skip
    """``calls`` forward+backward calls after the caller's warm-up: their seconds (the computing
    thread's CPU time when ``cpu_time``, else the wall time between synchronisations), their
    wall times and the peak growth above the inputs (MB)."""
    x.grad = w.grad = None
    base = start_peak(device)
    seconds, wall = [], []
    for _ in range(calls):
        x.grad = w.grad = None
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.thread_time()
        forward_backward(fn, x, w, y)
        synchronize(device)
        wall.append(time.perf_counter() - start)
        seconds.append(time.thread_time() - start_cpu if cpu_time else wall[-1])
    return {"seconds": seconds, "wall": wall, "growth_mb": peak_growth_mb(device, base)}


# ---------------------------------------------------------------------------------------------
# The CPU record: one fresh process per (method, shape)
# ---------------------------------------------------------------------------------------------


def child(name: str, n: int, d: int, k: int, calls: int, threads: int) -> None:
    """In a fresh process: print {"seconds": [...], "growth_mb": ...} as one JSON line."""
    print(json.dumps(measure(name, n, d, k, calls, threads)))


def measure(name: str, n: int, d: int, k: int, calls: int, threads: int) -> dict:
    """One configuration after a warm-up call: :func:`timed_calls`' times and peak growth."""
    torch.set_num_threads(threads)
    saved = products.HALF_PRODUCTS
    try:
        return _measure(name, n, d, k, calls, threads)
    finally:
        products.HALF_PRODUCTS = saved


def _measure(name: str, n: int, d: int, k: int, calls: int, threads: int) -> dict:
    base, dtype, forced = variant(name)
    if forced:
        products.HALF_PRODUCTS = True
    x, w, y = shape_inputs(n, d, k, CPU, dtype)
    fn = METHODS[base][0]
    # a small call first: one-time set-up (imports, dispatch caches) is not the method's cost;
    # a compiled loss compiles here for this batch, a whole chunk and the ragged last chunk
    if "compiled" in name:
        chunk = default_chunk_size(n, k)
        small = w[: min(k, chunk + (k % chunk or chunk))].detach().clone().requires_grad_()
        x_small = x.detach().clone().requires_grad_()
        forward_backward(fn, x_small, small, y % small.shape[0])
    else:
        small = w[:1000].detach().clone().requires_grad_()
        x_small = x[:8].detach().clone().requires_grad_()
        forward_backward(fn, x_small, small, y[:8] % small.shape[0])
    # with several threads their CPU times add up: wall time is the comparable one
    return timed_calls(fn, x, w, y, calls, CPU, cpu_time=threads == 1)


def run_child(name: str, n: int, d: int, k: int, calls: int, limit_gb: float, threads: int) -> Row:
    """One configuration in a fresh process, its address space capped so that a method that
    outgrows the budget fails alone instead of pushing the machine into swap or OOM."""
    limit = int((limit_gb + 6) * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    argv = ["--child", name, str(n), str(d), str(k), str(calls), "--threads", str(threads)]
    out = run_module("benchmarks.huge_k", argv, preexec_fn=cap)
    if out.returncode != 0:
        print(f"  {name}: failed ({out.stderr.strip().splitlines()[-1:]})", flush=True)
        return "failed (out of memory?)"
    return json.loads(out.stdout.strip().splitlines()[-1])


def collect_rows(
    methods, rounds: int, need_gb: Callable[[str], float], budget: tuple[float, str],
    run: Callable[[str], Row], deadline: float, milliseconds: bool = False,
    rounds_of: Callable[[str], int] | None = None,
) -> dict[str, Row]:  # fmt: skip
    """Every method ``run`` in ``rounds`` round-robin rounds (a slow spell of a shared host then
    slows one round of every method, not all of one method's; ``rounds_of`` a method's fewer
    rounds, the first ones): the times of all rounds, the largest peak; a method over the memory
    budget, or past the deadline, gets the reason."""
    budget_gb, over = budget
    rows: dict[str, Row] = {}
    for name in methods:
        need = need_gb(name)
        if need > budget_gb:
            rows[name] = f"not run: needs about {need:.0f} GB, {over}"
            print(f"  {name}: {rows[name]}", flush=True)
    for round_ in range(rounds):
        for name in methods:
            if isinstance(rows.get(name), str) or (rounds_of and round_ >= rounds_of(name)):
                continue
            result = SPENT if time.perf_counter() > deadline else run(name)
            if isinstance(result, str):
                rows[name] = result
                continue
            seen = rows.setdefault(name, {"seconds": [], "wall": [], "growth_mb": 0.0})
            assert isinstance(seen, dict)
            seen["seconds"] += result["seconds"]
            seen["wall"] += result["wall"]
            seen["growth_mb"] = max(seen["growth_mb"], result["growth_mb"])
            if "first" in result:
                seen["first"] = result["first"]
            best = min(result["seconds"])
            took = f"{1000 * best:.1f} ms" if milliseconds else f"{best:.2f} s"
            print(
                f"  [{round_ + 1}/{rounds}] {name}: {took}, {result['growth_mb']:.0f} MB",
                flush=True,
            )
    return rows


def shape_table(
    n: int, d: int, k: int, calls: int, budget_gb: float, threads: int, methods, rounds: int = 1,
    deadline: float = math.inf, largest: bool = False, bf16_rounds: int | None = None,
    smoke: bool = False,
) -> list[str]:  # fmt: skip
    """One shape on the CPU, every method in fresh processes (:func:`collect_rows`), its time
    the best call of all rounds, its memory the largest peak: the table's lines, and with
    ``largest`` the largest K that fits this machine (:func:`fitting_lines`). With
    ``bf16_rounds`` the bf16 rows take one call in each of the first ``bf16_rounds`` rounds
    (where bf16 products are emulated, one materialised call takes minutes). ``smoke`` (--quick):
    only the first method in a fresh process, the others in this one (a fresh process is 3 s
    of imports, most of a tiny shape's time; their memory then is not each method's own)."""
    bf16_rounds = rounds if bf16_rounds is None else min(bf16_rounds, rounds)
    fewer = bf16_rounds < rounds

    def bf16(name: str) -> bool:
        return variant(name)[1] == torch.bfloat16

    def run(name: str) -> Row:
        count = 1 if fewer and bf16(name) else calls
        if smoke and name != methods[0]:
            return measure(name, n, d, k, count, threads)
        return run_child(name, n, d, k, count, budget_gb, threads)

    rows = collect_rows(
        methods, rounds, lambda name: estimate_gb(name, n, d, k),
        memory_budget(CPU, budget_gb), run, deadline,
        rounds_of=lambda name: bf16_rounds if bf16(name) else rounds,
    )  # fmt: skip
    bf16_words = f"; the bf16 rows one call in {bf16_rounds} of them" if fewer else ""
    lines = [
        f"### N = {n:,}, d = {d}, K = {k:,} ({floor_words(methods, n, d, k)}; "
        f"best of {calls} call{'s' if calls > 1 else ''} in each of {rounds} "
        f"interleaved round{'s' if rounds > 1 else ''}{bf16_words})",
        "",
        f"| method | forward+backward {'CPU ' if threads == 1 else ''}s | wall s "
        "| peak growth MB | above the floor MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        if isinstance(row, str):
            lines.append(f"| {name} | {row} | | | |")
        else:
            above = row["growth_mb"] - floor_of(name, n, d, k)
            lines.append(
                f"| {name} | {min(row['seconds']):.2f} | {min(row['wall']):.2f} "
                f"| {row['growth_mb']:,.0f} | {above:,.0f} |"
            )
    if largest:
        return [*lines, "", *fitting_lines(rows, n, d, k), ""]
    return [*lines, "", *target_lines(rows, lambda name: floor_of(name, n, d, k)), ""]


def fitting_lines(rows: dict, n: int, d: int, k: int) -> list[str]:
    """Per chunked row that ran: the largest K that fits this machine's memory at that row's
    bytes per class (its peak growth and its weight, over K), 2 GB left to the rest."""
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:")) * 1024
    lines = []
    for name, row in rows.items():
        base, dtype, _ = variant(name)
        if not isinstance(row, dict) or base not in CHUNKED:
            continue
        per_class = (row["growth_mb"] * MB + k * d * dtype.itemsize) / k
        fits = (total - 2 * 2**30) / per_class
        lines.append(
            f"- {name}: {per_class:.0f} bytes a class at d = {d} (its weight, the weight's "
            f"gradient and the chunk buffers' share), so about {fits:.2g} classes fit this "
            f"machine's {total / 2**30:.0f} GB (2 GB left to the rest)"
        )
    return lines


def floor_words(methods, n: int, d: int, k: int) -> str:
    """The table header's floor, in each dtype its rows take."""
    floors = {variant(name)[1]: floor_of(name, n, d, k) for name in methods}
    each = ", ".join(f"{mb:,.0f} MB in {str(dtype)[6:]}" for dtype, mb in floors.items())
    return f"floor: grad of W and x = {each}"


class Targets:
    """One table's rows as the targets read them: a row's best seconds and its peak above
    the floor of its dtype."""

    def __init__(self, rows: dict, floor: Callable[[str], float]) -> None:
        self.rows, self.floor = rows, floor

    def get(self, name: str) -> dict | None:
        row = self.rows.get(name)
        return row if isinstance(row, dict) else None

    def seconds(self, name: str) -> float:
        row = self.get(name)
        assert row is not None
        return min(row["seconds"])

    def above(self, name: str) -> float:
        row = self.get(name)
        assert row is not None
        return row["growth_mb"] - self.floor(name)

    def ratio_line(self, label: str, mine: str, theirs: str, target: float) -> list[str]:
        """``label``'s time against ``theirs`` where both ran, judged on ``target``."""
        if self.get(mine) is None or self.get(theirs) is None:
            return []
        ratio = self.seconds(mine) / self.seconds(theirs)
        verdict = "met" if ratio <= target else "MISSED"
        return [f"- {label} {ratio:.2f}x (target <= {target:g}x): {verdict}"]


LOSSES = (
    ("lr", "frlr linear_lr", 1.25),
    ("ss-lr", "frlr linear_ss_lr", 1.25),
    ("ss-lr compiled", "frlr linear_ss_lr (compiled=True)", 1.0),
)
"""The losses the time targets judge, and their bf16 target against PyTorch's fastest."""


def target_lines(rows: dict, floor: Callable[[str], float]) -> list[str]:
    """The issues' targets, judged on this shape where both sides ran: float32's, then
    bf16's."""
    targets = Targets(rows, floor)
    return float32_target_lines(targets) + bf16_target_lines(targets)


def float32_target_lines(t: Targets) -> list[str]:
    """Memory and time against the materialised losses and PyTorch's chunked cross-entropy;
    HS-LR against SS-LR."""
    lines = []
    chunked_ce = "F.linear_cross_entropy (batch_chunk_size=128)"
    for loss, method, _ in LOSSES:
        if t.get(method) is None:
            continue
        above = t.above(method)
        materialised = f"frlr {loss.split()[0]} (materialised)"
        if t.get(materialised) is not None:
            theirs = t.above(materialised)
            verdict = "met" if above <= theirs / 10 else "MISSED"
            lines.append(
                f"- {loss} memory above the floor {above:,.0f} MB vs materialised "
                f"{theirs:,.0f} MB (target <= 1/10): {verdict}"
            )
            lines += t.ratio_line(f"{loss} time vs materialised:", method, materialised, 1.1)
        if t.get(chunked_ce) is not None:
            theirs = t.above(chunked_ce)
            verdict = "met" if above < theirs else "MISSED"
            lines.append(
                f"- {loss} memory above the floor {above:,.0f} MB vs PyTorch's chunked "
                f"cross-entropy {theirs:,.0f} MB (target below): {verdict}"
            )
            label = f"{loss} time vs PyTorch's chunked cross-entropy:"
            lines += t.ratio_line(label, method, chunked_ce, 1.0)
    return lines + t.ratio_line(
        "hs-lr time vs ss-lr:", "frlr linear_hs_lr", "frlr linear_ss_lr", 1.3
    )


def bf16_target_lines(t: Targets) -> list[str]:
    """bf16 (issue 25): LR and SS-LR against PyTorch's faster ``F.linear_cross_entropy`` option
    in bf16, each miss beside the matmul floor's ratio (and the forced bf16 products' where
    they ran); the memory above the floor against the float32 figure; HS-LR against SS-LR."""
    options = [
        f"F.linear_cross_entropy ({option}){BF16}" for option in ("default", "batch_chunk_size=128")
    ]
    ran = [name for name in options if t.get(name) is not None]
    fastest = min(ran, key=t.seconds) if ran else None
    matmul = f"matmul floor (the 3 products, chunked){BF16}"
    lines = []
    for loss, method, target in LOSSES:
        mine = method + BF16
        if t.get(mine) is None:
            continue
        if fastest is not None:
            label = f"bf16 {loss} time vs PyTorch's fastest in bf16 ({fastest.removesuffix(BF16)}):"
            line = t.ratio_line(label, mine, fastest, target)[0]
            if t.get(method + FORCED) is not None:
                forced = t.seconds(method + FORCED) / t.seconds(fastest)
                line += f"; its products forced into bf16: {forced:.2f}x"
            if line.endswith("MISSED") and t.get(matmul) is not None:
                floor = t.seconds(matmul) / t.seconds(fastest)
                line += f" (floor: the 3 products alone in bf16 take {floor:.2f}x)"
            lines.append(line)
        if t.get(method) is not None:
            mine_above, fp32_above = t.above(mine), t.above(method)
            verdict = "met" if mine_above <= fp32_above else "MISSED"
            lines.append(
                f"- bf16 {loss} memory above the floor {mine_above:,.0f} MB vs "
                f"{fp32_above:,.0f} MB in float32 (target no larger): {verdict}"
            )
    hs, ss = "frlr linear_hs_lr", "frlr linear_ss_lr"
    return lines + t.ratio_line("bf16 hs-lr time vs ss-lr:", hs + BF16, ss + BF16, 1.3)


# ---------------------------------------------------------------------------------------------
# Class-parallel: 2 and 3 gloo processes against one.
# ---------------------------------------------------------------------------------------------

PARALLEL_LOSSES = ("linear_lr_loss", "linear_ss_lr_loss", "linear_hs_lr_loss", "linear_sr_loss")


def _split(total: int, parts: int, rank: int) -> slice:
    """Unequal contiguous shares (the last rank gets the remainder)."""
    size = total // parts
    start = rank * size
    return slice(start, total if rank == parts - 1 else start + size)


SENDING_COLLECTIVES = {
    "all_gather_single": 1,
    "all_gather_into_tensor": 1,
    "all_reduce": 0,
    "reduce_scatter_single": 1,
    "reduce_scatter_tensor": 1,
}
"""The tensor collectives the class-parallel losses call, and the position of the tensor each
takes from this rank (an all-gather's and a reduce-scatter's input, an all-reduce's tensor)."""


@contextmanager
def counted_bytes() -> Iterator[list[int]]:
    """A one-item list that counts the bytes this rank hands to the collectives inside the block:
    ``torch.distributed``'s functions are wrapped for its duration (the losses look them up at
    each call), so nothing in the library keeps a counter for the benchmark."""
    import torch.distributed as dist

    sent = [0]
    originals = {name: getattr(dist, name) for name in SENDING_COLLECTIVES if hasattr(dist, name)}

    def counting(name: str) -> Callable:
        def call(*args, **kwargs):
            tensor = args[SENDING_COLLECTIVES[name]]
            sent[0] += tensor.numel() * tensor.element_size()
            return originals[name](*args, **kwargs)

        return call

    for name in originals:
        setattr(dist, name, counting(name))
    try:
        yield sent
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def parallel_rank(rank: int, world: int, port: int, reference: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    saved = torch.load(reference, weights_only=True)
    n, d, k = saved["shape"]
    x, w, y = make_inputs(n, d, k, seed=1)
    rows, classes = _split(n, world, rank), _split(k, world, rank)
    report = {}
    for name in PARALLEL_LOSSES:
        xl = x[rows].clone().requires_grad_()
        wl = w[classes].clone().requires_grad_()
        with counted_bytes() as sent:
            start = time.perf_counter()
            loss = getattr(frlr, name)(
                xl, wl, y[rows], process_group=dist.group.WORLD, class_offset=classes.start,
                num_classes=k,
            )  # fmt: skip
            loss.backward()
            elapsed = time.perf_counter() - start
        want = saved[name]
        diff = max(
            abs(loss.item() - want["loss"].item()),
            (xl.grad - want["x"][rows]).abs().max().item(),
            (wl.grad - want["w"][classes]).abs().max().item(),
        )
        report[name] = {"diff": diff, "bytes": sent[0], "seconds": elapsed}
    Path(out, f"{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def parallel_table(n: int, d: int, k: int) -> list[str]:
    import torch.multiprocessing as mp

    x, w, y = make_inputs(n, d, k, seed=1)
    reference = {"shape": (n, d, k)}
    single_seconds = {}
    for name in PARALLEL_LOSSES:
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        start = time.perf_counter()
        loss = getattr(frlr, name)(xs, ws, y)
        loss.backward()
        single_seconds[name] = time.perf_counter() - start
        reference[name] = {"loss": loss.detach(), "x": xs.grad, "w": ws.grad}
    lines = [
        f"### Class-parallel, gloo on CPU: N = {n:,}, d = {d}, K = {k:,} split by class "
        "(float32; one thread per process)",
        "",
        "| loss | processes | max abs difference to 1 process (loss, grad x, grad W) "
        "| bytes sent per rank per step | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp, "reference.pt"))
        torch.save(reference, path)
        results = {}
        for world in (2, 3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.start_processes(
                parallel_rank, args=(world, port, path, tmp), nprocs=world, start_method="spawn"
            )
            results[world] = [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(world)]
    for name in PARALLEL_LOSSES:
        lines.append(f"| {name} | 1 | - | 0 | {single_seconds[name]:.2f} |")
        for world, reports in results.items():
            diff = max(r[name]["diff"] for r in reports)
            sent = max(r[name]["bytes"] for r in reports)
            secs = max(r[name]["seconds"] for r in reports)
            verdict = "met" if diff <= 1e-5 else "MISSED"
            lines.append(
                f"| {name} | {world} | {diff:.1e} ({verdict}: <= 1e-5) | {sent:,} | {secs:.2f} |"
            )
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------
# The CUDA record (or --in-process on the CPU): every method in this one process
# ---------------------------------------------------------------------------------------------


def measure_in_process(
    fn: Callable, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, calls: int,
    device: torch.device,
) -> Row:  # fmt: skip
    """One method in this process: a warm-up call on the measured shape (it compiles a compiled
    loss and sets up the BLAS handles and the allocator's cache; its seconds are "first"), then
    :func:`timed_calls` in wall time. An error (out of memory, a compiler's) is the method's
    row, its traceback on stderr, and the run goes on to the next method."""
    try:
        synchronize(device)
        start = time.perf_counter()
        forward_backward(fn, x, w, y)
        synchronize(device)
        first = time.perf_counter() - start
        result = timed_calls(fn, x, w, y, calls, device, cpu_time=False)
    except torch.OutOfMemoryError:
        return "failed: out of memory"
    except Exception as error:  # one method's fault must not lose the other methods' rows
        traceback.print_exc()
        first_line = (str(error).strip().splitlines() or [""])[0][:200].replace("|", "/")
        return f"failed: {type(error).__name__}: {first_line}"
    finally:
        x.grad = w.grad = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {**result, "first": first}


def in_process_table(
    n: int, d: int, k: int, calls: int, device: torch.device, budget_gb: float, deadline: float
) -> list[str]:
    """One shape, every method in this process (:func:`measure_in_process`), in float32 and
    bf16: the best call in milliseconds, the peak above the inputs, the first call of the
    compiled loss, the targets."""
    budget = memory_budget(device, budget_gb)  # before the inputs: the estimate counts W
    inputs = {
        dtype: shape_inputs(n, d, k, device, dtype) for dtype in (torch.float32, torch.bfloat16)
    }

    def run(name: str) -> Row:
        base, dtype, _ = variant(name)
        return measure_in_process(METHODS[base][0], *inputs[dtype], calls, device)

    methods = rows_of(("float32", "bfloat16"), forced=False)
    rows = collect_rows(
        methods, 1, lambda name: estimate_gb(name, n, d, k), budget, run, deadline,
        milliseconds=True,
    )  # fmt: skip
    lines = [
        f"### N = {n:,}, d = {d}, K = {k:,} ({floor_words(methods, n, d, k)}; "
        f"best of {calls} calls after a warm-up call)",
        "",
        "| method | forward+backward ms | peak growth MB | above the floor MB |",
        "|---|---:|---:|---:|",
    ]
    firsts = []
    for name, row in rows.items():
        if isinstance(row, str):
            lines.append(f"| {name} | {row} | | |")
            continue
        lines.append(
            f"| {name} | {1000 * min(row['seconds']):,.1f} | {row['growth_mb']:,.0f} "
            f"| {row['growth_mb'] - floor_of(name, n, d, k):,.0f} |"
        )
        if "compiled" in name:
            firsts.append(
                f"- first call of {name}, with its compilation when the shape is new to the "
                "compiler (not counted above): "
                f"{row['first']:.1f} s"
            )
    floor = lambda name: floor_of(name, n, d, k)  # noqa: E731
    return [*lines, "", *firsts, *target_lines(rows, floor), ""]


def chunk_sweep(
    n: int, d: int, k: int, calls: int, sizes: tuple[int, ...], device: torch.device,
    budget_gb: float, deadline: float,
) -> list[str]:  # fmt: skip
    """``linear_lr`` and ``linear_ss_lr`` at the default ``chunk_size`` and at ``sizes``: time
    and peak above the floor per chunk size, the data for a CUDA default (the default's 8 MiB
    (N, chunk) buffer was chosen for CPU caches)."""
    budget = memory_budget(device, budget_gb)
    x, w, y = shape_inputs(n, d, k, device)
    floor_mb = (k + n) * d * 4 / MB
    default = default_chunk_size(n, k)
    chunks = list(dict.fromkeys([default, *(min(size, k) for size in sizes)]))
    names = [name.removeprefix("frlr ") for name in SWEPT]
    lines = [
        f"### chunk_size: N = {n:,}, d = {d}, K = {k:,} (floor: grad of W and x = "
        f"{floor_mb:,.0f} MB; best of {calls} calls after a warm-up call; the default "
        f"{default:,}: one (N, chunk) float32 buffer of at most 8 MiB)",
        "",
        "| chunk_size | (N, chunk) MB | "
        + " | ".join(f"{name} ms | {name} above the floor MB" for name in names)
        + " |",
        "|---:|---:|" + "---:|---:|" * len(SWEPT),
    ]

    def run(chunk: int, name: str) -> Row:
        fn = partial(METHODS[name][0], chunk_size=chunk)
        return measure_in_process(fn, x, w, y, calls, device)

    for chunk in chunks:
        print(f"  chunk_size = {chunk}", flush=True)
        need_gb = (2 * k * d + SWEEP_BUFFERS * n * chunk) * 4 / 2**30
        rows = collect_rows(
            SWEPT, 1, lambda _, need=need_gb: need, budget, partial(run, chunk), deadline,
            milliseconds=True,
        )  # fmt: skip
        cells = []
        for name in SWEPT:
            row = rows[name]
            if isinstance(row, str):
                cells += [row, ""]
            else:
                above = row["growth_mb"] - floor_mb
                cells += [f"{1000 * min(row['seconds']):,.1f}", f"{above:,.0f}"]
        label = f"{chunk:,}" + (" (default)" if chunk == default else "")
        lines.append(f"| {label} | {n * chunk * 4 / MB:,.0f} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plan(quick: bool) -> list[tuple[Callable, tuple]]:
    """The one-process record's tables in order, the most wanted first (a --seconds budget cuts
    the last): N = 4,096 (a GPU's batches are larger), d = 512 and 1,024, K = 10^5 and 10^6,
    the chunk_size sweep before the largest shape."""
    if quick:
        return [(in_process_table, (32, 16, 1_000, 2)), (chunk_sweep, (32, 16, 5_000, 2, (64,)))]
    return [
        (in_process_table, (4096, 512, 100_000, 3)),
        (in_process_table, (4096, 1024, 100_000, 3)),
        (in_process_table, (4096, 512, 1_000_000, 2)),
        (chunk_sweep, (4096, 512, 1_000_000, 2, (8192, 32768, 131072))),
        (in_process_table, (4096, 1024, 1_000_000, 2)),
    ]


def device_line(device: torch.device) -> str:
    if device.type != "cuda":
        return cpu_and_torch()
    p = torch.cuda.get_device_properties(device)
    return (
        f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
        f"torch {torch.__version__}; host CPU {cpu_model()}"
    )


def in_process_record(args: argparse.Namespace, device: torch.device, deadline: float) -> None:
    """Every table of :func:`plan` in this process; the record (``--out``, on CUDA by default
    docs/benchmarks/huge_k_cuda.md, never the CPU record) rewritten after each table; exit
    status 1 at the end when a method failed."""
    started = time.perf_counter()
    out = args.out
    if out is None and device.type == "cuda" and not args.quick:
        out = "docs/benchmarks/huge_k_cuda.md"
    command = command_line("benchmarks.huge_k")
    where = "CUDA" if device.type == "cuda" else "one CPU process"
    peak = (
        "the allocator's peak (torch.cuda.max_memory_allocated)"
        if device.type == "cuda"
        else "VmHWM"
    )
    lines: list[str] = []
    steps = plan(args.quick)
    for done, (table, params) in enumerate(steps, 1):
        print(f"{table.__name__} {params}", flush=True)
        lines += table(*params, device, args.memory_budget_gb, deadline)
        if out is None:
            continue
        header = [
            f"# Huge K on {where}: losses that never hold the logits",
            "",
            f"Date: {datetime.date.today().isoformat()}. Machine: {device_line(device)}; "
            f"wall time {time.perf_counter() - started:.0f} s"
            + ("." if done == len(steps) else f" (INCOMPLETE: {done} of {len(steps)} tables)."),
            "",
            f"Command: `{command}`. float32 (matmul precision "
            f'"{torch.get_float32_matmul_precision()}") and bf16 ([bf16] rows: bfloat16 features '
            f"and weight; {half_products_words(device)}), index targets, reduction mean, the "
            "default chunk_size except in the sweep; every method in this one process, after "
            "one warm-up call on its shape (it compiles the compiled loss); times are wall time "
            "between synchronisations, the best of the calls after the warm-up; peak growth is "
            f"{peak} above the inputs, restarted after the warm-up. The largest K and the "
            "class-parallel section are in the CPU record (docs/benchmarks/huge_k.md).",
            "",
        ]
        write_record(Path(out), header + lines)
    print("\n".join(lines), flush=True)
    if out is not None:
        print(f"wrote {out}")
    if any("| failed" in line for line in lines):
        sys.exit("huge_k.py: a method failed (its row says how): exit status 1")


def write_record(out: Path, lines: list[str]) -> None:
    """Replace ``out`` whole (a reader never sees half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)


def cpu_record(args: argparse.Namespace, deadline: float) -> None:
    """The CPU record: fresh processes per (method, shape), the largest K, class-parallel."""
    torch.set_num_threads(args.threads)  # the class-parallel section's one-process reference
    started = time.perf_counter()
    if args.quick:
        shapes = [(32, 16, 1_000, 1, 1)]  # one round: every method twice (float32, bf16)
        largest = (32, 8, 5_000, 1)
        parallel_shape = (64, 16, 2_000)
    else:
        shapes = [
            (n, d, k, 2 if k <= 100_000 else 1, 3 if k <= 100_000 else 1)
            for n, d, k in args.shapes or [(1024, d, k) for d in (256, 512) for k in (10**5, 10**6)]
        ]
        largest = (1024, 64, args.largest_k, 1)
        parallel_shape = (1024, 256, 100_000)
    budget, threads = args.memory_budget_gb, args.threads
    dtypes = tuple(args.dtypes.split(","))
    lines: list[str] = []
    for n, d, k, calls, rounds in shapes:
        print(f"N = {n}, d = {d}, K = {k}", flush=True)
        methods = rows_of(dtypes, args.bf16_products)
        lines += shape_table(
            n, d, k, calls, budget, threads, methods, rounds, deadline,
            bf16_rounds=args.bf16_rounds, smoke=args.quick,
        )  # fmt: skip
    n, d, k, calls = largest
    print(f"largest: N = {n}, d = {d}, K = {k}", flush=True)
    largest_methods = ("frlr linear_lr", "frlr linear_ss_lr", "frlr ss-lr (materialised)")
    methods = rows_of(dtypes, False, largest_methods)
    lines += ["## The largest K", ""]
    lines += shape_table(
        n, d, k, calls, budget, threads, methods, 1, deadline, largest=True, smoke=args.quick
    )
    print("class-parallel", flush=True)
    lines += ["## Class-parallel", ""]
    lines += parallel_table(*parallel_shape)
    print("\n".join(lines), flush=True)
    if args.quick:
        return
    out = Path(args.out or "docs/benchmarks/huge_k.md")
    command = command_line("benchmarks.huge_k")
    header = [
        "# Huge K: losses that never hold the logits",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {cpu_and_torch()}. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} (other jobs shared the machine); "
        f"wall time {time.perf_counter() - started:.0f} s.",
        "",
        f"Command: `{command}`. {' and '.join(dtypes)} ([bf16] rows: bfloat16 features and "
        "weight), index targets, reduction mean, default chunk_size, "
        f"{args.threads} torch thread(s) per process; each (method, shape) in a fresh process; "
        "peak growth is VmHWM over the inputs. "
        f"The [bf16] rows: {half_products_words()}. "
        + (
            "Times are the CPU time of the one computing thread (this host is shared: CPU time "
            "leaves out the waits for a core that wall time counts), wall time alongside; the "
            "targets are judged on CPU time."
            if args.threads == 1
            else "Times are wall time (several threads)."
        ),
        "",
    ]
    write_record(out, header + lines)
    print(f"wrote {out}")


def half_products_words(device: torch.device = CPU) -> str:
    """What the device does with bf16 products, and so what frlr's [bf16] rows multiply in."""
    if not products.native_half(device, torch.bfloat16):
        return (
            "no native bf16 products here (oneDNN emulates them): frlr's [bf16] rows multiply "
            "the bf16 values as float32 (exact products, float32 sums), the matmul floor [bf16] "
            "row measures bf16 products"
        )
    out = "float32" if products.float32_output(device.type, torch.bfloat16) else "bf16"
    return f"native bf16 products: frlr's [bf16] rows multiply in bf16, the logits out in {out}"


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """'1024x256x100000,1024x512x100000' -> [(1024, 256, 100000), (1024, 512, 100000)]."""
    try:
        shapes = [tuple(int(v) for v in part.split("x")) for part in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 3 or min(shape) < 1 for shape in shapes):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NxDxK[,NxDxK...] of positive ints")
    return shapes  # type: ignore[return-value]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny shapes, a smoke test: writes nothing (one process: only --out)",
    )
    parser.add_argument("--child", nargs=5, metavar=("NAME", "N", "D", "K", "CALLS"))
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu: the record of fresh processes; cuda[:N]: every method in one process, "
        "and the chunk_size sweep (writes --out, by default docs/benchmarks/huge_k_cuda.md); "
        "without CUDA it prints one line and exits 2",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the CUDA layout on the CPU (one process, the sweep): checks the CUDA path's code",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="start no measurement after this many seconds (the record says what was not run)",
    )
    parser.add_argument(
        "--memory-budget-gb", type=float, default=12.0, help="on the CPU (CUDA: 90%% of free)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process (1: steady timings on a shared machine)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="default: docs/benchmarks/huge_k.md (CPU), docs/benchmarks/huge_k_cuda.md (CUDA)",
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=None,
        help="the CPU record's shapes, NxDxK comma-separated (default: N 1,024, d 256 and 512, "
        "K 10^5 and 10^6); e.g. 1024x256x100000 for the bf16 rows where bf16 is emulated",
    )
    parser.add_argument(
        "--largest-k", type=int, default=10_000_000, help="the largest K, at d = 64, chunked"
    )
    parser.add_argument(
        "--dtypes",
        default="float32,bfloat16",
        help="the CPU record's input dtypes, comma-separated (float32, bfloat16)",
    )
    parser.add_argument(
        "--bf16-rounds",
        type=int,
        default=1,
        help="the CPU record's rounds of the bf16 rows, one call each (float32's: 3 at K = 10^5)",
    )
    parser.add_argument(
        "--bf16-products",
        action="store_true",
        help="also the chunked losses with their products forced into bf16 (FRLR_HALF_PRODUCTS)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        name, n, d, k, calls = args.child
        child(name, int(n), int(d), int(k), int(calls), args.threads)
        return
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = torch.device("meta")  # refused below, with the one line
    if device.type not in ("cpu", "cuda") or (
        device.type == "cuda" and not torch.cuda.is_available()
    ):
        print(
            f"huge_k.py: --device {args.device}: not available here (CUDA available: "
            f"{torch.cuda.is_available()}, torch {torch.__version__}); nothing measured",
            file=sys.stderr,
        )
        sys.exit(2)
    deadline = math.inf if args.seconds is None else time.perf_counter() + args.seconds
    if device.type == "cpu" and not args.in_process:
        cpu_record(args, deadline)
    else:
        in_process_record(args, device, deadline)


if __name__ == "__main__":
    main()
