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

    Attributes:
        images: uint8 (N, H, W, C), C = 1 or 3.
        labels: int64 (N,) class indices for single-label data, or uint8 (N, K) multi-hot for
            multi-label data (DeepFashion attributes, the Tiny ImageNet mosaic).
        classes: the K class names, index-aligned with the labels.
        cams: int64 (N,) camera ids for re-identification splits (the drawer for Omniglot),
            else None.
        meta: free-form provenance (source paths, protocol notes) kept with the cache.

    Examples:
        >>> import numpy as np
        >>> from frlr.data import ImageArrays
        >>> split = ImageArrays(
        ...     images=np.zeros((4, 8, 8, 1), dtype=np.uint8),
        ...     labels=np.array([0, 1, 2, 1]),
        ...     classes=["cat", "dog", "fox"],
        ... )
        >>> len(split), split.num_classes, split.multilabel
        (4, 3, False)
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
        """True when ``labels`` is (N, K) multi-hot rather than (N,) class indices."""
        return self.labels.ndim == 2

    @property
    def num_classes(self) -> int:
        """K, the number of class names."""
        return len(self.classes)


def keep_first_classes(arrays: ImageArrays, k: int) -> ImageArrays:
    """The samples of the first ``k`` classes of a single-label split, in the split's order.

    Why: the paper's claim is about the number of classes K (LR on a par with SR at K = 10,
    behind at K = 100 and 200), so the same images and recipe are trained at several K by
    keeping a prefix of the class list. Classes ``0 .. k-1`` keep their indices, so the labels
    need no remapping and every split of a dataset (whose class lists agree) is cut alike.

    Raises ValueError for k < 2 (one class has no negatives), k above the split's class count,
    multi-label rows (a mosaic with one kept label and three dropped ones has no single class)
    or camera ids (re-id identities are not a fixed class list).

    Args:
        arrays: a single-label split (integer labels, no camera ids).
        k: how many classes to keep, from 2 to the split's class count.

    Examples:
        >>> import numpy as np
        >>> from frlr.data import ImageArrays, keep_first_classes
        >>> split = ImageArrays(
        ...     images=np.zeros((4, 2, 2, 1), np.uint8),
        ...     labels=np.array([0, 1, 2, 1]),
        ...     classes=["a", "b", "c"],
        ... )
        >>> kept = keep_first_classes(split, 2)
        >>> kept.labels.tolist(), kept.classes
        ([0, 1, 1], ['a', 'b'])
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer number of classes, got {k!r}")
    if arrays.multilabel:
        raise ValueError(
            f"k = {k}: keeping the first classes needs single-label data, got "
            f"multi-hot labels of shape {arrays.labels.shape}"
        )
    if arrays.cams is not None:
        raise ValueError(
            f"k = {k}: keeping the first classes does not apply to re-id splits "
            "(they carry camera ids; their identities are not a class list)"
        )
    if not 2 <= k <= arrays.num_classes:
        raise ValueError(
            f"k must be between 2 and the {arrays.num_classes} classes of the split, got {k}"
        )
    keep = arrays.labels < k
    meta = {**arrays.meta, "kept_classes": f"the first {int(k)} of {arrays.num_classes}"}
    return ImageArrays(
        images=arrays.images[keep],
        labels=arrays.labels[keep],
        classes=list(arrays.classes[: int(k)]),
        cams=None,
        meta=meta,
    )
