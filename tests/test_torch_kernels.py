"""The per-block kernels' contract: a block function summed over column chunks of the logits
equals the whole-row result (values and gradients), for every loss and target form.

This is what the logits-free chunked losses rely on: they compute (M, C) column chunks
[c0, c0 + C) of a K-class problem and call the block functions with per-row constants of the
whole row. The whole-row result itself is checked against the float64 reference.
"""

from __future__ import annotations

import math

import pytest
import torch

from frlr.catalogue import num_hard_negatives
from frlr.torch import _kernels as kernels
from loss_reference import reference_loss

K = 13
CHUNKS = (1, 2, 5, 7, K)  # 1, even, odd, one ragged split, the whole row
FORMS = ("index", "multi-hot", "soft")


def make_problem(form: str, seed: int, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, K, generator=g, dtype=torch.float64) * 3
    if ties:  # repeated logits straddle the HS-LR threshold
        z = torch.round(z)
    if form == "index":
        target = torch.randint(0, K, (6,), generator=g)
    elif form == "multi-hot":
        target = (torch.rand(6, K, generator=g, dtype=torch.float64) < 0.3).double()
        target[0] = 0  # no positive
        target[1] = 1  # no negative
    else:
        target = torch.rand(6, K, generator=g, dtype=torch.float64)
        target[2] = 0
        target[3, :4] = 1
    weight = torch.rand(K, generator=g, dtype=torch.float64) + 0.5
    return z, target, weight


def dense(target: torch.Tensor) -> torch.Tensor:
    if target.is_floating_point():
        return target
    return torch.nn.functional.one_hot(target, K).double()


def row_constants(name: str, z: torch.Tensor, target: torch.Tensor, **hyper):
    """The per-row arguments of the whole row: (pos_scale, neg_scale, *extra)."""
    t = dense(target)
    positive_mass, negative_mass = t.sum(1), (1 - t).sum(1)
    pos_scale = torch.where(positive_mass > 0, 1 / positive_mass, 0.0)
    beta = hyper.get("beta", 10.0)
    if name == "lr":
        return (1.0, 1.0)
    if name == "ss-lr":
        neg_scale = torch.where(negative_mass > 0, beta / negative_mass, 0.0)
        return (pos_scale, neg_scale, hyper.get("r", 2.0))
    m = hyper.get("m", 25.0)
    n = kernels.num_hard_negatives_rows(negative_mass, m)
    threshold, share = kernels.hard_negative_threshold(z, target, n, num_hard_negatives(K, m))
    return (pos_scale, beta / n.clamp(min=1), threshold, share)


BLOCKS = {"lr": kernels.lr_block, "ss-lr": kernels.ss_lr_block, "hs-lr": kernels.hs_lr_block}


def chunked(name, z, target, weight, constants, width):
    """Rows and gradient summed / assembled over column chunks of ``width`` classes."""
    rows = torch.zeros(len(z), dtype=z.dtype)
    grads = []
    for c0 in range(0, K, width):
        part = slice(c0, c0 + width)
        if target.is_floating_point():
            block_target, present = target[:, part], None
        else:
            local = target - c0
            present = (local >= 0) & (local < z[:, part].shape[1])
            block_target = torch.where(present, local, 0)
        block_rows, grad = BLOCKS[name](
            z[:, part],
            block_target,
            present,
            None if weight is None else weight[part],
            *constants,
        )
        rows += block_rows
        grads.append(grad)
    return rows, torch.cat(grads, 1)


@pytest.mark.parametrize("name", ("lr", "ss-lr", "hs-lr"))
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("weighted", (False, True))
def test_column_chunks_sum_to_the_whole_row(name, form, weighted):
    z, target, weight = make_problem(form, seed=len(name) + 10 * FORMS.index(form))
    weight = weight if weighted else None
    hyper = {"r": 2.5} if name == "ss-lr" else {}
    constants = row_constants(name, z, target, **hyper)
    whole_rows, whole_grad = BLOCKS[name](z, target, None, weight, *constants)
    for width in CHUNKS:
        rows, grad = chunked(name, z, target, weight, constants, width)
        torch.testing.assert_close(rows, whole_rows, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, whole_grad, rtol=1e-12, atol=1e-12)
    # ... and the whole row is the loss: values and gradients of the float64 reference
    z64 = z.clone().requires_grad_(True)
    reference = reference_loss(name, z64, target, weight=weight, reduction="none", **hyper)
    reference.sum().backward()
    torch.testing.assert_close(whole_rows, reference.detach())
    torch.testing.assert_close(whole_grad, z64.grad)


