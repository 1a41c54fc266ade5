"""Omniglot loader: official zip/folder layout, character classes, drawer split and drawer ids."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frlr.data import ImageArrays, dataset_info, load_dataset
from frlr.data.omniglot import load_omniglot

CHARACTERS = [("Latin", 2, "0701"), ("Greek", 1, "0400"), ("Latin", 1, "0700")]


def glyph(class_index: int, drawer: int) -> Image.Image:
    """A 1-bit image whose black stroke encodes its class (row) and drawer (column)."""
    image = Image.new("1", (24, 24), 1)
    image.putpixel((drawer, class_index), 0)
    return image


def make_omniglot(parent: Path, name: str = "images_background_small1") -> Path:
    """A 3-character, 2-alphabet Omniglot folder; every character drawn by drawers 1..20."""
    root = parent / name
    classes = sorted(f"{alphabet}/character{number:02d}" for alphabet, number, _ in CHARACTERS)
    for alphabet, number, char_id in CHARACTERS:
        folder = root / alphabet / f"character{number:02d}"
        folder.mkdir(parents=True)
        label = classes.index(f"{alphabet}/character{number:02d}")
        for drawer in range(1, 21):
            glyph(label, drawer).save(folder / f"{char_id}_{drawer:02d}.png")
    return root


def zip_folder(folder: Path) -> Path:
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(folder.name + "/", "")
        for path in sorted(folder.rglob("*")):
            handle.write(path, path.relative_to(folder.parent).as_posix())
    return archive


@pytest.fixture
def omniglot(tmp_path: Path) -> Path:
    return make_omniglot(tmp_path / "data")


def test_classes_are_characters_in_path_order(omniglot: Path) -> None:
    arrays = load_omniglot(omniglot, "all")
    assert arrays.classes == ["Greek/character01", "Latin/character01", "Latin/character02"]
    assert arrays.images.shape == (60, 24, 24, 1)
    assert arrays.images.dtype == np.uint8
    assert set(np.unique(arrays.images)) == {0, 255}
    assert np.bincount(arrays.labels).tolist() == [20, 20, 20]


def test_drawer_split_and_cams(omniglot: Path) -> None:
    train = load_omniglot(omniglot, "train")
    test = load_omniglot(omniglot, "test")
    assert len(train) == 45 and len(test) == 15
    assert train.cams is not None and test.cams is not None
    assert sorted(set(train.cams.tolist())) == list(range(1, 16))
    assert sorted(set(test.cams.tolist())) == list(range(16, 21))
    assert train.labels.tolist() == [0] * 15 + [1] * 15 + [2] * 15
    for image, label, drawer in zip(train.images, train.labels, train.cams, strict=True):
        strokes = np.argwhere(image[:, :, 0] == 255).tolist()  # inverted: strokes bright
        assert strokes == [[label, drawer]]  # the pixel each test image was drawn with


def test_zip_reads_the_same_as_folder(omniglot: Path) -> None:
    archive = zip_folder(omniglot)
    for split in ("train", "test"):
        a, b = load_omniglot(omniglot, split), load_omniglot(archive, split)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.cams, b.cams)
        assert a.classes == b.classes


def test_resize_averages_strokes(omniglot: Path) -> None:
    arrays = load_omniglot(omniglot, "test", image_size=12)
    assert arrays.images.shape == (15, 12, 12, 1)
    assert 0 < arrays.images.max() < 255  # a 1-pixel stroke survives as a grey 2x2 average


def test_errors(omniglot: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_omniglot(omniglot, "val")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no Omniglot images"):
        load_omniglot(empty, "train")
    bad = omniglot / "Greek" / "character01" / "0400_03.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"0400_03\.png"):
        load_omniglot(omniglot, "train")


def test_registry_finds_the_zip_under_data_dir(omniglot: Path, tmp_path: Path) -> None:
    zip_folder(omniglot)
    data_dir = omniglot.parent
    arrays = load_dataset("omniglot-small1", "train", data_dir, cache_dir=tmp_path / "c")
    assert len(arrays) == 45
    assert dataset_info("omniglot-small1").num_classes == 136
    with pytest.raises(FileNotFoundError, match=r"images_background\.zip"):
        load_dataset("omniglot", "train", data_dir, cache_dir=tmp_path / "c")


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_omniglot_small1(real_dataset: Callable[..., ImageArrays]) -> None:
    everything = real_dataset("omniglot-small1", "all")
    assert everything.images.shape == (2720, 105, 105, 1)
    assert everything.num_classes == 136
    assert np.bincount(everything.labels).tolist() == [20] * 136
    assert everything.images.mean() < 64  # inverted: mostly zero background
    train = real_dataset("omniglot-small1", "train")
    assert len(train) == 136 * 15
    assert train.cams is not None and int(train.cams.max()) == 15
    assert train.classes[0] == "Balinese/character01"
