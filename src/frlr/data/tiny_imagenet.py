"""Tiny ImageNet-200 (Stanford CS231N) from its official layout: the folder or the zip.

Layout read::

    wnids.txt                               the 200 class ids (WordNet ids), one per line
    words.txt                               wnid -> words table (optional: names the classes)
    train/<wnid>/images/<wnid>_<i>.JPEG     training images (500 per class in the full set)
    val/images/val_<k>.JPEG                 validation images, 50 per class
    val/val_annotations.txt                 file <TAB> wnid <TAB> x0 y0 x1 y1

Splits are ``train`` and ``val``; the official test split has no labels, so ``val`` serves as
the test set (``dataset_info("tiny-imagenet").eval_splits``). Classes are the wnids of
``wnids.txt`` in sorted order (the order a class-folder reader of ``train/`` gives), named by
``words.txt`` when it lists them; ``meta["wnids"]`` keeps the ids. Training images are ordered by
class, then by their numeric index ``i``; validation images by ``k``. About 2% of the images are
grayscale JPEGs and are converted to RGB. Images and annotation lines whose wnid is not in
``wnids.txt`` are skipped, so a copy with extra classes still gives the standard 200.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from frlr.data.arrays import ImageArrays
from frlr.data.images import check_image_size, decode_images
from frlr.data.sources import SourceTree, open_tree

SPLITS = ("train", "val")
_TRAIN_IMAGE = re.compile(r"^train/(?P<wnid>[^/]+)/images/(?P=wnid)_(?P<index>\d+)\.jpe?g$", re.I)
_LAYOUT = "not the official Tiny ImageNet layout: download or extract the dataset again"
_VAL_IMAGE = re.compile(r"^val_(?P<index>\d+)\.jpe?g$", re.I)


def _read_text(tree: SourceTree, name: str) -> list[str]:
    """Non-empty lines of a text file, tolerant of CRLF endings and stray whitespace."""
    text = tree.read(name).decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_wnids(tree: SourceTree) -> list[str]:
    """The class ids of ``wnids.txt``, sorted; duplicates are an error."""
    wnids = _read_text(tree, "wnids.txt")
    if len(set(wnids)) != len(wnids):
        raise tree.error("wnids.txt", "lists a class id twice", _LAYOUT)
    if not wnids:
        raise tree.error("wnids.txt", "lists no class ids", _LAYOUT)
    return sorted(wnids)


def read_words(tree: SourceTree) -> dict[str, str]:
    """``words.txt`` as wnid -> words, or {} when the file is absent."""
    if not tree.has("words.txt"):
        return {}
    words = {}
    for line in _read_text(tree, "words.txt"):
        wnid, _, name = line.partition("\t")
        words[wnid.strip()] = name.strip() or wnid.strip()
    return words


def train_names(tree: SourceTree, index_of: dict[str, int]) -> tuple[list[str], list[int]]:
    """The training images of the classes in ``index_of`` and their labels, sorted by wnid
    and image number (a stable order whatever the archive's); a class without images fails
    with the layout's hint. Public: the mosaics of ``frlr.data.multilabel`` are built from them."""
    found: dict[str, list[tuple[int, str]]] = {wnid: [] for wnid in index_of}
    for name in tree.names():
        match = _TRAIN_IMAGE.match(name)
        if match and match["wnid"] in found:
            found[match["wnid"]].append((int(match["index"]), name))
    empty = [wnid for wnid, items in found.items() if not items]
    if empty:
        raise tree.error(
            "train/",
            f"no training images for {len(empty)} classes of wnids.txt (first: {empty[0]})",
            _LAYOUT,
        )
    names, labels = [], []
    for wnid in sorted(found):
        for _, name in sorted(found[wnid]):
            names.append(name)
            labels.append(index_of[wnid])
    return names, labels


def val_names(tree: SourceTree, index_of: dict[str, int]) -> tuple[list[str], list[int]]:
    """The validation images of the classes in ``index_of`` and their labels, read from
    ``val/val_annotations.txt`` in image-number order; a malformed line fails by number."""
    annotations = "val/val_annotations.txt"
    rows: list[tuple[int, str, int]] = []
    for number, line in enumerate(_read_text(tree, annotations), start=1):
        fields = line.split()
        match = _VAL_IMAGE.match(fields[0]) if len(fields) >= 2 else None
        if match is None:
            raise tree.error(annotations, f"line {number} is malformed: {line!r}", _LAYOUT)
        if fields[1] in index_of:
            rows.append((int(match["index"]), f"val/images/{fields[0]}", index_of[fields[1]]))
    if not rows:
        raise tree.error(annotations, "labels no image with a wnids.txt class", _LAYOUT)
    rows.sort()
    return [name for _, name, _ in rows], [label for _, _, label in rows]


def load_tiny_imagenet(root: str | Path, split: str, image_size: int | None = None) -> ImageArrays:
    """Tiny ImageNet ``train`` or ``val`` as RGB uint8 (N, 64, 64, 3), or resized to image_size."""
    if split not in SPLITS:
        hint = " (test has no labels: use 'val' as the test set)" if split == "test" else ""
        raise ValueError(f"split must be one of {SPLITS} for tiny-imagenet, got {split!r}{hint}")
    image_size = check_image_size(image_size)
    with open_tree(root) as tree:
        wnids = read_wnids(tree)
        words = read_words(tree)
        index_of = {wnid: i for i, wnid in enumerate(wnids)}
        reader = train_names if split == "train" else val_names
        names, labels = reader(tree, index_of)
        images = decode_images(tree, names, "RGB", image_size, desc=f"tiny-imagenet {split}")
    return ImageArrays(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        classes=[words.get(wnid, wnid) for wnid in wnids],
        meta={
            "dataset": "tiny-imagenet",
            "split": split,
            "source": str(root),
            "wnids": " ".join(wnids),
        },
    )
