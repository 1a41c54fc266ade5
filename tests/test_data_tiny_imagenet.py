"""Tiny ImageNet loader: official layout as a folder and as the zip, labels, order, grayscale."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frlr.data import ImageArrays, dataset_info, load_dataset
from frlr.data.tiny_imagenet import load_tiny_imagenet

WNIDS_FILE_ORDER = ["n02000002", "n01000001", "n03000003"]
SORTED_WNIDS = sorted(WNIDS_FILE_ORDER)
TRAIN_INDICES = (10, 2)  # numeric order 2 < 10, lexical order "10" < "2"
VAL = [  # (k, wnid); the file lists them out of order and with CRLF endings
    (11, "n03000003"),
    (0, "n01000001"),
    (2, "n02000002"),
    (10, "n01000001"),
    (1, "n99999999"),  # a class not in wnids.txt: skipped
]


def train_color(label: int, index: int) -> tuple[int, int, int]:
    return (60 * label + 20, 200 - 8 * index, 100)


def val_color(k: int) -> tuple[int, int, int]:
    return (10 * k + 5, 50, 150)


def write_image(path: Path, color: tuple[int, int, int] | int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 8), color).save(path, format="JPEG", quality=95)


def make_tiny_imagenet(parent: Path) -> Path:
    """A 3-class Tiny ImageNet in the official layout, with one grayscale training image."""
    base = parent / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS_FILE_ORDER) + "\n")
    (base / "words.txt").write_text("n01000001\tgoldfish, Carassius\nn02000002\tbullfrog\n")
    for label, wnid in enumerate(SORTED_WNIDS):
        for index in TRAIN_INDICES:
            path = base / "train" / wnid / "images" / f"{wnid}_{index}.JPEG"
            if (label, index) == (1, 10):
                write_image(path, 77, mode="L")
            else:
                write_image(path, train_color(label, index))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    write_image(base / "train" / "n99999999" / "images" / "n99999999_0.JPEG", (1, 2, 3))
    lines = []
    for k, wnid in VAL:
        write_image(base / "val" / "images" / f"val_{k}.JPEG", val_color(k))
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t7\t7")
    (base / "val" / "val_annotations.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    write_image(base / "test" / "images" / "test_0.JPEG", (0, 0, 0))
    return base


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            handle.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def assert_close(image: np.ndarray, color: tuple[int, int, int]) -> None:
    assert np.abs(image.astype(int) - np.array(color)).max() <= 3


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_tiny_imagenet(tmp_path / "data")


def test_train_split_labels_order_and_class_names(tiny: Path) -> None:
    arrays = load_tiny_imagenet(tiny, "train")
    assert arrays.images.shape == (6, 8, 8, 3)
    assert arrays.images.dtype == np.uint8
    assert arrays.labels.dtype == np.int64
    assert arrays.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert arrays.classes == ["goldfish, Carassius", "bullfrog", "n03000003"]
    assert arrays.meta["wnids"].split() == SORTED_WNIDS
    assert_close(arrays.images[0, 0, 0], train_color(0, 2))  # index 2 before index 10
    assert_close(arrays.images[1, 0, 0], train_color(0, 10))
    assert_close(arrays.images[5, 4, 4], train_color(2, 10))


def test_grayscale_jpeg_becomes_rgb(tiny: Path) -> None:
    arrays = load_tiny_imagenet(tiny, "train")
    gray = arrays.images[3]  # class 1, index 10 was written in mode L
    assert gray.shape == (8, 8, 3)
    assert_close(gray[0, 0], (77, 77, 77))


def test_val_split_follows_annotations(tiny: Path) -> None:
    arrays = load_tiny_imagenet(tiny, "val")
    assert arrays.labels.tolist() == [0, 1, 0, 2]  # val_0, val_2, val_10, val_11
    for image, k in zip(arrays.images, (0, 2, 10, 11), strict=True):
        assert_close(image[3, 3], val_color(k))


def test_zip_reads_the_same_as_folder(tiny: Path, tmp_path: Path) -> None:
    archive = zip_folder(tiny, tmp_path / "tiny-imagenet-200.zip")
    for split in ("train", "val"):
        from_folder = load_tiny_imagenet(tiny, split)
        from_zip = load_tiny_imagenet(archive, split)
        np.testing.assert_array_equal(from_folder.images, from_zip.images)
        np.testing.assert_array_equal(from_folder.labels, from_zip.labels)
        assert from_folder.classes == from_zip.classes


def test_image_size_resizes(tiny: Path) -> None:
    arrays = load_tiny_imagenet(tiny, "train", image_size=4)
    assert arrays.images.shape == (6, 4, 4, 3)
    assert_close(arrays.images[0, 1, 1], train_color(0, 2))


def test_split_and_size_are_validated(tiny: Path) -> None:
    with pytest.raises(ValueError, match="use 'val' as the test set"):
        load_tiny_imagenet(tiny, "test")
    with pytest.raises(ValueError, match="image_size"):
        load_tiny_imagenet(tiny, "train", image_size=0)
    with pytest.raises(TypeError, match="image_size"):
        load_tiny_imagenet(tiny, "train", image_size=4.0)  # type: ignore[arg-type]


def test_missing_val_image_is_named(tiny: Path) -> None:
    (tiny / "val" / "images" / "val_2.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match=r"val_2\.JPEG"):
        load_tiny_imagenet(tiny, "val")


def test_class_without_training_images_is_an_error(tiny: Path) -> None:
    shutil.rmtree(tiny / "train" / "n03000003")
    with pytest.raises(ValueError, match="n03000003"):
        load_tiny_imagenet(tiny, "train")


def test_registry_finds_the_conventional_folder(tiny: Path, tmp_path: Path) -> None:
    info = dataset_info("tiny-imagenet")
    assert info.eval_splits == ("val",)
    arrays = load_dataset("tiny-imagenet", "val", tiny.parent, cache_dir=tmp_path / "cache")
    assert len(arrays) == 4
    same = load_dataset("tiny-imagenet", "val", tiny, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(arrays.images, same.images)


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_tiny_imagenet_subset(real_dataset: Callable[..., ImageArrays]) -> None:
    train = real_dataset("tiny-imagenet", "train")
    val = real_dataset("tiny-imagenet", "val")
    assert train.images.shape == (20000, 64, 64, 3)
    assert val.images.shape == (10000, 64, 64, 3)
    assert train.images.dtype == val.images.dtype == np.uint8
    assert train.num_classes == val.num_classes == 200
    assert np.bincount(train.labels, minlength=200).tolist() == [100] * 200
    assert np.bincount(val.labels, minlength=200).tolist() == [50] * 200
    assert train.classes[0] == "goldfish, Carassius auratus"  # n01443537, first sorted wnid
