"""Why HS-LR costs what it costs: the exact top-m% selection against every alternative we tried.

    python -m benchmarks.selection_speed            # writes docs/benchmarks/selection_speed.md
    python -m benchmarks.selection_speed --quick    # tiny shapes, a smoke test (writes nothing)

HS-LR keeps the n = floor(m% (K - 1)) highest-logit negatives of each row (m = 25). Selecting
them exactly is a per-row quickselect; this times the candidates for it on the shapes of the
loss benchmark, next to ``F.cross_entropy``'s whole forward+backward, so the floor under HS-LR
is visible:

* ``topk`` (unsorted, what frlr uses), ``kthvalue``, ``sort``, NumPy's introselect
  ``np.partition`` (values only, one thread);
* one *count pass* ``#{k : z_k > t}`` per row (subtract, sign, clamp, sum): the step of a
  threshold search, which would need several such passes plus a top-k fallback for rows that
  do not converge;
* ``F.softplus`` over all logits, the elementwise floor of every sigmoid loss;
* filling a freshly allocated logits-sized buffer against refilling one that is reused: what
  one more logits-sized temporary per step costs once the allocator returns freed memory to
  the system.

It then runs that threshold search (a Gaussian first guess, then interpolation between the
tightest counts above and below n) and prints the share of rows that have an exact threshold
after each pass: the passes a row needs times the count pass's cost is what the search would
have to beat ``topk`` by.
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._invocation import command_line
from benchmarks._machine import cpu_and_torch


def median_ms(fn: Callable[[], object], min_s: float = 0.5) -> float:
    fn()
    times: list[float] = []
    while sum(times) < min_s or len(times) < 5:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def count_pass(z: torch.Tensor, t: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    return torch.sub(z, t, out=buffer).sign_().clamp_min_(0.0).sum(1)


def threshold_search(z: torch.Tensor, y: torch.Tensor, n: int, passes: int) -> list[float]:
    """Share of rows with exactly n negatives above the threshold, after each count pass."""
    num_classes = z.shape[1]
    buffer = torch.empty_like(z)
    z_pos = z.gather(1, y.unsqueeze(1))
    lo, hi = torch.aminmax(z, dim=1, keepdim=True)
    lo = torch.nextafter(lo, torch.full_like(lo, -math.inf))
    c_lo, c_hi = torch.full_like(lo, num_classes - 1.0), torch.zeros_like(lo)
    std, mean = torch.std_mean(z, dim=1, keepdim=True)
    t = mean + std * NormalDist().inv_cdf(1 - (n + 0.5) / (num_classes - 1))
    shares = []
    for _ in range(passes):
        c = count_pass(z, t, buffer).unsqueeze(1) - (z_pos > t).float()
        hit = c == n
        shares.append(hit.float().mean().item())
        above, below = c > n, c < n
        lo, c_lo = torch.where(above, t, lo), torch.where(above, c, c_lo)
        hi, c_hi = torch.where(below, t, hi), torch.where(below, c, c_hi)
        fraction = ((c_lo - n - 0.5) / (c_lo - c_hi)).clamp(0.05, 0.95)
        t = torch.where(hit, t, torch.lerp(lo, hi, fraction))
    return shares


def shape_timings(n_rows: int, k: int, min_s: float) -> dict[str, float]:
    """Median ms of each candidate on one (n_rows, k) shape of normal logits, n = (k - 1) // 4."""
    z = torch.randn(n_rows, k)
    y = torch.randint(0, k, (n_rows,))
    n = (k - 1) // 4
    array = z.numpy()
    threshold = z[:, :1].clone()
    buffer = torch.empty_like(z)
    x = z.clone().requires_grad_(True)

    def cross_entropy() -> None:
        x.grad = None
        F.cross_entropy(x, y).backward()

    timings = {
        "F.cross_entropy fwd+bwd": cross_entropy,
        "topk(n, sorted=False)": lambda: z.topk(n, dim=1, sorted=False),
        "kthvalue": lambda: z.kthvalue(k - n, dim=1),
        "sort": lambda: z.sort(dim=1),
        "np.partition (1 thread)": lambda: np.partition(array, k - n, axis=1),
        "one count pass": lambda: count_pass(z, threshold, buffer),
        "F.softplus": lambda: F.softplus(z),
        "fill a new buffer": lambda: torch.empty_like(z).fill_(1.0),
        "fill a reused buffer": lambda: buffer.fill_(1.0),
    }
    return {name: median_ms(fn, min_s) for name, fn in timings.items()}


def timing_table(rows: list[tuple[int, int, dict[str, float]]]) -> list[str]:
    """One row per candidate, one column per shape, each ms with its ratio to cross-entropy."""
    lines = ["### Median ms (ratio to F.cross_entropy's forward+backward), n = floor((K-1)/4)", ""]
    lines.append("| operation | " + " | ".join(f"{n}x{k:,}" for n, k, _ in rows) + " |")
    lines.append("|---|" + "---:|" * len(rows))
    for name in rows[0][2]:
        cells = []
        for _, _, ms in rows:
            base = ms["F.cross_entropy fwd+bwd"]
            cells.append(f"{ms[name]:.3f} ({ms[name] / base:.1f}x)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def search_lines(quick: bool, passes: int = 10) -> list[str]:
    """The threshold search's share of solved rows after each pass, on normal and on
    log-normal logits (a skewed row, where a Gaussian first guess lands worse)."""
    lines = [f"### Threshold search: share of rows solved after each of {passes} count passes", ""]
    for label, make in (
        ("normal logits", lambda shape: torch.randn(shape)),
        ("log-normal logits", lambda shape: torch.randn(shape).exp()),
    ):
        for n_rows, k in ((16, 100),) if quick else ((1024, 1000), (128, 10_000)):
            z = make((n_rows, k))
            y = torch.randint(0, k, (n_rows,))
            shares = threshold_search(z, y, (k - 1) // 4, passes)
            lines.append(
                f"- {label}, {n_rows}x{k:,}: " + ", ".join(f"{100 * v:.0f}%" for v in shares)
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a smoke test")
    parser.add_argument("--out", default="docs/benchmarks/selection_speed.md")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    shapes = (
        ((8, 50), (16, 100))
        if args.quick
        else ((128, 1000), (1024, 1000), (128, 10_000), (1024, 10_000))
    )
    min_s = 0.0 if args.quick else 0.5
    rows = [(n_rows, k, shape_timings(n_rows, k, min_s)) for n_rows, k in shapes]
    lines = [*timing_table(rows), "", *search_lines(args.quick)]
    print("\n".join(lines))
    if not args.quick:
        header = [
            "# Exact hard-negative selection: what HS-LR's top-k costs against the alternatives",
            "",
            f"Date: {datetime.date.today().isoformat()}. Machine: {cpu_and_torch()}. Wall time "
            f"{time.perf_counter() - started:.0f} s.",
            "",
            f"Command: `{command_line('benchmarks.selection_speed')}` (float32 normal logits; "
            "median of at least 0.5 s of calls each).",
            "",
        ]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join([*header, *lines, ""]))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
