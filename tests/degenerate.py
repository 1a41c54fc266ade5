"""Degenerate classifiers for the linear losses' property tests, and the comparison with the
materialised losses that holds under ties.

A drawn :class:`Case` is a batch, a classifier and targets. Its classifier is built from a few
prototypes: ``group[k]`` names the prototype of class k, so classes of one group are tied (or
nearly). Which of several tied classes a top-k picks is arbitrary (the materialised HS-LR picks
some, the linear one shares), so the weight and bias gradients are compared summed per group;
the loss and the features' gradient are compared as they are.

Kinds: ``zero`` (all-zero weights, with or without a bias, constant or not), ``repeated``
(rows repeated exactly), ``near`` (repeated with 1e-7 relative noise), ``big_tie`` (one row
repeated over more classes than a chunk and than ``selection.CAP``, a few scaled outliers among
them), ``tiny`` and ``huge`` (weights of 1e-30 and 1e15 scale), ``nonfinite`` (NaN or inf in
x, W or b) and ``normal``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

import test_torch_linear_parallel as parallel
from frlr.torch import _kernels as kernels

KINDS = ("zero", "repeated", "near", "big_tie", "tiny", "huge", "nonfinite", "normal")
LINEAR, MATERIALISED = parallel.LINEAR, parallel.MATERIALISED
TARGETS = ("index", "lists", "smoothed")


@dataclass
class Case:
    kind: str
    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor | None
    group: torch.Tensor  # (K,) the prototype of each class
    y: torch.Tensor  # (N,) class indices, -100 for an ignored row
    lists: torch.Tensor  # (N, 2) positive lists padded with -100
    chunk_size: int | None
    m: float

    @property
    def finite(self) -> bool:
        parts = [self.x, self.w] + ([] if self.b is None else [self.b])
        return all(bool(torch.isfinite(t).all()) for t in parts)


def _classifier(kind: str, g: torch.Generator, k: int, d: int, dtype, with_bias: bool):
    """(w, b, group) of one kind."""

    def normal(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    group = torch.arange(k)
    b = normal(k) if with_bias else None
    if kind == "zero":
        w = torch.zeros(k, d, dtype=torch.float64)
        if b is not None and bool(torch.randint(0, 2, (1,), generator=g)):
            b = torch.full((k,), float(normal(1)), dtype=torch.float64)  # every logit tied
        group = torch.zeros(k, dtype=torch.long) if b is None or b.unique().numel() == 1 else group
    elif kind in ("repeated", "near"):
        prototypes = int(torch.randint(1, 4, (1,), generator=g))
        group = torch.randint(0, prototypes, (k,), generator=g)
        w = normal(prototypes, d)[group]
        b = None if b is None else normal(prototypes)[group]
        if kind == "near":
            w = w * (1 + 1e-7 * normal(k, d))
    elif kind == "big_tie":
        w = normal(1, d).repeat(k, 1) * (1 + (1e-7 * normal(k, d) if with_bias else 0.0))
        group = torch.zeros(k, dtype=torch.long)
        outliers = torch.randperm(k, generator=g)[: int(torch.randint(1, 12, (1,), generator=g))]
        w[outliers] *= 50.0 * (2 * torch.randint(0, 2, (outliers.numel(), 1), generator=g) - 1)
        group[outliers] = torch.arange(1, outliers.numel() + 1)
        b = None
    else:
        scale = {"tiny": 1e-30, "huge": 1e15}.get(kind, 1.0)
        w = normal(k, d) * scale
        b = None if b is None else b * scale
    return w.to(dtype), None if b is None else b.to(dtype), group


def _poison(g: torch.Generator, x, w, b) -> None:
    """A NaN, +inf or -inf at a random entry of x, W or b."""
    value = [float("nan"), float("inf"), -float("inf")][int(torch.randint(0, 3, (1,), generator=g))]
    where = [t for t in (x, w, b) if t is not None]
    t = where[int(torch.randint(0, len(where), (1,), generator=g))]
    flat = t.view(-1)
    flat[int(torch.randint(0, flat.numel(), (1,), generator=g))] = value


@st.composite
def cases(draw, kinds=KINDS, max_rows: int = 6, min_rows: int = 1) -> Case:
    """A drawn case (see the module docstring)."""
    kind = draw(st.sampled_from(kinds))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, 12))
    k = draw(st.integers(1100, 1400)) if kind == "big_tie" else draw(st.integers(2, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    with_bias = draw(st.booleans())
    chunk_size = draw(st.sampled_from([None, 5, 64, 1000]))
    m = draw(st.sampled_from([25.0, 1.0, 100.0]))
    g = torch.Generator().manual_seed(seed)
    w, b, group = _classifier(kind, g, k, d, dtype, with_bias)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    if kind == "nonfinite":
        _poison(g, x, w, b)
    y = torch.randint(0, k, (n,), generator=g)
    lists = torch.stack([y, (y + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k], 1)
    if k == 2:  # (N, 2) lists of 0s and 1s at K = 2 are refused as ambiguous: pad them
        lists[:, 1] = -100
    if n > 1:
        y[-1] = -100
        lists[0, 1] = -100
    return Case(kind, x, w, b, group, y, lists, chunk_size, m)


def dense(lists: torch.Tensor, k: int, dtype) -> torch.Tensor:
    out = torch.zeros(lists.shape[0], k, dtype=dtype)
    r, c = (lists >= 0).nonzero(as_tuple=True)
    out[r, lists[r, c]] = 1.0
    return out


def options(name: str, case: Case) -> dict:
    return {"m": case.m} if name == "hs-lr" else {}


def reference(name: str, case: Case, target_kind: str, upstream: torch.Tensor):
    """The materialised loss's rows (reduction "none") and the gradients of sum(rows *
    upstream) over x, W, b, from logits x @ W.T + b in the case's dtype."""
    x, w = case.x.clone().requires_grad_(), case.w.clone().requires_grad_()
    b = None if case.b is None else case.b.clone().requires_grad_()
    logits = x @ w.T if b is None else x @ w.T + b
    k = case.w.shape[0]
    smoothing = {"label_smoothing": 0.1} if target_kind == "smoothed" else {}
    if target_kind == "lists":
        rows = MATERIALISED[name](logits, dense(case.lists, k, x.dtype), reduction="none",
                                  **options(name, case))  # fmt: skip
    elif target_kind == "smoothed" and name != "sr":
        soft = torch.zeros(x.shape[0], k, dtype=x.dtype)
        counted = case.y >= 0
        soft[counted] = torch.nn.functional.one_hot(case.y[counted], k).to(x.dtype) * 0.9 + 0.1 / k
        if name == "hs-lr":
            rows = _shared_hs_lr(logits[counted], soft[counted], case.m)
            bounds = _tie_bounds(logits[counted].detach(), soft[counted], case.m, rows.detach())
            if bounds is not None:  # the value depends on how rounding breaks y's tie
                return _full(bounds, counted), None
        else:
            rows = MATERIALISED[name](logits[counted], soft[counted], reduction="none")
        rows = torch.zeros(x.shape[0], dtype=x.dtype).masked_scatter(counted, rows)
    else:
        rows = MATERIALISED[name](logits, case.y, reduction="none", **options(name, case),
                                  **smoothing)  # fmt: skip
    grads = None
    if case.finite:
        inputs = (x, w) if b is None else (x, w, b)
        *grads, g = torch.autograd.grad((rows * upstream).sum(), (*inputs, logits))
        grads = (*grads, _summands(g.abs(), x.detach().abs(), w.detach().abs(), case.group))
    return rows.detach(), grads


