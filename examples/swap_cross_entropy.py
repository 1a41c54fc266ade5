"""Swap ``nn.CrossEntropyLoss`` for SS-LR in a plain PyTorch training loop.

Only the criterion changes: SS-LR takes the same (logits, class-index target) pair and returns
a scalar to ``backward()``. A small MLP is trained on scikit-learn's bundled 8x8 digits (no
download) with each loss from the same seed, and the test accuracies are printed.

    python examples/swap_cross_entropy.py           # 30 epochs, under a minute on a CPU
    python examples/swap_cross_entropy.py --tiny    # one epoch, as CI runs it
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import frlr.torch as frlr


def train(criterion: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            loss = criterion(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description="Cross-entropy vs SS-LR on digits.")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--tiny", action="store_true", help="one epoch (CI)")
    args = parser.parse_args()
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    for name, criterion in [
        ("cross-entropy", nn.CrossEntropyLoss()),
        ("SS-LR", frlr.SSLRLoss(beta=10.0, r=2.0)),  # the only line that changes
    ]:
        model = train(criterion, x[:1400], y[:1400], 1 if args.tiny else args.epochs)
        with torch.no_grad():
            accuracy = (model(x[1400:]).argmax(1) == y[1400:]).float().mean().item()
        print(f"{name}: test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
