"""Every dataset by name: where it lives under ``data_dir``, where to download it, how to load it.

``load_dataset(name, split, data_dir)`` finds the dataset under ``data_dir`` by its conventional
folder or archive name (``tiny-imagenet-200/``, ``cifar-10-python.tar.gz`` ...), downloads and
checks the official archive when asked, and returns the split decoded, through the on-disk cache
(``frlr.data.cache``). The re-identification and multi-label loaders live in
``frlr.data.reid`` and ``frlr.data.multilabel``; they are imported only when loaded.

``data_dir`` defaults to ``$FRLR_DATA``, else ``~/.cache/frlr/datasets``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from frlr.data.arrays import ImageArrays
from frlr.data.cache import cached
from frlr.data.download import RemoteFile, download_file
from frlr.data.errors import MissingDataError

Task = Literal["classification", "reid", "multilabel"]
ImageSize = int | tuple[int, int] | None
Loader = Callable[..., ImageArrays]


@dataclass(frozen=True)
class DatasetInfo:
    """What a training script needs to know about a dataset before loading it.

    Attributes:
        name: the key in [`DATASETS`][].
        task: "classification", "reid" or "multilabel"; it picks the metrics and the losses.
        num_classes: classes of the training split (identities for re-id, labels for
            multi-label); None when it depends on the data on disk.
        splits: every split the loader accepts.
        train_split: the split to train on.
        eval_splits: the splits to evaluate on (``("val",)`` for Tiny ImageNet, whose test
            split has no labels; query and gallery for re-id).
        url: the dataset's official home.
        description: one line for listings.
        folders: names looked for under ``data_dir``, first found wins; ``data_dir`` itself is
            used when it carries one of these names, or (``root_fallback``) when none is found.
        downloads: official archives with their published checksums; empty when the dataset
            must be fetched by hand (licence or withdrawn).
        image_shape: (H, W, C) of the decoded images at the default size, when fixed.
        root_fallback: use ``data_dir`` itself when no named folder is found.
        cache: whether [`load_dataset`][] caches the decoded arrays on disk.

    Examples:
        >>> from frlr.data import dataset_info
        >>> info = dataset_info("cifar100")
        >>> info.task, info.num_classes, info.train_split, info.eval_splits
        ('classification', 100, 'train', ('test',))
    """

    name: str
    task: Task
    num_classes: int | None
    splits: tuple[str, ...]
    train_split: str
    eval_splits: tuple[str, ...]
    url: str
    description: str
    folders: tuple[str, ...] = ()
    downloads: tuple[RemoteFile, ...] = ()
    image_shape: tuple[int, int, int] | None = None
    root_fallback: bool = False
    cache: bool = True


_CIFAR10 = RemoteFile(
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
_CIFAR100 = RemoteFile(
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)
_TINY_IMAGENET = RemoteFile(
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    "tiny-imagenet-200.zip",
    md5="90528d7ca1a48142e341f4ef8d21d0de",
)
_OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
_OMNIGLOT = {
    "background": RemoteFile(
        _OMNIGLOT_URL + "images_background.zip",
        "images_background.zip",
        md5="68d2efa1b9178cc56df9314c21c6e718",
    ),
    "evaluation": RemoteFile(
        _OMNIGLOT_URL + "images_evaluation.zip",
        "images_evaluation.zip",
        md5="6b91aef0f799c5bb55b94e3f2daec811",
    ),
    "background_small1": RemoteFile(
        _OMNIGLOT_URL + "images_background_small1.zip",
        "images_background_small1.zip",
        sha256="f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    ),
    "background_small2": RemoteFile(
        _OMNIGLOT_URL + "images_background_small2.zip",
        "images_background_small2.zip",
        sha256="3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    ),
}
_OMNIGLOT_CLASSES = {
    "background": 964,
    "evaluation": 659,
    "background_small1": 136,
    "background_small2": 156,
}
_OMNIGLOT_HOME = "https://github.com/brendenlake/omniglot"


def _omniglot_info(name: str, subset: str) -> DatasetInfo:
    archive = _OMNIGLOT[subset].filename
    folder = archive.removesuffix(".zip")
    return DatasetInfo(
        name=name,
        task="classification",
        num_classes=_OMNIGLOT_CLASSES[subset],
        splits=("train", "test", "all"),
        train_split="train",
        eval_splits=("test",),
        url=_OMNIGLOT_HOME,
        description=f"Omniglot {folder}: each character a class; drawers 1-15 train, 16-20 test",
        folders=(folder, archive, f"omniglot/{folder}", f"omniglot/{archive}"),
        downloads=(_OMNIGLOT[subset],),
        image_shape=(105, 105, 1),
    )


_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="cifar10",
            task="classification",
            num_classes=10,
            splits=("train", "test"),
            train_split="train",
            eval_splits=("test",),
            url="https://www.cs.toronto.edu/~kriz/cifar.html",
            description="CIFAR-10, 50,000 train / 10,000 test 32x32 RGB images",
            folders=("cifar-10-batches-py", "cifar-10-python.tar.gz"),
            downloads=(_CIFAR10,),
            image_shape=(32, 32, 3),
        ),
        DatasetInfo(
            name="cifar100",
            task="classification",
            num_classes=100,
            splits=("train", "test"),
            train_split="train",
            eval_splits=("test",),
            url="https://www.cs.toronto.edu/~kriz/cifar.html",
            description="CIFAR-100 (fine labels), 50,000 train / 10,000 test 32x32 RGB images",
            folders=("cifar-100-python", "cifar-100-python.tar.gz"),
            downloads=(_CIFAR100,),
            image_shape=(32, 32, 3),
        ),
        DatasetInfo(
            name="tiny-imagenet",
            task="classification",
            num_classes=200,
            splits=("train", "val"),
            train_split="train",
            eval_splits=("val",),
            url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            description="Tiny ImageNet-200, 64x64 RGB; val is the test set (test has no labels)",
            folders=("tiny-imagenet-200", "tiny-imagenet-200.zip"),
            downloads=(_TINY_IMAGENET,),
            image_shape=(64, 64, 3),
        ),
        _omniglot_info("omniglot", "background"),
        _omniglot_info("omniglot-evaluation", "evaluation"),
        _omniglot_info("omniglot-small1", "background_small1"),
        _omniglot_info("omniglot-small2", "background_small2"),
        DatasetInfo(
            name="imagefolder",
            task="classification",
            num_classes=None,
            splits=("train", "val", "test"),
            train_split="train",
            eval_splits=("test",),
            url="",
            description="data_dir/{train,val,test}/<class>/<image>; test falls back to val",
            root_fallback=True,
        ),
        DatasetInfo(
            name="digits",
            task="classification",
            num_classes=10,
            splits=("train", "test"),
            train_split="train",
            eval_splits=("test",),
            url="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
            description="scikit-learn's bundled 8x8 digits, stratified 80/20 split (seed 0)",
            image_shape=(8, 8, 1),
            cache=False,
        ),
        DatasetInfo(
            name="market1501",
            task="reid",
            num_classes=751,
            splits=("train", "query", "gallery"),
            train_split="train",
            eval_splits=("query", "gallery"),
            url="https://zheng-lab-anu.github.io/Project/project_reid.html",
            description="Market-1501 person re-id (download by hand: no published checksum)",
            folders=("Market-1501-v15.09.15",),
            root_fallback=True,
        ),
        DatasetInfo(
            name="dukemtmc-reid",
            task="reid",
            num_classes=702,
            splits=("train", "query", "gallery"),
            train_split="train",
            eval_splits=("query", "gallery"),
            url="https://github.com/layumi/DukeMTMC-reID_evaluation",
            description="DukeMTMC-reID person re-id (withdrawn upstream; place it by hand)",
            folders=("DukeMTMC-reID",),
            root_fallback=True,
        ),
        DatasetInfo(
            name="omniglot-retrieval",
            task="reid",
            num_classes=136,
            splits=("train", "query", "gallery"),
            train_split="train",
            eval_splits=("query", "gallery"),
            url=_OMNIGLOT_HOME,
            description="train on small1 characters, retrieve the unseen small2 characters",
            folders=("omniglot",),
            downloads=(_OMNIGLOT["background_small1"], _OMNIGLOT["background_small2"]),
            image_shape=(105, 105, 1),
            root_fallback=True,
        ),
        DatasetInfo(
            name="deepfashion-attributes",
            task="multilabel",
            num_classes=1000,
            splits=("train", "val", "test"),
            train_split="train",
            eval_splits=("test",),
            url="https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/AttributePrediction.html",
            description="DeepFashion Category and Attribute Prediction, 1,000 attributes "
            "(licence: download by hand)",
            folders=(
                "DeepFashion/Category and Attribute Prediction Benchmark",
                "Category and Attribute Prediction Benchmark",
                "DeepFashion",
            ),
            root_fallback=True,
        ),
        DatasetInfo(
            name="mosaic-tiny-imagenet",
            task="multilabel",
            num_classes=200,
            splits=("train", "val", "test"),
            train_split="train",
            eval_splits=("test",),
            url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            description="2x2 mosaics of Tiny ImageNet images, 4 positives of 200 labels "
            "(needs the extracted tiny-imagenet-200 folder)",
            folders=("tiny-imagenet-200",),
            image_shape=(128, 128, 3),
        ),
    )
}


def _lazy(module: str, function: str) -> Loader:
    """A loader that imports its module on first use, so the registry imports nothing heavy."""

    def load(
        root: Path | None, split: str, image_size: ImageSize = None, **options: Any
    ) -> ImageArrays:
        import importlib  # a dataset's loader module is imported when that dataset is loaded

        loader = getattr(importlib.import_module(f"frlr.data.{module}"), function)
        if image_size is None:
            return loader(root, split, **options)
        return loader(root, split, image_size, **options)

    load.__name__ = function
    load.__qualname__ = function
    load.__doc__ = f"Lazy wrapper of ``frlr.data.{module}.{function}(root, split, image_size)``."
    return load


DATASETS: Mapping[str, Loader] = MappingProxyType(
    {
        "cifar10": _lazy("cifar", "load_cifar10"),
        "cifar100": _lazy("cifar", "load_cifar100"),
        "tiny-imagenet": _lazy("tiny_imagenet", "load_tiny_imagenet"),
        "omniglot": _lazy("omniglot", "load_omniglot"),
        "omniglot-evaluation": _lazy("omniglot", "load_omniglot"),
        "omniglot-small1": _lazy("omniglot", "load_omniglot"),
        "omniglot-small2": _lazy("omniglot", "load_omniglot"),
        "imagefolder": _lazy("imagefolder", "load_imagefolder"),
        "digits": _lazy("digits", "load_digits"),
        "market1501": _lazy("reid", "load_market1501"),
        "dukemtmc-reid": _lazy("reid", "load_dukemtmc_reid"),
        "omniglot-retrieval": _lazy("reid", "load_omniglot_retrieval"),
        "deepfashion-attributes": _lazy("multilabel", "load_deepfashion_attributes"),
        "mosaic-tiny-imagenet": _lazy("multilabel", "load_mosaic_tiny_imagenet"),
    }
)
"""Dataset name -> ``loader(root, split, image_size=None, **options) -> ImageArrays``.

