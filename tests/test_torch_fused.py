"""The opt-in fused path (``frlr.torch.compiled``) against the float64 reference."""

from __future__ import annotations

import subprocess
import sys

import pytest

FUSED_SCRIPT = r"""
import torch, warnings, frlr.torch as frlr
from loss_reference import reference_loss
weight = torch.rand(50, generator=torch.Generator().manual_seed(1)) + 0.5
for name, hyper in (
    ("lr", {}),
    ("ss-lr", {"r": 2.0}),
    ("ss-lr", {"r": 0.5, "beta": 3.0}),
    ("ss-lr", {"r": 0.0}),
    ("lr", {"weight": weight, "reduction": "none"}),
    ("ss-lr", {"r": 3.0, "weight": weight, "reduction": "sum"}),
):
    torch._dynamo.reset()  # each r is its own graph; stay under the recompile limit
    fn = frlr.compiled(name, **hyper)
    for seed, scale in enumerate((1.0, 30.0, 1e4)):  # one shape: one compilation per loss
        n, k = 5, 50
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(n, k, generator=g) * scale
        target = torch.randint(0, k, (n,), generator=g)
        z = logits.clone().requires_grad_(True)
        loss = fn(z, target)
        upstream = torch.rand(loss.shape, generator=g) + 0.5
        (loss * upstream).sum().backward()
        z64 = logits.double().requires_grad_(True)
        ref = reference_loss(name, z64, target, **hyper)
        (ref * upstream).sum().backward()
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)
        with torch.no_grad():  # the forward-only path
            torch.testing.assert_close(fn(logits, target), loss.detach())
# the fallback: no compiler -> one warning, same values
torch.compile = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no compiler"))
import frlr.torch.fused as fused
fused._COMPILED.clear()
fused._UNAVAILABLE.clear()
assert not fused._warned  # nothing above fell back
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = frlr.compiled("ss-lr")(logits, target)
    b = frlr.compiled("ss-lr")(logits, target)
assert sum("unavailable" in str(w.message) for w in caught) == 1, caught
torch.testing.assert_close(a, frlr.ss_lr_loss(logits, target))
# a compiler that fails only when the backward loop first runs still falls back, in the forward
def fails_in_backward(fn, **kwargs):
    if fn is fused.ss_lr_grad:
        return lambda *a, **k: (_ for _ in ()).throw(RuntimeError("C++ compile error"))
    return fn
torch.compile = fails_in_backward
fused._COMPILED.clear()
fused._UNAVAILABLE.clear()
fused._warned = False
z = logits.clone().requires_grad_(True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    frlr.compiled("ss-lr")(z, target).backward()
assert any("C++ compile error" in str(w.message) for w in caught), caught
z_eager = logits.clone().requires_grad_(True)
frlr.ss_lr_loss(z_eager, target).backward()
torch.testing.assert_close(z.grad, z_eager.grad)
print("ok")
"""


@pytest.mark.slow
def test_fused_losses_match_reference_and_fall_back(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", FUSED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=__file__.rsplit("/", 1)[0],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_log1p_unit_is_accurate_on_the_whole_unit_interval():
    import torch

    from frlr.torch.fused import log1p_unit

    e = torch.cat([torch.rand(200_000), torch.logspace(-38, 0, 20_000), torch.tensor([0.0, 1.0])])
    exact = torch.log1p(e.double())
    error = (log1p_unit(e).double() - exact).abs()
    assert (error <= 2.5e-7 * exact).all(), (error / exact.clamp_min(1e-300)).max()


def test_compiled_rejects_bad_names_and_hyper_parameters():
    import frlr.torch as frlr

    with pytest.raises(ValueError, match="unknown loss name 'focal'"):
        frlr.compiled("focal")
    with pytest.raises(ValueError, match="r must be >= 0"):
        frlr.compiled("ss-lr", r=-1.0)
