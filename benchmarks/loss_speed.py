"""Forward+backward time and peak memory of the frlr losses against named peers, in one run.

    python -m benchmarks.loss_speed            # full table, writes docs/benchmarks/loss_speed.md
    python -m benchmarks.loss_speed --quick    # tiny shapes, a smoke test (writes nothing)
    python -m benchmarks.loss_speed --k 1000 --no-memory   # a partial run (writes nothing
                                                           # unless --out is given)
    python -m benchmarks.loss_speed --device cuda --out gpu.md   # on a GPU (writes only --out)

Peers, measured in the same process on the same inputs:
* ``F.cross_entropy`` (the baseline every ratio is taken against);
* ``F.binary_cross_entropy_with_logits`` on a one-hot target (the usual way to write LR);
* the authors' released formulations of HS-LR and SS-LR (sigmoid, ``log(p + 1e-7)``, one-hot,
  ``topk``), transcribed from their code;
* the sigmoid focal loss as written in torchvision's ``sigmoid_focal_loss``.
Peak memory growth of one forward+backward is measured in a fresh process per loss (on CUDA:
the allocator's peak above what was allocated before the call, in this process). On CUDA every
timed call is bracketed by ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A fresh inductor cache, so the fused losses' first-call latency is a cold compile.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="frlr-inductor-"))

import torch
import torch.nn.functional as F

import frlr.torch as frlr
from benchmarks._invocation import command_line, run_module
from benchmarks._machine import cpu_and_torch, current_rss_mb, peak_rss_mb


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    zeros = torch.zeros(target.shape[0], num_classes, device=target.device)
    return zeros.scatter_(1, target.unsqueeze(1), 1.0)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a timer measures them and not their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bce_one_hot(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(z, one_hot(y, z.shape[1]), reduction="sum") / len(z)


def authors_hs_lr(z: torch.Tensor, y: torch.Tensor, alpha: float = 10.0, ratio=0.25):
    eps = 1e-7
    probs = torch.sigmoid(z)
    targets = one_hot(y, z.shape[1])
    pred_p = torch.log(probs + eps)
    pred_n = torch.log(1.0 - probs + eps)
    topk = int(z.shape[1] * ratio)
    count_pos = targets.sum()
    hard_neg_loss = -1.0 * (1.0 - targets) * pred_n
    topk_neg_loss = -1.0 * hard_neg_loss.topk(topk, dim=1)[0]
    return -1.0 * ((targets * pred_p).sum() / count_pos + alpha * topk_neg_loss.mean())


def authors_ss_lr(z: torch.Tensor, y: torch.Tensor, alpha: float = 10.0, gamma: float = 2.0):
    eps = 1e-7
    probs = torch.sigmoid(z)
    targets = one_hot(y, z.shape[1])
    count_pos = targets.sum()
    count_neg = (1.0 - targets).sum()
    pred_p = torch.log(probs + eps)
    pred_n = torch.pow(probs, gamma) * torch.log(1.0 - probs + eps)
    return -1.0 * (
        (targets * pred_p).sum() / count_pos + alpha * ((1.0 - targets) * pred_n).sum() / count_neg
    )


def sigmoid_focal(z: torch.Tensor, y: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    targets = one_hot(y, z.shape[1])
    p = torch.sigmoid(z)
    ce_loss = F.binary_cross_entropy_with_logits(z, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * loss).mean()


def candidates(fused: bool) -> dict[str, Callable]:
    methods: dict[str, Callable] = {
        "F.cross_entropy": F.cross_entropy,
        "BCE-with-logits(one-hot)": bce_one_hot,
        "torchvision sigmoid_focal": sigmoid_focal,
        "authors HS-LR": authors_hs_lr,
        "authors SS-LR": authors_ss_lr,
        "frlr lr": frlr.lr_loss,
        "frlr hs-lr": frlr.hs_lr_loss,
        "frlr ss-lr": frlr.ss_lr_loss,
    }
    if fused:  # the one fused loss; compiled() of any other name is the eager loss
        methods["frlr ss-lr (fused)"] = frlr.compiled("ss-lr")
    return methods


def time_samples(fn: Callable, z: torch.Tensor, y: torch.Tensor, min_calls: int, min_s: float):
    """Seconds of forward+backward calls, after one warm-up: at least ``min_calls`` calls and
    ``min_s`` seconds, so sub-millisecond shapes get hundreds of samples and slow ones a few."""
    x = z.clone().requires_grad_(True)
    fn(x, y).backward()
    times: list[float] = []
    while len(times) < min_calls or (sum(times) < min_s and len(times) < 1000):
        x.grad = None
        synchronize(x.device)
        start = time.perf_counter()
        fn(x, y).backward()
        synchronize(x.device)
        times.append(time.perf_counter() - start)
    return times


def time_methods(
    methods: dict[str, Callable], z: torch.Tensor, y: torch.Tensor, rounds: int, min_s: float
) -> dict[str, float]:
    """Median milliseconds per method, sampled in interleaved rounds so that a burst of load
    from another process hits every method alike rather than one."""
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            samples[name] += time_samples(fn, z, y, min_calls=2, min_s=min_s / rounds)
    return {name: 1000 * statistics.median(values) for name, values in samples.items()}


def memory_child(name: str, n: int, k: int) -> None:
    """Run in a fresh process: print the peak RSS growth (MB) of one forward+backward."""
    method = candidates(fused="fused" in name)[name]
    z = torch.randn(n, k).requires_grad_(True)
    y = torch.randint(0, k, (n,))
    if "fused" in name:  # compile on a small input first, so compiler memory is not counted
        method(torch.randn(2, k, requires_grad=True), y[:2]).backward()
    base = current_rss_mb()
    method(z, y).backward()
    print(f"{max(peak_rss_mb() - base, 0.0):.0f}")


def cuda_peak_mb(name: str, n: int, k: int, device: torch.device) -> float:
    """Peak CUDA memory of one forward+backward above what was allocated before it (MB)."""
    method = candidates(fused="fused" in name)[name]
    z = torch.randn(n, k, device=device).requires_grad_(True)
    y = torch.randint(0, k, (n,), device=device)
    method(z, y).backward()  # compile and warm up on the measured shape
    z.grad = None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    method(z, y).backward()
    synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - base, 0) / 2**20


TARGETS = (
    # (frlr method, bound on the ratio to F.cross_entropy, peer it must beat, by this factor)
    ("frlr lr", 2.5, "BCE-with-logits(one-hot)", None),
    ("frlr ss-lr", 2.5, "authors SS-LR", 2.5),
    ("frlr hs-lr", 3.0, "authors HS-LR", 2.5),
    ("frlr ss-lr (fused)", 1.5, None, None),
)
"""The issue's targets for K >= 1000, at both N: eager LR and SS-LR <= 2.5x cross-entropy, HS-LR
<= 3x, each >= 2.5x faster than the authors' formulation; fused SS-LR <= 1.5x (the fused LR,
no faster than the eager one, was dropped)."""


def gpu_line(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f"; timed on {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"


def target_lines(ms: dict[int, dict[str, list[float]]], sizes_k: tuple[int, ...]) -> list[str]:
    """One line per target: the worst case over N and K >= 1000, and whether it holds."""
    lines = ["### Targets (K >= 1,000, both N; worst case shown)", ""]
    columns = [i for i, k in enumerate(sizes_k) if k >= 1000]
    for name, bound, peer, factor in TARGETS:
        if not columns or not all(name in table for table in ms.values()):
            continue
        worst = max(ms[n][name][i] / ms[n]["F.cross_entropy"][i] for n in ms for i in columns)
        line = f"- {name}: at most {worst:.2f}x F.cross_entropy (target {bound}x): "
        line += "met" if worst <= bound else "MISSED"
        if peer is not None and factor is not None:
            speedup = min(ms[n][peer][i] / ms[n][name][i] for n in ms for i in columns)
            line += f"; at least {speedup:.2f}x faster than {peer} (target {factor}x): "
            line += "met" if speedup >= factor else "MISSED"
        lines.append(line)
    return [*lines, ""]


def parse_args() -> argparse.Namespace:
    """The options; a full run (the default sizes, with memory, on the CPU) writes the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, no file written")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds of calls per method and shape"
    )
    parser.add_argument(
        "--memory-child", nargs=3, metavar=("NAME", "N", "K"), help=argparse.SUPPRESS
    )
    parser.add_argument("--n", default="128,1024", help="batch sizes, comma-separated")
    parser.add_argument("--k", default="10,200,1000,10000,100000", help="class counts")
    parser.add_argument(
        "--memory", action=argparse.BooleanOptionalAction, default=True, help="the memory table"
    )
    parser.add_argument(
        "--out", default=None, help="record file; a full run writes docs/benchmarks/loss_speed.md"
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda[:N]; only a CPU run updates the CPU record"
    )
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    full = (args.n, args.k) == (parser.get_default("n"), parser.get_default("k")) and args.memory
    if args.out is None and full and torch.device(args.device).type == "cpu":
        args.out = "docs/benchmarks/loss_speed.md"
    return args