def _summands(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, group: torch.Tensor):
    """The largest sum of magnitudes behind an entry of dX, dW by group and db by group: the
    scale of their rounding (a gradient that cancels to ~0 is compared at it)."""
    return (
        float((g @ w).max()),
        float(group_sums(g.T @ x, group).max()),
        float(group_sums(g.sum(0), group).max()),
    )


def _shared_hs_lr(z: torch.Tensor, t: torch.Tensor, m: float, beta: float = 10.0):
    """HS-LR of soft targets with ties at the threshold sharing its places: with soft targets
    the materialised top-k's pick among tied logits changes the value ((1 - t_k) differ)."""
    n = kernels.num_hard_negatives_rows(z.shape[1] - t.sum(1), m)
    tau, share = kernels.hard_negative_threshold(z.detach(), t, n, int(n.max()))
    rows, _ = kernels.hs_lr_block(
        z, t, None, None, 1 / t.sum(1), beta / n, tau, share, need_grad=False
    )
    return rows


def _tie_bounds(z: torch.Tensor, t: torch.Tensor, m: float, shared: torch.Tensor):
    """With soft targets, a row whose positive's logit ties the threshold (within rounding)
    has a value that depends on which tied logit rounding puts above: (least, most) over the
    positive just above and just below its tie, or None when no row is so tied."""
    n = kernels.num_hard_negatives_rows(z.shape[1] - t.sum(1), m)
    tau, _ = kernels.hard_negative_threshold(z, t, n, int(n.max()))
    positive = t >= 0.5
    z_y = (z * positive).sum(1)
    scale = z.abs().max(1).values
    tied = (z_y - tau).abs() <= 1e-5 * scale
    if not bool(tied.any()):
        return None
    nudge = positive * (1e-4 * scale[:, None] + 1e-30)
    up, down = (_shared_hs_lr(z + s * nudge, t, m) for s in (1, -1))
    both = torch.stack([up, down, shared])
    return both.min(0).values, both.max(0).values


