"""Issue 19's loss-library items: second derivatives (``create_graph=True``), empty batches,
class-weight checks, and property tests of every torch loss against the float64 reference."""

from __future__ import annotations

import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import frlr.torch as frlr
from frlr.torch import _kernels as kernels
from frlr.torch import fused
from frlr.torch.diagnostics import ncd_stats
from loss_reference import reference_loss

SIGMOID_LOSSES = ("lr", "hs-lr", "ss-lr")
ALL_LOSSES = ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")
KINDS = ("index", "multi-hot", "soft")


def distinct(n: int, k: int, scale: float, g: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Logits without ties (hard selection has no derivative at a tie)."""
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    ranks = torch.argsort(torch.rand(n, k, generator=g), dim=1).double()
    return (z + ranks * scale * 1e-2).to(dtype)


def make_target(kind: str, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    if kind == "index":
        return torch.randint(0, k, (n,), generator=g)
    if kind == "multi-hot":
        return (torch.rand(n, k, generator=g) < 0.4).double()
    return torch.rand(n, k, generator=g, dtype=torch.float64)


def options(name: str) -> dict:
    return {"m": 50.0} if name in ("hs-lr", "hs-sr") else {}


def loss_cases():
    for name in ALL_LOSSES:
        for kind in KINDS:
            if name == "hs-sr" and kind != "index":
                continue  # softmax hard selection is single-label
            for reduction in ("mean", "sum", "none"):
                for extra in ("plain", "weight", "ignore_index"):
                    if extra == "ignore_index" and kind != "index":
                        continue
                    yield name, kind, reduction, extra


# ---------------------------------------------------------------------------------------------
# Second derivatives
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "reduction", "extra"), list(loss_cases()))
def test_gradgradcheck(name, kind, reduction, extra):
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}{kind}{reduction}{extra}".encode()))
    z = distinct(3, 5, 1.5, g).requires_grad_(True)
    target = make_target(kind, 3, 5, g)
    kwargs = dict(options(name), reduction=reduction)
    if extra == "weight":
        kwargs["weight"] = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    if extra == "ignore_index":
        target[1] = -1
        kwargs["ignore_index"] = -1
    loss = frlr.FUNCTIONAL[name]
    assert torch.autograd.gradgradcheck(lambda x: loss(x, target, **kwargs), (z,))


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_gradgradcheck_reference_normalization(name, kind, weighted):
    g = torch.Generator().manual_seed(zlib.crc32(f"ref{name}{kind}{weighted}".encode()))
    z = distinct(3, 6, 1.5, g).requires_grad_(True)
    target = make_target(kind, 3, 6, g)
    weight = torch.rand(6, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    loss = frlr.FUNCTIONAL[name]
    kwargs = dict(options(name), weight=weight, normalization="reference")
    assert torch.autograd.gradgradcheck(lambda x: loss(x, target, **kwargs), (z,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradgradcheck_compiled_ss_lr(reduction, weighted):
    g = torch.Generator().manual_seed(3)
    z = distinct(3, 5, 1.5, g).requires_grad_(True)
    target = torch.randint(0, 5, (3,), generator=g)
    weight = torch.rand(5, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    loss = fused.compiled("ss-lr", reduction=reduction, weight=weight)
    assert torch.autograd.gradgradcheck(lambda x: loss(x, target), (z,))
    assert "ss-lr" not in fused._UNAVAILABLE  # the fused path ran, not the eager fallback


def _penalty_gradients(loss_fn, x, target, w1, w2):
    """d/dW of ||d loss / d x||^2 through a 2-layer net: a gradient penalty (double backprop)."""
    w1 = w1.clone().requires_grad_(True)
    w2 = w2.clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    loss = loss_fn(torch.tanh(x @ w1) @ w2, target)
    (dx,) = torch.autograd.grad(loss, x, create_graph=True)
    penalty = dx.pow(2).sum()
    return torch.autograd.grad(penalty, (w1, w2))


NAME_KINDS = [
    (name, kind) for name in ALL_LOSSES for kind in KINDS if name != "hs-sr" or kind == "index"
]


def _plain_autograd(name: str):
    """The float64 reference; for SR, which has none there, F.cross_entropy itself."""
    if name == "sr":
        return lambda z, t, **kwargs: torch.nn.functional.cross_entropy(z, t, **kwargs)
    return lambda z, t, **kwargs: reference_loss(name, z, t, **kwargs)


@pytest.mark.parametrize(("name", "kind"), NAME_KINDS)
def test_gradient_penalty_matches_reference(name, kind):
    g = torch.Generator().manual_seed(zlib.crc32(f"gp{name}{kind}".encode()))
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w1 = torch.randn(3, 8, generator=g, dtype=torch.float64)
    w2 = torch.randn(8, 7, generator=g, dtype=torch.float64)
    target = make_target(kind, 4, 7, g)
    weight = torch.rand(7, generator=g, dtype=torch.float64) + 0.5
    kwargs = dict(options(name), weight=weight)
    fast = _penalty_gradients(lambda z, t: frlr.FUNCTIONAL[name](z, t, **kwargs), x, target, w1, w2)
    ref = _penalty_gradients(lambda z, t: _plain_autograd(name)(z, t, **kwargs), x, target, w1, w2)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["hs-lr", "ss-lr"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_penalty_through_row_blocks(name, kind, monkeypatch):
    """A forward that ran in row blocks (big inputs) still gives exact second derivatives."""
    monkeypatch.setattr(kernels, "_BLOCKED_FROM", 1)
    monkeypatch.setattr(kernels, "_BLOCK", 14)  # blocks of 2 rows of 7 classes
    test_gradient_penalty_matches_reference(name, kind)


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_first_order_backward_builds_no_graph(name):
    """Without create_graph the fast path runs: the gradient has no graph behind it."""
    g = torch.Generator().manual_seed(1)
    z = distinct(4, 9, 1.0, g, torch.float32).requires_grad_(True)
    target = torch.randint(0, 9, (4,), generator=g)
    (dz,) = torch.autograd.grad(frlr.FUNCTIONAL[name](z, target, **options(name)), z)
    assert dz.grad_fn is None and not dz.requires_grad
    loss = frlr.FUNCTIONAL[name](z, target, **options(name))
    (dz2,) = torch.autograd.grad(loss, z, create_graph=True)
    assert dz2.requires_grad
    torch.testing.assert_close(dz2.detach(), dz)


# ---------------------------------------------------------------------------------------------
# Empty batches and class weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), NAME_KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_is_zero_with_zero_gradient(name, kind, reduction):
    z = torch.zeros(0, 5, requires_grad=True)
    target = make_target(kind, 0, 5, torch.Generator()).float()
    if kind == "index":
        target = target.long()
    loss = frlr.FUNCTIONAL[name](z, target, reduction=reduction, **options(name))
    assert loss.shape == ((0,) if reduction == "none" else ())
    if reduction != "none":
        assert loss.item() == 0.0
    loss.sum().backward()
    assert z.grad.shape == (0, 5)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (float("nan"), r"weight\[2\] = nan"),
        (float("inf"), r"weight\[2\] = inf"),
        (-0.5, r"weight\[2\] = -0.5"),
    ],
)
def test_bad_class_weight_rejected(name, bad, match):
    weight = torch.tensor([1.0, 2.0, bad, -3.0, 1.0])  # the first bad entry is named
    logits, target = torch.randn(2, 5), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"weight must be finite and >= 0, got " + match):
        frlr.FUNCTIONAL[name](logits, target, weight=weight, **options(name))
    with pytest.raises(ValueError, match="weight must be finite"):
        frlr.get_loss(name, weight=weight, **options(name))(logits, target)
    with pytest.raises(ValueError, match="weight must be finite"):
        ncd_stats(logits, target, name, weight=weight, **options(name))


def test_zero_class_weight_accepted():
    weight = torch.tensor([1.0, 0.0, 2.0])
    loss = frlr.ss_lr_loss(torch.randn(2, 3), torch.tensor([0, 1]), weight=weight)
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# Properties against the float64 reference
# ---------------------------------------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    name=st.sampled_from((*SIGMOID_LOSSES, "hs-sr")),
    n=st.integers(0, 4),
    k=st.sampled_from([2, 3, 7, 50]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    kind=st.sampled_from(KINDS),
    m=st.floats(0.0, 100.0, exclude_min=True),
    scale=st.sampled_from([0.1, 1.0, 30.0, 1e4]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_matches_float64_reference(
    name, n, k, dtype, kind, m, scale, reduction, weighted, seed
):
    if name == "hs-sr":
        kind = "index"
    g = torch.Generator().manual_seed(seed)
    logits = distinct(n, k, scale, g, dtype)
    target = make_target(kind, n, k, g)
    if kind != "index":
        target = target.to(dtype)
    weight = torch.rand(k, generator=g, dtype=dtype) + 0.5 if weighted else None
    hyper = {"m": m} if name in ("hs-lr", "hs-sr") else {}
    z = logits.clone().requires_grad_(True)
    fast = frlr.FUNCTIONAL[name](z, target, weight=weight, reduction=reduction, **hyper)
    assert fast.dtype == dtype
    fast_grad = torch.autograd.grad(fast.sum(), z)[0]
    assert fast_grad.shape == (n, k) and torch.isfinite(fast_grad).all()
    if n == 0:
        assert fast.shape == ((0,) if reduction == "none" else ())
        assert reduction == "none" or fast.item() == 0.0
        return
    z64 = logits.double().requires_grad_(True)
    ref = reference_loss(
        name,
        z64,
        target,
        weight=None if weight is None else weight.double(),
        reduction=reduction,
        **hyper,
    )
    ref_grad = torch.autograd.grad(ref.sum(), z64)[0]
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    size = max(ref.detach().abs().max().item(), 1.0)
    torch.testing.assert_close(fast.double(), ref.detach(), rtol=tol, atol=tol * size)
    gsize = max(ref_grad.abs().max().item(), 1e-3)
    atol = tol * gsize
    if name == "hs-sr":  # a rounded log-softmax: eps * |z|, as in F.cross_entropy
        atol = max(atol, 4 * torch.finfo(dtype).eps * logits.abs().max().item())
    torch.testing.assert_close(fast_grad.double(), ref_grad, rtol=10 * tol, atol=atol)
