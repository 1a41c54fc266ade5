"""Opt-in fused SS-LR: the same maths, compiled by ``torch.compile`` into one loop each way.

Each eager operator streams the logits through memory once, and the softplus/sigmoid pair costs
two transcendental passes. Here the forward is one compiled loop that reads the logits once and
writes only the row losses (one ``exp`` per element, shared by the softplus and the sigmoid);
the backward is a second compiled loop that recomputes the gradient from the logits, already
scaled by the incoming row gradient, and writes it once. Only the logits are saved, and the one
logits-sized allocation is the returned gradient. Inductor emits vectorised C++ on CPU and
Triton on CUDA. The first call compiles both loops (seconds); where compilation is not
available the loss falls back to the eager implementation with a one-time warning.

The loss maths is SS-LR's block maths (``_kernels.ss_lr_negative_value_`` and
``_kernels.ss_lr_negative_derivative_``, in their out-of-place mode, which the compiler fuses);
only the softplus and sigmoid values come from here. ``log1p`` is evaluated as ``2 atanh(u)``,
``u = e / (2 + e)``, by an odd polynomial: the argument ``e = exp(-|z|)`` lies in (0, 1], so
``u`` lies in [0, 1/3] and nine terms give float32 accuracy (max relative error 2.2e-7 over
the whole range, tested) for less than the library ``log1p`` costs on CPU.

The fused path exists for "ss-lr" with class-index targets, where it measured faster than the
eager loss at large inputs (``docs/benchmarks/loss_speed.md``). Every other loss and input
(multi-hot and soft targets, "lr", which measured no faster fused, "hs-lr", whose cost is the
top-k selection that compilation does not speed up, "sr", "hs-sr",
``normalization="reference"``) runs the eager implementation: ``compiled(name)`` always
returns a loss with the eager loss's values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from frlr.catalogue import canonical_loss_name
from frlr.torch import _kernels as kernels
from frlr.torch import losses
from frlr.torch._conventions import float32_under_autocast

_warned = False

# 1 / (2j + 1), j = 0..8: the series of atanh(u) / u in u^2.
_ATANH_SERIES = tuple(1.0 / (2 * j + 1) for j in range(9))


def log1p_unit(e: Tensor) -> Tensor:
    """log(1 + e) for e in [0, 1], as 2 atanh(e / (2 + e)): relative error <= 2.2e-7."""
    u = e / (2.0 + e)
    u2 = u * u
    p = _ATANH_SERIES[-1]
    for c in reversed(_ATANH_SERIES[:-1]):
        p = c + u2 * p
    return 2.0 * u * p


def _parts(z: Tensor):
    """softplus(z), softplus(-z), sigmoid(z), sigmoid(-z) from one exp(-|z|), all exact in
    float32 (no 1 - p cancellation: each sigmoid comes from its own side)."""
    e = torch.exp(-z.abs())
    log_term = log1p_unit(e)
    inv = 1.0 / (1.0 + e)
    small = e * inv  # sigmoid(-|z|)
    nonneg = z >= 0
    return (
        z.clamp_min(0.0) + log_term,
        (-z).clamp_min(0.0) + log_term,
        torch.where(nonneg, inv, small),
        torch.where(nonneg, small, inv),
    )


def _positive_mask(z: Tensor, y: Tensor) -> Tensor:
    return torch.arange(z.shape[1], device=z.device) == y.unsqueeze(1)


def ss_lr_rows(z: Tensor, y: Tensor, weight: Tensor | None, r: float, alpha: float) -> Tensor:
    """Eq. (6) per row: softplus(-z_y) + alpha sum_{k != y} s_k^r softplus(z_k), the negative
    term by SS-LR's block maths (``_kernels.ss_lr_negative_value_``)."""
    sp_pos, sp_neg, s, _ = _parts(z)
    negative = kernels.ss_lr_negative_value_(sp_pos, s, r, inplace=False)
    return kernels.rowsum(torch.where(_positive_mask(z, y), sp_neg, alpha * negative), weight)


