"""The logits-free losses equal the materialised ones: frlr.torch.<loss>(x @ W.T + b, target).

Values and the three gradients (features, weight, bias), every reduction, ignore_index,
positive lists against the equivalent multi-hot target, chunk sizes 1, odd and K, bf16 inputs
and logits of 1e4; HS-LR's streamed threshold against the materialised top-k, ties included;
no N x K tensor is ever allocated; bad inputs raise naming the argument. Sparse soft targets
(``target_weights``, ``label_smoothing``) against the materialised loss on the dense target and
that against the float64 reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import frlr.torch as frlr
from frlr.torch import linear
from frlr.torch.linear import selection
from loss_reference import reference_loss

LINEAR = {
    "lr": frlr.linear_lr_loss,
    "ss-lr": frlr.linear_ss_lr_loss,
    "hs-lr": frlr.linear_hs_lr_loss,
    "sr": frlr.linear_sr_loss,
}
MATERIALISED = {
    "lr": frlr.lr_loss,
    "ss-lr": frlr.ss_lr_loss,
    "hs-lr": frlr.hs_lr_loss,
    "sr": frlr.sr_loss,
}
HYPER = {"lr": {}, "ss-lr": {"r": 1.5, "beta": 4.0}, "hs-lr": {"beta": 3.0, "m": 30.0}, "sr": {}}


def _problem(n=12, d=6, k=40, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g, dtype=dtype) * scale).requires_grad_()
    w = torch.randn(k, d, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(k, generator=g, dtype=dtype).requires_grad_()
    y = torch.randint(0, k, (n,), generator=g)
    return x, w, b, y


def _both(name, x, w, b, target, dense_target=None, weights=None, **options):
    """(loss, grads) of the linear and the materialised loss, under the same upstream weights."""
    out = []
    for fn, tgt in ((LINEAR[name], target), (MATERIALISED[name], dense_target)):
        if fn is LINEAR[name]:
            loss = fn(x, w, tgt, bias=b, **HYPER[name], **options)
        else:
            options_m = {k: v for k, v in options.items() if k != "chunk_size"}
            logits = x @ w.T + b
            loss = fn(logits, target if tgt is None else tgt, **HYPER[name], **options_m)
        total = loss.sum() if weights is None else (loss * weights).sum()
        out.append((loss, torch.autograd.grad(total, (x, w, b))))
    return out


def _assert_same(got, want, **tol):
    (loss, grads), (loss_m, grads_m) = got, want
    torch.testing.assert_close(loss, loss_m, **tol)
    for name, a, c in zip(("features", "weight", "bias"), grads, grads_m, strict=True):
        torch.testing.assert_close(a, c, msg=lambda m, name=name: f"{name}: {m}", **tol)


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [1, 7, 40])
def test_equals_the_materialised_loss_float64(name, reduction, chunk_size):
    x, w, b, y = _problem()
    y[3] = -100  # an ignored row
    weights = torch.rand(12, dtype=torch.float64) if reduction == "none" else None
    got, want = _both(name, x, w, b, y, weights=weights, reduction=reduction, chunk_size=chunk_size)
    _assert_same(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(LINEAR))
def test_equals_the_materialised_loss_float32_default_chunk(name):
    x, w, b, y = _problem(n=48, d=32, k=3000, dtype=torch.float32, seed=1)
    got, want = _both(name, x, w, b, y)
    _assert_same(got, want, rtol=2e-5, atol=1e-6)
    got, _ = _both(name, x, w, b, y, chunk_size=97)
    _assert_same(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lr", "ss-lr", "hs-lr"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_positive_lists_equal_the_multi_hot_target(name, reduction):
    x, w, b, _ = _problem(n=6, k=30, seed=2)
    lists = torch.tensor(
        [[3, 7, -100], [0, -100, -100], [-100, -100, -100], [29, 1, 2], [5, 6, 8], [10, 11, 12]]
    )
    dense = torch.zeros(6, 30, dtype=torch.float64)
    for i, row in enumerate(lists.tolist()):
        for k in row:
            if k >= 0:
                dense[i, k] = 1.0
    weights = torch.rand(6, dtype=torch.float64) if reduction == "none" else None
    for chunk_size in (1, 4, 30):
        got, want = _both(
            name, x, w, b, lists, dense, weights=weights, reduction=reduction, chunk_size=chunk_size
        )
        _assert_same(got, want, rtol=1e-10, atol=1e-12)


def test_a_positive_list_of_one_column_is_a_multi_label_target():
    """(N, 1) lists are multi-label (no row is dropped), unlike (N,) indices."""
    x, w, b, y = _problem(n=5, k=20, seed=3)
    y[0] = -100
    dense = torch.zeros(5, 20, dtype=torch.float64)
    dense[torch.arange(1, 5), y[1:]] = 1.0
    got, want = _both("ss-lr", x, w, b, y.unsqueeze(1), dense)
    _assert_same(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(LINEAR))
def test_bf16_features_and_weights_accumulate_in_float32(name, monkeypatch):
    """Where bf16 is not multiplied natively (an AVX2 CPU): the bf16 values multiplied as
    float32. The half-precision products are tests/test_torch_linear_half.py's."""
    monkeypatch.setattr(linear.products, "HALF_PRODUCTS", False)
    x, w, b, y = _problem(n=32, d=64, k=500, dtype=torch.float32, seed=4)
    xb = x.detach().bfloat16().requires_grad_()
    wb = w.detach().bfloat16().requires_grad_()
    loss = LINEAR[name](xb, wb, y, bias=b, **HYPER[name])
    grads = torch.autograd.grad(loss, (xb, wb, b))
    assert loss.dtype == torch.float32
    assert grads[0].dtype == grads[1].dtype == torch.bfloat16
    # the reference: the same bf16 values, upcast, through the materialised float32 loss
    x32 = xb.detach().float().requires_grad_()
    w32 = wb.detach().float().requires_grad_()
    ref = MATERIALISED[name](x32 @ w32.T + b, y, **HYPER[name])
    ref_grads = torch.autograd.grad(ref, (x32, w32, b))
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("name", list(LINEAR))
def test_logits_of_1e4_stay_finite_and_exact(name):
    x, w, b, y = _problem(n=16, d=4, k=200, dtype=torch.float32, seed=5, scale=3000.0)
    got, want = _both(name, x, w, b, y)
    assert torch.isfinite(got[0]).all()
    assert all(torch.isfinite(g).all() for g in got[1])
    _assert_same(got, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("soft", [False, True])
def test_softmax_at_logits_of_2e4_is_as_exact_as_log_softmax(soft):
    """Logits of 2e4 +- 32, exact in float32 (multiples of 2^-9), through linear_sr_loss equal
    the float64 loss to float32 round-off: each logit's distance to its row's peak is taken
    exactly, as log_softmax does, where exp(z - lse) would scale the probabilities by up to
    1 +- 1e-3 (lse rounded to 2^-9 at 2e4)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-64, 65, (16, 4), generator=g).float().div_(16)
    w = torch.randint(-32, 33, (200, 4), generator=g).float().div_(32)
    b = torch.randint(-64, 65, (200,), generator=g).float().div_(16).add_(20_000)
    y = torch.randint(0, 200, (16,), generator=g)
    options = {"label_smoothing": 0.1} if soft else {}
    results = []
    for dtype in (torch.float32, torch.float64):
        xs, ws, bs = (t.to(dtype, copy=True).requires_grad_() for t in (x, w, b))
        loss = frlr.linear_sr_loss(xs, ws, y, bias=bs, chunk_size=7, **options)
        results.append((loss, torch.autograd.grad(loss, (xs, ws, bs))))
    assert float((x @ w.T + b).min()) > 1e4
    (loss, grads), (loss64, grads64) = results
    torch.testing.assert_close(loss.double(), loss64, rtol=1e-6, atol=0)
    for got, want in zip(grads, grads64, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6 * want.abs().max())


def test_hs_lr_threshold_survives_a_band_that_misses():
    """Logits whose sample is unrepresentative (one huge class block) still select exactly."""
    x, w, b, y = _problem(n=8, d=5, k=3000, seed=6)
    with torch.no_grad():
        w[::3] *= 40.0  # the sampled classes are far larger than the rest
    got, want = _both("hs-lr", x, w, b, y, chunk_size=500)
    _assert_same(got, want, rtol=1e-10, atol=1e-12)


def test_hs_lr_ties_share_the_remaining_places():
    """Integer logits tie everywhere: the value equals the materialised loss whatever the chunks;
    tied negatives share the places equally, so the gradient mass matches too."""
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-2, 3, (10, 3), generator=g).double().requires_grad_()
    w = torch.randint(-2, 3, (300, 3), generator=g).double().requires_grad_()
    b = torch.zeros(300, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 300, (10,), generator=g)
    results = []
    for chunk_size in (1, 37, 300):
        loss = frlr.linear_hs_lr_loss(x, w, y, bias=b, chunk_size=chunk_size)
        results.append((loss, torch.autograd.grad(loss, (x, w, b))))
    ref = frlr.hs_lr_loss(x @ w.T + b, y)
    ref_bias_grad = torch.autograd.grad(ref, b)[0]
    for loss, grads in results:
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[2].sum(), ref_bias_grad.sum(), rtol=1e-12, atol=1e-12)
        _assert_same((loss, grads), results[0], rtol=1e-12, atol=1e-12)


def test_hs_lr_zero_initialised_classifier_is_one_tie():
    """All logits equal (a zero classifier): every negative shares n/(K-1) of a place."""
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.zeros(1000, 8, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 5, 999, 500])
    loss = frlr.linear_hs_lr_loss(x, w, y, chunk_size=64)
    torch.testing.assert_close(loss, frlr.hs_lr_loss(x @ w.T, y), rtol=1e-12, atol=1e-12)
    grad_w = torch.autograd.grad(loss, w)[0]
    n = 249  # floor(25% of 999)
    share = (10.0 / n) * 0.5 * n / 999  # beta/n * sigmoid(0) * n/(K-1), per row, per negative
    expected = torch.full((1000, 8), 0.0, dtype=torch.float64)
    for i, k in enumerate(y.tolist()):
        row = torch.full((1000,), share / 4, dtype=torch.float64)
        row[k] = -0.5 / 4
        expected += row[:, None] * x[i].detach()
    torch.testing.assert_close(grad_w, expected, rtol=1e-10, atol=1e-12)


class _LargestAllocation(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_n_by_k_tensor_is_ever_allocated(name, reduction):
    n, d, k, chunk = 64, 8, 4096, 256
    x, w, b, y = _problem(n=n, d=d, k=k, dtype=torch.float32, seed=8)
    with _LargestAllocation() as probe:
        loss = LINEAR[name](x, w, y, bias=b, reduction=reduction, chunk_size=chunk)
        loss.sum().backward()
    # the weight's gradient, a few chunks, or HS-LR's per-row histogram: none grows with N x K
    bounds = (k * d, 4 * n * chunk, n * (selection.BINS + 2))
    assert probe.largest <= max(bounds) < n * k / 2, probe.largest


def test_the_default_chunk_fits_the_budget():
    assert linear.default_chunk_size(1024, 10**6) * 1024 * 4 <= linear.CHUNK_BYTES
    assert linear.default_chunk_size(1024, 10**6) % 64 == 0
    assert linear.default_chunk_size(4, 100) == 100
    assert linear.default_chunk_size(10**8, 100) == 1


def test_retain_graph_and_a_scaled_backward():
    x, w, b, y = _problem()
    loss = frlr.linear_ss_lr_loss(x, w, y, bias=b, chunk_size=9)
    first = torch.autograd.grad(3.0 * loss, (x, w, b), retain_graph=True)
    second = torch.autograd.grad(loss, (x, w, b))
    for a, c in zip(first, second, strict=True):
        torch.testing.assert_close(a, 3.0 * c)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_second_derivatives_raise(reduction):
    x, w, b, y = _problem()
    loss = frlr.linear_lr_loss(x, w, y, bias=b, reduction=reduction).sum()
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_autocast_does_not_lower_the_precision_without_native_half_products(monkeypatch):
    monkeypatch.setattr(linear.products, "HALF_PRODUCTS", False)
    x, w, b, y = _problem(dtype=torch.float32)
    plain = frlr.linear_ss_lr_loss(x, w, y, bias=b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = frlr.linear_ss_lr_loss(x, w, y, bias=b)
    torch.testing.assert_close(inside, plain)


def test_modules_and_registry_match_the_functions():
    x, w, b, y = _problem()
    for name, fn in LINEAR.items():
        module = frlr.get_linear_loss(name.upper().replace("-", "_"), **HYPER[name])
        torch.testing.assert_close(module(x, w, y, b), fn(x, w, y, bias=b, **HYPER[name]))
    assert isinstance(frlr.get_linear_loss("ss-lr"), frlr.LinearSSLRLoss)
    assert "chunk_size=5" in repr(frlr.LinearHSLRLoss(chunk_size=5))
    with pytest.raises(ValueError, match="unknown linear loss name 'hs-sr'"):
        frlr.get_linear_loss("hs-sr")
    with pytest.raises(ValueError, match="unknown linear loss name 'nosuch'; known: sr, lr"):
        frlr.get_linear_loss("nosuch")
    with pytest.raises(TypeError, match="'m'"):
        frlr.get_linear_loss("lr", m=10.0)
    with pytest.raises(ValueError, match="r must be >= 0"):
        frlr.LinearSSLRLoss(r=-1.0)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"weight": torch.randn(40, 5)}, ValueError, "weight must have shape"),
        ({"target": torch.full((12,), 40)}, ValueError, "target holds class 40 outside"),
        ({"target": torch.full((12,), -3)}, ValueError, "target holds class -3 outside"),
        ({"target": torch.zeros(12, 40)}, TypeError, "target must be int64"),
        ({"target": torch.zeros(11, dtype=torch.int64)}, ValueError, "target must have shape"),
        ({"target": torch.tensor([[1, 1]] * 12)}, ValueError, "lists class 1 twice"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be an int"),
        ({"class_offset": 3}, ValueError, "class_offset applies"),
        ({"num_classes": 50}, ValueError, "num_classes=50 differs"),
        ({"bias": torch.randn(39)}, ValueError, "bias must have shape"),
        ({"features": torch.ones(12, 6, dtype=torch.int64)}, TypeError, "features must be a"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"beta": -1.0}, ValueError, "beta must be >= 0"),
        ({"weight": torch.randn(40, 6, device="meta")}, ValueError, "weight is on meta and"),
        ({"bias": torch.randn(40, device="meta")}, ValueError, "bias is on meta and features"),
        (
            {"target": torch.zeros(12, dtype=torch.int64, device="meta")},
            ValueError,
            "target is on meta and features on cpu",
        ),
        ({"process_group": object()}, ValueError, "num_classes is required with a process"),
        (
            {"process_group": object(), "num_classes": 40},
            ValueError,
            "process_group was given but torch.distributed is not initialised",
        ),
        (
            {"process_group": object(), "num_classes": 40, "class_offset": 5},
            ValueError,
            "class_offset \\+ weight.shape\\[0\\] = 45 exceeds num_classes = 40",
        ),
    ],
)
def test_bad_inputs_name_the_argument(change, error, match):
    x, w, b, y = _problem(dtype=torch.float32)
    args = {"features": x, "weight": w, "target": y, "bias": b, **change}
    with pytest.raises(error, match=match):
        frlr.linear_ss_lr_loss(args.pop("features"), args.pop("weight"), args.pop("target"), **args)


def test_softmax_takes_class_indices_only():
    x, w, b, y = _problem()
    with pytest.raises(ValueError, match="single-label"):
        frlr.linear_sr_loss(x, w, y.unsqueeze(1), bias=b)
    with pytest.raises(ValueError, match="target_weights pair with positive lists"):
        frlr.linear_sr_loss(x, w, y, bias=b, target_weights=torch.ones(12), label_smoothing=0.1)


@pytest.mark.parametrize("name", list(LINEAR))
def test_a_float64_weight_or_bias_computes_in_float64(name):
    """float32 features and bias with a float64 weight: the float64 loss, as torch's promotion
    gives (not the weight rounded to float32); each gradient in its input's dtype."""
    x, w, b, y = _problem()
    x32 = x.detach().float().requires_grad_()
    b32 = b.detach().float().requires_grad_()
    mixed = LINEAR[name](x32, w, y, bias=b32, **HYPER[name])
    mixed_grads = torch.autograd.grad(mixed, (x32, w, b32))
    x64 = x32.detach().double().requires_grad_()
    b64 = b32.detach().double().requires_grad_()
    wide = LINEAR[name](x64, w, y, bias=b64, **HYPER[name])
    wide_grads = torch.autograd.grad(wide, (x64, w, b64))
    assert mixed.dtype == torch.float64 and torch.equal(mixed, wide)
    assert [g.dtype for g in mixed_grads] == [torch.float32, torch.float64, torch.float32]
    for got, want in zip(mixed_grads, wide_grads, strict=True):  # HS-LR sums db in float32
        torch.testing.assert_close(got, want.to(got.dtype))
    assert torch.equal(frlr.linear_argmax(x32, w, b32), (x64 @ w.T + b64).argmax(1))


def test_sr_matches_torch_cross_entropy_with_ignored_rows():
    x, w, b, y = _problem(dtype=torch.float32)
    y[:3] = -100
    loss = frlr.linear_sr_loss(x, w, y, bias=b, chunk_size=11)
    torch.testing.assert_close(loss, F.cross_entropy(x @ w.T + b, y))


@pytest.mark.parametrize("name", list(LINEAR))
def test_an_empty_batch_gives_zero_and_zero_gradients(name):
    x = torch.randn(0, 4, requires_grad=True)
    w = torch.randn(30, 4, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        loss = LINEAR[name](x, w, torch.zeros(0, dtype=torch.int64), reduction=reduction)
        loss.sum().backward()
        assert float(loss.detach().sum()) == 0.0 and float(w.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("name", list(LINEAR))
def test_a_frozen_classifier_or_frozen_features(name):
    """Only the gradients asked for are built, and they are the materialised ones."""
    x, w, b, y = _problem()
    _, want = _both(name, x, w, b, y)[1]
    frozen_w = LINEAR[name](x, w.detach(), y, bias=b.detach(), **HYPER[name])
    torch.testing.assert_close(torch.autograd.grad(frozen_w, x)[0], want[0])
    frozen_x = LINEAR[name](x.detach(), w, y, bias=b, **HYPER[name])
    grads = torch.autograd.grad(frozen_x, (w, b))
    torch.testing.assert_close(grads[0], want[1])
    torch.testing.assert_close(grads[1], want[2])


# ---------------------------------------------------------------------------------------------
# Soft targets: class lists with target_weights, and label_smoothing
# ---------------------------------------------------------------------------------------------


def _soft_target(n: int, k: int, seed: int = 20):
    """(N, 4) class lists with ignore padding, their weights, and the dense sum of the weights:
    a row of pure padding, a class listed twice (summed), a weight of exactly 1 (HS-LR's only
    non-candidate at eps = 0), a weight of 0."""
    g = torch.Generator().manual_seed(seed)
    lists = torch.stack([torch.randperm(k, generator=g)[:4] for _ in range(n)])
    weights = torch.rand(n, 4, generator=g, dtype=torch.float64) * 0.5
    lists[:, 3] = -100
    weights[:, 3] = 7.0  # padding: ignored whatever its weight
    lists[1] = -100
    lists[2, 1] = lists[2, 0]  # listed twice: weights summed
    weights[3, 0] = 1.0
    weights[4, 2] = 0.0
    dense = torch.zeros(n, k, dtype=torch.float64)
    for i, row in enumerate(lists.tolist()):
        for p, c in enumerate(row):
            if c >= 0:
                dense[i, c] += weights[i, p]
    return lists, weights, dense


def _through_logits(name, x, w, b, dense, reduction, upstream, kept=None, fn=None):
    """(loss, grads of x, w, b) of a loss of the logits on the dense target ``dense`` of the
    rows ``kept`` (all when None); the other rows' losses are 0."""
    kept = torch.arange(x.shape[0]) if kept is None else kept
    logits = x @ w.T if b is None else x @ w.T + b
    fn = fn or (lambda z, t, **o: MATERIALISED[name](z, t, **HYPER[name], **o))
    loss = fn(logits[kept], dense[kept], reduction=reduction)
    if reduction == "none":
        loss = torch.zeros(x.shape[0], dtype=loss.dtype).index_put((kept,), loss)
    total = loss.sum() if upstream is None else (loss * upstream).sum()
    inputs = (x, w) if b is None else (x, w, b)
    return loss, torch.autograd.grad(total, inputs)


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_bias", [True, False])
def test_soft_targets_equal_the_materialised_loss_and_the_reference(
    name, reduction, eps, with_bias
):
    x, w, b, _ = _problem(n=10, k=40, seed=21)
    b = b if with_bias else None
    lists, weights, sparse = _soft_target(10, 40)
    dense = (1 - eps) * sparse + eps / 40
    upstream = torch.rand(10, dtype=torch.float64) if reduction == "none" else None
    want = _through_logits(name, x, w, b, dense, reduction, upstream)
    exact = _through_logits(
        name, x, w, b, dense, reduction, upstream,
        fn=lambda z, t, **o: reference_loss(name, z, t, **HYPER[name], **o),
    )  # fmt: skip
    _assert_close_grads(want, exact)
    for chunk_size in (1, 7, 40):
        loss = LINEAR[name](
            x, w, lists, bias=b, target_weights=weights, label_smoothing=eps,
            reduction=reduction, chunk_size=chunk_size, **HYPER[name],
        )  # fmt: skip
        total = loss.sum() if upstream is None else (loss * upstream).sum()
        got = (loss, torch.autograd.grad(total, (x, w) if b is None else (x, w, b)))
        _assert_close_grads(got, want)


def _assert_close_grads(got, want):
    (loss, grads), (loss_m, grads_m) = got, want
    torch.testing.assert_close(loss, loss_m, rtol=1e-10, atol=1e-12)
    for label, a, c in zip(("features", "weight", "bias"), grads, grads_m, strict=False):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12, msg=lambda m, n=label: f"{n}: {m}")


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_label_smoothing_of_class_indices_with_ignored_rows(name, reduction):
    """Index targets (N,) smoothed: t = (1 - eps) onehot(y) + eps/K on the rows kept, the
    ignored rows dropped (their loss 0, outside the mean); HS-LR's true class is a candidate."""
    x, w, b, y = _problem(n=12, k=40, seed=22)
    y[[2, 7]] = -100
    kept = (y != -100).nonzero()[:, 0]
    dense = F.one_hot(y.clamp(min=0), 40).double() * 0.8 + 0.2 / 40
    upstream = torch.rand(12, dtype=torch.float64) if reduction == "none" else None
    want = _through_logits(name, x, w, b, dense, reduction, upstream, kept)
    for chunk_size in (1, 9):
        loss = LINEAR[name](
            x, w, y, bias=b, label_smoothing=0.2, reduction=reduction, chunk_size=chunk_size,
            **HYPER[name],
        )  # fmt: skip
        total = loss.sum() if upstream is None else (loss * upstream).sum()
        _assert_close_grads((loss, torch.autograd.grad(total, (x, w, b))), want)
    if name == "sr":  # and F.cross_entropy's own smoothing of class indices
        torch.testing.assert_close(
            frlr.linear_sr_loss(x, w, y, bias=b, label_smoothing=0.2, reduction=reduction),
            F.cross_entropy(x @ w.T + b, y, label_smoothing=0.2, reduction=reduction),
        )


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_unit_weights_without_smoothing_are_todays_targets_exactly(name, reduction):
    """target_weights of 1 and eps = 0 are the plain positive lists (bit for bit); for SR,
    lists of one class are its class indices."""
    x, w, b, y = _problem(n=16, d=8, k=300, dtype=torch.float32, seed=23)
    lists = torch.stack([y, (y + 1) % 300, (y + 7) % 300], 1)
    lists[0, 2], lists[1] = -100, -100
    plain, weighted = (y, y[:, None]) if name == "sr" else (lists, lists)
    runs = []
    for target, options in (
        (plain, {}),
        (weighted, {"target_weights": torch.ones(weighted.shape)}),
    ):
        options = {**options, "label_smoothing": 0.0}
        loss = LINEAR[name](
            x, w, target, bias=b, reduction=reduction, chunk_size=37, **HYPER[name], **options
        )
        runs.append((loss, torch.autograd.grad(loss.sum(), (x, w, b))))
    (loss, grads), (loss_w, grads_w) = runs
    assert torch.equal(loss, loss_w)
    assert all(torch.equal(a, c) for a, c in zip(grads, grads_w, strict=True))


@pytest.mark.parametrize("name", list(LINEAR))
def test_weights_of_one_class_summing_to_one_make_that_class(name):
    """Weights of a class listed more than once that sum to 1 up to float32 round-off (these
    three sum to 1 - 2^-24 in float32) count as exactly 1, as the dense mix lerp(e_y, e_y, lam)
    = e_y of a mixup pair that agrees: at eps = 0 HS-LR then never selects the class."""
    x, w, b, y = _problem(n=8, d=8, k=200, dtype=torch.float32, seed=24)
    split = torch.tensor([0.16075371633976843, 0.3160129004112631, 0.5232333832489683])
    pairs = torch.stack([y, y, y], 1)
    weights = split.expand(8, 3)
    one = torch.ones(8, 1)
    loss = LINEAR[name](x, w, pairs, bias=b, target_weights=weights, **HYPER[name])
    want = LINEAR[name](x, w, y[:, None], bias=b, target_weights=one, **HYPER[name])
    assert torch.equal(loss, want)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"target_weights": torch.ones(12), "index": True}, ValueError, "pair with positive"),
        ({"target_weights": torch.ones(12, 3)}, ValueError, "target_weights must have the shape"),
        ({"target_weights": torch.full((12, 2), 1.5)}, ValueError, "must lie in \\[0, 1\\]"),
        ({"target_weights": torch.full((12, 2), -0.1)}, ValueError, "must lie in \\[0, 1\\]"),
        ({"target_weights": torch.full((12, 2), torch.nan)}, ValueError, "must lie in"),
        ({"target_weights": torch.ones(12, 2, dtype=torch.int64)}, TypeError, "a float tensor"),
        ({"target_weights": [[1.0, 1.0]] * 12}, TypeError, "target_weights must be a torch"),
        (
            {"target_weights": torch.ones(12, 2, device="meta")},
            ValueError,
            "target_weights is on meta and features on cpu",
        ),
        ({"target_weights": torch.full((12, 2), 0.6), "twice": True}, ValueError, "sum to"),
        ({"label_smoothing": 1.0}, ValueError, "label_smoothing must be in \\[0, 1\\)"),
        ({"label_smoothing": -0.1}, ValueError, "label_smoothing must be in"),
        ({"label_smoothing": float("nan")}, ValueError, "label_smoothing must be in"),
        ({"label_smoothing": "0.1"}, TypeError, "label_smoothing must be a real number"),
    ],
)
def test_bad_soft_targets_name_the_argument(change, error, match):
    x, w, b, y = _problem(dtype=torch.float32)
    change = dict(change)
    lists = torch.stack([y, (y + 1) % 40], 1)
    if change.pop("twice", False):
        lists[:, 1] = lists[:, 0]
    weights = change.pop("target_weights", None)
    target = y if change.pop("index", weights is None) else lists
    with pytest.raises(error, match=match):
        frlr.linear_hs_lr_loss(x, w, target, bias=b, target_weights=weights, **change)


