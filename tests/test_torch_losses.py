"""frlr.torch losses against the independent float64 reference: values and gradients."""

from __future__ import annotations

import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import frlr.torch as frlr
from loss_reference import authors_loss, reference_loss

SIGMOID_LOSSES = ("lr", "hs-lr", "ss-lr")
ALL_LOSSES = ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")


def hyper_for(name: str, beta: float, m: float, r: float, alpha: float | None) -> dict:
    return {
        "lr": {},
        "hs-lr": {"beta": beta, "m": m, "alpha": alpha},
        "ss-lr": {"beta": beta, "r": r, "alpha": alpha},
        "hs-sr": {"beta": beta, "m": m, "alpha": alpha},
    }[name]


def distinct_logits(n: int, k: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Random float32 logits with no ties (hard selection is not differentiable at ties)."""
    z = torch.randn(n, k, generator=generator) * scale
    ranks = torch.argsort(torch.rand(n, k, generator=generator), dim=1).float()
    return z + ranks * scale * 1e-3  # break exact ties while keeping the scale


def check_against_reference(
    name: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    **hyper,
) -> None:
    z = logits.clone().requires_grad_(True)
    fast = frlr.FUNCTIONAL[name](
        z, target, weight=weight, reduction=reduction, ignore_index=ignore_index, **hyper
    )
    z64 = logits.double().requires_grad_(True)
    ref = reference_loss(
        name, z64, target, weight=weight, reduction=reduction, ignore_index=ignore_index, **hyper
    )
    assert fast.dtype == torch.float32
    assert fast.shape == ref.shape
    scale = ref.detach().abs().max().item() if ref.numel() else 0.0
    torch.testing.assert_close(fast.double(), ref.detach(), rtol=2e-5, atol=1e-6 * max(scale, 1.0))
    upstream = torch.rand(ref.shape, dtype=torch.float64) + 0.5
    (fast.double() * upstream).sum().backward()
    (ref * upstream).sum().backward()
    assert torch.isfinite(z.grad).all()
    atol = 1e-6 * max(z64.grad.abs().max().item(), 1e-3)
    if (
        name == "hs-sr"
    ):  # float32 log-softmax rounds z - logsumexp(z) to eps * |z|, as in F.cross_entropy
        atol = max(atol, 2e-7 * logits.abs().max().item())
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("name", (*SIGMOID_LOSSES, "hs-sr"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_index_targets_match_reference(name, reduction, scale):
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}{reduction}{scale}".encode()))
    logits = distinct_logits(6, 37, scale, g)
    target = torch.randint(0, 37, (6,), generator=g)
    check_against_reference(name, logits, target, reduction=reduction)


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_multi_hot_targets_match_reference(name, scale):
    g = torch.Generator().manual_seed(7)
    logits = distinct_logits(8, 23, scale, g)
    target = (torch.rand(8, 23, generator=g) < 0.2).float()
    target[0] = 0  # a sample with no positive
    target[1] = 1  # a sample with no negative
    target[2, 5] = 1
    check_against_reference(name, logits, target, reduction="none")
    check_against_reference(name, logits, target, reduction="mean")


def test_lr_soft_targets_match_reference():
    g = torch.Generator().manual_seed(3)
    logits = distinct_logits(5, 11, 5.0, g)
    target = torch.rand(5, 11, generator=g)
    check_against_reference("lr", logits, target, reduction="none")


SOFT_HYPER = {
    "lr": ({},),
    "ss-lr": ({}, {"alpha": 0.7}, {"r": 0.5, "beta": 3.0}),
    "hs-lr": ({}, {"alpha": 0.7}, {"m": 60.0, "beta": 3.0}),
}


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_soft_targets_match_reference(name, reduction, weighted, scale):
    """Soft targets: class k has positive mass t_k and negative mass 1 - t_k (docstrings)."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}{reduction}{weighted}".encode()))
    logits = distinct_logits(7, 17, scale, g)
    target = torch.rand(7, 17, generator=g)
    target[0] = 0  # no positive mass
    target[1] = 1  # no negative mass
    target[2, :5] = 1  # some classes wholly positive: not candidates for hard selection
    target[3] = (target[3] < 0.3).float()  # a multi-hot row among soft ones
    weight = torch.rand(17, generator=g) + 0.5 if weighted else None
    for hyper in SOFT_HYPER[name]:
        check_against_reference(name, logits, target, reduction=reduction, weight=weight, **hyper)


@pytest.mark.parametrize("name", (*SIGMOID_LOSSES, "hs-sr"))
def test_class_weights_and_ignore_index_match_reference(name):
    g = torch.Generator().manual_seed(11)
    logits = distinct_logits(7, 19, 3.0, g)
    target = torch.randint(0, 19, (7,), generator=g)
    target[2] = -1
    weight = torch.rand(19, generator=g) + 0.1
    check_against_reference(name, logits, target, weight=weight, ignore_index=-1)


