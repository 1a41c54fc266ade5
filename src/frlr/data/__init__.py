"""Datasets for the paper's experiments, decoded once into uint8 arrays.

``load_dataset(name, split, data_dir)`` returns an [`ImageArrays`][] for any dataset in
[`DATASETS`][]; ``dataset_info(name)`` describes one without loading it. Importing this package
imports no deep-learning framework: the batched, on-device augmentation and the batch iterator
that need torch live in [`frlr.data.augment`][].

Every failure a user can fix (a damaged archive member, a truncated image, a missing file, a
checksum mismatch) is a [`DataError`][] whose one-line message names the file, the archive
member, what is wrong and what to do.
"""

from frlr.data.arrays import ImageArrays, keep_first_classes
from frlr.data.cache import cached, default_cache_dir
from frlr.data.download import ChecksumError, RemoteFile
from frlr.data.errors import DataError, MissingDataError
from frlr.data.images import CorruptImageError
from frlr.data.registry import (
    DATASETS,
    DatasetInfo,
    dataset_info,
    default_data_dir,
    find_root,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "ChecksumError",
    "CorruptImageError",
    "DataError",
    "DatasetInfo",
    "ImageArrays",
    "MissingDataError",
    "RemoteFile",
    "cached",
    "dataset_info",
    "default_cache_dir",
    "default_data_dir",
    "find_root",
    "keep_first_classes",
    "load_dataset",
]
