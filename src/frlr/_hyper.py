"""The losses' hyper-parameters, framework-free: shared by ``frlr.torch`` and ``frlr.keras`` so
both check beta, m, r, alpha alike and count hard negatives by the same rounding."""

from __future__ import annotations

import math
from typing import Any


def check_hyperparameters(
    *, beta: Any = None, m: Any = None, r: Any = None, alpha: Any = None
) -> None:
    """Raise TypeError/ValueError for a bad hyper-parameter, naming it and its value."""
    for name, value in (("beta", beta), ("m", m), ("r", r), ("alpha", alpha)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
        ):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    if beta is not None and beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if m is not None and not 0 < m <= 100:
        raise ValueError(f"m is a percentage of the negative classes in (0, 100], got {m}")
    if r is not None and r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    if alpha is not None and alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")


def num_hard_negatives(num_negatives: int, m: float) -> int:
    """n = max(1, floor(m% of the negatives)); m * count / 100, not m / 100 * count, which
    rounds 0.29 * 100 down to 28."""
    return max(1, math.floor(m * num_negatives / 100.0))