@pytest.mark.parametrize("name", (*SIGMOID_LOSSES, "hs-sr"))
@pytest.mark.parametrize("ignore_index", (-100, 0, 4, 18))
def test_ignore_index_inside_or_outside_the_class_range(name, ignore_index):
    """The unmasked fast path (no index ignored) and the masked path agree with the reference
    whether ignore_index is a class id (0, 4, 18) or not (-100)."""
    g = torch.Generator().manual_seed(5)
    logits = distinct_logits(9, 19, 3.0, g)
    target = torch.tensor([1, 4, 0, 18, 7, 4, 2, 18, 0])
    check_against_reference(name, logits, target, ignore_index=ignore_index)
    check_against_reference(name, logits, target, ignore_index=ignore_index, reduction="none")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    name=st.sampled_from((*SIGMOID_LOSSES, "hs-sr")),
    n=st.integers(1, 4),
    k=st.sampled_from([2, 3, 5, 10, 64, 200, 1000, 5000]),
    scale=st.sampled_from([0.1, 1.0, 10.0, 100.0, 1e4]),
    m=st.floats(0.5, 100.0),
    r=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 4.5]),
    beta=st.floats(0.0, 20.0),
    use_alpha=st.booleans(),
    multi_hot=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(
    name, n, k, scale, m, r, beta, use_alpha, multi_hot, reduction, seed
):
    if k == 5000:
        n = 1  # the reference is a Python loop over classes
    g = torch.Generator().manual_seed(seed)
    logits = distinct_logits(n, k, scale, g)
    if multi_hot and name != "hs-sr":
        target = (torch.rand(n, k, generator=g) < 0.3).float()
    else:
        target = torch.randint(0, k, (n,), generator=g)
    alpha = 0.7 if use_alpha else None
    check_against_reference(
        name, logits, target, reduction=reduction, **hyper_for(name, beta, m, r, alpha)
    )


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_spatial_logits_equal_flattened(name):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 6, 3, 4, generator=g)
    target = torch.randint(0, 6, (2, 3, 4), generator=g)
    loss = frlr.FUNCTIONAL[name]
    spatial = loss(logits, target, reduction="none")
    assert spatial.shape == (2, 3, 4)
    flat = loss(logits.movedim(1, -1).reshape(-1, 6), target.reshape(-1), reduction="none")
    torch.testing.assert_close(spatial.reshape(-1), flat)
    torch.testing.assert_close(loss(logits, target), flat.mean())


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_spatial_multi_hot(name):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 5, 3, generator=g)
    target = (torch.rand(2, 5, 3, generator=g) < 0.4).float()
    loss = frlr.FUNCTIONAL[name]
    spatial = loss(logits, target, reduction="none")
    flat = loss(
        logits.movedim(1, -1).reshape(-1, 5),
        target.movedim(1, -1).reshape(-1, 5),
        reduction="none",
    )
    torch.testing.assert_close(spatial.reshape(-1), flat)


def test_sr_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 13, generator=g)
    target = torch.randint(0, 13, (9,), generator=g)
    weight = torch.rand(13, generator=g)
    torch.testing.assert_close(
        frlr.sr_loss(logits, target, weight=weight), F.cross_entropy(logits, target, weight)
    )


def test_lr_is_summed_binary_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 13, generator=g)
    target = torch.randint(0, 13, (9,), generator=g)
    bce = F.binary_cross_entropy_with_logits(
        logits, F.one_hot(target, 13).float(), reduction="none"
    ).sum(1)
    torch.testing.assert_close(frlr.lr_loss(logits, target, reduction="none"), bce)


def test_ss_lr_with_r_zero_equals_hs_lr_with_m_100():
    """The paper: "when r = 0, it is equivalent to HS at m = 100"."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 30, generator=g) * 4
    target = torch.randint(0, 30, (8,), generator=g)
    torch.testing.assert_close(
        frlr.ss_lr_loss(logits, target, r=0.0), frlr.hs_lr_loss(logits, target, m=100.0)
    )


def test_alpha_defaults_follow_the_paper():
    """alpha = beta / floor(m% (K-1)) for HS and beta / (K-1) for SS."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 201, generator=g)
    target = torch.randint(0, 201, (4,), generator=g)
    torch.testing.assert_close(
        frlr.hs_lr_loss(logits, target), frlr.hs_lr_loss(logits, target, alpha=10.0 / 50)
    )
    torch.testing.assert_close(
        frlr.ss_lr_loss(logits, target), frlr.ss_lr_loss(logits, target, alpha=10.0 / 200)
    )


def test_lr_at_k200_has_the_papers_starting_imbalance():
    """At initialisation (logits ~ 0) LR's negative term is 199 log 2 = 138 vs log 2 = 0.69."""
    logits = torch.zeros(4, 200)
    target = torch.zeros(4, dtype=torch.long)
    assert frlr.lr_loss(logits, target).item() == pytest.approx(200 * math.log(2), rel=1e-6)


