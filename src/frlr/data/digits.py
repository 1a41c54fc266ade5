"""scikit-learn's bundled 8x8 handwritten digits: the dataset that needs no download.

1,797 images of 10 classes (the UCI optical-recognition test set), grey levels 0..16, scaled
here to uint8 by ``round(v * 255 / 16)``. scikit-learn ships no split, so one is fixed: a
stratified 80/20 train/test split with seed 0 (1,437 train, 360 test), each split in the
original order. It is small enough for smoke tests and CPU-only comparisons of the losses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frlr.data.arrays import ImageArrays
from frlr.data.images import check_image_size, resize_images

SPLITS = ("train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits(
    root: str | Path | None = None, split: str = "train", image_size: int | None = None
) -> ImageArrays:
    """The digits ``train`` or ``test`` split as (N, 8, 8, 1) uint8; ``root`` is ignored."""
    from sklearn.datasets import load_digits as sklearn_digits  # slow to import: digits only
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} for digits, got {split!r}")
    image_size = check_image_size(image_size)
    bunch = sklearn_digits()
    pixels = np.rint(np.asarray(bunch.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    targets = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)),
        test_size=TEST_FRACTION,
        stratify=targets,
        random_state=SPLIT_SEED,
    )
    chosen = np.sort(train_idx if split == "train" else test_idx)
    images = resize_images(pixels[chosen][:, :, :, None], image_size, desc=f"digits {split}")
    return ImageArrays(
        images=np.ascontiguousarray(images),
        labels=targets[chosen],
        classes=[str(d) for d in range(10)],
        meta={
            "dataset": "digits",
            "split": split,
            "source": "sklearn.datasets.load_digits",
            "protocol": f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} split, seed 0",
        },
    )
