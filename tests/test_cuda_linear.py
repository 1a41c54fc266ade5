"""The logits-free ("linear") losses on CUDA against the CPU in float64, the float64 reference and
the materialised losses: every step of ``frlr.torch.linear`` that runs on the device (the chunked
matrix products, HS-LR's streamed threshold, the compiled SS-LR chunk, ``linear_argmax``), values
and the three gradients (features, weight, bias).

Like ``tests/test_cuda.py`` these are marked ``cuda``: without a CUDA device they skip ("needs a
CUDA device"), as in CI, and ``benchmarks/gpu_check.sh`` runs them on one (``pytest -m cuda``).

``FRLR_CUDA_TESTS_DEVICE`` names the device standing in for the GPU (default ``cuda``).

    FRLR_CUDA_TESTS_DEVICE=cpu pytest -m cuda tests/test_cuda_linear.py

runs every test with the CPU as the device, so that the calls, shapes, dtypes, tolerances and
helpers are all exercised before a GPU is lent: a device-against-CPU comparison then compares the
CPU with itself, but the float32 results must still meet the float64 ones at the stated
tolerances. Three checks differ there: the mixed-device refusal mixes the CPU with the meta
device, the memory check measures the largest tensor a call creates (the CPU keeps no allocator
statistics), and ``compiled=True`` compiles C++ rather than Triton.

The inputs are exact: multiples of 1/256 in (-1, 1) (features times a power of two), 8
significant bits. Every product is then exact in float32 and so is every partial sum of a logit
(|z| <= d + 1 < 256, in steps of 2^-16: 24 bits), so the logits are the same on every device, in
every summation order and chunking, in float32 and float64, from bf16, fp16 or TF32 inputs. The
comparisons measure the losses' own round-off, and HS-LR's hard selection sees the same logits
everywhere (where the materialised top-k must pick the same classes, the data is checked to have
no tie at the threshold).
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import frlr.torch as frlr
from frlr.torch import fused, linear
from frlr.torch.linear import products
from loss_reference import reference_loss
from test_torch_linear import HYPER, LINEAR, MATERIALISED, _soft_target

DEVICE = torch.device(os.environ.get("FRLR_CUDA_TESTS_DEVICE", "cuda"))
"""The device under test: a GPU, or the CPU standing in for one."""
OTHER = torch.device("meta") if DEVICE.type == "cpu" else torch.device("cpu")
"""A device the inputs must not be mixed with DEVICE's."""

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

N, D, K = 12, 6, 40
"""The small problem: with chunk_size=1 its 40 classes are 40 chunks."""
KINDS = ("index", "lists", "soft")
CASES = [(name, kind) for name in LINEAR for kind in KINDS if (name, kind) != ("sr", "lists")]
"""Every loss with index targets (an ignored row), positive lists padded with ignore_index (a
row without a positive) and soft targets (target_weights with label_smoothing); softmax is
single-label, so SR takes no lists."""
SMOOTHING = 0.1
RTOL = 1e-5
"""The small problem in float32: a value or gradient entry sums at most K = 40 (or N = 12) terms
each within a few ulps (6e-8) of exact, so it is within ~40 x 6e-8 = 2.4e-6 of the float64
result relative to its terms; 1e-5 leaves a 4x margin. ``assert_near`` floors the absolute
tolerance at rtol times the tensor's largest entry: an entry that cancels to near 0 keeps the
round-off of the terms that cancelled."""

HALF_RTOL = {dtype: 2 * torch.finfo(dtype).eps for dtype in (torch.bfloat16, torch.float16)}
"""The half-precision contract's tolerance (tests/test_torch_linear_half.py): a logit rounded to
the dtype where the product cannot come out in float32, a gradient entry's per-logit gradient
cast to the dtype and its product rounded to it."""

Inputs = tuple[Tensor, ...]
Result = tuple[Tensor, tuple[Tensor, ...]]
"""A loss and its gradients of (features, weight, bias)."""


# ---------------------------------------------------------------------------------------------
# Problems and comparisons
# ---------------------------------------------------------------------------------------------


