"""A float64 NumPy reference for HS-LR and SS-LR with soft targets (issue 17), row by row.

Written plainly from the definitions, nothing shared with ``frlr.keras`` or ``frlr.torch``: a
target t in [0, 1]^K gives class k positive mass t_k and negative mass 1 - t_k, and
M = sum_k (1 - t_k).

* SS-LR: sum_k t_k softplus(-z_k) / sum_k t_k + beta / M sum_k (1 - t_k) p_k^r softplus(z_k)
* HS-LR: n = max(1, floor(m M / 100)); S = the n classes of largest logit among those with
  t_k < 1; sum_k t_k softplus(-z_k) / sum_k t_k + beta / n sum_{k in S} (1 - t_k) softplus(z_k)

(the positive term is 0 when sum_k t_k = 0, the negative one when M = 0; ``alpha`` replaces
beta / M or beta / n). With {0, 1} targets these are Eqs. 5 and 6; ``test_keras_properties``
checks that against ``test_keras_reference``. Class weights w_k multiply class k's terms.
The gradient with respect to z is written out by hand and checked against central
differences in ``test_keras_properties``. (The torch engineer is adding the same definitions to
``loss_reference.py``; this file is the Keras side's until then.)
"""

from __future__ import annotations

import math

import numpy as np

from test_keras_reference import sigmoid, softplus


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
    """(loss, d loss / d z) of one sample with a soft target: z, t, w of shape (K,)."""
    K = len(z)
    grad = np.zeros(K)
    loss = 0.0
    mass_pos = float(sum(t))
    if mass_pos > 0:
        for k in range(K):
            loss += w[k] * t[k] * softplus(-z[k]) / mass_pos
            grad[k] -= w[k] * t[k] * sigmoid(-z[k]) / mass_pos
    mass_neg = float(sum(1.0 - t[k] for k in range(K)))
    if mass_neg == 0:
        return loss, grad
    if name == "ss-lr":
        a = beta / mass_neg if alpha is None else alpha
        for k in range(K):
            s_r, sp = math.exp(-r * softplus(-z[k])), softplus(z[k])
            loss += a * w[k] * (1 - t[k]) * s_r * sp
            grad[k] += a * w[k] * (1 - t[k]) * s_r * (r * sigmoid(-z[k]) * sp + sigmoid(z[k]))
    elif name == "hs-lr":
        n = max(1, math.floor(m * mass_neg / 100))
        a = beta / n if alpha is None else alpha
        candidates = [k for k in range(K) if t[k] < 1]
        for k in sorted(candidates, key=lambda k: -z[k])[:n]:
            loss += a * w[k] * (1 - t[k]) * softplus(z[k])
            grad[k] += a * w[k] * (1 - t[k]) * sigmoid(z[k])
    else:
        raise ValueError(name)
    return loss, grad


def per_sample(
    name: str, logits: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None, **hyper
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample losses (N,) and the gradient of their sum (N, K), in float64."""
    z = np.asarray(logits, np.float64)
    t = np.asarray(target, np.float64)
    N, K = z.shape
    w = np.ones(K) if weight is None else np.asarray(weight, np.float64)
    losses, grads = np.zeros(N), np.zeros((N, K))
    for i in range(N):
        losses[i], grads[i] = sample_loss(name, z[i], t[i], w, **hyper)
    return losses, grads
