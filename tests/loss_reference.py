"""Independent float64 references, written plainly from the paper's equations, row by row.

Nothing here is shared with ``frlr.torch``: no kernels, no vectorised selection tricks. The
only numerical care taken is what float64 itself needs at logits of 1e4: -log p is written
log(1 + e^-z) = logaddexp(0, -z), and p^r is written exp(r log p) so that autograd's
gradient of p^r stays finite where p underflows to 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def neg_log_p(z: Tensor) -> Tensor:
    """-log sigmoid(z)."""
    return torch.logaddexp(torch.zeros_like(z), -z)


def neg_log_1m_p(z: Tensor) -> Tensor:
    """-log(1 - sigmoid(z))."""
    return torch.logaddexp(torch.zeros_like(z), z)


def sample_loss(
    name: str,
    z: Tensor,
    t: Tensor,
    w: Tensor,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
) -> Tensor:
    """The loss of one sample: z (K,) float64 logits, t (K,) float64 target, w (K,) weights."""
    K = z.shape[0]
    positives = [k for k in range(K) if t[k] == 1]
    negatives = [k for k in range(K) if t[k] == 0]
    if name == "lr":  # Eq. 3, soft targets allowed
        return sum(
            w[k] * (t[k] * neg_log_p(z[k]) + (1 - t[k]) * neg_log_1m_p(z[k])) for k in range(K)
        )
    if name == "sr":  # Eq. 4, soft targets allowed: the soft cross-entropy
        log_q = z - torch.logsumexp(z, 0)
        return -sum(w[k] * t[k] * log_q[k] for k in range(K))
    if name == "hs-sr":  # Eq. 5 on softmax probabilities, single positive
        (y,) = positives
        log_q = z - torch.logsumexp(z, 0)
        n = max(1, math.floor(m * (K - 1) / 100))
        a = beta / n if alpha is None else alpha
        chosen = sorted(negatives, key=lambda k: -float(z[k].detach()))[:n]
        loss = -w[y] * log_q[y]
        for k in chosen:
            others = torch.cat([z[:k], z[k + 1 :]])
            log_1m_q = torch.logsumexp(others, 0) - torch.logsumexp(z, 0)
            loss = loss - a * w[k] * log_1m_q
        return loss
    # Eq. 5 and 6 with dense targets t in [0, 1]: class k has positive mass t_k and negative
    # mass 1 - t_k; with {0, 1} targets the masses are |P| and |N| and this is the paper's.
    positive_mass = sum(float(t[k]) for k in range(K))
    negative_mass = sum(1.0 - float(t[k]) for k in range(K))
    positive = z.new_zeros(())
    if positive_mass > 0:
        positive = sum(t[k] * w[k] * neg_log_p(z[k]) for k in range(K)) / positive_mass
    negative = z.new_zeros(())
    if name == "hs-lr":  # Eq. 5
        if negative_mass > 0:
            n = max(1, math.floor(m * negative_mass / 100))
            a = beta / n if alpha is None else alpha
            candidates = [k for k in range(K) if t[k] < 1]
            chosen = sorted(candidates, key=lambda k: -float(z[k].detach()))[:n]
            negative = a * sum((1 - t[k]) * w[k] * neg_log_1m_p(z[k]) for k in chosen)
    elif name == "ss-lr":  # Eq. 6
        if negative_mass > 0:
            a = beta / negative_mass if alpha is None else alpha
            negative = a * sum(
                (1 - t[k]) * w[k] * torch.exp(-r * neg_log_p(z[k])) * neg_log_1m_p(z[k])
                for k in range(K)
            )
    else:
        raise ValueError(name)
    return positive + negative


def reference_loss(
    name: str,
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    **hyper,
) -> Tensor:
    """Per-sample losses of ``sample_loss`` over a (N, K) batch, then the reduction."""
    z = logits.double()
    N, K = z.shape
    w = torch.ones(K, dtype=torch.float64) if weight is None else weight.double()
    losses, kept = [], []
    for i in range(N):
        if target.is_floating_point():
            t = target[i].double()
        else:
            if int(target[i]) == ignore_index:
                losses.append(z.new_zeros(()))
                continue
            t = torch.zeros(K, dtype=torch.float64)
            t[int(target[i])] = 1
        losses.append(sample_loss(name, z[i], t, w, **hyper))
        kept.append(i)
    per_sample = torch.stack(losses)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / max(len(kept), 1)


def authors_loss(
    name: str, logits: Tensor, target: Tensor, *, alpha: float, m: float = 25.0, r: float = 2.0
) -> Tensor:
    """A transcription of the authors' released PyTorch formulas (with their eps = 1e-7)."""
    eps = 1e-7
    p = torch.sigmoid(logits.double())
    K = p.shape[1]
    if target.is_floating_point():
        t = target.double()
    else:
        t = torch.zeros_like(p).scatter_(1, target.unsqueeze(1), 1)
    log_p = torch.log(p + eps)
    count_pos = t.sum()
    if name == "hs-lr":
        hard_neg = -1.0 * (1.0 - t) * torch.log(1.0 - p + eps)
        top = -1.0 * hard_neg.topk(int(K * m / 100), dim=1)[0]
        return -((t * log_p).sum() / count_pos + alpha * top.mean())
    if name == "ss-lr":
        count_neg = (1.0 - t).sum()
        neg = torch.pow(p, r) * torch.log(1.0 - p + eps)
        return -((t * log_p).sum() / count_pos + alpha * ((1.0 - t) * neg).sum() / count_neg)
    raise ValueError(name)