def exact(shape: tuple[int, ...], g: torch.Generator, scale: float = 1.0) -> Tensor:
    """float32 multiples of scale / 256 in (-scale, scale): 8 significant bits (see above)."""
    return torch.randint(-255, 256, shape, generator=g).float() * (scale / 256)


def exact_problem(n: int, d: int, k: int, seed: int, scale: float = 1.0):
    """CPU float32 features (times ``scale``, a power of two), classifier and bias, and class
    indices; d + 1 < 256 keeps every partial sum of a logit exact."""
    assert d + 1 < 256
    g = torch.Generator().manual_seed(seed)
    x, w, b = exact((n, d), g, scale), exact((k, d), g), exact((k,), g)
    return x, w, b, torch.randint(0, k, (n,), generator=g)


@dataclass(frozen=True)
class Case:
    """A problem on the CPU: exact inputs, the linear losses' target and soft options, and the
    target of the materialised loss and the reference (the same indices, or the dense target)."""

    x: Tensor
    w: Tensor
    b: Tensor
    target: Tensor
    dense: Tensor
    options: dict[str, object] = field(default_factory=dict)

    def inputs(self, device: torch.device | str, dtype: torch.dtype) -> Inputs:
        return tuple(t.to(device, dtype) for t in (self.x, self.w, self.b))

    def dense_on(self, device: torch.device | str, dtype: torch.dtype) -> Tensor:
        t = self.dense
        return t.to(device, dtype) if t.is_floating_point() else t.to(device)

    def options_on(self, device: torch.device | str) -> dict[str, object]:
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.options.items()}


@functools.cache
def small_case(kind: str, zero_classifier: bool = False) -> Case:
    """The small problem with ``kind`` targets; with ``zero_classifier`` every logit is 0."""
    x, w, b, y = exact_problem(N, D, K, seed=1)
    if zero_classifier:
        w, b = torch.zeros_like(w), torch.zeros_like(b)
    if kind == "index":
        y[3] = -100  # an ignored row
        case = Case(x, w, b, y, y)
    elif kind == "lists":
        hot = torch.zeros(N, K)
        hot[torch.arange(N), y] = 1.0
        hot[torch.arange(N), (y + 5) % K] = 1.0
        hot[2, :3] = 1.0  # a longer list
        hot[0] = 0.0  # no positive: a row of padding
        case = Case(x, w, b, frlr.positive_lists(hot), hot)
    else:
        lists, weights, sparse = _soft_target(N, K)
        dense = (1 - SMOOTHING) * sparse + SMOOTHING / K
        soft = {"target_weights": weights, "label_smoothing": SMOOTHING}
        case = Case(x, w, b, lists, dense, soft)
    if not zero_classifier:
        assert (hs_lr_threshold_gaps(case) > 0).all(), "a tie at HS-LR's threshold: reseed"
    return case


def hs_lr_threshold_gaps(case: Case) -> Tensor:
    """Per counted row, the gap between HS-LR's n-th and (n+1)-th largest candidate logit (t_k <
    1; n = max(1, floor(m M / 100)), M = sum_k (1 - t_k), the reference's n). A 0 is a tie at the
    threshold, where the materialised top-k may keep either class: the same value, another
    subgradient. A soft row whose m M / 100 lies within 1e-3 of a whole number counts as 0 too:
    its n would depend on how M is rounded."""
    z = case.x.double() @ case.w.double().T + case.b.double()
    t = case.dense.double()
    if not case.dense.is_floating_point():
        kept = case.dense != -100
        z, t = z[kept], F.one_hot(case.dense[kept], z.shape[1]).double()
    gaps = []
    for z_row, t_row in zip(z, t, strict=True):
        count = HYPER["hs-lr"]["m"] * float((1 - t_row).sum()) / 100
        n = max(1, math.floor(count))
        top = z_row[t_row < 1].sort(descending=True).values
        gap = float(top[n - 1] - top[n]) if n < top.numel() else math.inf
        gaps.append(0.0 if 0 < abs(count - round(count)) < 1e-3 else gap)
    return torch.tensor(gaps)


