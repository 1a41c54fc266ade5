"""Any dataset laid out as one sub-folder per class, split into ``train/`` and ``val/``/``test/``.

Layout read (a folder, or a zip of it)::

    <root>/train/<class>/.../<image>        images may sit in nested folders under their class
    <root>/val/<class>/.../<image>          optional
    <root>/test/<class>/.../<image>         optional; split "test" falls back to val/ without it

Classes are the sub-folders of ``train/`` in sorted order, so labels mean the same in every
split; a class folder in ``val/``/``test/`` that ``train/`` lacks is an error. Images are files
with a common image extension (case-insensitive); hidden files and others are ignored. Every image
is converted to RGB. Images of different sizes need ``image_size``, which resizes each to a
square (aspect ratio not kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frlr.data.arrays import ImageArrays
from frlr.data.images import check_image_size, decode_images
from frlr.data.sources import SourceTree, open_tree

SPLITS = ("train", "val", "test")
_LAYOUT = "expected <root>/<split>/<class>/<image>: point at the folder that holds train/"
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)


def _split_images(tree: SourceTree, folder: str) -> dict[str, list[str]]:
    """class -> sorted image names under ``<folder>/<class>/``."""
    by_class: dict[str, list[str]] = {}
    prefix = folder + "/"
    for name in tree.names():
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        if len(parts) < 2 or any(p.startswith(".") for p in parts):
            continue
        if name.lower().endswith(IMAGE_EXTENSIONS):
            by_class.setdefault(parts[0], []).append(name)
    return by_class


def load_imagefolder(root: str | Path, split: str, image_size: int | None = None) -> ImageArrays:
    """A class-folder dataset's ``train``, ``val`` or ``test`` split as RGB uint8 arrays."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} for imagefolder, got {split!r}")
    image_size = check_image_size(image_size)
    with open_tree(root) as tree:
        train = _split_images(tree, "train")
        if not train:
            raise tree.error("train/", "no class folders with images", _LAYOUT)
        classes = sorted(train)
        if len(classes) < 2:
            raise tree.error(
                "train/",
                f"holds one class folder ({classes[0]!r}); a classifier needs at least 2",
                "add a folder of images per class under train/ (and the same under val/)",
            )
        folder = split
        if split == "test" and not _split_images(tree, "test"):
            folder = "val"
        by_class = train if folder == "train" else _split_images(tree, folder)
        if not by_class:
            raise tree.error(
                folder + "/",
                f"no class folders with images; train/ is there, with {len(classes)} classes, "
                f"but split {split!r} is tested on {folder}/",
                f"add {folder}/<class>/<image> beside train/ (held-out images of the same "
                "classes), or move part of each train/ class there",
            )
        unknown = sorted(set(by_class) - set(classes))
        if unknown:
            raise tree.error(
                folder + "/", f"class folders {unknown} are not in train/", "add them to train/"
            )
        index_of = {name: i for i, name in enumerate(classes)}
        names = [n for c in sorted(by_class) for n in by_class[c]]
        labels = [index_of[c] for c in sorted(by_class) for _ in by_class[c]]
        images = decode_images(tree, names, "RGB", image_size, desc=f"imagefolder {folder}")
    return ImageArrays(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        classes=classes,
        meta={"dataset": "imagefolder", "split": split, "folder": folder, "source": str(root)},
    )
