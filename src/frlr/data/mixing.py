r"""Mixup, CutMix and label smoothing: soft training targets, made on the training device.

The modern recipes (timm, DeiT, "ResNet strikes back") train on batches whose targets are no
longer one-hot. This module makes such batches from a normalised float batch and its labels,
with timm's conventions (``timm.data.Mixup`` in its default ``mode="batch"``), so that every
loss of the toolkit can be trained the way practitioners train:

* **label smoothing** (eps): a class index y becomes t = (1 - eps) onehot(y) + eps / K, timm's
  convention (the true class keeps 1 - eps + eps/K, every class gets eps/K; the row sums to 1).
  A multi-hot row (multi-label) is K binary problems, each smoothed over its two outcomes:
  t = (1 - eps) t + eps / 2.
* **mixup** (alpha): lambda ~ Beta(alpha, alpha); every image becomes
  lambda x_i + (1 - lambda) x_{N-1-i} and its target lambda t_i + (1 - lambda) t_{N-1-i}.
* **CutMix** (alpha): lambda ~ Beta(alpha, alpha); a box of side sqrt(1 - lambda) times the
  image's, centred at a uniform pixel and clipped to the image, is pasted from x_{N-1-i} into
  x_i. lambda is then corrected to the share of pixels x_i kept,
  lambda = 1 - box area / (H W), and the targets are mixed with it.
* with both on, each batch uses one of the two, CutMix with probability 1/2.

One lambda per batch, and each sample is paired with the batch read backwards (``flip(0)``),
as timm's batch mode does: no permutation to draw, and the pairing is fixed by the shuffle.
Smoothing comes before mixing (the two smoothed rows are mixed), as in timm.

Every random number is drawn from the caller's ``torch.Generator`` (always three uniforms and
one Beta draw per mixed batch, on the generator's device), and nothing is read back to the host,
so the result is a function of the generator's state: the training loop checkpoints that state
and ``--resume`` stays bitwise. The lambda draw uses ``torch._sample_dirichlet`` with
concentration (alpha, alpha), whose first component is Beta(alpha, alpha); it is the sampler
behind ``torch.distributions.Beta``, the only one of torch's that takes a generator.

Mix the normalised float batch: normalisation is affine per channel with weights summing to 1,
so mixing normalised images equals normalising mixed ones, and CutMix copies pixels exactly.

Huge K: [`mix_batch_sparse`][] returns the same batch without (N, K) targets -- each row's two
labels, their weights lam and 1 - lam, and eps -- for the logits-free losses of
``frlr.torch.linear``, which form t = (1 - eps)(lam e_a + (1 - lam) e_b) + eps / K chunk by
chunk. From the same draws as [`mix_batch`][], so the two see identical images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "MixedBatch",
    "SparseMixedBatch",
    "cutmix_box",
    "mix_batch",
    "mix_batch_sparse",
    "mix_targets",
    "smooth_targets",
]


@dataclass(frozen=True)
class MixedBatch:
    """A training batch after [`mix_batch`][].

    Attributes:
        images: the mixed (N, C, H, W) float batch.
        targets: the soft (N, K) float targets the loss trains on.
        dominant: the labels of the sample with the larger weight, in the input's format
            (class indices, or multi-hot rows): the batch's own labels where lambda >= 1/2,
            the partner's otherwise. Training accuracy is counted against these.
        lam: 0-d tensor, the weight of each sample's own image and target (1: not mixed).

    Examples:
        >>> import torch
        >>> from frlr.data.mixing import mix_batch
        >>> labels = torch.tensor([0, 1, 2, 3])
        >>> mixed = mix_batch(torch.zeros(4, 1, 2, 2), labels, num_classes=4, label_smoothing=0.2)
        >>> mixed.dominant.tolist(), float(mixed.lam)
        ([0, 1, 2, 3], 1.0)
        >>> [round(v, 3) for v in mixed.targets[0].tolist()]
        [0.85, 0.05, 0.05, 0.05]
    """

    images: torch.Tensor
    targets: torch.Tensor
    dominant: torch.Tensor
    lam: torch.Tensor


@dataclass(frozen=True)
class SparseMixedBatch:
    """A training batch after [`mix_batch_sparse`][]: [`mix_batch`][]'s, its targets sparse.

    Attributes:
        images: the mixed (N, C, H, W) float batch, [`mix_batch`][]'s from the same draws.
        targets: the class indices (N,) when nothing is mixed, else each row's own label and
            its partner's, (N, 2) int64.
        target_weights: None when nothing is mixed, else (N, 2) float32 rows (lam, 1 - lam).
        label_smoothing: eps, for the loss to spread: t = (1 - eps) sparse + eps / K.
        dominant: as in [`MixedBatch`][].
        lam: as in [`MixedBatch`][].

    Examples:
        >>> import torch
        >>> from frlr.data.mixing import mix_batch_sparse
        >>> mixed = mix_batch_sparse(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 3]),
        ...                          torch.Generator().manual_seed(0), mixup=0.2)
        >>> mixed.targets.tolist()
        [[0, 3], [1, 2], [2, 1], [3, 0]]
        >>> mixed.target_weights.shape, mixed.label_smoothing
        (torch.Size([4, 2]), 0.0)
    """

    images: torch.Tensor
    targets: torch.Tensor
    target_weights: torch.Tensor | None
    label_smoothing: float
    dominant: torch.Tensor
    lam: torch.Tensor


def _check_rate(name: str, value: object, below_one: bool = False) -> float:
    """A finite, non-negative float (and < 1 when ``below_one``), or a TypeError/ValueError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    upper = " and < 1" if below_one else ""
    if not (math.isfinite(value) and value >= 0 and (value < 1 or not below_one)):
        raise ValueError(f"{name} must be finite, >= 0{upper}, got {value!r}")
    return float(value)


