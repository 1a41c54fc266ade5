"""The dataset registry: names, info, argument checks, root lookup, lazy imports, digits."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import frlr.data.registry as registry
from frlr.data import DATASETS, ImageArrays, dataset_info, find_root, load_dataset

CLASSIFICATION = [
    "cifar10",
    "cifar100",
    "tiny-imagenet",
    "omniglot",
    "omniglot-evaluation",
    "omniglot-small1",
    "omniglot-small2",
    "imagefolder",
    "digits",
]
OTHERS = {
    "market1501": "reid",
    "dukemtmc-reid": "reid",
    "omniglot-retrieval": "reid",
    "deepfashion-attributes": "multilabel",
    "mosaic-tiny-imagenet": "multilabel",
}


def test_every_name_is_registered_with_info() -> None:
    assert set(DATASETS) == set(CLASSIFICATION) | set(OTHERS)
    for name in DATASETS:
        info = dataset_info(name)
        assert info.name == name
        assert info.train_split in info.splits
        assert set(info.eval_splits) <= set(info.splits)
        assert info.task == OTHERS.get(name, "classification")
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("tiny-imagenet").splits == ("train", "val")
    assert dataset_info("market1501").splits == ("train", "query", "gallery")


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*cifar10.*tiny-imagenet"):
        load_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="known"):
        dataset_info("mnist")
    with pytest.raises(TypeError, match="name"):
        dataset_info(3)  # type: ignore[arg-type]


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"split must be one of.*'val'"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", "train", image_size=-1)
    with pytest.raises(TypeError, match="image_size"):
        load_dataset("digits", "train", image_size="32")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="download"):
        load_dataset("digits", "train", download="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data_dir"):
        load_dataset("cifar10", "train", data_dir=5)  # type: ignore[arg-type]


def test_missing_dataset_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*download=True"):
        load_dataset("cifar10", "train", tmp_path)
    with pytest.raises(FileNotFoundError, match="by hand"):
        load_dataset("mosaic-tiny-imagenet", "train", tmp_path)


def test_find_root_conventions(tmp_path: Path) -> None:
    assert find_root("tiny-imagenet", tmp_path) is None
    folder = tmp_path / "tiny-imagenet-200"
    folder.mkdir()
    assert find_root("tiny-imagenet", tmp_path) == folder
    assert find_root("tiny-imagenet", folder) == folder  # data_dir is the dataset itself
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "images_background_small2.zip").write_bytes(b"")
    assert (
        find_root("omniglot-small2", tmp_path)
        == tmp_path / "omniglot" / "images_background_small2.zip"
    )
    assert find_root("omniglot-retrieval", tmp_path) == tmp_path / "omniglot"
    assert find_root("market1501", tmp_path) == tmp_path  # the folder holding the zip


def test_data_dir_defaults_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRLR_DATA", str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert find_root("cifar10") == tmp_path / "cifar-10-batches-py"


def test_external_loaders_get_root_split_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def fake_loader(root: Path, split: str, *args: object, **kwargs: object) -> object:
        seen.append((root, split, args, kwargs))
        return ImageArrays(np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 200), np.uint8), ["a"])

    import frlr.data.multilabel as multilabel

    monkeypatch.setattr(multilabel, "load_mosaic_tiny_imagenet", fake_loader)
    (tmp_path / "tiny-imagenet-200").mkdir()
    load_dataset("mosaic-tiny-imagenet", "val", tmp_path, cache_dir=tmp_path / "c", seed=3)
    load_dataset("mosaic-tiny-imagenet", "val", tmp_path, cache_dir=tmp_path / "c", seed=3)
    load_dataset("mosaic-tiny-imagenet", "val", tmp_path, 64, cache_dir=tmp_path / "c", seed=3)
    assert seen == [
        (tmp_path / "tiny-imagenet-200", "val", (), {"seed": 3}),  # default size: loader's own
        (tmp_path / "tiny-imagenet-200", "val", (64,), {"seed": 3}),  # second call was cached
    ]


def test_importing_the_registry_imports_no_framework_or_sibling_loader() -> None:
    code = (
        "import sys, frlr.data; "
        "bad = [m for m in ('torch', 'frlr.data.reid', 'frlr.data.multilabel', "
        "'frlr.data.tiny_imagenet', 'sklearn') if m in sys.modules]; "
        "assert not bad, bad"
    )
    src = Path(registry.__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(src), "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_digits_default_dataset() -> None:
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
    assert train.images.dtype == np.uint8 and int(train.images.max()) == 255
    assert train.classes == [str(d) for d in range(10)]
    train_counts = np.bincount(train.labels, minlength=10)
    test_counts = np.bincount(test.labels, minlength=10)
    assert np.all(np.abs(test_counts / (train_counts + test_counts) - 0.2) < 0.02)  # stratified
    np.testing.assert_array_equal(train.images, load_dataset("digits", "train").images)
    from sklearn.datasets import load_digits

    raw = load_digits()
    all_pixels = np.concatenate([train.images, test.images]).reshape(len(raw.images), -1)
    expected = np.rint(raw.images.reshape(len(raw.images), -1) * 255 / 16).astype(np.uint8)
    assert sorted(map(bytes, all_pixels)) == sorted(map(bytes, expected))  # a partition
    assert load_dataset("digits", "test", image_size=16).images.shape == (360, 16, 16, 1)


@pytest.mark.slow
@pytest.mark.shared_data
def test_registry_reaches_the_retrieval_loader(real_dataset: Callable[..., ImageArrays]) -> None:
    train = real_dataset("omniglot-retrieval", "train")
    assert train.images.shape == (2720, 105, 105, 1)
    assert train.num_classes == dataset_info("omniglot-retrieval").num_classes == 136
