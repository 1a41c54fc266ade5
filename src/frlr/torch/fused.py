"""Opt-in fused losses: the same maths, compiled by ``torch.compile`` into a few loops.

The eager kernels (``_kernels.py``) already compute the gradient in the forward pass, but each
PyTorch operator still streams the logits through memory once. Here the per-row loss is written
as plain elementwise maths over a positive mask built from ``arange == target`` (never
materialised after fusion), and Inductor fuses forward and backward into C++ loops on CPU and
Triton kernels on CUDA. The first call compiles (tens of seconds); where compilation is not
available (no C++ compiler, an unsupported platform) the loss falls back to the eager kernels
with a one-time warning, so the same code runs everywhere.

Fused paths exist for "lr" and "ss-lr" with class-index targets. Everything else — multi-hot
targets, "hs-lr" (whose cost is the top-k selection, which compilation does not speed up),
"sr", "hs-sr", ``normalization="reference"`` — runs the eager implementation.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from frlr.torch import losses

_FUSABLE = ("lr", "ss-lr")
_warned = False


def _positive_mask(z: Tensor, y: Tensor) -> Tensor:
    return torch.arange(z.shape[1], device=z.device) == y.unsqueeze(1)


def _sigmoid_power(z: Tensor, r: float) -> Tensor:
    """sigmoid(z)^r as exp(-r softplus(-z)): finite gradient where sigmoid underflows."""
    if r == 0:
        return torch.ones_like(z)
    if r == 1:
        return torch.sigmoid(z)
    if r == 2:
        s = torch.sigmoid(z)
        return s * s
    return torch.exp(-r * F.softplus(-z))


def lr_rows(z: Tensor, y: Tensor, weight: Tensor | None) -> Tensor:
    terms = F.softplus(torch.where(_positive_mask(z, y), -z, z))
    return terms.sum(1) if weight is None else terms @ weight


def ss_lr_rows(z: Tensor, y: Tensor, weight: Tensor | None, r: float, alpha: float) -> Tensor:
    positive = _positive_mask(z, y)
    negative_terms = _sigmoid_power(z, r) * F.softplus(z)
    terms = torch.where(positive, F.softplus(-z), alpha * negative_terms)
    return terms.sum(1) if weight is None else terms @ weight


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def _compiled_rows(name: str) -> Callable[..., Tensor]:
    if name not in _COMPILED:
        fn = lr_rows if name == "lr" else ss_lr_rows
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


def _fallback(error: Exception) -> None:
    global _warned
    if not _warned:
        warnings.warn(
            f"frlr.torch.compiled: torch.compile is unavailable here ({type(error).__name__}: "
            f"{error}); using the eager kernels, which give the same values.",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned = True


def compiled(name: str, **hyper) -> Callable[[Tensor, Tensor], Tensor]:
    """A fused version of the loss registered under ``name``, with the same signature and maths.

    >>> loss_fn = frlr.torch.compiled("ss-lr", r=2.0)
    >>> loss = loss_fn(logits, target)
    """
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in losses.FUNCTIONAL:
        raise ValueError(f"unknown loss name {name!r}; known: {', '.join(losses.FUNCTIONAL)}")
    eager = losses.FUNCTIONAL[key]
    # validate the hyper-parameters now, not at the first step
    losses._check_hyper(
        **{
            k: v
            for k, v in hyper.items()
            if k in ("beta", "r", "alpha", "m", "reduction", "normalization")
        }
    )
    if key not in _FUSABLE or hyper.get("normalization", "paper") != "paper":
        return lambda logits, target: eager(logits, target, **hyper)
    reduction = hyper.get("reduction", "mean")
    weight = hyper.get("weight")
    ignore_index = hyper.get("ignore_index", -100)
    beta, r, alpha = hyper.get("beta", 10.0), hyper.get("r", 2.0), hyper.get("alpha")

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        if isinstance(target, Tensor) and (
            target.is_floating_point() or target.dtype == torch.bool
        ):
            return eager(logits, target, **hyper)
        autocast = isinstance(logits, Tensor) and torch.is_autocast_enabled(logits.device.type)
        context = torch.autocast(logits.device.type, enabled=False) if autocast else None
        with context or contextlib.nullcontext():
            batch = losses._Batch(logits, target, weight, ignore_index, hard_targets=True)
            args: tuple = (batch.z, batch.y, batch.weight)
            if key == "ss-lr":
                a = beta / (batch.num_classes - 1) if alpha is None else alpha
                args += (float(r), float(a))
            try:
                rows = _compiled_rows(key)(*args)
            except Exception as error:  # compiler missing or unsupported: same maths, eagerly
                _fallback(error)
                _COMPILED[key] = lr_rows if key == "lr" else ss_lr_rows
                rows = _COMPILED[key](*args)
            return batch.reduce(rows, reduction)

    loss_fn.__name__ = f"compiled_{key.replace('-', '_')}"
    return loss_fn


__all__ = ["compiled"]