def smooth_targets(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    r"""Float (N, K) targets from class indices or multi-hot rows, label-smoothed by ``smoothing``.

    Class indices (int, (N,)): t = (1 - eps) onehot(y) + eps / K (timm's convention; each row
    sums to 1). Multi-hot rows (float or bool, (N, K)): t = (1 - eps) t + eps / 2 per label,
    since each label is its own two-outcome problem (a row keeps its mass up to eps/2 per label).

    Args:
        targets: int class indices (N,) in [0, K), or (N, K) multi-hot rows with values in [0, 1].
        num_classes: K, the width of the output (must match a multi-hot row's width).
        smoothing: eps in [0, 1).

    Examples:
        >>> import torch
        >>> from frlr.data.mixing import smooth_targets
        >>> [round(v, 3) for v in smooth_targets(torch.tensor([1]), 4, smoothing=0.2)[0].tolist()]
        [0.05, 0.85, 0.05, 0.05]
        >>> [round(v, 3) for v in smooth_targets(torch.tensor([[1.0, 0.0]]), 2, 0.2)[0].tolist()]
        [0.9, 0.1]
    """
    smoothing = _check_rate("smoothing", smoothing, below_one=True)
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        if targets.ndim != 2 or targets.shape[1] != num_classes:
            raise ValueError(
                f"multi-hot targets must have shape (N, {num_classes}), got {tuple(targets.shape)}"
            )
        rows = targets.float()
        return rows * (1.0 - smoothing) + smoothing / 2 if smoothing else rows
    if targets.ndim != 1:
        raise ValueError(f"class-index targets must have shape (N,), got {tuple(targets.shape)}")
    rows = F.one_hot(targets.long(), num_classes).float()
    return rows * (1.0 - smoothing) + smoothing / num_classes if smoothing else rows


def mix_targets(targets: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """lam * t_i + (1 - lam) * t_{N-1-i}: each soft row mixed with the batch read backwards.

    Rows that sum to 1 still do (up to rounding); values stay in [0, 1] (clamped against
    rounding), which the losses check.

    Args:
        targets: float (N, K) rows, e.g. from [`smooth_targets`][].
        lam: the weight of each row's own target, in [0, 1] (a float or a 0-d tensor).

    Examples:
        >>> import torch
        >>> from frlr.data.mixing import mix_targets
        >>> mix_targets(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.75).tolist()
        [[0.75, 0.25], [0.25, 0.75]]
    """
    if not isinstance(targets, torch.Tensor) or not targets.is_floating_point():
        raise TypeError(f"targets must be a float tensor, got {getattr(targets, 'dtype', targets)}")
    lam = torch.as_tensor(lam, dtype=targets.dtype, device=targets.device)
    return torch.lerp(targets.flip(0), targets, lam).clamp_(0.0, 1.0)


def cutmix_box(
    height: int, width: int, lam: torch.Tensor, center: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""timm's CutMix box and the area-corrected lambda, as tensors (no host sync).

    The box has sides cut_h = floor(H sqrt(1 - lam)), cut_w = floor(W sqrt(1 - lam)), is centred
    at (cy, cx) = (floor(u_0 H), floor(u_1 W)) for uniforms u in [0, 1), spans
    [cy - cut_h // 2, cy + cut_h // 2) (likewise for x), and is clipped to the image. The
    returned lambda is the share of pixels outside it: 1 - (box area) / (H W).

    Args:
        height, width: the image's size H, W.
        lam: 0-d tensor in [0, 1], the drawn Beta sample.
        center: (2,) uniforms in [0, 1) placing the box's centre.

    Returns:
        ``(box, lam)``: a bool (H, W) mask, True where the partner's pixels go, and the
        corrected lambda (0-d, float64).

    Examples:
        >>> import torch
        >>> from frlr.data.mixing import cutmix_box
        >>> box, lam = cutmix_box(4, 4, torch.tensor(0.75), torch.tensor([0.5, 0.5]))
        >>> box.int().tolist(), float(lam)
        ([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], 0.75)
    """
    lam = torch.as_tensor(lam, dtype=torch.float64)
    center = torch.as_tensor(center, dtype=torch.float64, device=lam.device)
    size = torch.tensor((height, width), dtype=torch.float64, device=lam.device)
    cut = torch.floor(size * torch.sqrt(1.0 - lam)).long()
    mid = torch.minimum(torch.floor(center * size).long(), size.long() - 1)
    low = torch.clamp(mid - cut // 2, min=0)
    high = torch.minimum(mid + cut // 2, size.long())
    rows = torch.arange(height, device=lam.device)
    cols = torch.arange(width, device=lam.device)
    in_rows = (rows >= low[0]) & (rows < high[0])
    in_cols = (cols >= low[1]) & (cols < high[1])
    area = torch.clamp(high - low, min=0).prod()
    return in_rows[:, None] & in_cols[None, :], 1.0 - area.double() / (height * width)


def mix_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    num_classes: int,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    label_smoothing: float = 0.0,
) -> MixedBatch:
    r"""Label smoothing, then mixup or CutMix, of one training batch (timm's batch mode).

    With ``mixup`` and ``cutmix`` both 0 only the targets change (no random draw). Otherwise
    three uniforms u and one lambda ~ Beta(alpha, alpha) are drawn from ``generator``: CutMix
    when u_0 < 1/2 with both on (else the one that is on), the box's centre from u_1, u_2
    ([`cutmix_box`][]). Each image becomes w x_i + (1 - w) x_{N-1-i} with a per-pixel w:
    lambda everywhere (mixup) or 0 inside the box and 1 outside (CutMix), and each target
    lambda t_i + (1 - lambda) t_{N-1-i} with CutMix's area-corrected lambda.

    Args:
        images: normalised float (N, C, H, W) batch (see the module note on why after
            normalisation).
        targets: class indices (N,) or multi-hot rows (N, K).
        generator: the source of randomness (seeded: the same batch every time).
        num_classes: K.
        mixup: Beta concentration alpha of mixup, >= 0 (0: off; timm's recipes use 0.2-0.8).
        cutmix: Beta concentration alpha of CutMix, >= 0 (0: off; usually 1.0).
        label_smoothing: eps in [0, 1).

    Returns:
        A [`MixedBatch`][].

    Examples:
        >>> import torch
        >>> from frlr.data.mixing import mix_batch
        >>> images = torch.randn(8, 3, 32, 32)
        >>> labels = torch.randint(0, 10, (8,))
        >>> mixed = mix_batch(images, labels, torch.Generator().manual_seed(0), num_classes=10,
        ...                   mixup=0.2, cutmix=1.0, label_smoothing=0.1)
        >>> mixed.targets.shape, bool(torch.allclose(mixed.targets.sum(1), torch.ones(8)))
        (torch.Size([8, 10]), True)
    """
    mixup, cutmix = _check_batch(images, targets, generator, mixup, cutmix)
    soft = smooth_targets(targets, num_classes, label_smoothing).to(images.device)
    if not (mixup or cutmix):
        return MixedBatch(images, soft, targets, torch.ones((), device=images.device))
    mixed, lam, dominant = _mix_images(images, targets, generator, mixup, cutmix)
    return MixedBatch(mixed, mix_targets(soft, lam), dominant, lam)


def mix_batch_sparse(
    images: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    label_smoothing: float = 0.0,
) -> SparseMixedBatch:
    r"""[`mix_batch`][] of class indices with its targets in the sparse form of the
    logits-free losses: no (N, K) row is made.

    The same checks and the same draws from ``generator`` as [`mix_batch`][], hence the same
    images, lambda and dominant labels. Its soft target (1 - eps)(lam e_y + (1 - lam)
    e_{y'}) + eps / K, y' = the partner's label, is returned as the pairs (y, y'), weights
    (lam, 1 - lam) and eps, which [`frlr.torch.linear_ss_lr_loss`][] and its siblings take
    as ``target``, ``target_weights`` and ``label_smoothing``. Unmixed (mixup and cutmix 0):
    the class indices themselves and eps.

    Args:
        images, generator, mixup, cutmix, label_smoothing: as in [`mix_batch`][].
        targets: class indices (N,). Multi-hot rows smooth per label (eps / 2), which the
            sparse form cannot express: mix them with [`mix_batch`][].

    Returns:
        A [`SparseMixedBatch`][].

    Examples:
        >>> import torch
        >>> from frlr.data.mixing import mix_batch, mix_batch_sparse
        >>> images, labels = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
        >>> options = {"mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1}
        >>> dense = mix_batch(images, labels, torch.Generator().manual_seed(3), num_classes=10,
        ...                   **options)
        >>> sparse = mix_batch_sparse(images, labels, torch.Generator().manual_seed(3), **options)
        >>> bool(torch.equal(sparse.images, dense.images)), sparse.targets.shape
        (True, torch.Size([6, 2]))
    """
    mixup, cutmix = _check_batch(images, targets, generator, mixup, cutmix)
    smoothing = _check_rate("label_smoothing", label_smoothing, below_one=True)
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.ndim != 1:
        raise ValueError(
            f"mix_batch_sparse takes class indices (N,), got {targets.dtype} targets of shape "
            f"{tuple(targets.shape)}; mix multi-hot rows densely with mix_batch"
        )
    if not (mixup or cutmix):
        ones = torch.ones((), device=images.device)
        return SparseMixedBatch(images, targets, None, smoothing, targets, ones)
    mixed, lam, dominant = _mix_images(images, targets, generator, mixup, cutmix)
    own = lam.to(torch.float32)  # the dense mix's rounding: mix_targets lerps float32 rows
    weights = torch.stack([own, 1.0 - own]).to(targets.device).expand(len(targets), 2)
    pairs = torch.stack([targets, targets.flip(0)], 1)
    return SparseMixedBatch(mixed, pairs, weights, smoothing, dominant, lam)


def _check_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator | None,
    mixup: float,
    cutmix: float,
) -> tuple[float, float]:
    """The checks of both mixers: (mixup, cutmix) as floats, or an error naming the argument."""
    mixup = _check_rate("mixup", mixup)
    cutmix = _check_rate("cutmix", cutmix)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a normalised float batch, got dtype {images.dtype}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images")
    return mixup, cutmix


def _mix_images(
    images: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator | None,
    mixup: float,
    cutmix: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mixed images, lambda (0-d, on the images' device) and the dominant labels: the
    draws both mixers share, so a dense and a sparse run with one seed see the same batch."""
    device = generator.device if generator is not None else images.device
    draws = torch.rand(3, generator=generator, device=device, dtype=torch.float64)
    only = torch.tensor(bool(cutmix), device=device)  # one of the two is on: that one
    use_cutmix = draws[0] < 0.5 if mixup and cutmix else only
    alpha = torch.where(use_cutmix, cutmix, mixup).to(torch.float64).expand(2).contiguous()
    lam = torch._sample_dirichlet(alpha, generator=generator)[0]
    height, width = images.shape[-2:]
    box, cut_lam = cutmix_box(height, width, lam, draws[1:])
    lam = torch.where(use_cutmix, cut_lam, lam).to(images.device)
    keep = torch.where(use_cutmix, ~box, lam).to(device=images.device, dtype=images.dtype)
    dominant = torch.where(lam >= 0.5, targets, targets.flip(0))
    return torch.lerp(images.flip(0), images, keep), lam, dominant