def ss_lr_grad(
    z: Tensor, y: Tensor, weight: Tensor | None, r: float, alpha: float, grad_rows: Tensor
) -> Tensor:
    """d rows / dz by the same block maths (``_kernels.ss_lr_negative_derivative_``),
    -sigmoid(-z) at the positive, times the incoming per-row gradient."""
    sp_pos, _, s, s_neg = _parts(z)
    negative = kernels.ss_lr_negative_value_(sp_pos, s, r, inplace=False)
    grad = kernels.ss_lr_negative_derivative_(negative, s, r, alpha, inplace=False)
    grad = torch.where(_positive_mask(z, y), -s_neg, grad)
    scale = grad_rows.unsqueeze(1)
    return grad * scale if weight is None else grad * (scale * weight)


class _Recompute(torch.autograd.Function):
    """Rows in the forward; the gradient recomputed from the logits in the backward, already
    scaled by the incoming row gradient: one read of the logits each way and a single
    logits-sized allocation (the returned gradient). Saves only the logits.

    Under ``create_graph=True`` (grad mode is on inside backward exactly then) the backward
    instead differentiates the uncompiled rows function -- the same maths, plain autograd-able
    torch -- with ``torch.autograd.grad(create_graph=True)``, so second derivatives are exact;
    compiled graphs do not support double backward, and that case is off the fast path anyway.
    """

    @staticmethod
    def forward(ctx, z: Tensor, rows_fn, grad_fn, eager_rows_fn, y: Tensor, weight, *hyper):  # type: ignore[override]
        ctx.save_for_backward(z, y, weight)
        ctx.grad_fn, ctx.eager_rows_fn, ctx.hyper = grad_fn, eager_rows_fn, hyper
        return rows_fn(z, y, weight, *hyper)

    @staticmethod
    def backward(ctx, grad_rows: Tensor):  # type: ignore[override]
        z, y, weight = ctx.saved_tensors
        if torch.is_grad_enabled():
            with torch.enable_grad():
                rows = ctx.eager_rows_fn(z, y, weight, *ctx.hyper)
                (grad,) = torch.autograd.grad(rows, z, grad_rows, create_graph=True)
        else:
            grad = ctx.grad_fn(z, y, weight, *ctx.hyper, grad_rows.contiguous())
        return (grad,) + (None,) * (5 + len(ctx.hyper))


_FUSED = {"ss-lr": (ss_lr_rows, ss_lr_grad)}
_COMPILED: dict[str, tuple[Callable[..., Tensor], Callable[..., Tensor]]] = {}
_chunk_fn: Callable[..., tuple[Tensor, Tensor]] | None = None  # ss_lr_rows_and_grad, compiled
_UNAVAILABLE: set[str] = set()  # losses whose compilation failed here: they run eagerly


def _compiled_pair(name: str) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    if name not in _COMPILED:
        rows_fn, grad_fn = _FUSED[name]
        _COMPILED[name] = (
            torch.compile(rows_fn, fullgraph=True),
            torch.compile(grad_fn, fullgraph=True),
        )
    return _COMPILED[name]


def _rows(name: str, z: Tensor, y: Tensor, weight: Tensor | None, *hyper) -> Tensor:
    fresh = name not in _COMPILED
    rows_fn, grad_fn = _compiled_pair(name)
    if fresh:  # compile the backward loop now, where a failure can still fall back
        grad_fn(z.detach(), y, weight, *hyper, torch.ones_like(z[:, 0]))
    if z.requires_grad and torch.is_grad_enabled():
        return _Recompute.apply(z, rows_fn, grad_fn, _FUSED[name][0], y, weight, *hyper)
    return rows_fn(z, y, weight, *hyper)


def ss_lr_rows_and_grad(
    z: Tensor, y: Tensor, r: float, alpha: float | Tensor, grad_rows: Tensor
) -> tuple[Tensor, Tensor]:
    """A chunk of the logits-free SS-LR ([`frlr.torch.linear_ss_lr_loss`][] with
    ``compiled=True``): the rows and their gradient times ``grad_rows``, in one compiled
    function. ``y`` is the positive's column in the chunk, -1 where it lies elsewhere."""
    return ss_lr_rows(z, y, None, r, alpha), ss_lr_grad(z, y, None, r, alpha, grad_rows)


