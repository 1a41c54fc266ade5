"""Class-folder datasets: class order from train/, val/test splits, mixed sizes and modes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frlr.data import load_dataset
from frlr.data.imagefolder import load_imagefolder


def write(path: Path, color: int | tuple[int, int, int], mode: str = "RGB", size: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), color).save(path)


def make_folder(root: Path) -> Path:
    write(root / "train" / "zebra" / "a.png", (200, 0, 0))
    write(root / "train" / "zebra" / "nested" / "b.PNG", (210, 0, 0))
    write(root / "train" / "ant" / "a.png", 90, mode="L")
    write(root / "train" / "ant" / "c.bmp", (0, 0, 90))
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    write(root / "train" / "ant" / ".hidden.png", (1, 1, 1))
    write(root / "val" / "zebra" / "v.png", (220, 0, 0))
    return root


def test_train_split_classes_and_modes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds")
    arrays = load_imagefolder(root, "train")
    assert arrays.classes == ["ant", "zebra"]
    assert arrays.labels.tolist() == [0, 0, 1, 1]
    assert arrays.images.shape == (4, 6, 6, 3)
    assert arrays.images[0, 0, 0].tolist() == [90, 90, 90]  # grayscale PNG -> RGB
    assert arrays.images[1, 0, 0].tolist() == [0, 0, 90]
    assert arrays.images[3, 0, 0].tolist() == [210, 0, 0]  # nested image keeps its class


def test_val_labels_use_train_classes_and_test_falls_back(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds")
    val = load_imagefolder(root, "val")
    assert val.classes == ["ant", "zebra"] and val.labels.tolist() == [1]
    test = load_imagefolder(root, "test")
    assert test.meta["folder"] == "val" and test.labels.tolist() == [1]
    write(root / "test" / "ant" / "t.png", (5, 5, 5))
    test = load_imagefolder(root, "test")
    assert test.meta["folder"] == "test" and test.labels.tolist() == [0]


def test_unknown_class_in_val_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds")
    write(root / "val" / "yak" / "y.png", (1, 2, 3))
    with pytest.raises(ValueError, match="yak"):
        load_imagefolder(root, "val")


def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds")
    write(root / "train" / "zebra" / "big.png", (250, 0, 0), size=12)
    with pytest.raises(ValueError, match=r"big\.png.*image_size"):
        load_imagefolder(root, "train")
    arrays = load_imagefolder(root, "train", image_size=4)
    assert arrays.images.shape == (5, 4, 4, 3)
    assert arrays.images[3, 1, 1].tolist() == [250, 0, 0]  # ant a, c; zebra a, big, b


def test_zip_and_registry(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds")
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(root.rglob("*")):
            handle.write(path, path.relative_to(tmp_path).as_posix())
    np.testing.assert_array_equal(
        load_imagefolder(archive, "train").images, load_imagefolder(root, "train").images
    )
    arrays = load_dataset("imagefolder", "train", root, cache_dir=tmp_path / "cache")
    assert arrays.classes == ["ant", "zebra"]


def test_missing_train_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="train"):
        load_imagefolder(tmp_path / "empty", "train")
    with pytest.raises(FileNotFoundError):
        load_imagefolder(tmp_path / "nowhere", "train")