def value_and_grads(loss_of: Callable[..., Tensor], inputs: Inputs) -> Result:
    """The loss and the gradients of sum(upstream * loss) for each input; the upstream is not 1
    (0.5 for a scalar, 0.5 .. 1.5 over the rows of "none"), so the backward's scaling counts."""
    leaves = [t.detach().requires_grad_() for t in inputs]
    loss = loss_of(*leaves)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=torch.float64)
    upstream = upstream.to(loss.device, loss.dtype).view_as(loss)
    return loss.detach(), torch.autograd.grad((loss * upstream).sum(), leaves)


def linear_loss(name: str, target: Tensor, **options) -> Callable[..., Tensor]:
    return lambda x, w, b: LINEAR[name](x, w, target, bias=b, **HYPER[name], **options)


def materialised_loss(name: str, target: Tensor, **options) -> Callable[..., Tensor]:
    return lambda x, w, b: MATERIALISED[name](x @ w.T + b, target, **HYPER[name], **options)


def run_linear(name: str, case: Case, device, dtype: torch.dtype, **options) -> Result:
    target = case.target.to(device)
    loss_of = linear_loss(name, target, **case.options_on(device), **options)
    return value_and_grads(loss_of, case.inputs(device, dtype))


def run_materialised(name: str, case: Case, device, dtype: torch.dtype, reduction: str) -> Result:
    loss_of = materialised_loss(name, case.dense_on(device, dtype), reduction=reduction)
    return value_and_grads(loss_of, case.inputs(device, dtype))


@functools.cache
def float64_reference(name: str, kind: str) -> Result:
    """tests/loss_reference.py's per-row losses (reduction "none") of the small problem."""
    case = small_case(kind)
    dense = case.dense_on("cpu", torch.float64)

    def loss_of(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return reference_loss(name, x @ w.T + b, dense, reduction="none", **HYPER[name])

    return value_and_grads(loss_of, case.inputs("cpu", torch.float64))


def assert_near(got: Tensor, want: Tensor, rtol: float, what: str = "") -> None:
    """``got`` (any device and dtype) against ``want`` in float64: relative ``rtol``, with an
    absolute floor of rtol times ``want``'s largest entry."""
    want = want.detach().cpu().double()
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(
        got.detach().cpu().double(), want, rtol=rtol, atol=rtol * scale,
        msg=lambda message: f"{what}: {message}",
    )  # fmt: skip


def assert_all_near(got: Result, want: Result, rtol: float) -> None:
    """The loss and each gradient (features, weight, bias) within ``rtol``."""
    assert_near(got[0], want[0], rtol, "loss")
    for what, g, w in zip(("features", "weight", "bias"), got[1], want[1], strict=True):
        assert_near(g, w, rtol, f"{what} gradient")


def on_device(result: Result, dtypes: tuple[torch.dtype, ...]) -> bool:
    """The loss in float32 and the gradients in ``dtypes``, all on DEVICE."""
    loss, grads = result
    tensors = (loss, *grads)
    return all(t.device.type == DEVICE.type for t in tensors) and (
        loss.dtype == torch.float32 and tuple(g.dtype for g in grads) == dtypes
    )


FLOAT32 = (torch.float32,) * 3


# ---------------------------------------------------------------------------------------------
# Values and gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_linear_loss_on_the_device_matches_cpu_float64_and_the_materialised_loss(
    name, kind, reduction, chunk_size
):
    """The same call on the CPU in float64, the materialised loss on the device, and (per row,
    "none") the float64 reference; chunks of 1 class, 7 (the last ragged) and the default."""
    case = small_case(kind)
    options = {"reduction": reduction, "chunk_size": chunk_size}
    got = run_linear(name, case, DEVICE, torch.float32, **options)
    assert on_device(got, FLOAT32)
    assert_all_near(got, run_linear(name, case, "cpu", torch.float64, **options), RTOL)
    assert_all_near(got, run_materialised(name, case, DEVICE, torch.float32, reduction), RTOL)
    if reduction == "none":
        assert_all_near(got, float64_reference(name, kind), RTOL)
    if kind == "lists":  # the lists the device makes of the multi-hot target are the CPU's
        assert torch.equal(frlr.positive_lists(case.dense.to(DEVICE)).cpu(), case.target)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_hs_lr_with_a_zero_classifier_shares_the_tie_as_on_the_cpu(kind, reduction, chunk_size):
    """Every logit 0: one tie of all the candidates, their places shared equally whatever the
    device and chunks. The materialised top-k keeps some of the tied classes instead: for {0, 1}
    targets the same value and the same total bias gradient (another subgradient); soft targets
    weight the tied classes unequally, so only the tie-sharing CPU result compares there."""
    case = small_case(kind, zero_classifier=True)
    options = {"reduction": reduction, "chunk_size": chunk_size}
    got = run_linear("hs-lr", case, DEVICE, torch.float32, **options)
    assert on_device(got, FLOAT32)
    assert_all_near(got, run_linear("hs-lr", case, "cpu", torch.float64, **options), RTOL)
    if kind != "soft":
        loss, grads = run_materialised("hs-lr", case, DEVICE, torch.float32, reduction)
        assert_near(got[0], loss, RTOL, "loss")
        assert_near(got[1][2].sum(), grads[2].sum(), RTOL, "bias gradient total")


