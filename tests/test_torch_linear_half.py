"""The linear losses' low-precision contract (issue 25): bfloat16 and float16 features and
weights multiply in their own dtype (where the hardware does; forced here either way with
``products.HALF_PRODUCTS``), the maths in float32, the gradients in each input's dtype.

**The contract.** With half-precision inputs x, W, b of dtype h, a loss's value and its three
gradients are within ``2 eps(h)`` (relative, with an absolute floor of that times the tensor's
largest entry) of

* the materialised frlr loss computed the way a user would in h, ``frlr.<loss>(x @ W.T + b)``
  with x, W, b in h, and
* the float64 reference of the same h values (``tests/loss_reference.py``).

Why ``2 eps``: a logit is rounded once to h (unit roundoff u = eps / 2) where the product cannot
come out in float32; a gradient entry's terms carry the per-logit gradient's cast to h and the
product's rounding to h (u each): three roundings of u, 1.5 eps, and ``2 eps`` with the float32
sums' share. The materialised loss in h rounds the logits, their gradient and the products
likewise, so the two are within the bound of each other. Measured: at most 0.7 eps.

**HS-LR** selects on float32 logits (see `frlr.torch.linear.products`): exactly the top n
of the logits it computes, ties shared, which are exact sums of exact products for half inputs
of few significant bits. On the degenerate classifiers of issue 24 (zero, repeated and
near-repeated rows, ties beyond a bucket) rounded to bf16/fp16 -- where near-repeated rows
become exact ties -- it equals the materialised loss on those logits.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import degenerate
import frlr.torch as frlr
from frlr.torch.linear import products
from loss_reference import reference_loss
from test_torch_linear import HYPER, LINEAR, MATERIALISED
from test_torch_linear_degenerate import run_case

HALF = [torch.bfloat16, torch.float16]
N, D, K = 16, 32, 200


def half_rtol(dtype: torch.dtype) -> float:
    """The contract's tolerance (see the module docstring)."""
    return 2 * torch.finfo(dtype).eps


@pytest.fixture(params=[True, False], ids=["half-products", "float32-products"])
def half_products(request, monkeypatch) -> bool:
    """Both ways of multiplying half inputs, whatever this machine's hardware would choose."""
    monkeypatch.setattr(products, "HALF_PRODUCTS", request.param)
    return request.param