@pytest.mark.parametrize("name", list(LINEAR))
def test_soft_targets_allocate_no_n_by_k_tensor(name):
    n, d, k, chunk = 64, 8, 4096, 256
    x, w, b, y = _problem(n=n, d=d, k=k, dtype=torch.float32, seed=25)
    pairs = torch.stack([y, y.flip(0)], 1)
    weights = torch.tensor([[0.6, 0.4]]).expand(n, 2)
    with _LargestAllocation() as probe:
        loss = LINEAR[name](
            x, w, pairs, bias=b, target_weights=weights, label_smoothing=0.1, chunk_size=chunk
        )
        loss.backward()
    bounds = (k * d, 4 * n * chunk, n * (selection.BINS + 2))
    assert probe.largest <= max(bounds) < n * k / 2, probe.largest


def test_the_modules_take_soft_targets():
    x, w, b, _ = _problem()
    lists, weights, _ = _soft_target(12, 40)
    module = frlr.LinearSSLRLoss(r=1.5, beta=4.0, label_smoothing=0.1)
    want = frlr.linear_ss_lr_loss(
        x, w, lists, bias=b, target_weights=weights, label_smoothing=0.1, r=1.5, beta=4.0
    )
    torch.testing.assert_close(module(x, w, lists, b, weights), want)
    assert "label_smoothing=0.1" in repr(module)
    plain = frlr.linear_ss_lr_loss(x, w, lists, bias=b, target_weights=weights, r=1.5, beta=4.0)
    torch.testing.assert_close(module(x, w, lists, b, weights, label_smoothing=0.0), plain)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        frlr.get_linear_loss("lr", label_smoothing=1.5)