@pytest.mark.parametrize("name", list(LINEAR))
def test_modules_and_the_registry_on_the_device_equal_the_functions(name):
    case = small_case("soft")
    x, w, b = case.inputs(DEVICE, torch.float32)
    target, options = case.target.to(DEVICE), case.options_on(DEVICE)
    weights, eps = options["target_weights"], options["label_smoothing"]
    module = frlr.get_linear_loss(name, **HYPER[name], chunk_size=7, reduction="none")
    got = module(x, w, target, b, weights, label_smoothing=eps)
    want = LINEAR[name](
        x, w, target, bias=b, chunk_size=7, reduction="none", **options, **HYPER[name]
    )
    assert got.device.type == DEVICE.type
    assert_near(got, want, RTOL)  # the same computation: equal but for atomic additions' order


def logits_tolerance(name: str, dtype: torch.dtype) -> float:
    """RTOL where the device's logits of exact half inputs are exact -- float32 sums of exact
    products: a float32-output product (a GPU), float32 products where the device has no
    native half products, HS-LR's float32 logits -- else the contract's (a CPU's half
    products round each logit to the dtype)."""
    exact = not products.native_half(DEVICE, dtype) or name == "hs-lr"
    return RTOL if exact or products.float32_output(DEVICE.type, dtype) else HALF_RTOL[dtype]


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_features_and_weights_multiply_in_their_dtype(name, dtype):
    """Half features and classifier (a float32 bias): the products in the dtype where the
    device multiplies it natively (a GPU does), the loss in float32, each gradient in its
    input's dtype. Against the float32 CPU result of the same values upcast: the loss and the
    bias gradient (float32 sums of the per-logit gradient) to :func:`logits_tolerance`, the
    features' and weight's gradients to the contract's ``HALF_RTOL``."""
    x, w, b, y = exact_problem(32, 64, 500, seed=4)
    half = (x.to(dtype), w.to(dtype), b)
    loss_of = linear_loss(name, y.to(DEVICE), chunk_size=97)
    got = value_and_grads(loss_of, tuple(t.to(DEVICE) for t in half))
    assert on_device(got, (dtype, dtype, torch.float32))
    want = value_and_grads(linear_loss(name, y, chunk_size=97), tuple(t.float() for t in half))
    logits = logits_tolerance(name, dtype)
    assert_near(got[0], want[0], logits, "loss")
    rtols = (HALF_RTOL[dtype], HALF_RTOL[dtype], logits)
    for what, g, w32, rtol in zip(
        ("features", "weight", "bias"), got[1], want[1], rtols, strict=True
    ):
        assert_near(g, w32, rtol, f"{what} gradient")


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_features_give_the_float32_loss(name, dtype):
    """Features from a layer under autocast are half; the loss stays float32 and equals the loss
    of those features upcast, outside autocast: to :func:`logits_tolerance` (the products run
    in autocast's dtype where native; the classifier's exact values are exact in it), the
    weight gradient to ``HALF_RTOL`` (its per-logit gradient cast to the dtype); every
    gradient, the layer's included, is finite."""
    g = torch.Generator().manual_seed(6)
    layer = torch.nn.Linear(16, 32).to(DEVICE)
    inputs = exact((24, 16), g).to(DEVICE)
    _, w, b, y = exact_problem(24, 32, 300, seed=6)
    head_w, head_b = w.to(DEVICE).requires_grad_(), b.to(DEVICE).requires_grad_()
    y = y.to(DEVICE)
    with torch.autocast(DEVICE.type, dtype=dtype):
        features = layer(inputs)
        loss = LINEAR[name](features, head_w, y, bias=head_b, chunk_size=97, **HYPER[name])
    assert features.dtype == dtype and loss.dtype == torch.float32
    grads = torch.autograd.grad(loss, (features, head_w, head_b, layer.weight, layer.bias))
    assert grads[0].dtype == dtype and all(torch.isfinite(t).all() for t in grads)
    loss_of = linear_loss(name, y, chunk_size=97)
    plain, plain_grads = value_and_grads(loss_of, (features.float(), head_w, head_b))
    # the same values on the same device; the gradients of value_and_grads are those of
    # 0.5 x the loss
    logits = logits_tolerance(name, dtype)
    assert_near(loss, plain, logits, "loss")
    rtols = (HALF_RTOL[dtype] if products.native_half(DEVICE, dtype) else RTOL, logits)
    for what, got, want, rtol in zip(
        ("weight", "bias"), grads[1:3], plain_grads[1:], rtols, strict=True
    ):
        assert_near(got, want / 0.5, rtol, f"{what} gradient")


