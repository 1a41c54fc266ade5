"""Class-folder datasets: class order from train/, val/test splits, mixed sizes and modes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frlr.data import CorruptImageError, load_dataset
from frlr.data.imagefolder import load_imagefolder
from frlr.data.images import decode_image


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


# --------------------------------------------------------------------------- image modes (D56-D58)

RAMP16 = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0..65520


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def grey(values: np.ndarray, top: float) -> np.ndarray:
    """What an 8-bit grey decode of ``values`` in [0, top] must give, as RGB."""
    eight = np.rint(values.astype(np.float64) * 255 / top).astype(np.uint8)
    return np.repeat(eight[:, :, None], 3, axis=2)


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.fromarray(RAMP16), "PNG", grey(RAMP16, 65535)),
        (Image.fromarray(RAMP16), "TIFF", grey(RAMP16, 65535)),
        (Image.fromarray(RAMP16.astype(np.int32), "I"), "TIFF", grey(RAMP16, 65535)),
        (Image.fromarray(RAMP16 / 65535.0), "TIFF", grey(RAMP16 / 65535.0, 1.0)),
        (Image.new("P", (8, 8), 3).convert("P"), "PNG", None),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF", np.full((8, 8, 3), (255, 0, 0))),
        (Image.new("LA", (8, 8), (120, 30)), "PNG", np.full((8, 8, 3), 120)),
        (Image.new("RGBA", (8, 8), (10, 20, 30, 0)), "PNG", np.full((8, 8, 3), (10, 20, 30))),
        (Image.new("1", (8, 8), 1), "PNG", np.full((8, 8, 3), 255)),
    ],
    ids=["16-bit-png", "16-bit-tiff", "32-bit-int", "float", "palette", "cmyk", "la", "rgba", "1"],
)
def test_every_image_mode_decodes_to_8_bit_scaled_not_clipped(image, fmt, expected):
    """D56: PIL's convert clips 16-bit values at 255, so a 16-bit grey image came out white."""
    data = encoded(image, fmt)
    decoded = decode_image(data, f"x.{fmt.lower()}", "RGB")
    if expected is None:  # a palette image: as PIL's own palette lookup gives it
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert decoded.dtype == np.uint8 and decoded.shape == (8, 8, 3)
    np.testing.assert_array_equal(decoded, expected)
    as_l = decode_image(data, f"x.{fmt.lower()}", "L")
    assert as_l.shape == (8, 8, 1)


@pytest.mark.parametrize(
    ("image", "fmt", "words"),
    [
        (Image.new("LAB", (4, 4), (50, 0, 0)), "TIFF", "image mode 'LAB' cannot be converted"),
        (Image.fromarray(np.full((4, 4), 70000, np.int32), "I"), "TIFF", "outside 8 or 16 bits"),
        (Image.fromarray(np.full((4, 4), 300.0, np.float32)), "TIFF", "outside 8 or 16 bits"),
    ],
    ids=["lab", "32-bit-above-16", "float-above-255"],
)
def test_a_mode_that_does_not_convert_is_named_with_its_file(image, fmt, words):
    """D57: LAB was "converted" by copying its bands (miscoloured, silently); values beyond 16
    bits were clipped."""
    with pytest.raises(CorruptImageError) as caught:
        decode_image(encoded(image, fmt), "train/cat/x.tif", "RGB")
    assert "train/cat/x.tif" in str(caught.value) and words in str(caught.value)
    assert "damaged" not in str(caught.value)


def test_a_folder_of_16_bit_images_keeps_its_classes_apart(tmp_path):
    """D58: the issue's two-class folder of 16-bit grey PNGs (dark and bright) decoded both
    classes to white, and trained to chance."""
    for split in ("train", "val"):
        for name, level in (("dark", 20000), ("bright", 60000)):
            for i in range(2):
                path = tmp_path / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8), level + i, np.uint16)).save(path)
    arrays = load_imagefolder(tmp_path, "train")
    by_class = {
        arrays.classes[int(label)]: int(image[0, 0, 0])
        for image, label in zip(arrays.images, arrays.labels, strict=True)
    }
    assert by_class == {"dark": round(20001 * 255 / 65535), "bright": round(60001 * 255 / 65535)}