@pytest.mark.parametrize("name", ["hs-lr", "ss-lr"])
@pytest.mark.parametrize("multi_hot", [False, True])
def test_reference_normalization_matches_authors_code(name, multi_hot):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(16, 40, generator=g) * 2
    if multi_hot:
        target = (torch.rand(16, 40, generator=g) < 0.1).float()
        target[:, 0] = 1
    else:
        target = torch.randint(0, 40, (16,), generator=g)
    hyper = {"m": 25.0} if name == "hs-lr" else {"r": 2.0}
    ours = frlr.FUNCTIONAL[name](logits, target, normalization="reference", alpha=0.3, **hyper)
    theirs = authors_loss(name, logits, target, alpha=0.3, **hyper)
    torch.testing.assert_close(ours.double(), theirs, rtol=2e-4, atol=1e-5)


def test_reference_equals_paper_for_single_label_ss_lr():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(10, 50, generator=g)
    target = torch.randint(0, 50, (10,), generator=g)
    torch.testing.assert_close(
        frlr.ss_lr_loss(logits, target, normalization="reference"), frlr.ss_lr_loss(logits, target)
    )


def test_reference_normalization_rejects_k_zero_and_other_reductions():
    logits, target = torch.randn(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"int\(K\*m/100\) = 0"):
        frlr.hs_lr_loss(logits, target, normalization="reference")
    with pytest.raises(ValueError, match="reduction must be 'mean'"):
        frlr.ss_lr_loss(logits, target, normalization="reference", reduction="none")


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradcheck_float64(name):
    g = torch.Generator().manual_seed(9)
    logits = distinct_logits(3, 7, 2.0, g).double().requires_grad_(True)
    target = torch.randint(0, 7, (3,), generator=g)
    fn = frlr.FUNCTIONAL[name]
    assert torch.autograd.gradcheck(lambda z: fn(z, target, reduction="none"), (logits,))


@pytest.mark.parametrize(
    ("name", "multi_hot"),
    [(name, False) for name in ALL_LOSSES] + [(name, True) for name in SIGMOID_LOSSES],
)
def test_a_retained_graph_gives_the_same_gradient_every_backward(name, multi_hot):
    """The backward scales the saved gradient in place only when the graph is not kept."""
    g = torch.Generator().manual_seed(14)
    logits = distinct_logits(6, 11, 2.0, g).requires_grad_(True)
    target = (torch.rand(6, 11, generator=g) < 0.3).float() if multi_hot else torch.arange(6)
    loss = frlr.FUNCTIONAL[name](logits, target, reduction="none")
    upstream = torch.rand(6, generator=g)
    (first,) = torch.autograd.grad(loss, logits, upstream, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits, upstream * 2, retain_graph=True)
    (last,) = torch.autograd.grad(loss, logits, upstream)  # may reuse the saved buffer
    torch.testing.assert_close(second, 2 * first)
    torch.testing.assert_close(last, first)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(loss, logits, upstream)


@pytest.mark.parametrize(
    ("name", "hyper"), [("ss-lr", {"r": 2.0}), ("ss-lr", {"r": 0.5}), ("hs-lr", {"m": 30.0})]
)
@pytest.mark.parametrize("weighted", [False, True])
def test_row_blocks_equal_one_block(monkeypatch, name, hyper, weighted):
    """Large inputs run SS-LR and HS-LR block by block; shrink the thresholds to test it here."""
    from frlr.torch import _kernels

    g = torch.Generator().manual_seed(15)
    logits = distinct_logits(37, 29, 5.0, g)
    target = torch.randint(0, 29, (37,), generator=g)
    weight = torch.rand(29, generator=g) + 0.5 if weighted else None
    fn = frlr.FUNCTIONAL[name]

    def loss_and_grad():
        z = logits.clone().requires_grad_(True)
        loss = fn(z, target, weight=weight, reduction="none", **hyper)
        loss.backward(torch.linspace(0.5, 1.5, 37))
        with torch.no_grad():
            forward_only = fn(logits, target, weight=weight, reduction="none", **hyper)
        return loss.detach(), z.grad, forward_only

    whole = loss_and_grad()
    monkeypatch.setattr(_kernels, "_BLOCKED_FROM", 0)
    monkeypatch.setattr(_kernels, "_BLOCK", 100)  # 3 rows a block, the last one short
    blocked = loss_and_grad()
    for a, b in zip(whole, blocked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    check_against_reference(name, logits, target, weight=weight, **hyper)


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_gradcheck_float64_multi_hot(name):
    g = torch.Generator().manual_seed(10)
    logits = distinct_logits(3, 7, 2.0, g).double().requires_grad_(True)
    target = (torch.rand(3, 7, generator=g) < 0.4).double()
    fn = frlr.FUNCTIONAL[name]
    assert torch.autograd.gradcheck(lambda z: fn(z, target, reduction="none"), (logits,))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_module_equals_functional(name):
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(5, 9, generator=g)
    target = torch.randint(0, 9, (5,), generator=g)
    module = frlr.get_loss(name, reduction="sum")
    torch.testing.assert_close(
        module(logits, target), frlr.FUNCTIONAL[name](logits, target, reduction="sum")
    )
    assert name.replace("-", "") in type(module).__name__.lower()
    assert isinstance(module, torch.nn.Module)


def test_weight_is_a_buffer_that_follows_the_module():
    module = frlr.SSLRLoss(weight=torch.ones(4))
    assert "weight" in dict(module.named_buffers())
    assert module.double().weight.dtype == torch.float64
