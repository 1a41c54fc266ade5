"""Every path that differs on CUDA, checked against the CPU: the loss kernels (values and
gradients, eager, row-blocked and compiled), autocast, the device-side augmentation, training
with bf16 and channels-last, and checkpoints moved between devices.

These skip without a CUDA device (CI has none); ``benchmarks/gpu_check.sh`` runs them on one
(``pytest -m cuda``). Each compares with the CPU result or the float64 reference of
``tests/loss_reference.py``, so a kernel that runs on CUDA but computes something else fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import frlr.torch as frlr
from frlr.data.augment import augment_batch, crop_padded, iterate_batches, normalize, random_crop
from frlr.data.augment import random_flip as flip_batch
from frlr.models import build_model
from frlr.torch import fused
from frlr.train import train
from loss_reference import reference_loss
from test_train import digits_config as train_digits_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SIGMOID_LOSSES = ("lr", "hs-lr", "ss-lr")
ALL_LOSSES = ("sr", *SIGMOID_LOSSES, "hs-sr")


def distinct_logits(n: int, k: int, scale: float, seed: int) -> torch.Tensor:
    """float32 CPU logits without ties (hard selection is not differentiable at ties)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * scale
    return z + torch.argsort(torch.rand(n, k, generator=g), dim=1).float() * scale * 1e-3


def value_and_grad(fn, logits: torch.Tensor, target: torch.Tensor, **options):
    z = logits.clone().requires_grad_(True)
    loss = fn(z, target, **options)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), device=z.device).view_as(loss)
    (loss * upstream).sum().backward()
    return loss.detach(), z.grad


