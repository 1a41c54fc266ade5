"""The paper's augmentation and batching, done on whole batches on the training device.

The paper trains with horizontal flips and translations. Per-sample PIL transforms in DataLoader
workers would cost more than the small networks take to train, so here a batch of uint8 images
(N, C, H, W) already on the device is augmented with a few tensor ops: a translation pads the
batch once with zeros and gathers every sample's window with index tensors (two ``gather``
calls, no Python loop over samples); a flip reverses the column index of the chosen samples in
the same gather (or is one ``torch.where`` on its own). All randomness comes from an explicit
``torch.Generator``, so a seed fixes every crop and flip. Augment the uint8 batch, then
[`normalize`][] it, so the padding is black as in the paper's setting.

[`iterate_batches`][] replaces the DataLoader: it shuffles indices with the same generator and,
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

    Args:
        images: uint8 (N, H, W, C), or an ImageArrays whose images are taken.
        device: where the tensor goes (default: the CPU).

    Examples:
        >>> import numpy as np
        >>> from frlr.data.augment import images_to_tensor
        >>> images_to_tensor(np.zeros((2, 8, 8, 3), dtype=np.uint8)).shape
        torch.Size([2, 3, 8, 8])
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
    """Mirror each image left-right with probability ``p``; uint8 or float, shape kept.

    Args:
        images: (N, C, H, W) batch.
        generator: the source of randomness (a seeded one fixes every flip).
        p: the probability of flipping each image, in [0, 1].

    Examples:
        >>> import torch
        >>> from frlr.data.augment import random_flip
        >>> images = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4)
        >>> random_flip(images, p=1.0).flatten().tolist()
        [3, 2, 1, 0]
    """
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

    Args:
        images: (N, C, H, W) batch.
        padding: zeros added on every side, >= 0.
        top: integer (N,) row offsets into the padded images, in [0, 2 * padding].
        left: integer (N,) column offsets, in [0, 2 * padding].

    Examples:
        Shift a 1 x 4 image one pixel to the right:

        >>> import torch
        >>> from frlr.data.augment import crop_padded
        >>> images = torch.tensor([[[[1, 2, 3, 4]]]], dtype=torch.uint8)
        >>> crop_padded(images, 1, top=torch.tensor([1]), left=torch.tensor([0])).flatten().tolist()
        [0, 1, 2, 3]
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
    """[`crop_padded`][] without the checks (they would sync the device on every batch).

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

    Args:
        images: (N, C, H, W) batch.
        padding: the largest shift in pixels, >= 0 (0 returns the images unchanged).
        generator: the source of randomness (a seeded one fixes every shift).

    Examples:
        >>> import torch
        >>> from frlr.data.augment import random_crop
        >>> images = torch.full((8, 3, 32, 32), 255, dtype=torch.uint8)
        >>> shifted = random_crop(images, padding=4, generator=torch.Generator().manual_seed(0))
        >>> shifted.shape, bool((shifted == 0).any())   # the uncovered border is black
        (torch.Size([8, 3, 32, 32]), True)
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

    Args:
        images: (N, C, H, W) batch, uint8 (augment before [`normalize`][], so the padding
            is black) or float.
        generator: the source of randomness (a seeded one fixes every crop and flip).
        flip: also mirror half the images at random.
        padding: the largest shift in pixels, >= 0.

    Examples:
        >>> import torch
        >>> from frlr.data.augment import augment_batch, random_crop, random_flip
        >>> images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
        >>> fused = augment_batch(images, torch.Generator().manual_seed(0))
        >>> generator = torch.Generator().manual_seed(0)
        >>> two_steps = random_flip(random_crop(images, 4, generator), generator)
        >>> torch.equal(fused, two_steps)
        True
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

    Args:
        images: uint8 (N, H, W, C), or an ImageArrays whose images are taken.
        chunk: images converted to float64 at a time.

    Returns:
        ``(mean, std)``, one value per channel each.

    Examples:
        >>> import numpy as np
        >>> from frlr.data.augment import channel_stats
        >>> images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
        >>> images[1] = 255                      # one black and one white image
        >>> channel_stats(images)
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
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
    """uint8 (N, C, H, W) -> float ``(images / 255 - mean) / std``, per channel.

    Args:
        images: uint8 (N, C, H, W) batch (augment it first, so padding stays black).
        mean: one mean per channel, in [0, 1] units (as [`channel_stats`][] returns).
        std: one positive standard deviation per channel, in [0, 1] units.
        dtype: the floating dtype of the result.

    Examples:
        >>> import torch
        >>> from frlr.data.augment import normalize
        >>> images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
        >>> normalize(images, mean=(0.5,), std=(0.5,)).flatten().tolist()
        [-1.0, 1.0]
    """
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
    """How many global batches [`iterate_batches`][] yields per epoch.

    Args:
        num_items: samples in the epoch, >= 0.
        batch_size: the global batch size, >= 1.
        drop_last: whether a final, smaller batch is dropped.

    Examples:
        >>> from frlr.data.augment import num_batches
        >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
        (3, 2)
    """
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

    Args:
        images: (N, ...) tensor of samples, e.g. uint8 (N, C, H, W) on the training device.
        labels: (N, ...) tensor of targets, index-aligned with ``images``.
        batch_size: the global batch size (all ranks together).
        shuffle: draw a new permutation from ``generator`` (else keep the stored order).
        generator: the source of the permutation; seed it identically on every rank.
        drop_last: drop a final batch smaller than ``batch_size``.
        rank: this process's rank under DDP.
        world_size: the number of DDP processes.

    Examples:
        >>> import torch
        >>> from frlr.data.augment import iterate_batches
        >>> images, labels = torch.zeros(5, 1, 2, 2), torch.arange(5)
        >>> [y.tolist() for _, y in iterate_batches(images, labels, batch_size=2, shuffle=False)]
        [[0, 1], [2, 3], [4]]

        Rank 1 of 2 takes the second half of each global batch of 4; the last batch holds one
        sample, so its shard there is empty:

        >>> [y.tolist() for _, y in iterate_batches(images, labels, 4, False, rank=1, world_size=2)]
        [[2, 3], []]
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