def _full(bounds, counted: torch.Tensor):
    """(low, high) of the counted rows as rows of the batch (0 for the others)."""
    return tuple(
        torch.zeros(counted.shape[0], dtype=b.dtype).masked_scatter(counted, b) for b in bounds
    )


def linear_target(case: Case, target_kind: str):
    target = case.lists if target_kind == "lists" else case.y
    smoothing = {"label_smoothing": 0.1} if target_kind == "smoothed" else {}
    return target, smoothing


def group_sums(grad: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """A (K, ...) gradient summed over each group of tied classes."""
    out = grad.new_zeros((int(group.max()) + 1, *grad.shape[1:]))
    return out.index_add_(0, group, grad)


def tolerance(dtype) -> float:
    return 2e-3 if dtype == torch.float32 else 1e-8


def compare(
    label: str, got: torch.Tensor, want: torch.Tensor, rtol: float, scale: float | None = None
) -> str | None:
    """None when close (NaN where NaN; atol: rtol times ``scale``, by default the largest finite
    magnitude, so that values near zero compare at the scale of the tensor), else what
    differs."""
    if scale is None:
        finite = want[torch.isfinite(want)]
        scale = float(finite.abs().max()) if finite.numel() else 1.0
    try:
        torch.testing.assert_close(
            got, want, rtol=rtol, atol=rtol * scale + 1e-300, equal_nan=True, check_dtype=False
        )
    except AssertionError as error:
        return f"{label}: {error}"
    return None


def check(
    name: str, case: Case, target_kind: str, got, want, rtol: float | None = None
) -> list[str]:
    """What differs between the linear loss's (rows, grads) and the reference's (within
    ``rtol``, by default :func:`tolerance` of the case's dtype)."""
    (rows, grads), (ref_rows, ref_grads) = got, want
    rtol = tolerance(case.x.dtype) if rtol is None else rtol
    if isinstance(ref_rows, tuple):  # a tie of soft targets: a range, no gradient to compare
        low, high = ref_rows
        slack = rtol * float(high.abs().max())
        inside = (rows >= low - slack) & (rows <= high + slack)
        return [] if bool(inside.all()) else [f"{name} rows {rows} outside [{low}, {high}]"]
    found = [compare(f"{name} {target_kind} rows", rows, ref_rows, rtol)]
    if ref_grads is not None and bool(torch.isfinite(ref_rows).all()):
        *ref_grads, summands = ref_grads
        found.append(compare("dX", grads[0], ref_grads[0], rtol, summands[0]))
        for index, label in ((1, "dW"), (2, "db"))[: len(ref_grads) - 1]:
            got_sum, want_sum = (group_sums(g[index], case.group) for g in (grads, ref_grads))
            found.append(compare(f"{label} by group", got_sum, want_sum, rtol, summands[index]))
    return [f for f in found if f is not None]


def same_argmax(case: Case, top: torch.Tensor) -> bool:
    """Whether ``top`` is the logits' argmax by torch.argmax's rule, a tie within rounding
    either way (the chosen logit as large as the top one, or NaN where it is NaN)."""
    logits = case.x @ case.w.T if case.b is None else case.x @ case.w.T + case.b
    want = logits.argmax(1)
    chosen = logits.gather(1, top[:, None])[:, 0]
    best = logits.gather(1, want[:, None])[:, 0]
    both_nan = torch.isnan(chosen) & torch.isnan(best)
    close = torch.isclose(chosen, best, rtol=1e-5, atol=0.0)
    return bool(((top == want) | (chosen == best) | both_nan | close).all())
