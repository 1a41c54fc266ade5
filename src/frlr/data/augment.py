"""The paper's augmentation and batching, done on whole batches on the training device.

The paper trains with horizontal flips and translations. Per-sample PIL transforms in DataLoader
workers would cost more than the small networks take to train, so here a batch of uint8 images
(N, C, H, W) already on the device is augmented with a few tensor ops: a translation pads the
batch once with zeros and gathers every sample's window with index tensors (two ``gather``
calls, no Python loop over samples); a flip reverses the column index of the chosen samples in
the same gather (or is one ``torch.where`` on its own). All randomness comes from an explicit
``torch.Generator``, so a seed fixes every crop and flip. Augment the uint8 batch, then
:func:`normalize` it, so the padding is black as in the paper's setting.

:func:`iterate_batches` replaces the DataLoader: it shuffles indices with the same generator and,
under DDP, hands each rank its own contiguous shard of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from frlr.data.arrays import ImageArrays


def _check_batch(images: object, argument: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{argument} must be (N, C, H, W), got shape {tuple(images.shape)}")
    return images


def _check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
    return generator


def _draw_device(generator: torch.Generator | None, images: torch.Tensor) -> torch.device:
    """Random numbers are drawn where the generator lives, so a seed gives the same draws
    whatever device the images are on."""
    return generator.device if generator is not None else images.device


def images_to_tensor(
    images: np.ndarray | ImageArrays, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 (N, H, W, C) arrays -> a contiguous uint8 (N, C, H, W) tensor on ``device``.

    The dataset is moved once and stays uint8 (4x smaller than float) until each batch is
    normalised.
    """
    if isinstance(images, ImageArrays):
        images = images.images
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array or ImageArrays, got {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).contiguous()


