"""Known failures of peer implementations, mixed precision, compilation and bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import frlr.torch as frlr
from loss_reference import reference_loss

ALL_LOSSES = ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")
SIGMOID_LOSSES = ("lr", "hs-lr", "ss-lr")


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_autocast_is_finite_and_float32(name, dtype):
    """ASL issue 53: NaN under float16 autocast. Here half logits are computed in float32."""
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(16, 50)
    x = torch.randn(8, 16, generator=g) * 300  # logits in the hundreds
    target = torch.randint(0, 50, (8,), generator=g)
    with torch.autocast("cpu", dtype=dtype):
        logits = layer(x)
        loss = frlr.get_loss(name)(logits, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_half_logits_outside_autocast_match_float32(name):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(4, 30, generator=g) * 20).half()
    target = torch.randint(0, 30, (4,), generator=g)
    fn = frlr.FUNCTIONAL[name]
    torch.testing.assert_close(fn(logits, target), fn(logits.float(), target))


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("magnitude", [100.0, 1e4])
def test_saturated_logits_give_finite_exact_values_and_gradients(name, magnitude):
    """kornia 2115 (0 * log 0 = NaN at logits of 100), optax 1267 (NaN gradients at extremes).

    Every class saturated in both directions, including a badly wrong positive (whose gradient
    an eps-form `log(p + eps)` loses past |z| ~ 16).
    """
    logits = torch.tensor(
        [
            [magnitude, -magnitude, 0.5 * magnitude, -0.25 * magnitude],
            [-magnitude, magnitude, -0.5 * magnitude, 0.25 * magnitude],
        ]
    )
    target = torch.tensor([1, 0])  # both positives badly wrong
    z = logits.clone().requires_grad_(True)
    loss = frlr.FUNCTIONAL[name](z, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    if name != "sr":
        z64 = logits.double().requires_grad_(True)
        ref = reference_loss(name, z64, target)
        ref.backward()
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-6, atol=0)
        torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-6, atol=1e-12)
    # the wrong positive still gets a full-size push up
    assert z.grad[0, 1] < -0.1 and z.grad[1, 0] < -0.1


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_no_grad_state_is_left_alone(name):
    """timm PR 2760: a global set_grad_enabled toggle re-enabled gradients in a caller's no_grad."""
    logits = torch.randn(3, 5, requires_grad=True)
    target = torch.tensor([0, 1, 2])
    with torch.no_grad():
        loss = frlr.FUNCTIONAL[name](logits, target)
        assert not torch.is_grad_enabled()
    assert loss.grad_fn is None and not loss.requires_grad
    assert torch.is_grad_enabled()
    with torch.inference_mode():
        frlr.FUNCTIONAL[name](logits, target)
        assert torch.is_inference_mode_enabled()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_all_ignored_batch_is_zero_with_zero_gradient(name):
    logits = torch.randn(4, 6, requires_grad=True)
    target = torch.full((4,), -100)
    loss = frlr.FUNCTIONAL[name](logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_backward_twice_with_retain_graph(name):
    logits = torch.randn(4, 6, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3])
    loss = frlr.FUNCTIONAL[name](logits, target)
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * first)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_trains_under_bfloat16_autocast(name):
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    y = x[:, :4].argmax(1) + 4 * (x[:, 4] > 0).long()  # 8 separable classes
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = frlr.get_loss(name)
    losses = []
    for _ in range(60):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (model(x).argmax(1) == y).float().mean() > 0.8


COMPILE_SCRIPT = r"""
import torch, frlr.torch as frlr
torch.manual_seed(0)
z = torch.randn(8, 50)
y = torch.randint(0, 50, (8,))
t = (torch.rand(8, 50) < 0.1).float()
for name, fn in frlr.FUNCTIONAL.items():
    targets = [y] if name in ("sr", "hs-sr") else [y, t]
    for target in targets:
        compiled = torch.compile(lambda a, b: fn(a, b), fullgraph=True, backend="eager")
        a = z.clone().requires_grad_(True)
        b = z.clone().requires_grad_(True)
        compiled(a, target).backward()
        fn(b, target).backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
print("ok")
"""


@pytest.mark.slow
def test_torch_compile_fullgraph():
    """Every loss traces into one graph (dynamo, eager backend: the graph capture is the test)."""
    out = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument and the value.
