"""Single-thread CPU time of the logits-free losses' forward+backward, interleaved, with their
ratio to SS-LR and to PyTorch's batch-chunked cross-entropy: a quick check of one change on a
shared machine (CPU time, not wall time, so other processes' load counts less).

    python -m benchmarks.linear_cpu_time [--d 256] [--k 100000] [--calls 3] [--dtype bfloat16]

``--dtype bfloat16`` takes bf16 features and weight (PyTorch's default option beside its
batch-chunked one: in bf16 it can be the faster).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import frlr.torch as frlr
from benchmarks.huge_k import shape_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--k", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, w, y = shape_inputs(args.n, args.d, args.k, torch.device("cpu"), getattr(torch, args.dtype))
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=128)
    methods = {
        "F.linear_cross_entropy (batch_chunk_size=128)": lambda: F.linear_cross_entropy(
            x, w, y, options=options
        ),
        "linear_lr_loss": lambda: frlr.linear_lr_loss(x, w, y),
        "linear_ss_lr_loss": lambda: frlr.linear_ss_lr_loss(x, w, y),
        "linear_hs_lr_loss": lambda: frlr.linear_hs_lr_loss(x, w, y),
        "linear_sr_loss": lambda: frlr.linear_sr_loss(x, w, y),
    }
    if args.dtype == "bfloat16":
        methods["F.linear_cross_entropy (default)"] = lambda: F.linear_cross_entropy(x, w, y)
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.calls):
        for name, fn in methods.items():
            x.grad = w.grad = None
            start = time.thread_time()
            fn().backward()
            seconds[name].append(time.thread_time() - start)
    best = {name: min(values) for name, values in seconds.items()}
    ce, ss = best["F.linear_cross_entropy (batch_chunk_size=128)"], best["linear_ss_lr_loss"]
    print(
        f"N = {args.n}, d = {args.d}, K = {args.k}, {args.dtype}: CPU seconds, best of {args.calls}"
    )
    for name, value in best.items():
        print(f"  {name:48s} {value:6.2f} s  {value / ss:5.2f}x ss-lr  {value / ce:5.2f}x CE")


if __name__ == "__main__":
    main()