def first_call_lines(methods: dict[str, Callable], device: torch.device) -> list[str]:
    """The compiler's first-call latency of each fused loss, N = 128, K = 1,000."""
    lines = ["### First call of the fused losses (torch.compile), N = 128, K = 1,000", ""]
    for name, fn in methods.items():
        if "fused" in name:
            z = torch.randn(128, 1000, device=device, requires_grad=True)
            start = time.perf_counter()
            fn(z, torch.randint(0, 1000, (128,), device=device)).backward()
            synchronize(device)
            lines.append(f"- {name}: {time.perf_counter() - start:.1f} s")
            print(lines[-1], flush=True)
    return [*lines, ""]


def speed_table(
    methods: dict[str, Callable],
    n: int,
    sizes_k: tuple[int, ...],
    rounds: int,
    min_s: float,
    device: torch.device,
) -> tuple[list[str], dict[str, list[float]]]:
    """The table of one batch size (median ms, ratio to F.cross_entropy), and its ms by
    method, one value per K."""
    ms: dict[str, list[float]] = {name: [] for name in methods}
    for k in sizes_k:
        g = torch.Generator().manual_seed(0)
        z = torch.randn(n, k, generator=g).to(device)
        y = torch.randint(0, k, (n,), generator=g).to(device)
        for name, value in time_methods(methods, z, y, rounds, min_s).items():
            ms[name].append(value)
    base = ms["F.cross_entropy"]
    table = [
        f"### N = {n}: median forward+backward ms (ratio to F.cross_entropy)",
        "",
        "| loss | " + " | ".join(f"K={k:,}" for k in sizes_k) + " |",
        "|---|" + "---:|" * len(sizes_k),
    ]
    for name, values in ms.items():
        cells = " | ".join(f"{v:.2f} ({v / b:.2f}x)" for v, b in zip(values, base, strict=True))
        table.append(f"| {name} | {cells} |")
    print("\n".join(table) + "\n", flush=True)
    return [*table, ""], ms


