"""A validation split carved from the training split, so hyper-parameters are chosen without
ever reading the test split.

Why a fixed split: a comparison of losses is fair only when every loss and every seed is tuned
on the same held-out images, so the split depends on the data and ``split_seed`` alone, never on
the run's seed or loss. Three ways to hold out, one per task:

- ``"class"`` (single-label classification): stratified; each class keeps
  ``round(fraction * n_c)`` of its ``n_c`` images for validation (at least one stays in
  training), chosen by a generator seeded with ``(split_seed, class)``, so a class's choice
  does not depend on the others (``num_classes`` prefixes carve the same images per class).
- ``"identity"`` (re-id, cross-class retrieval): ``round(fraction * K)`` whole training
  identities are held out and retrieved among themselves, as the test identities are; the
  remaining identities are relabelled ``0..K'-1`` in their order for the classifier.
- ``"image"`` (multi-label): ``round(fraction * N)`` images held out at random.

Examples:
    >>> import numpy as np
    >>> from frlr.data import ImageArrays
    >>> from frlr.data.validation import carve_validation
    >>> split = ImageArrays(np.zeros((10, 2, 2, 1), np.uint8), np.repeat([0, 1], 5), ["a", "b"])
    >>> train, val, record = carve_validation(split, 0.2, by="class")
    >>> len(train), len(val), np.bincount(val.labels).tolist()
    (8, 2, [1, 1])
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np

from frlr.data.arrays import ImageArrays

__all__ = ["HOLD_OUT_KINDS", "carve_validation", "validation_indices"]

HoldOut = Literal["class", "identity", "image"]
HOLD_OUT_KINDS: tuple[str, ...] = ("class", "identity", "image")


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _per_class(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = min(_round_half_up(fraction * len(members)), len(members) - 1)
        if n > 0:
            rng = np.random.default_rng([seed, int(c)])
            held.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)


def _per_identity(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    ids = np.unique(labels)
    n = _round_half_up(fraction * len(ids))
    if n < 2 or len(ids) - n < 2:
        raise ValueError(
            f"val_fraction {fraction:g} of {len(ids)} identities holds out {n}; retrieval "
            "needs at least 2 held out and 2 left to train: choose a fraction that does"
        )
    chosen = np.random.default_rng([seed, 1]).permutation(ids)[:n]
    return np.flatnonzero(np.isin(labels, chosen))


def _per_image(count: int, fraction: float, seed: int) -> np.ndarray:
    n = _round_half_up(fraction * count)
    if n < 1 or n >= count:
        raise ValueError(
            f"val_fraction {fraction:g} of {count} images holds out {n}; choose a fraction "
            "that leaves images on both sides"
        )
    return np.sort(np.random.default_rng([seed, 2]).permutation(count)[:n])


def validation_indices(
    labels: np.ndarray, fraction: float, *, by: HoldOut, split_seed: int = 0
) -> np.ndarray:
    """The sorted indices of the held-out images (see the module docstring for ``by``)."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    if by == "class":
        held = _per_class(labels, fraction, split_seed)
        if len(held) == 0:
            raise ValueError(
                f"val_fraction {fraction:g} holds out no image (every class is too small); "
                "choose a larger fraction"
            )
        return held
    if by == "identity":
        return _per_identity(labels, fraction, split_seed)
    if by == "image":
        return _per_image(len(labels), fraction, split_seed)
    raise ValueError(f"by must be one of {', '.join(HOLD_OUT_KINDS)}, got {by!r}")


def _subset(arrays: ImageArrays, index: np.ndarray, relabel: bool) -> ImageArrays:
    labels, classes = arrays.labels[index], list(arrays.classes)
    if relabel:  # identities become 0..K'-1 in their order, as the classifier needs
        kept, labels = np.unique(labels, return_inverse=True)
        classes = [arrays.classes[k] for k in kept]
        labels = labels.astype(np.int64)
    return ImageArrays(
        images=arrays.images[index],
        labels=labels,
        classes=classes,
        cams=None if arrays.cams is None else arrays.cams[index],
        meta=dict(arrays.meta),
    )


def carve_validation(
    arrays: ImageArrays, fraction: float, *, by: HoldOut, split_seed: int = 0
) -> tuple[ImageArrays, ImageArrays, dict[str, Any]]:
    """(training part, validation part, record) of a training split.

    The record (for ``result.json``) names the rule, the sizes and a SHA-256 of the held-out
    indices, so two runs can be checked to have held out the same images.
    """
    if by == "identity" and arrays.cams is None:
        raise ValueError("an identity hold-out needs camera ids on the training split")
    held = validation_indices(arrays.labels, fraction, by=by, split_seed=split_seed)
    keep = np.setdiff1d(np.arange(len(arrays)), held, assume_unique=True)
    relabel = by == "identity"
    train, val = _subset(arrays, keep, relabel), _subset(arrays, held, relabel)
    record = {
        "fraction": fraction,
        "by": by,
        "split_seed": split_seed,
        "num_train": len(train),
        "num_val": len(val),
        "held_out_sha256": hashlib.sha256(held.astype(np.int64).tobytes()).hexdigest(),
    }
    return train, val, record