# ---------------------------------------------------------------------------------------------

Z = torch.randn(4, 5)
Y = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize(
    ("logits", "target", "error", "match"),
    [
        (torch.randn(5), Y, ValueError, "logits must have shape"),
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.long), ValueError, "K >= 2"),
        (torch.randint(0, 3, (4, 5)), Y, TypeError, "floating-point"),
        (Z, torch.tensor([0, 1, 2]), ValueError, r"shape \(4,\)"),
        (Z, torch.tensor([0, 1, 2, 5]), ValueError, "class index 5 outside"),
        (Z, torch.tensor([0, 1, -3, 2]), ValueError, "class index -3"),
        (Z, torch.zeros(4, 4), ValueError, "logits' shape"),
        (Z, Y.numpy(), TypeError, "target must be a torch.Tensor"),
        (Z.numpy(), Y, TypeError, "logits must be a torch.Tensor"),
        (Z, torch.tensor([0.0, 1, 2, 3]), ValueError, "logits' shape"),
    ],
)
def test_bad_tensors(name, logits, target, error, match):
    with pytest.raises(error, match=match):
        frlr.FUNCTIONAL[name](logits, target)


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_soft_targets_accepted_out_of_range_and_nan_rejected(name):
    """Soft targets (issue 17) are accepted by every sigmoid loss; [0, 1] and NaN are checked."""
    assert torch.isfinite(frlr.FUNCTIONAL[name](Z, torch.full((4, 5), 0.5)))
    with pytest.raises(ValueError, match=r"\[0, 1\], got -0.5"):
        frlr.FUNCTIONAL[name](Z, torch.full((4, 5), -0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\], got nan"):
        frlr.FUNCTIONAL[name](Z, torch.full((4, 5), math.nan))


def test_lr_soft_target_out_of_range_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\], got 1.5"):
        frlr.lr_loss(Z, torch.full((4, 5), 1.5))


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("hs-lr", {"m": 0.0}, r"m is a percentage.*got 0.0"),
        ("hs-lr", {"m": 150.0}, "got 150.0"),
        ("hs-sr", {"m": -1.0}, "got -1.0"),
        ("ss-lr", {"r": -0.5}, "r must be >= 0, got -0.5"),
        ("ss-lr", {"beta": -1.0}, "beta must be >= 0, got -1.0"),
        ("hs-lr", {"alpha": -2.0}, "alpha must be >= 0"),
        ("lr", {"reduction": "avg"}, "reduction must be one of"),
        ("ss-lr", {"normalization": "authors"}, "normalization must be one of"),
    ],
)
def test_bad_hyper_parameters(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        frlr.FUNCTIONAL[name](Z, Y, **kwargs)
    with pytest.raises(ValueError, match=match):
        frlr.get_loss(name, **kwargs)


def test_bad_types_and_names():
    with pytest.raises(TypeError, match="m must be a real number"):
        frlr.hs_lr_loss(Z, Y, m="25")
    with pytest.raises(ValueError, match=r"unknown loss name 'focal'.*sr, lr, hs-lr"):
        frlr.get_loss("focal")
    with pytest.raises(TypeError, match=r"loss 'lr'.*beta"):
        frlr.get_loss("lr", beta=3.0)
    with pytest.raises(ValueError, match=r"weight must be a tensor of shape \(5,\)"):
        frlr.ss_lr_loss(Z, Y, weight=torch.ones(3))
    with pytest.raises(ValueError, match="class-index targets only"):
        frlr.hs_sr_loss(Z, torch.zeros(4, 5))


def test_import_frlr_needs_no_framework():
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('torch', 'keras', 'tensorflow', 'jax', 'numpy'):\n"
        "        raise ImportError('blocked ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import frlr\n"
        "print(frlr.__version__, frlr.LOSS_NAMES)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_loss_library_never_imports_the_toolkit():
    """frlr.torch (diagnostics included) stands alone: a loss user never loads data or training."""
    toolkit = (
        "frlr.data",
        "frlr.models",
        "frlr.train",
        "frlr.eval",
        "frlr.experiments",
        "frlr.report",
        "frlr.cli",
        "matplotlib",
    )
    code = (
        "import sys\n"
        "import frlr.torch, frlr.torch.diagnostics\n"
        f"print([m for m in {toolkit!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
