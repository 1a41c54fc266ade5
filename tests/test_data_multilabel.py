"""Sparse multi-label parsers: DeepFashion attributes (fabricated official layout) and the
Tiny ImageNet mosaic stand-in (fabricated layout, and the shared subset when present).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import frlr.data.multilabel as multilabel
from frlr.data import ImageArrays
from frlr.data.images import CorruptImageError
from frlr.data.multilabel import (
    _group_quads,
    load_deepfashion_attributes,
    load_mosaic_tiny_imagenet,
    max_mosaics,
    mosaic_plan,
)

# --------------------------------------------------------------------------- DeepFashion fixture

ATTRIBUTES = [("a-line", 3), ("long sleeve", 3), ("floral print", 1), ("faux leather", 2)]
ROWS = {  # image -> (partition, attribute values)
    "img/Sheer_Pleated-Front_Blouse/img_00000001.jpg": ("train", [-1, 1, 0, -1]),
    "img/Sheer_Pleated-Front_Blouse/img_00000002.jpg": ("train", [1, 1, -1, -1]),
    "img/Paisley_Maxi_Dress/img_00000001.jpg": ("val", [-1, -1, 1, 0]),
    "img/Paisley_Maxi_Dress/img_00000002.jpg": ("test", [-1, -1, -1, 1]),
    "img/Faux_Leather_Jacket/img_00000003.jpg": ("train", [0, 0, 0, 1]),
}
IMAGE_HW = (20, 16)


def _flat_jpeg(colour: tuple[int, int, int], size_hw: tuple[int, int] = IMAGE_HW) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size_hw[1], size_hw[0]), colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _colour(index: int) -> tuple[int, int, int]:
    return (30 + 40 * index, 200 - 30 * index, 90 + 25 * index)


def _write_deepfashion(root: Path, rows: dict = ROWS, attributes: list = ATTRIBUTES) -> Path:
    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    cloth = [str(len(attributes)), "attribute_name  attribute_type"]
    # The official file pads names to a column; names contain spaces.
    cloth += [f"{name:<30}{kind}" for name, kind in attributes]
    (root / "Anno" / "list_attr_cloth.txt").write_text("\n".join(cloth) + "\n")
    attr = [str(len(rows)), "image_name  attribute_labels"]
    attr += [
        f"{name:<60}" + "  ".join(f"{v:>2}" for v in values) for name, (_, values) in rows.items()
    ]
    (root / "Anno" / "list_attr_img.txt").write_text("\n".join(attr) + "\n")
    part = [str(len(rows)), "image_name  evaluation_status"]
    part += [f"{name}\t\t{status}" for name, (status, _) in rows.items()]
    (root / "Eval" / "list_eval_partition.txt").write_text("\r\n".join(part) + "\r\n")
    for i, name in enumerate(rows):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_flat_jpeg(_colour(i)))
    return root


@pytest.fixture
def deepfashion(tmp_path: Path) -> Path:
    return _write_deepfashion(tmp_path / "DeepFashion")


def _expected(split: str) -> tuple[list[int], np.ndarray]:
    chosen = [i for i, (status, _) in enumerate(ROWS.values()) if status == split]
    values = np.array([list(ROWS.values())[i][1] for i in chosen])
    return chosen, (values == 1).astype(np.uint8)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_deepfashion_official_partition_and_multi_hot(deepfashion: Path, split: str) -> None:
    data = load_deepfashion_attributes(deepfashion, split)
    chosen, labels = _expected(split)
    assert data.classes == ["a-line", "long sleeve", "floral print", "faux leather"]
    assert data.multilabel
    assert data.labels.dtype == np.uint8
    np.testing.assert_array_equal(data.labels, labels)
    assert data.images.shape == (len(chosen), *IMAGE_HW, 3)
    for image, index in zip(data.images, chosen, strict=True):
        np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), _colour(index), atol=3)
    assert data.meta["attribute_types"] == "3,3,1,2"


def test_deepfashion_minus_one_plus_one_release(tmp_path: Path) -> None:
    rows = {
        name: (status, [v if v else -1 for v in values]) for name, (status, values) in ROWS.items()
    }
    root = _write_deepfashion(tmp_path / "df", rows=rows)
    data = load_deepfashion_attributes(root, "train")
    np.testing.assert_array_equal(data.labels, _expected("train")[1])


def test_deepfashion_reads_img_zip_in_place(deepfashion: Path) -> None:
    (deepfashion / "Img").mkdir()
    with zipfile.ZipFile(deepfashion / "Img" / "img.zip", "w") as archive:
        for name in ROWS:
            archive.write(deepfashion / name, name)
    folder = load_deepfashion_attributes(deepfashion, "train")
    for path in sorted((deepfashion / "img").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (deepfashion / "img").rmdir()
    zipped = load_deepfashion_attributes(deepfashion, "train")
    np.testing.assert_array_equal(folder.images, zipped.images)
    np.testing.assert_array_equal(folder.labels, zipped.labels)
    assert zipped.meta["images"].endswith("img.zip")


def test_deepfashion_count_mismatch_names_the_file(deepfashion: Path) -> None:
    path = deepfashion / "Anno" / "list_attr_img.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["6", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_img\.txt: line 1 declares 6"):
        load_deepfashion_attributes(deepfashion, "train")


def test_deepfashion_bad_value_names_file_and_line(deepfashion: Path) -> None:
    path = deepfashion / "Anno" / "list_attr_img.txt"
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:-2] + " 2"  # second image (train), line 4 of the file
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_img\.txt, line 4: .*\['2'\]"):
        load_deepfashion_attributes(deepfashion, "train")


def test_deepfashion_short_row_names_file_and_line(deepfashion: Path) -> None:
    path = deepfashion / "Anno" / "list_attr_img.txt"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(None, 1)[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_img\.txt, line 3: .*4 values"):
        load_deepfashion_attributes(deepfashion, "train")


def test_deepfashion_bad_attribute_and_partition_lines(deepfashion: Path) -> None:
    cloth = deepfashion / "Anno" / "list_attr_cloth.txt"
    good = cloth.read_text()
    cloth.write_text(good.replace("faux leather                  2", "faux leather"))
    with pytest.raises(ValueError, match=r"list_attr_cloth\.txt, line 6"):
        load_deepfashion_attributes(deepfashion, "train")
    cloth.write_text(good)
    partition = deepfashion / "Eval" / "list_eval_partition.txt"
    partition.write_text(partition.read_text().replace("\tval", "\tvalidation"))
    with pytest.raises(ValueError, match=r"list_eval_partition\.txt, line 5"):
        load_deepfashion_attributes(deepfashion, "train")


def test_deepfashion_image_missing_from_attribute_file(deepfashion: Path) -> None:
    path = deepfashion / "Anno" / "list_attr_img.txt"
    lines = path.read_text().splitlines()
    del lines[3]
    path.write_text("\n".join(["4", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"img_00000002\.jpg .*no attribute row"):
        load_deepfashion_attributes(deepfashion, "train")


def test_deepfashion_image_files_missing_corrupt_or_ragged(deepfashion: Path) -> None:
    first = deepfashion / next(iter(ROWS))
    first.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(CorruptImageError, match=r"img_00000001\.jpg"):
        load_deepfashion_attributes(deepfashion, "train")
    first.unlink()
    with pytest.raises(FileNotFoundError, match=r"img_00000001\.jpg"):
        load_deepfashion_attributes(deepfashion, "train")
    first.write_bytes(_flat_jpeg(_colour(0), size_hw=(30, 16)))
    with pytest.raises(ValueError, match="image_size"):
        load_deepfashion_attributes(deepfashion, "train")
    data = load_deepfashion_attributes(deepfashion, "train", image_size=(24, 12))
    assert data.images.shape == (3, 24, 12, 3)


def test_deepfashion_argument_checks(deepfashion: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_deepfashion_attributes(deepfashion, "validation")
    with pytest.raises(ValueError, match="image_size"):
        load_deepfashion_attributes(deepfashion, "train", image_size=-3)
    with pytest.raises(FileNotFoundError, match=r"list_attr_cloth\.txt"):
        load_deepfashion_attributes(deepfashion / "Anno", "train")


# --------------------------------------------------------------------------- mosaic fixture

WNIDS = ["n01443537", "n01629819", "n01641577", "n01644900", "n01698640", "n01742172"]
TRAIN_PER_CLASS = 4  # 24 train images -> 6 mosaics
VAL_PER_CLASS = 2  # 12 val images -> 3 mosaics
TILE = 8


def _noise_jpeg(seed: int, grey: bool = False) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(TILE, TILE, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    (image.convert("L") if grey else image).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w[-3:]}\n" for w in WNIDS))
    for c, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(TRAIN_PER_CLASS):
            (folder / f"{wnid}_{i}.JPEG").write_bytes(_noise_jpeg(100 * c + i, grey=i == 1))
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for k in range(len(WNIDS) * VAL_PER_CLASS):
        (root / "val" / "images" / f"val_{k}.JPEG").write_bytes(_noise_jpeg(10_000 + k))
        lines.append(f"val_{k}.JPEG\t{WNIDS[k % len(WNIDS)]}\t0\t0\t{TILE}\t{TILE}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def _source_class(name: str, root: Path) -> str:
    if name.startswith("train/"):
        return name.split("/")[1]
    rows = (root / "val" / "val_annotations.txt").read_text().split("\n")
    return dict(line.split("\t")[:2] for line in rows if line)[name.rsplit("/", 1)[1]]


def test_mosaic_default_counts_and_four_distinct_positives(tiny: Path) -> None:
    train = load_mosaic_tiny_imagenet(tiny, "train")
    val = load_mosaic_tiny_imagenet(tiny, "val")
    assert len(train) == len(WNIDS) * TRAIN_PER_CLASS // 4
    assert len(val) == len(WNIDS) * VAL_PER_CLASS // 4
    for data, split in ((train, "train"), (val, "val")):
        assert data.images.shape[1:] == (2 * TILE, 2 * TILE, 3)
        assert data.labels.shape == (len(data), len(WNIDS))
        assert data.labels.dtype == np.uint8
        assert (data.labels.sum(axis=1) == 4).all()
        assert data.classes == [f"thing {w[-3:]}" for w in sorted(WNIDS)]
        plan = mosaic_plan(tiny, split)
        wnids = data.meta["wnids"].split()
        for row, sources in zip(data.labels, plan, strict=True):
            assert {wnids[k] for k in np.flatnonzero(row)} == {
                _source_class(s, tiny) for s in sources
            }


def test_mosaic_pixels_are_the_source_quadrants(tiny: Path) -> None:
    data = load_mosaic_tiny_imagenet(tiny, "train", seed=3)
    plan = mosaic_plan(tiny, "train", seed=3)
    corners = [(0, 0), (0, TILE), (TILE, 0), (TILE, TILE)]
    for mosaic, sources in zip(data.images, plan, strict=True):
        for (y, x), name in zip(corners, sources, strict=True):
            expected = np.asarray(Image.open(tiny / name).convert("RGB"))
            np.testing.assert_array_equal(mosaic[y : y + TILE, x : x + TILE], expected)


def test_mosaic_is_deterministic_in_the_seed(tiny: Path) -> None:
    first = load_mosaic_tiny_imagenet(tiny, "train", seed=7)
    again = load_mosaic_tiny_imagenet(tiny, "train", seed=7)
    other = load_mosaic_tiny_imagenet(tiny, "train", seed=8)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert mosaic_plan(tiny, "train", seed=7) == mosaic_plan(tiny, "train", seed=7)
    assert mosaic_plan(tiny, "train", seed=7) != mosaic_plan(tiny, "train", seed=8)
    assert not np.array_equal(first.images, other.images)


def test_mosaic_sources_used_once_and_never_across_splits(tiny: Path) -> None:
    train = [name for row in mosaic_plan(tiny, "train") for name in row]
    val = [name for row in mosaic_plan(tiny, "val") for name in row]
    assert len(set(train)) == len(train) == len(WNIDS) * TRAIN_PER_CLASS
    assert len(set(val)) == len(val)
    assert all(name.startswith("train/") for name in train)
    assert all(name.startswith("val/images/") for name in val)
    assert not set(train) & set(val)
    assert mosaic_plan(tiny, "test") == mosaic_plan(tiny, "val")


def test_mosaic_num_samples_and_image_size(tiny: Path) -> None:
    data = load_mosaic_tiny_imagenet(tiny, "train", num_samples=2, image_size=TILE)
    assert data.images.shape == (2, TILE, TILE, 3)
    assert load_mosaic_tiny_imagenet(tiny, "val", image_size=(4, 6)).images.shape[1:] == (4, 6, 3)
    with pytest.raises(ValueError, match="num_samples"):
        load_mosaic_tiny_imagenet(tiny, "train", num_samples=7)
    with pytest.raises(ValueError, match="num_samples"):
        load_mosaic_tiny_imagenet(tiny, "train", num_samples=0)
    with pytest.raises(TypeError, match="num_samples"):
        load_mosaic_tiny_imagenet(tiny, "train", num_samples=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        load_mosaic_tiny_imagenet(tiny, "train", seed="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        load_mosaic_tiny_imagenet(tiny, "validation")


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(st.integers(0, 9), min_size=4, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_quad_grouping_reaches_the_maximum_and_no_further(counts: list[int], seed: int) -> None:
    """Any class histogram: max_mosaics quads always group (the forced-class fix-up), one more
    never can (a class fills at most one slot per mosaic)."""
    classes = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(classes)
    best = max_mosaics(classes)
    assert best <= len(classes) // 4
    if best:
        quads = _group_quads(classes, seed, best)
        assert quads.shape == (best, 4)
        assert len(np.unique(quads)) == quads.size
        assert all(len(set(classes[row].tolist())) == 4 for row in quads)
    if best < len(classes) // 4:
        with pytest.raises(ValueError, match="4 distinct classes"):
            _group_quads(classes, seed, best + 1)


def test_quad_grouping_tight_case_and_balanced_default() -> None:
    """Four classes, one image too many: every mosaic must hold each class exactly once."""
    classes = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    assert max_mosaics(classes) == 3
    for seed in range(20):
        quads = _group_quads(classes, seed, 3)
        assert all(sorted(classes[row].tolist()) == [0, 1, 2, 3] for row in quads)
    balanced = np.repeat(np.arange(200), 100)
    assert max_mosaics(balanced) == len(balanced) // 4


def test_quad_grouping_reports_an_impossible_request() -> None:
    classes = np.array([0, 0, 0, 0, 1, 2, 3, 0])
    assert max_mosaics(classes) == 1
    with pytest.raises(ValueError, match="4 distinct classes"):
        _group_quads(classes, 0, 2)


# --------------------------------------------------------------------------- real data


@pytest.fixture
def decoded_tiny_imagenet(
    shared_data: Path, real_dataset: Callable[..., ImageArrays]
) -> dict[str, np.ndarray]:
    """Every real Tiny ImageNet image by its name under the dataset root, from the session's
    one decode (``conftest.real_dataset``) rather than a second one."""
    from frlr.data.sources import open_tree
    from frlr.data.tiny_imagenet import read_wnids, train_names, val_names

    by_name: dict[str, np.ndarray] = {}
    with open_tree(shared_data / "tiny-imagenet-200") as tree:
        index_of = {wnid: i for i, wnid in enumerate(read_wnids(tree))}
        for split, names_of in (("train", train_names), ("val", val_names)):
            names, _ = names_of(tree, index_of)
            by_name.update(zip(names, real_dataset("tiny-imagenet", split).images, strict=True))
    return by_name


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_mosaic_counts(
    shared_data: Path, decoded_tiny_imagenet: dict[str, np.ndarray], monkeypatch
) -> None:
    """Default counts on the shared subset: 5,000 train / 2,500 val mosaics, 4 of 200 labels.

    The tiles come from the session's one decode of the 30,000 JPEGs (the same
    ``decode_images`` call the mosaic loader makes), not a second decode. Val is built in
    full, while train is checked in full at plan level (the same plan the loader decodes)
    and built for its first 1,000 mosaics.
    """

    def serve(tree: object, names: list[str], mode: str, image_size: object, desc: str):
        assert mode == "RGB" and image_size is None
        return np.stack([decoded_tiny_imagenet[name] for name in names])

    monkeypatch.setattr(multilabel, "decode_images", serve)
    root = shared_data / "tiny-imagenet-200"
    val = load_mosaic_tiny_imagenet(root, "val", image_size=64)
    assert val.images.shape == (2500, 64, 64, 3)
    assert val.labels.shape == (2500, 200)
    assert val.num_classes == 200
    assert (val.labels.sum(axis=1) == 4).all()

    plan = mosaic_plan(root, "train")
    assert len(plan) == 5000
    sources = [name for row in plan for name in row]
    assert len(set(sources)) == 20000
    assert all(len({name.split("/")[1] for name in row}) == 4 for row in plan)
    train = load_mosaic_tiny_imagenet(root, "train", image_size=64, num_samples=1000)
    assert train.labels.shape == (1000, 200)
    assert (train.labels.sum(axis=1) == 4).all()
    assert not set(sources) & {name for row in mosaic_plan(root, "val") for name in row}