@pytest.mark.parametrize("form", FORMS)
def test_hs_lr_ties_at_the_threshold_are_shared_whatever_the_chunking(form):
    z, target, weight = make_problem(form, seed=3, ties=True)
    constants = row_constants("hs-lr", z, target, m=40.0)
    assert (constants[3] < 1).any(), "no row has a shared tie: the test needs one"
    whole_rows, whole_grad = kernels.hs_lr_block(z, target, None, weight, *constants)
    for width in CHUNKS:
        rows, grad = chunked("hs-lr", z, target, weight, constants, width)
        torch.testing.assert_close(rows, whole_rows, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, whole_grad, rtol=1e-12, atol=1e-12)
    if form != "soft":  # the value does not depend on which tied class is taken -- unless the
        # tied classes differ in weight or negative mass, which the share averages where the
        # reference takes the first
        rows, _ = kernels.hs_lr_block(z, target, None, None, *constants)
        reference = reference_loss("hs-lr", z, target, reduction="none", m=40.0)
        torch.testing.assert_close(rows, reference)


def test_hs_lr_selection_mask_matches_its_definition_with_infinite_logits():
    """sel = [z > tau] + share [z = tau], also where z and tau are -inf (the subtraction the
    fast mask uses would give NaN there) and where tau is +inf (a row that selects nothing)."""
    z = torch.tensor(
        [[-math.inf, -1.0, 0.5, 2.0], [-math.inf, -math.inf, 3.0, -2.0], [1.0, 2.0, 3.0, 4.0]],
        dtype=torch.float64,
    )
    threshold = torch.tensor([0.5, -math.inf, math.inf], dtype=torch.float64)
    share = torch.tensor([0.25, 0.5, 0.0], dtype=torch.float64)
    rows, grad = kernels.hs_lr_block(z, None, None, None, 0.0, 1.0, threshold, share)
    tau = threshold[:, None]
    selected = (z > tau).double() + share[:, None] * (z == tau).double()
    finite = torch.isfinite(z)
    expected = torch.where(finite, torch.nn.functional.softplus(z) * selected, 0.0)
    torch.testing.assert_close(rows, expected.sum(1))
    torch.testing.assert_close(grad, torch.where(finite, torch.sigmoid(z) * selected, 0.0))
    # finite thresholds, no shared tie: the sign-based mask, same definition
    threshold = torch.tensor([0.5, 3.0, 2.0], dtype=torch.float64)
    z = z.clamp(min=-50)
    rows, grad = kernels.hs_lr_block(z, None, None, None, 0.0, 1.0, threshold, share * 0)
    selected = (z > threshold[:, None]).double()
    torch.testing.assert_close(grad, torch.sigmoid(z) * selected)


@pytest.mark.parametrize("name", ("lr", "ss-lr", "hs-lr"))
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("parts", ("both", "positive", "negative"))
def test_float32_blocks_write_the_gradient_into_out(name, form, parts):
    z, target, weight = make_problem(form, seed=5)
    constants = row_constants(name, z, target)
    if parts != "both":  # the diagnostics' split: one part switched off by a 0.0 scale
        scales = (0.0, constants[1]) if parts == "negative" else (constants[0], 0.0)
        constants = scales + constants[2:]
    target32 = target.float() if form != "index" else target
    z32 = z.float()
    constants32 = tuple(c.float() if isinstance(c, torch.Tensor) else c for c in constants)
    out = torch.full_like(z32, math.nan)
    rows, grad = BLOCKS[name](z32, target32, None, weight.float(), *constants32, out=out)
    assert grad.data_ptr() == out.data_ptr()
    expected_rows, expected_grad = BLOCKS[name](z, target, None, weight, *constants)
    assert rows.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(rows.double(), expected_rows, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-6)
    no_grad_rows, no_grad = BLOCKS[name](
        z32, target32, None, weight.float(), *constants32, need_grad=False
    )
    assert no_grad is None
    torch.testing.assert_close(no_grad_rows, rows)


def test_a_block_without_positives_is_all_negatives():
    """target None: the block holds no row's positive (a chunk of negatives only)."""
    z, _, weight = make_problem("index", seed=6)
    none_rows, none_grad = kernels.ss_lr_block(z, None, None, weight, 0.5, 0.25, 2.0)
    zeros = torch.zeros_like(z)
    rows, grad = kernels.ss_lr_block(z, zeros, None, weight, 0.5, 0.25, 2.0)
    torch.testing.assert_close(none_rows, rows)
    torch.testing.assert_close(none_grad, grad)


def test_present_applies_to_index_targets_only():
    z, target, _ = make_problem("soft", seed=7)
    with pytest.raises(ValueError, match="present applies to index targets only"):
        kernels.lr_block(z, target, torch.ones(6, dtype=torch.bool))