def ss_lr_chunk(
    z: Tensor, y: Tensor, r: float, alpha: Tensor, grad_rows: Tensor | None
) -> tuple[Tensor, Tensor | None] | None:
    """``ss_lr_rows_and_grad`` compiled (the rows alone when ``grad_rows`` is None); None
    where ``torch.compile`` cannot run, after one warning, and the caller computes eagerly.
    ``alpha`` is a (1,) tensor: a Python float would be a constant of the compiled code, and
    every other K (or beta) would compile it again."""
    if "ss-lr-chunk" in _UNAVAILABLE:
        return None
    try:
        if grad_rows is None:
            return _compiled_pair("ss-lr")[0](z, y, None, r, alpha), None
        global _chunk_fn
        if _chunk_fn is None:
            _chunk_fn = torch.compile(ss_lr_rows_and_grad, fullgraph=True)
        return _chunk_fn(z, y, r, alpha, grad_rows)
    except Exception as error:  # compiler missing or unsupported: same maths, eagerly
        _fallback(error)
        _UNAVAILABLE.add("ss-lr-chunk")
        return None


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
    """A fused version of the loss registered under ``name``, with the same signature and maths
    (fused for "ss-lr" with index targets; the eager loss otherwise, see the module docstring).

    For "ss-lr" the fused loss computes Eq. (6), loss_i = softplus(-z_y) + alpha sum_{k != y}
    p_k^r softplus(z_k) with alpha = beta / (K - 1), in one compiled loop forward and one
    backward; the first call compiles them (seconds), and where ``torch.compile`` cannot run it
    warns once and computes eagerly.

    Args:
        name: a registry name ("sr", "lr", "hs-lr", "ss-lr", "hs-sr"; any case, "_" or "-");
            an unknown name is a ValueError.
        hyper: the functional loss's keyword options (beta, m, r, alpha, weight, reduction,
            ignore_index, normalization, label_smoothing, as it takes), fixed here and
            range-checked now rather than at the first step.

    Returns:
        ``loss_fn(logits, target)``, taking the eager loss's inputs and giving its values.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, 1.5], [0.0, 1.0, -2.0, 0.5]]).requires_grad_()
        >>> target = torch.tensor([0, 2])
        >>> loss_fn = frlr.compiled("ss-lr", r=2.0)
        >>> loss = loss_fn(logits, target)  # compiles the forward and backward loops
        >>> loss.backward()
        >>> torch.allclose(loss, frlr.ss_lr_loss(logits, target, r=2.0))
        True
    """
    key = canonical_loss_name(name)
    if key is None:
        raise ValueError(f"unknown loss name {name!r}; known: {', '.join(losses.FUNCTIONAL)}")
    eager = losses.FUNCTIONAL[key]
    # validate the hyper-parameters now, not at the first step
    losses.check_loss_options(
        **{
            k: v
            for k, v in hyper.items()
            if k in ("beta", "r", "alpha", "m", "reduction", "normalization")
        }
    )
    if key not in _FUSED or hyper.get("normalization", "paper") != "paper":
        return lambda logits, target: eager(logits, target, **hyper)
    reduction = hyper.get("reduction", "mean")
    weight = hyper.get("weight")
    ignore_index = hyper.get("ignore_index", -100)
    beta, r, alpha = hyper.get("beta", 10.0), hyper.get("r", 2.0), hyper.get("alpha")

    @float32_under_autocast
    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        dense = isinstance(target, Tensor) and (
            target.is_floating_point() or target.dtype == torch.bool
        )
        if dense or key in _UNAVAILABLE:
            return eager(logits, target, **hyper)
        batch = losses.Batch(logits, target, weight, ignore_index)
        args: tuple = (batch.z, batch.y, batch.weight)
        if key == "ss-lr":
            a = beta / (batch.num_classes - 1) if alpha is None else alpha
            args += (float(r), float(a))
        try:
            rows = _rows(key, *args)
        except Exception as error:  # compiler missing or unsupported: same maths, eagerly
            _fallback(error)
            _UNAVAILABLE.add(key)
            return eager(logits, target, **hyper)
        return batch.reduce(rows, reduction)

    loss_fn.__name__ = f"compiled_{key.replace('-', '_')}"
    return loss_fn


__all__ = ["compiled"]