def targets(kind: str, n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "index":
        target = torch.randint(0, k, (n,), generator=g)
        target[1] = -1  # ignored
        return target
    target = (torch.rand(n, k, generator=g) < 0.1).float()
    target[0] = 0  # no positive
    target[2] = 1  # no negative
    return target


def float64_reference(name: str):
    """tests/loss_reference.py for the sigmoid losses and HS-SR; SR is cross-entropy itself."""
    if name == "sr":
        return lambda z, t, weight, **o: F.cross_entropy(z, t, weight=weight.double(), **o)
    return lambda z, t, **o: reference_loss(name, z, t, **o)


def assert_matches(got: torch.Tensor, want: torch.Tensor, rtol: float = 2e-5) -> None:
    scale = max(want.abs().max().item(), 1.0) if want.numel() else 1.0
    torch.testing.assert_close(got.cpu().double(), want.double(), rtol=rtol, atol=1e-6 * scale)


# ------------------------------------------------------------------------------ loss kernels


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("kind", ["index", "multi_hot"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_loss_on_cuda_matches_the_float64_reference(name, kind, reduction, scale):
    if kind == "multi_hot" and name in ("sr", "hs-sr"):
        pytest.skip("softmax losses take class-index targets only")
    logits = distinct_logits(9, 41, scale, seed=len(name) + int(scale))
    target = targets(kind, 9, 41, seed=3)
    weight = torch.rand(41, generator=torch.Generator().manual_seed(5)) + 0.1
    options = {"reduction": reduction, "weight": weight, "ignore_index": -1}
    cuda_options = {**options, "weight": weight.cuda()}
    got, got_grad = value_and_grad(
        frlr.FUNCTIONAL[name], logits.cuda(), target.cuda(), **cuda_options
    )
    cpu, cpu_grad = value_and_grad(frlr.FUNCTIONAL[name], logits, target, **options)
    ref, ref_grad = value_and_grad(float64_reference(name), logits.double(), target, **options)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    assert_matches(got, ref)
    assert_matches(got_grad, ref_grad, rtol=1e-4)
    assert_matches(got, cpu, rtol=1e-5)  # the same kernels, another device
    assert_matches(got_grad, cpu_grad, rtol=1e-5)


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_row_blocked_path_on_cuda_matches_cpu(name):
    """Above 4M logits HS-LR and SS-LR run in row blocks; 64 x 70,000 takes that path."""
    logits = distinct_logits(64, 70_000, 4.0, seed=1)
    target = torch.randint(0, 70_000, (64,), generator=torch.Generator().manual_seed(2))
    got, got_grad = value_and_grad(frlr.FUNCTIONAL[name], logits.cuda(), target.cuda())
    want, want_grad = value_and_grad(frlr.FUNCTIONAL[name], logits, target)
    assert_matches(got, want, rtol=1e-5)
    assert_matches(got_grad, want_grad, rtol=1e-4)


@pytest.mark.parametrize("name", SIGMOID_LOSSES)
def test_compiled_loss_on_cuda_matches_eager(name):
    """``frlr.torch.compiled`` builds Triton kernels on CUDA; they must equal the eager loss."""
    logits = distinct_logits(256, 1000, 3.0, seed=7).cuda()
    target = torch.randint(0, 1000, (256,), generator=torch.Generator().manual_seed(8)).cuda()
    got, got_grad = value_and_grad(lambda z, t: frlr.compiled(name)(z, t), logits, target)
    want, want_grad = value_and_grad(frlr.FUNCTIONAL[name], logits, target)
    assert_matches(got, want.cpu(), rtol=1e-5)
    assert_matches(got_grad, want_grad.cpu(), rtol=1e-4)
    # a failed compilation falls back to the eager loss, which would pass the comparison above
    assert not fused._UNAVAILABLE, f"torch.compile failed for {fused._UNAVAILABLE}: ran eagerly"


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_cuda_computes_the_loss_in_float32(name, dtype):
    """Half logits from an autocast layer give the float32 loss of those same logits."""
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(16, 50).cuda()
    x = (torch.randn(32, 16, generator=g) * 30).cuda()  # logits in the tens to hundreds
    target = torch.randint(0, 50, (32,), generator=g).cuda()
    with torch.autocast("cuda", dtype=dtype):
        logits = layer(x)
        loss = frlr.get_loss(name)(logits, target)
    assert logits.dtype == dtype and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    exact = frlr.get_loss(name)(logits.detach().float(), target)
    torch.testing.assert_close(loss.detach(), exact, rtol=1e-6, atol=1e-6)


def test_ncd_stats_on_cuda_match_cpu():
    logits = distinct_logits(16, 200, 3.0, seed=4)
    target = torch.randint(0, 200, (16,), generator=torch.Generator().manual_seed(4))
    for name in ALL_LOSSES:
        on_gpu = frlr.ncd_stats(logits.cuda(), target.cuda(), name).as_dict()
        on_cpu = frlr.ncd_stats(logits, target, name).as_dict()
        assert on_gpu.keys() == on_cpu.keys()
        for key, value in on_cpu.items():
            if isinstance(value, float):
                assert on_gpu[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), key
            else:
                assert on_gpu[key] == value, key


# ------------------------------------------------------------------- device-side augmentation


def uint8_batch(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(9)
    return torch.randint(0, 256, (n, 3, 12, 10), generator=g, dtype=torch.uint8)


def test_crop_and_normalise_on_cuda_equal_cpu():
    images = uint8_batch()
    g = torch.Generator().manual_seed(1)
    top, left = torch.randint(0, 9, (2, len(images)), generator=g)
    on_cpu = crop_padded(images, 4, top, left)
    on_gpu = crop_padded(images.cuda(), 4, top.cuda(), left.cuda())
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    torch.testing.assert_close(normalize(on_gpu, mean, std).cpu(), normalize(on_cpu, mean, std))


def test_cuda_generator_fused_augmentation_equals_crop_then_flip():
    """Training draws from a CUDA generator; the fused gather must equal the two-step recipe."""
    images = uint8_batch().cuda()
    fused = augment_batch(images, torch.Generator("cuda").manual_seed(3), padding=4)
    g = torch.Generator("cuda").manual_seed(3)
    offsets = torch.randint(0, 9, (2, len(images)), generator=g, device="cuda")
    mirror = torch.rand(len(images), generator=g, device="cuda") < 0.5
    shifted = crop_padded(images, 4, offsets[0], offsets[1])
    two_step = torch.where(mirror.view(-1, 1, 1, 1), shifted.flip(-1), shifted)
    assert fused.device.type == "cuda" and torch.equal(fused, two_step)
    assert not torch.equal(fused, images)  # something moved
    again = flip_batch(random_crop(images, 4, torch.Generator("cuda").manual_seed(3)))
    assert again.shape == fused.shape and again.dtype == torch.uint8


def test_cuda_generator_batches_cover_the_epoch_once_per_rank_split():
    images, labels = uint8_batch(50).cuda(), torch.arange(50).cuda()
    seen = []
    for rank in range(3):
        g = torch.Generator("cuda").manual_seed(11)
        for batch, y in iterate_batches(images, labels, 8, True, g, rank=rank, world_size=3):
            assert batch.device.type == "cuda" and torch.equal(batch, images[y])
            seen += y.tolist()
    assert sorted(seen) == list(range(50))


# ------------------------------------------------------------------ training and checkpoints


def digits_config(tmp_path: Path, device: str, **overrides):
    """test_train's digits run with small-cnn and SS-LR (about 0.85 top-1 in 2 epochs)."""
    return train_digits_config(tmp_path, arch="small-cnn", loss="ss-lr", device=device, **overrides)


def test_bf16_channels_last_training_on_cuda_beats_chance(tmp_path):
    result = train(digits_config(tmp_path, "cuda", bf16=True, channels_last=True), log=None)
    assert result["test_top1"] > 0.5  # chance is 0.1
    assert result["hardware"]["device"].startswith("cuda") and "gpu" in result["hardware"]
    assert result["config"]["bf16"] and result["config"]["channels_last"]


def test_checkpoint_written_on_cuda_loads_on_cpu_and_back(tmp_path):
    """The model in checkpoint.pt gives the same logits on either device."""
    stopped = train(digits_config(tmp_path, "cuda"), stop_after=1, log=None)
    assert stopped["status"] == "stopped"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in state["model"].values() if torch.is_tensor(t))
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    on_cpu = small_cnn(state["model"]).eval()
    on_gpu = small_cnn(state["model"]).cuda().eval()
    with torch.no_grad():
        torch.testing.assert_close(on_gpu(x.cuda()).cpu(), on_cpu(x), rtol=1e-4, atol=1e-4)
    torch.save(on_gpu.state_dict(), tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(back[key].cpu(), value) for key, value in state["model"].items())


def small_cnn(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The digits run's network (8x8, one channel, 10 classes) holding ``state_dict``."""
    model = build_model("small-cnn", 10, 1, "zero", image_size=8)
    model.load_state_dict(state_dict)
    return model


@pytest.mark.parametrize(("first", "then"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_resume_on_the_other_device_finishes_the_run(tmp_path, first, then):
    """A run stopped on one device resumes on the other (device is not part of the result)."""
    stopped = train(digits_config(tmp_path, first), stop_after=1, log=None)
    assert stopped["status"] == "stopped"
    result = train(digits_config(tmp_path, then), resume=True, log=None)
    assert result["epochs"] == 2 and result["test_top1"] > 0.5
