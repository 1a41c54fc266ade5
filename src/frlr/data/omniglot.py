"""Omniglot (Lake, Salakhutdinov and Tenenbaum, Science 2015) as a many-class classification set.

The official files (github.com/brendenlake/omniglot, ``python/``) are four zips, each one
alphabet folder per alphabet::

    images_background.zip           30 alphabets, 964 characters
    images_evaluation.zip           20 alphabets, 659 characters
    images_background_small1.zip     5 alphabets, 136 characters
    images_background_small2.zip     5 alphabets, 156 characters

    <root>/<Alphabet>/characterNN/<charid>_<drawer>.png    105x105, 1-bit, black strokes on white

Any of them, zipped or extracted, is a ``root`` here. Each character is a class, named
``<Alphabet>/characterNN`` and ordered by that name. Every character was drawn once by each of 20
people, so the split is by drawer and is the same for every character: drawers 1-15 are
``train`` (15 images per class), drawers 16-20 are ``test`` (5 per class); ``all`` gives both.
The drawer number (1..20) is kept in ``cams``, since the retrieval protocol treats the drawer as
the camera. Images are single-channel uint8, inverted so strokes are 255 on a 0 background (as
in ``frlr.data.reid.load_omniglot_retrieval``): zero is then the background, the value that
zero-padded translation and convolution borders assume.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from frlr.data.arrays import ImageArrays
from frlr.data.errors import DataError
from frlr.data.images import check_image_size, decode_images
from frlr.data.sources import open_tree

TRAIN_DRAWERS = tuple(range(1, 16))
TEST_DRAWERS = tuple(range(16, 21))
SPLITS = {"train": TRAIN_DRAWERS, "test": TEST_DRAWERS, "all": TRAIN_DRAWERS + TEST_DRAWERS}

_IMAGE = re.compile(r"^(?P<character>[^/]+/character\d+)/\d+_(?P<drawer>\d+)\.png$", re.I)


def load_omniglot(root: str | Path, split: str, image_size: int | None = None) -> ImageArrays:
    """One Omniglot archive (zip or folder) as (N, 105, 105, 1) uint8 (strokes 255), one class
    per character.

    Splits: ``train`` (drawers 1-15), ``test`` (drawers 16-20), ``all``; drawer ids in ``cams``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)} for omniglot, got {split!r}")
    image_size = check_image_size(image_size)
    drawers = set(SPLITS[split])
    with open_tree(root) as tree:
        found = [(m["character"], int(m["drawer"]), m.string) for m in map(_IMAGE.match, tree) if m]
        if not found:
            raise DataError(
                root,
                "no Omniglot images (expected <Alphabet>/characterNN/<charid>_<drawer>.png)",
                "point at one of the official images_*.zip archives or its extracted folder",
            )
        classes = sorted({character for character, _, _ in found})
        index_of = {character: i for i, character in enumerate(classes)}
        chosen = sorted((index_of[c], d, name) for c, d, name in found if d in drawers)
        names = [name for _, _, name in chosen]
        images = decode_images(tree, names, "L", image_size, desc=f"omniglot {split}")
    return ImageArrays(
        images=255 - images,
        labels=np.asarray([label for label, _, _ in chosen], dtype=np.int64),
        classes=classes,
        cams=np.asarray([drawer for _, drawer, _ in chosen], dtype=np.int64),
        meta={
            "dataset": "omniglot",
            "split": split,
            "source": str(root),
            "protocol": "each character a class; drawers 1-15 train, 16-20 test; cams = drawer",
        },
    )