``root`` is the dataset's own folder or archive (what [`find_root`][] returns), not
``data_dir``; [`load_dataset`][] adds the lookup, download and caching.

Examples:
    >>> from frlr.data import DATASETS
    >>> "tiny-imagenet" in DATASETS and "digits" in DATASETS
    True
    >>> DATASETS["digits"](None, "test").images.shape
    (360, 8, 8, 1)
"""


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in _INFOS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(_INFOS))}")
    return name


def dataset_info(name: str) -> DatasetInfo:
    """Number of classes, splits, task and official source of a dataset, without loading it.

    Args:
        name: a key of [`DATASETS`][].

    Examples:
        >>> from frlr.data import dataset_info
        >>> info = dataset_info("tiny-imagenet")
        >>> info.num_classes, info.splits, info.image_shape
        (200, ('train', 'val'), (64, 64, 3))
    """
    return _INFOS[_check_name(name)]


def default_data_dir() -> Path:
    """``$FRLR_DATA`` when set, else ``~/.cache/frlr/datasets``.

    Read at every call, so setting the variable redirects later loads.

    Examples:
        >>> import os
        >>> from pathlib import Path
        >>> from frlr.data import default_data_dir
        >>> "FRLR_DATA" in os.environ or default_data_dir() == Path.home() / ".cache/frlr/datasets"
        True
    """
    env = os.environ.get("FRLR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "frlr" / "datasets"


def find_root(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The dataset's folder or archive under ``data_dir``, or None when it is not there.

    Args:
        name: a key of [`DATASETS`][].
        data_dir: where the datasets live, or the dataset's own folder
            (``.../tiny-imagenet-200``); default [`default_data_dir`][].

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from frlr.data import find_root
        >>> data_dir = Path(tempfile.mkdtemp())
        >>> find_root("tiny-imagenet", data_dir) is None
        True
        >>> (data_dir / "tiny-imagenet-200").mkdir()
        >>> find_root("tiny-imagenet", data_dir).name
        'tiny-imagenet-200'
    """
    info = dataset_info(name)
    base = _check_data_dir(data_dir)
    for folder in info.folders:
        if (base / folder).exists():
            return base / folder
    if any(base.name == Path(folder).name for folder in info.folders) and base.exists():
        return base
    if info.root_fallback and base.exists():
        return base
    return None