@pytest.mark.parametrize("name", list(LINEAR))
def test_logits_of_1e4_stay_finite_and_match(name):
    """Features times 2^13 (still exact): logits up to ~2e4, where exp overflows float32."""
    x, w, b, y = exact_problem(16, 4, 200, seed=5, scale=2.0**13)
    case = Case(x, w, b, y, y)
    assert float((x.double() @ w.double().T + b).abs().max()) > 1e4
    assert (hs_lr_threshold_gaps(case) > 0).all()
    got = run_linear(name, case, DEVICE, torch.float32)
    assert torch.isfinite(got[0]).all() and all(torch.isfinite(g).all() for g in got[1])
    # linear_sr_loss keeps each logit's distance to the row's peak exact, as log_softmax does
    assert_all_near(got, run_linear(name, case, "cpu", torch.float64), RTOL)
    assert_all_near(got, run_materialised(name, case, DEVICE, torch.float32, "mean"), RTOL)


# ---------------------------------------------------------------------------------------------
# compiled=True, linear_argmax, mixed devices
# ---------------------------------------------------------------------------------------------


def compiler_missing() -> str | None:
    """Why torch.compile cannot build kernels for DEVICE here, or None when it can."""
    if DEVICE.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "compiled=True on CUDA compiles Triton kernels, and triton is not importable"
    elif shutil.which("c++") is None and shutil.which("g++") is None:
        return "compiled=True on the CPU stand-in compiles C++, and no C++ compiler is on PATH"
    return None


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_ss_lr_on_the_device_equals_eager(reduction):
    """compiled=True (Triton kernels on CUDA, through torch.compile) in chunks of 30, 30 and a
    ragged 10, an ignored row, the module form: the eager values and gradients to float32
    round-off (the compiled log1p is within 2.2e-7 relative; RTOL)."""
    reason = compiler_missing()
    if reason:
        pytest.skip(reason)
    x, w, b, y = exact_problem(20, 8, 70, seed=4)
    y[3] = -100
    inputs = tuple(t.to(DEVICE) for t in (x, w, b))
    y = y.to(DEVICE)
    options = {**HYPER["ss-lr"], "reduction": reduction, "chunk_size": 30}
    eager = value_and_grads(
        lambda x, w, b: frlr.linear_ss_lr_loss(x, w, y, bias=b, **options), inputs
    )
    module = frlr.LinearSSLRLoss(compiled=True, **options)
    compiled = value_and_grads(lambda x, w, b: module(x, w, y, b), inputs)
    assert "ss-lr-chunk" not in fused._UNAVAILABLE, "torch.compile failed: the chunks ran eagerly"
    assert fused._chunk_fn is not None  # the compiled chunk (rows and gradient) was built
    assert on_device(compiled, FLOAT32)
    assert_all_near(compiled, eager, RTOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_linear_argmax_on_the_device_equals_the_logits_argmax(dtype, chunk_size):
    """Exact logits with every class twice (rows 2j and 2j + 1 of W alike; with chunks of 7 a
    pair straddles each chunk border): the lower class wins each tie, as in torch.argmax; a zero
    classifier is one tie, won by class 0."""
    x, w, b, _ = exact_problem(N, D, K // 2, seed=3)
    pairs = (w.repeat_interleave(2, 0), b.repeat_interleave(2))
    for weight, bias in (pairs, (torch.zeros(K, D), torch.zeros(K))):
        xd, wd, bd = (t.to(DEVICE, dtype) for t in (x, weight, bias))
        got = frlr.linear_argmax(xd, wd, bd, chunk_size=chunk_size)
        want = (xd.float() @ wd.float().T + bd.float()).argmax(1)
        assert got.device.type == DEVICE.type and torch.equal(got, want)
        assert (want % 2 == 0).all()  # each maximum is a tie, won by its lower class
        on_cpu = frlr.linear_argmax(
            x.double(), weight.double(), bias.double(), chunk_size=chunk_size
        )
        assert torch.equal(got.cpu(), on_cpu)


@pytest.mark.parametrize("call", [*LINEAR, "module", "argmax"])
def test_mixed_devices_are_refused_naming_both(call):
    """A weight or bias on another device than the features: a ValueError naming both devices,
    before anything is computed (features on the GPU, weight on the CPU, say)."""
    x, w, b, y = exact_problem(N, D, K, seed=2)
    y = y.to(DEVICE)
    calls = {name: lambda x, w, b, fn=fn: fn(x, w, y, bias=b) for name, fn in LINEAR.items()}
    calls["module"] = lambda x, w, b: frlr.get_linear_loss("ss-lr", chunk_size=7)(x, w, y, b)
    calls["argmax"] = frlr.linear_argmax
    mixes = [
        ("weight", x.to(DEVICE), w.to(OTHER), b.to(DEVICE)),
        ("bias", x.to(DEVICE), w.to(DEVICE), b.to(OTHER)),
        ("weight", x.to(OTHER), w.to(DEVICE), b.to(DEVICE)),  # the features elsewhere
    ]
    for moved, features, weight, bias in mixes:
        elsewhere = weight if moved == "weight" else bias
        message = f"{moved} is on {elsewhere.device} and features on {features.device}"
        with pytest.raises(ValueError, match=re.escape(message)):
            calls[call](features, weight, bias)


# ---------------------------------------------------------------------------------------------
# A large K in the default chunks, and its memory
# ---------------------------------------------------------------------------------------------

LARGE = (512, 128, 200_003)
"""N, d, K: 49 default chunks of 4,096 classes; the logits would be 391 MiB in float32."""
LARGE_RTOL = 2e-5
"""The linear loss in float32 against itself in float64: a gradient entry sums up to 4,096
classes in one matrix product and 49 chunks after it, ~sqrt(4096) eps = 4e-6 of its scale (2e-6
measured on the CPU); 2e-5 leaves 5x."""
MATERIALISED_RTOL = 1e-4
"""Against the materialised loss, whose own float32 round-off grows with K = 200,003: its
features gradient sums K terms in one product and softmax's normaliser K terms, ~sqrt(K) eps =
2.7e-5 of their scale (2.6e-5 measured for SR on the CPU); 1e-4 leaves ~4x."""
MEMORY_BOUND = 10 * linear.CHUNK_BYTES
"""80 MiB held beyond the inputs and gradients. The default chunk is one (N, C) float32 buffer
of CHUNK_BYTES (8 MiB); a chunk step holds a few at once (its logits, gradient, the block's
temporaries; HS-LR's histogram pass the next chunk's logits, int64 keys and int32 ones, ~5
buffers), 23 to 34 MiB measured on the CPU at this shape. 10 buffers leave ~2x for the CUDA
allocator and kernels, and are a fifth of the 391 MiB N x K float32 tensor: one N x K
temporary, or a chunk 5x too large, fails."""


class _Storages(TorchDispatchMode):
    """The bytes of each storage the operators inside create or write, by data pointer."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                pointer = storage.data_ptr()  # a freed one's may be reused: keep the largest
                self.sizes[pointer] = max(self.sizes.get(pointer, 0), storage.nbytes())
        return out


def held_beyond(run: Callable[[], Result], inputs: Inputs) -> tuple[Result, int]:
    """``run()`` and the bytes it held beyond ``inputs`` and its result (the gradients, the
    unavoidable floor). On CUDA: the caching allocator's peak above what was allocated before,
    less the result's bytes. On the CPU stand-in (no allocator statistics): the largest storage
    created that is neither an input's nor the result's, a lower bound of the same."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
        torch.cuda.reset_peak_memory_stats(DEVICE)
        before = torch.cuda.memory_allocated(DEVICE)
        result = run()
        torch.cuda.synchronize(DEVICE)
        kept = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in _all(result)}
        return result, torch.cuda.max_memory_allocated(DEVICE) - before - sum(kept.values())
    with _Storages() as probe:
        result = run()
    kept_pointers = {t.untyped_storage().data_ptr() for t in (*inputs, *_all(result))}
    created = [size for pointer, size in probe.sizes.items() if pointer not in kept_pointers]
    return result, max(created, default=0)


def _all(result: Result) -> tuple[Tensor, ...]:
    return (result[0], *result[1])


@pytest.mark.parametrize("name", list(LINEAR))
def test_large_k_in_default_chunks_matches_the_materialised_loss_in_bounded_memory(name):
    """N = 512, d = 128, K = 200,003 in the default chunks: float32 against float64 and against
    the materialised loss on the device, values and gradients; and the memory the call holds
    beyond its inputs and gradients stays under MEMORY_BOUND, a fifth of one N x K tensor.
    HS-LR's gradients compare with float64 only: at this K a row's threshold often ties (the
    logits step by 2^-16), where the materialised top-k keeps other classes than the shared tie
    (the same value, another subgradient)."""
    n, d, k = LARGE
    assert k // linear.default_chunk_size(n, k) >= 32  # many chunks, the last one ragged
    assert n * k * 4 > 4 * MEMORY_BOUND  # under a quarter of one N x K float32 tensor
    x, w, b, y = exact_problem(n, d, k, seed=9)
    inputs, y = tuple(t.to(DEVICE) for t in (x, w, b)), y.to(DEVICE)
    loss_of = linear_loss(name, y)
    # a first call allocates what persists (cuBLAS's workspace) outside the measured one
    value_and_grads(linear_loss(name, y[:4] % 64), (inputs[0][:4], inputs[1][:64], inputs[2][:64]))
    got, held = held_beyond(lambda: value_and_grads(loss_of, inputs), inputs)
    assert held <= MEMORY_BOUND, f"{held / 2**20:.1f} MiB beyond the inputs and gradients"
    assert on_device(got, FLOAT32)
    assert_all_near(got, value_and_grads(loss_of, tuple(t.double() for t in inputs)), LARGE_RTOL)
    want = value_and_grads(materialised_loss(name, y), inputs)
    if name == "hs-lr":
        assert_near(got[0], want[0], MATERIALISED_RTOL, "loss")
    else:
        assert_all_near(got, want, MATERIALISED_RTOL)
