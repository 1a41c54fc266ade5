"""A float64 NumPy reference for the frlr.keras losses, written plainly from Eqs. 3-6.

One sample at a time, loops over classes, and the gradient with respect to the logits written
out by hand (checked here against central differences). Nothing is shared with ``frlr.keras``
or ``frlr.torch``. The only numerical care is what float64 itself needs at logits of 1e4:
-log p = softplus(-z), -log(1 - p) = softplus(z), p = exp(-softplus(-z)), with softplus
written max(z, 0) + log1p(exp(-|z|)).

``test_keras_backends`` imports this module to check every Keras backend against it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def softplus(x: float) -> float:
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|), exact in float64 for any x."""
    x = float(x)
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid(x: float) -> float:
    return math.exp(-softplus(-x))


def _split(t: np.ndarray) -> tuple[list[int], list[int]]:
    return [k for k in range(len(t)) if t[k] == 1], [k for k in range(len(t)) if t[k] == 0]


def _hardest(negatives: list[int], key: np.ndarray, n: int) -> list[int]:
    return sorted(negatives, key=lambda k: -key[k])[:n]


def sample_loss(
    name: str,
    z: np.ndarray,
    t: np.ndarray,
    w: np.ndarray,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
) -> tuple[float, np.ndarray]:
    """(loss, d loss / d z) of one sample: z (K,) logits, t (K,) target, w (K,) class weights."""
    K = len(z)
    grad = np.zeros(K)
    if name == "lr":  # Eq. 3, soft targets allowed
        loss = 0.0
        for k in range(K):
            loss += w[k] * (t[k] * softplus(-z[k]) + (1 - t[k]) * softplus(z[k]))
            grad[k] = w[k] * (-t[k] * sigmoid(-z[k]) + (1 - t[k]) * sigmoid(z[k]))
        return loss, grad
    if name in ("sr", "hs-sr"):
        lse = float(np.logaddexp.reduce(z))
        q = np.exp(z - lse)
        loss = 0.0
        for k in range(K):  # Eq. 4: -sum_k w_k t_k log q_k
            if t[k] != 0:
                loss -= w[k] * t[k] * (z[k] - lse)
                grad += w[k] * t[k] * q
                grad[k] -= w[k] * t[k]
        if name == "sr":
            return loss, grad
        _, negatives = _split(t)
        n = max(1, math.floor(m * (K - 1) / 100))
        a = beta / n if alpha is None else alpha
        for k in _hardest(negatives, z, n):  # -log(1 - q_k) = lse(z) - lse(z without k)
            others = np.delete(z, k)
            lse_k = float(np.logaddexp.reduce(others))
            loss += a * w[k] * (lse - lse_k)
            softmax_k = np.insert(np.exp(others - lse_k), k, 0.0)
            grad += a * w[k] * (q - softmax_k)
        return loss, grad

    positives, negatives = _split(t)
    loss = 0.0
    for k in positives:  # mean over P_i of -log p_k
        loss += w[k] * softplus(-z[k]) / len(positives)
        grad[k] = -w[k] * sigmoid(-z[k]) / len(positives)
    if not negatives:
        return loss, grad
    if name == "hs-lr":  # Eq. 5: the n_i most probable negatives
        n = max(1, math.floor(m * len(negatives) / 100))
        a = beta / n if alpha is None else alpha
        for k in _hardest(negatives, z, n):
            loss += a * w[k] * softplus(z[k])
            grad[k] = a * w[k] * sigmoid(z[k])
    elif name == "ss-lr":  # Eq. 6: every negative, weighted by p_k^r
        a = beta / len(negatives) if alpha is None else alpha
        for k in negatives:
            s, s_r, sp = sigmoid(z[k]), math.exp(-r * softplus(-z[k])), softplus(z[k])
            loss += a * w[k] * s_r * sp
            grad[k] = a * w[k] * s_r * (r * sigmoid(-z[k]) * sp + s)
    else:
        raise ValueError(name)
    return loss, grad


def dense_targets(target: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) float64 targets from class indices (N,) or a multi-hot/soft (N, K) array."""
    if target.ndim == 2:
        return target.astype(np.float64)
    return np.eye(num_classes)[target.astype(np.int64)]


def per_sample(
    name: str, logits: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None, **hyper
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample losses (N,) and the gradient of their sum (N, K), in float64."""
    z = logits.astype(np.float64)
    N, K = z.shape
    t = dense_targets(target, K)
    w = np.ones(K) if weight is None else np.asarray(weight, np.float64)
    losses, grads = np.zeros(N), np.zeros((N, K))
    for i in range(N):
        losses[i], grads[i] = sample_loss(name, z[i], t[i], w, **hyper)
    return losses, grads


