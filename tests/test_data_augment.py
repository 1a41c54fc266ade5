"""Batched on-device augmentation, normalisation, and the DDP-sharded batch iterator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from frlr.data import ImageArrays
from frlr.data.augment import (
    augment_batch,
    channel_stats,
    crop_padded,
    images_to_tensor,
    iterate_batches,
    normalize,
    num_batches,
    random_crop,
    random_flip,
)


def batch(n: int = 16, c: int = 3, h: int = 8, w: int = 8, dtype=torch.uint8) -> torch.Tensor:
    values = torch.arange(n * c * h * w) % 251 + 1  # no zeros: padding is recognisable
    return values.reshape(n, c, h, w).to(dtype)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_images_to_tensor_is_nchw() -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    tensor = images_to_tensor(ImageArrays(images, np.zeros(5, np.int64), ["x"]))
    assert tensor.shape == (5, 3, 4, 6) and tensor.dtype == torch.uint8
    assert tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.permute(0, 2, 3, 1).numpy(), images)
    with pytest.raises(ValueError, match="uint8"):
        images_to_tensor(images.astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_flip_is_an_exact_mirror(dtype: torch.dtype) -> None:
    images = batch(dtype=dtype)
    assert torch.equal(random_flip(images, seeded(), p=1.0), images.flip(-1))
    assert torch.equal(random_flip(images, seeded(), p=0.0), images)
    mixed = random_flip(images, seeded(), p=0.5)
    assert mixed.dtype == dtype and mixed.shape == images.shape
    flipped = [torch.equal(m, i.flip(-1)) for m, i in zip(mixed, images, strict=True)]
    kept = [torch.equal(m, i) for m, i in zip(mixed, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < len(images)


def test_crop_shifts_content_and_zero_fills() -> None:
    images = batch(n=3)
    padding = 2
    top = torch.tensor([2, 0, 4])
    left = torch.tensor([2, 3, 1])
    out = crop_padded(images, padding, top, left)
    assert torch.equal(out[0], images[0])  # (padding, padding) is the identity
    # sample 1 moves down 2 and left 1: out[y, x] = in[y - 2, x + 1]
    assert torch.equal(out[1, :, 2:, :-1], images[1, :, :-2, 1:])
    assert (out[1, :, :2] == 0).all() and (out[1, :, :, -1] == 0).all()
    # sample 2 moves up 2 and right 1
    assert torch.equal(out[2, :, :-2, 1:], images[2, :, 2:, :-1])
    assert (out[2, :, -2:] == 0).all() and (out[2, :, :, 0] == 0).all()
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        crop_padded(images, padding, torch.tensor([5, 0, 0]), left)


def test_random_crop_is_some_translation_of_each_image() -> None:
    images = batch(n=32, h=6, w=6)
    padding = 2
    out = random_crop(images, padding, seeded(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    shifts = [(t, l) for t in range(5) for l in range(5)]
    seen = set()
    for i in range(len(images)):
        candidates = [
            s
            for s in shifts
            if torch.equal(
                out[i],
                crop_padded(images[i : i + 1], padding, *map(torch.tensor, ([s[0]], [s[1]])))[0],
            )
        ]
        assert candidates, f"sample {i} is not a translation"
        seen.add(candidates[0])
    assert len(seen) > 5  # offsets vary across the batch


def test_augmentation_is_deterministic_given_a_seed() -> None:
    images = batch(n=64)
    a = augment_batch(images, seeded(7), padding=4)
    b = augment_batch(images, seeded(7), padding=4)
    c = augment_batch(images, seeded(8), padding=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    floats = augment_batch(images.float(), seeded(7), padding=4)
    assert floats.dtype == torch.float32 and torch.equal(floats, a.float())
    assert torch.equal(augment_batch(images, seeded(), flip=False, padding=0), images)


@pytest.mark.parametrize(("flip", "padding"), [(True, 4), (True, 0), (False, 3)])
def test_fused_augmentation_equals_crop_then_flip(flip: bool, padding: int) -> None:
    images = batch(n=64, h=7, w=9)
    generator = seeded(11)
    expected = random_crop(images, padding, generator)
    if flip:
        expected = random_flip(expected, generator)
    assert torch.equal(augment_batch(images, seeded(11), flip=flip, padding=padding), expected)


def test_single_channel_and_non_square_batches() -> None:
    images = batch(n=4, c=1, h=5, w=9)
    assert augment_batch(images, seeded(), padding=3).shape == (4, 1, 5, 9)


def test_argument_checks() -> None:
    images = batch(n=2)
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_flip(images[0], seeded())
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        random_crop(images.numpy(), 2, seeded())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding"):
        random_crop(images, -1, seeded())
    with pytest.raises(TypeError, match="padding"):
        random_crop(images, 1.5, seeded())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p must be"):
        random_flip(images, seeded(), p=1.5)
    with pytest.raises(TypeError, match="generator"):
        random_flip(images, 0)  # type: ignore[arg-type]


def test_channel_stats_and_normalize() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=7)
    expected = images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, expected.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(std, expected.std(axis=0), rtol=1e-8)
    out = normalize(images_to_tensor(images), mean, std)
    assert out.dtype == torch.float32 and out.shape == (50, 3, 4, 4)
    per_channel = out.permute(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(1, unbiased=False).numpy(), 1, atol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        normalize(images_to_tensor(images).float(), mean, std)
    with pytest.raises(ValueError, match="3 values"):
        normalize(images_to_tensor(images), mean[:1], std[:1])
    with pytest.raises(ValueError, match="positive"):
        normalize(images_to_tensor(images), mean, (0.0, 1.0, 1.0))


def epoch(n: int, batch_size: int, world_size: int, drop_last: bool, seed: int = 3) -> list:
    images = torch.arange(n).view(n, 1, 1, 1)
    labels = torch.arange(n) * 10
    per_rank = []
    for rank in range(world_size):
        batches = list(
            iterate_batches(
                images, labels, batch_size, True, seeded(seed), drop_last, rank, world_size
            )
        )
        for x, y in batches:
            assert torch.equal(y, x.view(-1) * 10)  # images and labels stay paired
        per_rank.append([x.view(-1).tolist() for x, _ in batches])
    return per_rank


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 40),
    batch_size=st.integers(1, 12),
    world_size=st.integers(1, 5),
    drop_last=st.booleans(),
)
def test_ranks_cover_each_global_batch_exactly_once(
    n: int, batch_size: int, world_size: int, drop_last: bool
) -> None:
    per_rank = epoch(n, batch_size, world_size, drop_last)
    steps = num_batches(n, batch_size, drop_last)
    assert all(len(batches) == steps for batches in per_rank)  # same step count on every rank
    single = epoch(n, batch_size, 1, drop_last)[0]
    for step in range(steps):
        shards = [per_rank[r][step] for r in range(world_size)]
        assert sorted(x for s in shards for x in s) == sorted(
            single[step]
        )  # the global batch, once
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    seen = [x for b in single for x in b]
    assert len(seen) == len(set(seen))
    assert len(seen) == (n // batch_size * batch_size if drop_last else n)


def test_shuffle_order_depends_only_on_the_seed() -> None:
    assert epoch(20, 4, 1, False, seed=1) == epoch(20, 4, 1, False, seed=1)
    assert epoch(20, 4, 1, False, seed=1) != epoch(20, 4, 1, False, seed=2)
    images = torch.arange(10).view(10, 1, 1, 1)
    ordered = [x.view(-1).tolist() for x, _ in iterate_batches(images, images, 4, False)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_iterator_argument_checks() -> None:
    images = torch.zeros(4, 1, 1, 1)
    with pytest.raises(ValueError, match="labels"):
        list(iterate_batches(images, torch.zeros(3), 2, False))
    with pytest.raises(ValueError, match="batch_size"):
        list(iterate_batches(images, torch.zeros(4), 0, False))
    with pytest.raises(ValueError, match="rank"):
        list(iterate_batches(images, torch.zeros(4), 2, False, rank=2, world_size=2))
    with pytest.raises(ValueError, match="world_size"):
        list(iterate_batches(images, torch.zeros(4), 2, False, world_size=0))
    with pytest.raises(ValueError, match="generator seeded the same"):
        list(iterate_batches(images, torch.zeros(4), 2, True, world_size=2))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu_for_the_same_seed() -> None:
    images = batch(n=64)
    on_cpu = augment_batch(images, seeded(5), padding=4)
    on_gpu = augment_batch(images.cuda(), seeded(5), padding=4)
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)
    labels = torch.arange(64)
    cpu_order = [y for _, y in iterate_batches(images, labels, 16, True, seeded(2))]
    gpu_order = [
        y.cpu() for _, y in iterate_batches(images.cuda(), labels.cuda(), 16, True, seeded(2))
    ]
    assert all(torch.equal(a, b) for a, b in zip(cpu_order, gpu_order, strict=True))