def memory_table(methods: dict[str, Callable], device: torch.device) -> list[str]:
    """Peak memory growth of one forward+backward per method at N = 1,024, K = 100,000: in a
    fresh process each on the CPU, from the allocator's peak on CUDA."""
    n, k = 1024, 100_000
    how = "in-process CUDA allocator peak" if device.type == "cuda" else "fresh process each"
    table = [
        f"### Peak memory growth of one forward+backward, N = {n}, K = {k:,} "
        f"({how}; logits alone are "
        f"{n * k * 4 / 2**20:.0f} MB, and every method's input gradient is one more such "
        "tensor)",
        "",
        "| loss | MB | ratio to F.cross_entropy |",
        "|---|---:|---:|",
    ]
    mb = {}
    for name in methods:
        if device.type == "cuda":
            mb[name] = cuda_peak_mb(name, n, k, device)
            continue
        args = ["--memory-child", name, str(n), str(k)]
        out = run_module("benchmarks.loss_speed", args, check=True)
        mb[name] = float(out.stdout.strip().splitlines()[-1])
    for name, value in mb.items():
        table.append(f"| {name} | {value:.0f} | {value / mb['F.cross_entropy']:.2f}x |")
    leanest = all(mb[name] <= mb["F.cross_entropy"] for name in mb if name.startswith("frlr"))
    table += [
        "",
        "- every frlr loss grows peak memory no more than F.cross_entropy: "
        + ("met" if leanest else "MISSED"),
    ]
    print("\n".join(table), flush=True)
    return [*table, ""]


def record_header(device: torch.device, rounds: int, min_s: float, started: float) -> list[str]:
    """The record's title, machine, load and command lines."""
    return [
        "# Loss speed and memory",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {cpu_and_torch()}"
        f"{gpu_line(device)}. "
        f"Load average at the end: {os.getloadavg()[0]:.1f}; "
        f"wall time {time.perf_counter() - started:.0f} s.",
        "",
        f"Command: `{command_line('benchmarks.loss_speed')}` (float32, index targets, "
        f"reduction mean; median over {rounds} interleaved rounds of at least {min_s:g} s of "
        "calls per method and shape, after one warm-up call).",
        "",
    ]


def main() -> None:
    args = parse_args()
    if args.memory_child:
        name, n, k = args.memory_child
        memory_child(name, int(n), int(k))
        return
    device = torch.device(args.device)
    sizes_n = (8, 32) if args.quick else tuple(int(v) for v in args.n.split(","))
    sizes_k = (10, 200) if args.quick else tuple(int(v) for v in args.k.split(","))
    rounds, min_s = (1, 0.0) if args.quick else (args.rounds, args.min_time)
    methods = candidates(args.fused and not args.quick)
    started = time.perf_counter()
    lines = first_call_lines(methods, device) if args.fused and not args.quick else []
    all_ms: dict[int, dict[str, list[float]]] = {}
    for n in sizes_n:
        table, all_ms[n] = speed_table(methods, n, sizes_k, rounds, min_s, device)
        lines += table
    summary = target_lines(all_ms, sizes_k)
    print("\n".join(summary), flush=True)
    if not args.quick and args.memory:
        lines += memory_table(methods, device)
    if not args.quick and args.out is not None:
        header = record_header(device, rounds, min_s, started)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(header + summary + lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