@functools.cache
def half_problem(dtype: torch.dtype, seed: int = 0):
    """x, W, b in ``dtype`` (unit-variance logits, a bias), class indices with an ignored row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g)
    w = torch.randn(K, D, generator=g) / D**0.5
    b = torch.randn(K, generator=g) * 0.5
    y = torch.randint(0, K, (N,), generator=g)
    y[3] = -100
    return x.to(dtype), w.to(dtype), b.to(dtype), y


def value_and_grads(loss_of, inputs, reduction: str):
    """The loss and the gradients of sum(upstream * loss) (upstream 0.5 .. 1.5 over "none"
    rows, 0.7 for a scalar: the backward's scaling counts)."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    loss = loss_of(*leaves)
    upstream = torch.linspace(0.5, 1.5, loss.numel()) if reduction == "none" else 0.7
    total = (loss * upstream).sum()
    return loss.detach(), torch.autograd.grad(total, leaves)


def assert_near(got, want, rtol: float, what: str) -> None:
    want = want.detach().double()
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(
        got.detach().double(), want, rtol=rtol, atol=rtol * scale,
        msg=lambda message: f"{what}: {message}",
    )  # fmt: skip


def assert_all_near(got, want, rtol: float, label: str) -> None:
    assert_near(got[0], want[0], rtol, f"{label} loss")
    for what, a, c in zip(("features", "weight", "bias"), got[1], want[1], strict=True):
        assert_near(a, c, rtol, f"{label} {what} gradient")


@functools.cache
def float64_reference(name: str, dtype: torch.dtype, reduction: str):
    """tests/loss_reference.py on the float64 values of the half inputs."""
    x, w, b, y = half_problem(dtype)

    def loss_of(x, w, b):
        return reference_loss(name, x @ w.T + b, y, reduction=reduction, **HYPER[name])

    return value_and_grads(loss_of, (x.double(), w.double(), b.double()), reduction)


def rows_selected_alike(dtype: torch.dtype) -> torch.Tensor:
    """The rows whose gap between the n-th and (n+1)-th largest negative logit is wider than
    four roundings of a logit to ``dtype``: there the materialised HS-LR in that dtype selects
    the classes the float32 logits select (elsewhere either selection is a top n of its own
    logits, and a gradient column moves with the class that differs)."""
    x, w, b, y = half_problem(dtype)
    z = x.double() @ w.double().T + b.double()
    n = max(1, int(HYPER["hs-lr"]["m"] * (K - 1) // 100))
    alike = []
    for row, label in zip(z, y.tolist(), strict=True):
        negatives = row[torch.arange(K) != label].sort(descending=True).values
        rounding = torch.finfo(dtype).eps * float(negatives[n - 1].abs())
        alike.append(float(negatives[n - 1] - negatives[n]) > 4 * rounding)
    return torch.tensor(alike)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", list(LINEAR))
def test_half_inputs_meet_the_materialised_half_loss_and_the_float64_reference(
    name, dtype, reduction, half_products
):
    x, w, b, y = half_problem(dtype)
    options = {"reduction": reduction, **HYPER[name]}
    got = value_and_grads(
        lambda x, w, b: LINEAR[name](x, w, y, bias=b, chunk_size=47, **options), (x, w, b),
        reduction,
    )  # fmt: skip
    assert got[0].dtype == torch.float32
    assert [g.dtype for g in got[1]] == [dtype] * 3
    rtol = half_rtol(dtype)
    assert_all_near(got, float64_reference(name, dtype, reduction), rtol, "float64 reference")
    if name == "hs-lr":  # the rows the materialised loss in the dtype selects alike
        alike = rows_selected_alike(dtype)
        assert int(alike.sum()) >= N // 4
        x, y = x[alike], y[alike]
        got = value_and_grads(
            lambda x, w, b: LINEAR[name](x, w, y, bias=b, chunk_size=47, **options), (x, w, b),
            reduction,
        )  # fmt: skip
    materialised = value_and_grads(
        lambda x, w, b: MATERIALISED[name](x @ w.T + b, y, **options), (x, w, b), reduction
    )
    assert_all_near(got, materialised, rtol, f"materialised in {dtype}")


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", ["lr", "ss-lr", "hs-lr"])  # softmax is single-label
def test_positive_lists_in_half_precision(name, dtype, half_products):
    """Multi-label lists (a padded row, a row of none) against the materialised loss on the
    multi-hot target: in the dtype, and HS-LR on the float32 logits of the same values (its
    selection is exact on those, see ``test_hs_lr_selects_the_top_n_of_the_logits_it_computes``;
    the dtype's logits select otherwise at near-ties)."""
    x, w, b, y = half_problem(dtype)
    lists = torch.stack([y.clamp(min=0), (y.clamp(min=0) + 7) % K], 1)
    lists[0, 1], lists[5] = -100, -100
    dense = degenerate.dense(lists, K, torch.float32)
    got = value_and_grads(
        lambda x, w, b: LINEAR[name](x, w, lists, bias=b, chunk_size=64, **HYPER[name]),
        (x, w, b), "mean",
    )  # fmt: skip
    inputs = tuple(t.float() for t in (x, w, b)) if name == "hs-lr" else (x, w, b)
    want = value_and_grads(
        lambda x, w, b: MATERIALISED[name](x @ w.T + b, dense, **HYPER[name]), inputs, "mean"
    )
    assert_all_near(got, want, half_rtol(dtype), "multi-hot")


def exact_half(shape, g: torch.Generator) -> torch.Tensor:
    """float32 multiples of 1/64 in (-1, 1): 6 significant bits, exact in bf16 and fp16."""
    return torch.randint(-63, 64, shape, generator=g).float() / 64


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("chunk_size", [1, 13, None])
def test_hs_lr_selects_the_top_n_of_the_logits_it_computes(dtype, chunk_size, half_products):
    """Inputs of 6 significant bits: every logit the loss computes is exact (a float32 sum of
    exact products), so HS-LR equals the materialised loss on the float32 logits of the same
    values to float32 round-off -- the same classes selected, ties shared -- and each
    gradient is that gradient rounded to the dtype. One row's logits are all tied (a zero
    feature row: every logit is its bias, and the bias is constant)."""
    g = torch.Generator().manual_seed(3)
    x, w, y = (
        exact_half((N, 24), g),
        exact_half((300, 24), g),
        torch.randint(0, 300, (N,), generator=g),
    )
    b = torch.full((300,), 0.25)
    x[2] = 0.0
    options = {"reduction": "none", **HYPER["hs-lr"]}
    half = tuple(t.to(dtype) for t in (x, w, b))
    got = value_and_grads(
        lambda x, w, b: frlr.linear_hs_lr_loss(x, w, y, bias=b, chunk_size=chunk_size, **options),
        half, "none",
    )  # fmt: skip
    want = value_and_grads(
        lambda x, w, b: frlr.linear_hs_lr_loss(x, w, y, bias=b, chunk_size=chunk_size, **options),
        (x, w, b), "none",
    )  # fmt: skip
    assert_near(got[0], want[0], 1e-6, "loss")
    for what, a, c in zip(("features", "weight", "bias"), got[1], want[1], strict=True):
        assert_near(a, c.to(dtype), half_rtol(dtype), f"{what} gradient")
    materialised = frlr.hs_lr_loss(x @ w.T + b, y, **options)  # float32, top-k on a tie
    torch.testing.assert_close(got[0], materialised, rtol=1e-6, atol=1e-6)


def half_case(case: degenerate.Case, dtype: torch.dtype) -> tuple[degenerate.Case, degenerate.Case]:
    """The case in ``dtype``, and its float32 twin holding the same values (the reference)."""
    parts = {"x": case.x, "w": case.w, "b": case.b}
    half = {k: None if v is None else v.to(dtype) for k, v in parts.items()}
    wide = {k: None if v is None else v.float() for k, v in half.items()}
    make = lambda t: degenerate.Case(  # noqa: E731
        case.kind, t["x"], t["w"], t["b"], case.group, case.y, case.lists, case.chunk_size,
        case.m,
    )  # fmt: skip
    return make(half), make(wide)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=degenerate.cases(kinds=("zero", "repeated", "near", "big_tie", "normal")),
    dtype=st.sampled_from(HALF),
    target_kind=st.sampled_from(degenerate.TARGETS),
)
def test_hs_lr_on_degenerate_classifiers_in_half_precision(case, dtype, target_kind):
    """Issue 24's degenerate classifiers rounded to bf16 or fp16, the products in that dtype:
    HS-LR equals the materialised loss on the float32 logits of the same values (ties
    compared summed over the tied classes), the gradients to the dtype's rounding."""
    products.HALF_PRODUCTS = True
    try:
        half, wide = half_case(case, dtype)
        got, upstream = _run_hs_lr(half, target_kind)
        want = degenerate.reference("hs-lr", wide, target_kind, upstream.float())
        found = degenerate.check("hs-lr", wide, target_kind, got, want, half_rtol(dtype))
    finally:
        products.HALF_PRODUCTS = None
    assert found == []


def _run_hs_lr(case: degenerate.Case, target_kind: str):
    (rows, grads), upstream = run_case("hs-lr", case, target_kind)
    grads = None if grads is None else tuple(g.float() for g in grads)
    return (rows, grads), upstream


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", list(LINEAR))
def test_autocast_multiplies_in_its_dtype(name, dtype, half_products):
    """float32 features and classifier under CPU autocast: with half products the loss is the
    loss of the inputs cast to autocast's dtype (the bias stays float32, as ``F.linear``'s
    under autocast is added in the output's dtype), else the float32 loss; the gradients come
    back in float32, the parameters' dtype."""
    x, w, b, y = (t.float() if t.is_floating_point() else t for t in half_problem(torch.float32))
    fn = lambda x, w, b: LINEAR[name](x, w, y, bias=b, chunk_size=47, **HYPER[name])  # noqa: E731

    def under_autocast(x, w, b):
        with torch.autocast("cpu", dtype=dtype):
            return fn(x, w, b)

    got = value_and_grads(under_autocast, (x, w, b), "mean")
    assert [g.dtype for g in got[1]] == [torch.float32] * 3
    if half_products:  # the same products; the cast's backward rounds dX to the dtype once more
        want = value_and_grads(lambda x, w, b: fn(x.to(dtype), w.to(dtype), b), (x, w, b), "mean")
        assert_all_near(got, want, half_rtol(dtype), "the inputs cast")
    else:
        assert_all_near(got, value_and_grads(fn, (x, w, b), "mean"), 1e-6, "float32")


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_ss_lr_in_bf16_equals_the_eager_chunks(reduction, half_products):
    """compiled=True with bf16 inputs: the compiled chunk takes the float32 logits of the bf16
    products, the same values and gradients as the eager chunks."""
    x, w, b, y = half_problem(torch.bfloat16)
    results = []
    for compiled in (False, True):
        results.append(
            value_and_grads(
                lambda x, w, b, c=compiled: frlr.linear_ss_lr_loss(
                    x, w, y, bias=b, reduction=reduction, chunk_size=64, compiled=c
                ),
                (x, w, b),
                reduction,
            )
        )
    from frlr.torch import fused

    assert "ss-lr-chunk" not in fused._UNAVAILABLE
    eager, compiled = results
    assert_near(compiled[0], eager[0], 1e-5, "loss")
    for what, a, c in zip(("features", "weight", "bias"), compiled[1], eager[1], strict=True):
        assert_near(a, c, half_rtol(torch.bfloat16), f"{what} gradient")


def test_which_dtype_the_products_take(monkeypatch):
    """bf16/fp16 pairs multiply in their dtype where native (forced here), mixed pairs and
    float64 in the compute dtype, autocast's dtype under autocast; auto on a CPU follows its
    half-precision instructions."""
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    monkeypatch.setattr(products, "HALF_PRODUCTS", True)
    for dtype in HALF:
        assert products.product_dtype(x.to(dtype), w.to(dtype), torch.float32) == dtype
    assert products.product_dtype(x.bfloat16(), w.half(), torch.float32) == torch.float32
    assert products.product_dtype(x.bfloat16(), w, torch.float32) == torch.float32
    assert products.product_dtype(x.double(), w.bfloat16(), torch.float64) == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert products.product_dtype(x, w, torch.float32) == torch.bfloat16
        assert products.product_dtype(x.half(), w.half(), torch.float32) == torch.bfloat16
        assert products.product_dtype(x.double(), w, torch.float64) == torch.float64
    monkeypatch.setattr(products, "HALF_PRODUCTS", False)
    assert products.product_dtype(x.bfloat16(), w.bfloat16(), torch.float32) == torch.float32
    monkeypatch.setattr(products, "HALF_PRODUCTS", None)
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    got = products.product_dtype(x.bfloat16(), w.bfloat16(), torch.float32)
    assert got == (torch.bfloat16 if native else torch.float32)


def test_float16_gradients_below_its_normal_range_are_kept(half_products):
    """SS-LR's per-logit gradients of the negatives at K = 20,000, mean over 64 rows, are
    ~1e-7, below float16's normal numbers (6e-5): the chunk is scaled by a power of two before
    the cast, so the float32 weight gradient (autocast's parameters) keeps them to float16's
    precision (a plain cast would keep a few bits of each, or none)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 16, generator=g)
    w = (torch.randn(20_000, 16, generator=g) / 4).requires_grad_()
    y = torch.randint(0, 20_000, (64,), generator=g)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = frlr.linear_ss_lr_loss(x, w, y, chunk_size=4096)
    (got,) = torch.autograd.grad(loss, w)
    w16 = w.detach().half().float().requires_grad_()
    (want,) = torch.autograd.grad(frlr.ss_lr_loss(x.half().float() @ w16.T, y), w16)
    negatives = torch.ones(20_000, dtype=torch.bool).index_fill_(0, y, False)
    assert float(want[negatives].abs().median()) < torch.finfo(torch.float16).tiny
    assert_near(got[negatives], want[negatives], half_rtol(torch.float16), "negatives' gradient")