def _ss_lr_eager_and_compiled(reduction: str):
    x, w, b, y = _problem(n=20, d=8, k=70, dtype=torch.float32, seed=4)
    y[3] = -100
    out = []
    for compiled in (False, True):
        loss = frlr.linear_ss_lr_loss(
            x, w, y, bias=b, r=1.5, reduction=reduction, chunk_size=30, compiled=compiled
        )
        total = loss.sum() if reduction == "none" else loss
        out.append((loss, torch.autograd.grad(total, (x, w, b))))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_compiled_ss_lr_equals_the_eager_chunks(reduction):
    """compiled=True: one compiled loop per chunk (30, 30 and a ragged 10 classes), the same
    values and gradients to float32 round-off, ignored rows included."""
    eager, compiled = _ss_lr_eager_and_compiled(reduction)
    _assert_same(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_ss_lr_falls_back_to_eager_with_one_warning(monkeypatch):
    from frlr.torch import fused

    def unavailable(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(fused, "_chunk_fn", None)
    monkeypatch.setattr(fused, "_UNAVAILABLE", set())
    monkeypatch.setattr(fused, "_COMPILED", {})
    monkeypatch.setattr(fused, "_warned", False)
    monkeypatch.setattr(fused.torch, "compile", unavailable)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        eager, compiled = _ss_lr_eager_and_compiled("mean")
    _assert_same(compiled, eager, rtol=0, atol=0)


def test_compiled_must_be_a_bool():
    x, w, _, y = _problem()
    with pytest.raises(TypeError, match="compiled"):
        frlr.linear_ss_lr_loss(x, w, y, compiled="yes")
    with pytest.raises(TypeError, match="compiled"):
        frlr.LinearSSLRLoss(compiled=1)
    assert frlr.get_linear_loss("ss-lr", compiled=True).options["compiled"] is True
