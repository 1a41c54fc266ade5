"""Mixup with SS-LR: train on mixed images and soft targets t in [0, 1]^K.

Mixup (Zhang et al., ICLR 2018) trains on x = lam x_i + (1 - lam) x_j with the target
t = lam onehot(y_i) + (1 - lam) onehot(y_j), lam ~ Beta(alpha, alpha). SS-LR reads a soft
target as positive mass t_k and negative mass 1 - t_k on every class k, with M = sum_k (1 - t_k):

    loss = sum_k t_k softplus(-z_k) / sum_k t_k  +  beta / M  sum_k (1 - t_k) p_k^r softplus(z_k)

which is the paper's Eq. 6 when t is one-hot. Pass the (N, K) float target where the class
indices went. A small MLP on scikit-learn's digits (no download); the test accuracy is printed.

    python examples/mixup_ss_lr.py --alpha 0.2     # 30 epochs, under a minute on a CPU
    python examples/mixup_ss_lr.py --tiny          # one epoch, as CI runs it
"""

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import frlr.torch as frlr


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, num_classes: int):
    """The batch mixed with a shuffled copy of itself, and its soft targets."""
    lam = torch.distributions.Beta(alpha, alpha).sample()
    perm = torch.randperm(len(x))
    one_hot = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * one_hot + (1 - lam) * one_hot[perm]


def main() -> None:
    parser = argparse.ArgumentParser(description="Mixup with SS-LR on digits.")
    parser.add_argument("--alpha", type=float, default=0.2, help="mixup's Beta(alpha, alpha)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--tiny", action="store_true", help="one epoch (CI)")
    args = parser.parse_args()
    pixels, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(pixels / 16, dtype=torch.float32), torch.tensor(labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(1 if args.tiny else args.epochs):
        for batch in torch.randperm(1400).split(64):
            inputs, soft_target = mixup(x[batch], y[batch], args.alpha, num_classes=10)
            loss = frlr.ss_lr_loss(model(inputs), soft_target, beta=10.0, r=2.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x[1400:]).argmax(1) == y[1400:]).float().mean().item()
    print(f"SS-LR with mixup (alpha {args.alpha}): test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
