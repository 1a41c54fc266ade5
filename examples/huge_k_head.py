"""A huge-K classifier head trained with the logits-free SS-LR: no (N, K) logits in memory.

At K = 10^6 classes one batch of 256 float32 logits takes 1 GB, and its gradient as much again.
``frlr.torch.linear_ss_lr_loss(features, weight, target, chunk_size=C)`` computes SS-LR of the
logits ``features @ weight.T (+ bias)`` C classes at a time, forward and backward, so the peak
is (N, C) whatever K, and returns the same loss and gradients (for features, weight and bias)
as ``ss_lr_loss(features @ weight.T, target)``. The head is a plain (K, D) parameter; for a
head sharded over processes, each holds its slice and passes ``process_group``,
``class_offset`` and ``num_classes``. Synthetic data: a class is a random direction.

    python examples/huge_k_head.py                 # K = 100,000, 20 steps
    python examples/huge_k_head.py --tiny          # K = 2,000, 5 steps, as CI runs it
"""

import argparse

import torch
from torch import nn

import frlr.torch as frlr


def main() -> None:
    parser = argparse.ArgumentParser(description="A huge-K head with linear_ss_lr_loss.")
    parser.add_argument("--classes", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--tiny", action="store_true", help="K = 2,000, 5 steps (CI)")
    args = parser.parse_args()
    num_classes, steps = (2_000, 5) if args.tiny else (args.classes, args.steps)
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(num_classes, 64, generator=generator)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(64, 128), nn.ReLU())
    weight = nn.Parameter(0.01 * torch.randn(num_classes, 128))  # (K, D), as nn.Linear's
    bias = nn.Parameter(torch.zeros(num_classes))
    optimizer = torch.optim.SGD([*backbone.parameters(), weight, bias], lr=0.5, momentum=0.9)
    for step in range(steps):
        y = torch.randint(0, num_classes, (256,), generator=generator)
        x = centres[y] + 0.5 * torch.randn(256, 64, generator=generator)
        features = backbone(x)  # (N, D); the (N, K) logits are never formed
        loss = frlr.linear_ss_lr_loss(features, weight, y, bias=bias, chunk_size=args.chunk_size)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 5 == 0 or step == steps - 1:
            print(f"step {step}: SS-LR {loss.item():.4f}")
    dense_mb = 2 * 256 * num_classes * 4 / 2**20
    print(f"K = {num_classes:,}: dense logits and their gradient would take {dense_mb:,.0f} MB")


if __name__ == "__main__":
    main()