def random_flip(
    images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``; uint8 or float, shape kept."""
    images = _check_batch(images)
    generator = _check_generator(generator)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    draws = torch.rand(len(images), generator=generator, device=_draw_device(generator, images))
    flip = (draws < p).to(images.device).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(-1), images)


def crop_padded(
    images: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor
) -> torch.Tensor:
    r"""Translate each image by cropping its zero-padded version at (top[i], left[i]).

    out[i, :, y, x] = pad(images)[i, :, y + top[i], x + left[i]], with top, left in
    [0, 2 * padding]; (padding, padding) is the identity, so the content moves by
    (padding - top[i], padding - left[i]) pixels and the uncovered border is zero.
    """
    images = _check_batch(images)
    _check_padding(padding)
    n = len(images)
    top = top.to(device=images.device, dtype=torch.long)
    left = left.to(device=images.device, dtype=torch.long)
    if top.shape != (n,) or left.shape != (n,):
        raise ValueError(f"top and left must have shape ({n},), got {top.shape}, {left.shape}")
    if n and (min(top.min(), left.min()) < 0 or max(top.max(), left.max()) > 2 * padding):
        raise ValueError(f"top and left must lie in [0, {2 * padding}]")
    return _gather_crops(images, padding, top, left)


def _gather_crops(
    images: torch.Tensor,
    padding: int,
    top: torch.Tensor,
    left: torch.Tensor,
    mirror: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`crop_padded` without the checks (they would sync the device on every batch).

    ``mirror`` (bool, (N,)) also flips the chosen samples by reading their window's columns
    right to left, so translation and flip together cost one pad and two gathers.
    """
    if padding == 0 and mirror is None:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = top[:, None] + torch.arange(h, device=images.device)
    columns = torch.arange(w, device=images.device)
    if mirror is not None:
        columns = torch.where(mirror[:, None], columns.flip(0), columns)
    cols = left[:, None] + columns
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return picked_rows.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _check_padding(padding: object) -> int:
    if isinstance(padding, bool) or not isinstance(padding, int):
        raise TypeError(f"padding must be a non-negative int, got {padding!r}")
    if padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    return padding


def random_crop(
    images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The paper's translation: zero-pad by ``padding``, crop back at a uniform random offset.

    Each image moves by an independent shift in [-padding, padding] on each axis (pad 4 on
    32x32 images is the usual CIFAR setting).
    """
    images = _check_batch(images)
    generator = _check_generator(generator)
    if _check_padding(padding) == 0:
        return images
    offsets = torch.randint(
        0,
        2 * padding + 1,
        (2, len(images)),
        generator=generator,
        device=_draw_device(generator, images),
    ).to(images.device)
    return _gather_crops(images, padding, offsets[0], offsets[1])


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    flip: bool = True,
    padding: int = 4,
) -> torch.Tensor:
    """Random translation (``padding`` > 0) then random horizontal flip, for a training batch.

    Fused into one gather, with the same random draws (and so the same output) as
    ``random_flip(random_crop(images, padding, generator), generator)``.
    """
    images = _check_batch(images)
    generator = _check_generator(generator)
    _check_padding(padding)
    if padding == 0:
        return random_flip(images, generator) if flip else images
    device = _draw_device(generator, images)
    offsets = torch.randint(
        0, 2 * padding + 1, (2, len(images)), generator=generator, device=device
    )
    mirror = None
    if flip:
        mirror = (torch.rand(len(images), generator=generator, device=device) < 0.5).to(
            images.device
        )
    offsets = offsets.to(images.device)
    return _gather_crops(images, padding, offsets[0], offsets[1], mirror)


def channel_stats(
    images: np.ndarray | ImageArrays, chunk: int = 8192
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation, in [0, 1] units, of a uint8 (N, H, W, C) split.

    Compute it on the training split only (test statistics must not leak into training).
    Accumulates in float64 chunk by chunk, so a 1 GB split never becomes a 4 GB float copy.
    """
    if isinstance(images, ImageArrays):
        images = images.images
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError("images must be a uint8 (N, H, W, C) numpy array or ImageArrays")
    if len(images) == 0:
        raise ValueError("images is empty: no statistics to compute")
    channels = images.shape[3]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, channels).astype(np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = images.size // channels
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std)


def normalize(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float ``(images / 255 - mean) / std``, per channel."""
    images = _check_batch(images)
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (normalise before any float op), got {images.dtype}")
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    shape = (1, channels, 1, 1)
    mean_t = torch.tensor(mean, dtype=dtype, device=images.device).view(shape)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=dtype, device=images.device)
    return (images.to(dtype) - mean_t * 255) * scale.view(shape)


def num_batches(num_items: int, batch_size: int, drop_last: bool = False) -> int:
    """How many global batches :func:`iterate_batches` yields per epoch."""
    if num_items < 0:
        raise ValueError(f"num_items must be non-negative, got {num_items}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return num_items // batch_size if drop_last else -(-num_items // batch_size)


def iterate_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches from tensors already in memory, sharded for DDP.

    batch_size is the global batch: every rank computes the same permutation (the generator
    must be seeded identically on all ranks, e.g. ``seed + epoch``) and takes its contiguous
    shard ``tensor_split(world_size)[rank]`` of each global batch, so together the ranks see
    each sample of the epoch exactly once and all ranks take the same number of steps. Shards
    differ by at most one sample when world_size does not divide the batch; with
    ``drop_last=False`` a final batch smaller than world_size leaves some ranks an empty shard,
    so pass ``drop_last=True`` under DDP with batch norm.
    """
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"images and labels must be tensors, got {type(images).__name__}, "
            f"{type(labels).__name__}"
        )
    if len(images) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    generator = _check_generator(generator)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    if shuffle and world_size > 1 and generator is None:
        raise ValueError("shuffling across ranks needs a generator seeded the same on every rank")
    count = num_batches(len(images), batch_size, drop_last)
    if shuffle:
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(len(images), generator=generator, device=device)
    else:
        order = torch.arange(len(images))
    order = order.to(images.device)
    label_order = order.to(labels.device)
    for b in range(count):
        start = b * batch_size
        shard = slice(start, min(start + batch_size, len(images)))
        rows = order[shard].tensor_split(world_size)[rank]
        label_rows = label_order[shard].tensor_split(world_size)[rank]
        yield images[rows], labels[label_rows]