def _check_data_dir(data_dir: object) -> Path:
    if data_dir is None:
        return default_data_dir()
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path or None, got {type(data_dir).__name__}")
    return Path(data_dir).expanduser()


def _check_image_size(image_size: object) -> ImageSize:
    if image_size is None:
        return None
    values = image_size if isinstance(image_size, tuple) else (image_size,)
    valid = len(values) == (2 if isinstance(image_size, tuple) else 1) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    )
    if not valid:
        raise TypeError(f"image_size must be an int, (height, width) or None, got {image_size!r}")
    if any(v < 1 for v in values):
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return image_size  # type: ignore[return-value]


def load_dataset(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    image_size: ImageSize = None,
    download: bool = False,
    cache_dir: str | Path | None = None,
    *,
    use_cache: bool = True,
    **options: Any,
) -> ImageArrays:
    """Load one split of a dataset by name, decoded to uint8 arrays and cached on disk.

    Args:
        name: a key of [`DATASETS`][] (see [`dataset_info`][]).
        split: one of ``dataset_info(name).splits``.
        data_dir: where the datasets live (each under its conventional name), or the
            dataset's own folder; default ``$FRLR_DATA`` or ``~/.cache/frlr/datasets``.
        image_size: resize to image_size x image_size at decode time (re-id loaders also take
            (height, width)); None keeps each loader's default size.
        download: fetch the official archive into ``data_dir`` when the dataset is missing,
            and verify its published checksum (an error if it differs).
        cache_dir: where decoded arrays are cached; default ``$FRLR_CACHE`` or
            ``~/.cache/frlr``.
        use_cache: False decodes afresh and writes nothing.
        options: extra loader arguments (``seed=`` for the mosaic), part of the cache key.

    Examples:
        scikit-learn's digits need no download:

        >>> from frlr.data import load_dataset
        >>> train = load_dataset("digits", "train")
        >>> train.images.shape, train.labels.dtype, train.num_classes
        ((1437, 8, 8, 1), dtype('int64'), 10)
    """
    info = dataset_info(name)
    if not isinstance(split, str) or split not in info.splits:
        raise ValueError(f"split must be one of {info.splits} for {name}, got {split!r}")
    image_size = _check_image_size(image_size)
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {download!r}")
    base = _check_data_dir(data_dir)
    loader = DATASETS[name]
    if not info.folders and not info.root_fallback:
        return loader(None, split, image_size, **options)
    root = find_root(name, base)
    if download and info.downloads:
        # Archive-read datasets: fetch what is missing into data_dir, verify what is there.
        # Fallback datasets (a folder holding several archives): the same, inside that folder.
        target = root if info.root_fallback and root is not None and root.is_dir() else base
        for remote in info.downloads:
            if root is None or info.root_fallback or root.name == remote.filename:
                download_file(remote, target)
        root = find_root(name, base)
    if root is None:
        looked = ", ".join(str(base / folder) for folder in info.folders) or str(base)
        fetch = (
            "pass download=True to fetch it"
            if info.downloads
            else f"download it by hand from {info.url}"
        )
        raise MissingDataError(base, f"{name} not found (looked for {looked})", fetch)

    def build() -> ImageArrays:
        return loader(root, split, image_size, **options)

    if not use_cache or not info.cache:
        return build()
    key = [name, split, image_size, str(root.resolve()), options]
    return cached(key, build, cache_dir, sources=[root])
