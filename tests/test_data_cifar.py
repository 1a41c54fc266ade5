"""CIFAR-10/100 loaders on fake archives in the official pickle format, folder and tar.gz."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from frlr.data import load_dataset
from frlr.data.cifar import load_cifar10, load_cifar100

PER_BATCH = 4


def fake_batch(start: int, count: int, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """Images whose red channel at (0, 0) is the image's index, so order is checkable."""
    images = np.zeros((count, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(start, start + count)
    images[:, 0, 1, 1] = 200  # green at (row 0, col 1)
    images[:, 2, 0, 2] = 100  # blue at (row 2, col 0)
    data = images.transpose(0, 3, 1, 2).reshape(count, 3072)  # CIFAR's channel-major rows
    labels = [(start + i) % num_classes for i in range(count)]
    return data, labels


def dump(path: Path, obj: dict, byte_keys: bool) -> None:
    """Protocol 2 with bytes keys is what Python 2's cPickle wrote; str keys are Python 3's."""
    if byte_keys:
        obj = {k.encode(): v for k, v in obj.items()}
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def make_cifar10(parent: Path, byte_keys: bool = True) -> Path:
    root = parent / "cifar-10-batches-py"
    root.mkdir(parents=True)
    names = [f"class{i}" for i in range(10)]
    dump(root / "batches.meta", {"label_names": names, "num_vis": 3072}, byte_keys)
    for b in range(5):
        data, labels = fake_batch(b * PER_BATCH, PER_BATCH, 10)
        dump(root / f"data_batch_{b + 1}", {"data": data, "labels": labels}, byte_keys)
    data, labels = fake_batch(100, 3, 10)
    dump(root / "test_batch", {"data": data, "labels": labels}, byte_keys)
    return root


def make_cifar100(parent: Path) -> Path:
    root = parent / "cifar-100-python"
    root.mkdir(parents=True)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": ["c"]}
    dump(root / "meta", meta, byte_keys=True)
    data, labels = fake_batch(0, 6, 100)
    labels = [97, 3, 50, 0, 99, 42]
    dump(root / "train", {"data": data, "fine_labels": labels, "coarse_labels": [0] * 6}, True)
    data, labels = fake_batch(10, 2, 100)
    dump(root / "test", {"data": data, "fine_labels": labels, "coarse_labels": [0] * 2}, True)
    return root


def make_targz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(folder, arcname=folder.name)
    return archive


def test_cifar10_layout_labels_and_pixels(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    train = load_cifar10(root, "train")
    assert train.images.shape == (5 * PER_BATCH, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.images[:, 0, 0, 0].tolist() == list(range(20))  # batches 1..5 in order
    assert (train.images[:, 0, 1, 1] == 200).all() and (train.images[:, 2, 0, 2] == 100).all()
    assert train.labels.tolist() == [i % 10 for i in range(20)]
    assert train.classes == [f"class{i}" for i in range(10)]
    test = load_cifar10(root, "test")
    assert test.images[:, 0, 0, 0].tolist() == [100, 101, 102]


def test_cifar10_python3_pickles_and_targz(tmp_path: Path) -> None:
    folder = make_cifar10(tmp_path / "folder", byte_keys=False)
    archive = make_targz(folder, tmp_path / "cifar-10-python.tar.gz")
    a, b = load_cifar10(folder, "train"), load_cifar10(archive, "train")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.classes == b.classes


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    root = make_cifar100(tmp_path)
    train = load_cifar100(make_targz(root, tmp_path / "cifar-100-python.tar.gz"), "train")
    assert train.labels.tolist() == [97, 3, 50, 0, 99, 42]
    assert train.num_classes == 100 and train.classes[97] == "fine97"
    assert len(load_cifar100(root, "test")) == 2


def test_resize_at_load(tmp_path: Path) -> None:
    arrays = load_cifar10(make_cifar10(tmp_path), "test", image_size=16)
    assert arrays.images.shape == (3, 16, 16, 3)


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    with open(root / "test_batch", "wb") as handle:
        pickle.dump({"data": Exploit(), "labels": []}, handle, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch.*refusing"):
        load_cifar10(root, "test")


def test_bad_batches_are_named(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    (root / "data_batch_3").write_bytes(b"\x80\x02trunc")
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(root, "train")
    (root / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(root, "test")
    with pytest.raises(ValueError, match="split"):
        load_cifar10(root, "val")


def test_registry_finds_archive_or_folder(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make_targz(make_cifar10(tmp_path / "build"), data_dir.with_name("x.tar.gz"))
    data_dir.mkdir()
    (data_dir.with_name("x.tar.gz")).rename(data_dir / "cifar-10-python.tar.gz")
    arrays = load_dataset("cifar10", "train", data_dir, cache_dir=tmp_path / "cache")
    assert len(arrays) == 20
    make_cifar100(data_dir)
    assert len(load_dataset("cifar100", "test", data_dir, cache_dir=tmp_path / "cache")) == 2


@pytest.mark.filterwarnings("error")
def test_numpy1_module_paths_load_without_warnings(tmp_path: Path) -> None:
    """The official files (numpy 1, Python 2) name numpy.core.multiarray, not numpy._core."""
    root = make_cifar10(tmp_path)
    batch = root / "test_batch"
    batch.write_bytes(batch.read_bytes().replace(b"cnumpy._core.", b"cnumpy.core."))
    assert b"cnumpy.core.multiarray" in batch.read_bytes()
    assert load_cifar10(root, "test").images[:, 0, 0, 0].tolist() == [100, 101, 102]
