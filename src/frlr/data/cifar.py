"""CIFAR-10 and CIFAR-100 from the official "python version" pickles (Krizhevsky, 2009).

Layouts read (either the extracted folder or the ``.tar.gz`` itself):

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` (train, 50,000 images),
  ``test_batch`` (10,000), ``batches.meta`` (``label_names``).
- ``cifar-100-python/``: ``train`` (50,000), ``test`` (10,000), ``meta``
  (``fine_label_names``). Labels are the 100 fine classes, as in the paper.

Each batch is a pickled dict whose ``data`` is uint8 (N, 3072): the 1024 red, then green, then
blue values of a 32x32 image, row-major. The pickles are read with an unpickler that only accepts
numpy arrays and plain containers, so a tampered archive cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from frlr.data.arrays import ImageArrays
from frlr.data.errors import REDOWNLOAD, DataError
from frlr.data.images import check_image_size, resize_images
from frlr.data.sources import SourceTree, open_tree

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
SPLITS = ("train", "test")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only what the CIFAR batches hold: dicts, lists, strings and numpy arrays."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module.startswith("numpy.core."):
            try:
                return super().find_class("numpy._core." + module[len("numpy.core.") :], name)
            except ModuleNotFoundError:  # numpy < 2 has only numpy.core
                pass
        return super().find_class(module, name)


def _batch_error(tree: SourceTree, name: str, problem: str) -> DataError:
    """A damaged or foreign CIFAR batch, named by its archive and member."""
    return tree.error(name, problem, f"this is not the official CIFAR file: {REDOWNLOAD}")


def _unpickle(tree: SourceTree, name: str, data: bytes) -> dict[str, Any]:
    """Load one batch; keys come back as str whether pickled by Python 2 or 3."""
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise _batch_error(
            tree, name, f"corrupt CIFAR batch ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(loaded, dict):
        raise _batch_error(tree, name, "the CIFAR batch is not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in loaded.items()}


def _field(batch: dict[str, Any], key: str, tree: SourceTree, name: str) -> Any:
    if key not in batch:
        raise _batch_error(tree, name, f"the CIFAR batch has no {key!r} entry")
    return batch[key]


def _load(
    root: str | Path,
    split: str,
    image_size: int | None,
    files: dict[str, list[str]],
    meta_file: str,
    label_key: str,
    names_key: str,
    dataset: str,
) -> ImageArrays:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} for {dataset}, got {split!r}")
    image_size = check_image_size(image_size)
    images, labels = [], []
    with open_tree(root) as tree:
        raw = tree.read_many([meta_file, *files[split]])
        meta = _unpickle(tree, meta_file, raw.pop(meta_file))
        classes = [
            c.decode() if isinstance(c, bytes) else str(c)
            for c in _field(meta, names_key, tree, meta_file)
        ]
        for name in files[split]:
            batch = _unpickle(tree, name, raw.pop(name))
            data = np.asarray(_field(batch, "data", tree, name))
            batch_labels = np.asarray(_field(batch, label_key, tree, name), dtype=np.int64)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise _batch_error(
                    tree, name, f"data is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
                )
            if len(batch_labels) != len(data):
                raise _batch_error(tree, name, f"{len(batch_labels)} labels for {len(data)} images")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(batch_labels)
    all_labels = np.concatenate(labels)
    if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= len(classes)):
        raise ValueError(f"{dataset} labels fall outside 0..{len(classes) - 1} in {root}")
    pixels = np.ascontiguousarray(np.concatenate(images))
    return ImageArrays(
        images=resize_images(pixels, image_size, desc=f"resizing {dataset} {split}"),
        labels=all_labels,
        classes=classes,
        meta={"dataset": dataset, "split": split, "source": str(root)},
    )


def load_cifar10(root: str | Path, split: str, image_size: int | None = None) -> ImageArrays:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000) from the folder or the tar.gz."""
    return _load(
        root, split, image_size, CIFAR10_FILES, "batches.meta", "labels", "label_names", "cifar10"
    )


def load_cifar100(root: str | Path, split: str, image_size: int | None = None) -> ImageArrays:
    """CIFAR-100 ``train`` or ``test`` with the 100 fine labels, from the folder or the tar.gz."""
    return _load(
        root,
        split,
        image_size,
        CIFAR100_FILES,
        "meta",
        "fine_labels",
        "fine_label_names",
        "cifar100",
    )