def reference_mode(
    name: str,
    logits: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
) -> tuple[float, np.ndarray]:
    """normalization="reference": the authors' batch pooling, as (loss, d loss / d z)."""
    z = logits.astype(np.float64)
    N, K = z.shape
    t = dense_targets(target, K)
    w = np.ones(K) if weight is None else np.asarray(weight, np.float64)
    grad = np.zeros((N, K))
    if name == "lr":
        loss = 0.0
        for i in range(N):
            sample, grad[i] = sample_loss("lr", z[i], t[i], w)
            loss += sample
        return loss / (N * K), grad / (N * K)
    a = beta if alpha is None else alpha
    num_pos = max(t.sum(), 1.0)
    positive = negative = 0.0
    for i in range(N):
        for k in range(K):
            if t[i, k] == 1:
                positive += w[k] * softplus(-z[i, k]) / num_pos
                grad[i, k] = -w[k] * sigmoid(-z[i, k]) / num_pos
    if name == "ss-lr":
        num_neg = max((1 - t).sum(), 1.0)
        for i in range(N):
            for k in range(K):
                if t[i, k] == 0:
                    s_r, sp = math.exp(-r * softplus(-z[i, k])), softplus(z[i, k])
                    negative += w[k] * s_r * sp / num_neg
                    ds = s_r * (r * sigmoid(-z[i, k]) * sp + sigmoid(z[i, k]))
                    grad[i, k] = a * w[k] * ds / num_neg
    elif name == "hs-lr":
        k_kept = int(K * m / 100.0)
        for i in range(N):
            values = np.array([(1 - t[i, k]) * w[k] * softplus(z[i, k]) for k in range(K)])
            for k in _hardest(list(range(K)), values, k_kept):
                negative += values[k] / (N * k_kept)
                if t[i, k] == 0:
                    grad[i, k] = a * w[k] * sigmoid(z[i, k]) / (N * k_kept)
    else:
        raise ValueError(name)
    return positive + a * negative, grad


# ---------------------------------------------------------------------------------------------
# The reference checks itself: hand-written gradients against central differences, and the
# identities the paper states.
# ---------------------------------------------------------------------------------------------


def _numeric_grad(f, z: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += h
        down[index] -= h
        g[index] = (f(up) - f(down)) / (2 * h)
    return g


CASES = [
    ("sr", {}),
    ("lr", {}),
    ("hs-lr", {}),
    ("hs-lr", {"m": 60.0, "alpha": 0.7}),
    ("ss-lr", {}),
    ("ss-lr", {"r": 0.5, "beta": 3.0}),
]


@pytest.mark.parametrize(
    ("name", "hyper", "kind"),
    [(name, hyper, kind) for name, hyper in CASES for kind in ("index", "multi_hot")]
    + [("hs-sr", {"m": 50.0}, "index")],
)
def test_reference_gradient_matches_finite_differences(name, hyper, kind):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(3, 7)) * 2
    w = rng.uniform(0.5, 2.0, size=7)
    target = rng.integers(0, 7, size=3) if kind == "index" else (rng.random((3, 7)) < 0.4) * 1.0
    _, grad = per_sample(name, z, target, w, **hyper)
    numeric = _numeric_grad(lambda x: per_sample(name, x, target, w, **hyper)[0].sum(), z)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    if name in ("lr", "hs-lr", "ss-lr"):
        _, grad = reference_mode(name, z, target, w, **hyper)
        numeric = _numeric_grad(lambda x: reference_mode(name, x, target, w, **hyper)[0], z)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_reference_identities():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 9)) * 3
    y = rng.integers(0, 9, size=5)
    # LR at z = 0 costs log 2 per class.
    np.testing.assert_allclose(per_sample("lr", np.zeros((1, 4)), np.array([1]))[0], 4 * np.log(2))
    # r = 0 is HS at m = 100 (the paper's remark under Eq. 6).
    np.testing.assert_allclose(
        per_sample("ss-lr", z, y, r=0.0)[0], per_sample("hs-lr", z, y, m=100.0)[0], rtol=1e-12
    )
    # Single-label: SS-LR's reference pooling is the paper's per-sample mean.
    np.testing.assert_allclose(
        reference_mode("ss-lr", z, y)[0], per_sample("ss-lr", z, y)[0].mean(), rtol=1e-12
    )
    # SR is -log softmax.
    log_q = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    np.testing.assert_allclose(per_sample("sr", z, y)[0], -log_q[np.arange(5), y], rtol=1e-12)
    # Extreme logits stay finite in float64.
    big = np.array([[1e4, -1e4, 3.0]])
    for name in ("lr", "hs-lr", "ss-lr", "sr", "hs-sr"):
        loss, grad = per_sample(name, big, np.array([1]))
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
