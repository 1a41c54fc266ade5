"""The one in-memory form every dataset loader returns: decoded uint8 images plus labels.

Images are decoded once (and cached on disk by ``frlr.data.cache``); training then reads from
memory and augments whole batches on the training device, so no loader does per-sample work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageArrays:
    """A split of a dataset, fully decoded.

    images: uint8 (N, H, W, C), C = 1 or 3.
    labels: int64 (N,) class indices for single-label data, or uint8 (N, K) multi-hot for
        multi-label data (DeepFashion attributes, the Tiny ImageNet mosaic).
    classes: the K class names, index-aligned with the labels.
    cams: int64 (N,) camera ids for re-identification splits (the drawer for Omniglot), else None.
    meta: free-form provenance (source paths, protocol notes) kept with the cache.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    cams: np.ndarray | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")
        if self.cams is not None and len(self.cams) != len(self.images):
            raise ValueError(f"{len(self.cams)} camera ids for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    @property
    def num_classes(self) -> int:
        return len(self.classes)
