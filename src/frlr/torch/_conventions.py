"""What every ``frlr.torch`` loss shares, on logits or logits-free: the reduction names, and
float32 maths inside an autocast region.

Written once here, below both the logits losses (``frlr.torch.losses``) and the logits-free ones
(``frlr.torch.linear``), so the two families accept and refuse the same reductions and compute
in the same precision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
"""How a loss reduces its per-sample values, as in ``torch.nn.functional.cross_entropy``."""

REDUCTIONS: tuple[str, ...] = get_args(Reduction)


def check_reduction(reduction: object) -> None:
    """Raise ValueError naming ``reduction`` unless it is one of [`REDUCTIONS`][]."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def no_autocast(device: torch.device) -> torch.autocast:
    """A region where autocast is off on ``device``: the losses accumulate in float32 (float64
    for float64 input) whatever an autocast region asks for, as cross-entropy does."""
    return torch.autocast(device.type, enabled=False)


def float32_under_autocast(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn(logits, ...)`` run outside autocast when autocast is on for the logits' device."""

    @functools.wraps(fn)
    def wrapper(logits: Tensor, *args, **kwargs) -> Tensor:
        if isinstance(logits, Tensor) and torch.is_autocast_enabled(logits.device.type):
            with no_autocast(logits.device):
                return fn(logits, *args, **kwargs)
        return fn(logits, *args, **kwargs)

    return wrapper
