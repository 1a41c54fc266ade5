"""Re-id parsers: Market-1501 / DukeMTMC-reID on fabricated official layouts, Omniglot retrieval.

Fixtures are tiny real JPEG/PNG files written with PIL in each dataset's official layout; the
real Omniglot zips are checked too when ../shared/data is present.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frlr.data import ImageArrays
from frlr.data.images import CorruptImageError
from frlr.data.reid import (
    load_dukemtmc_reid,
    load_market1501,
    load_omniglot_retrieval,
)

NATIVE = (128, 64)  # Market-1501 / Duke crops are 128 high, 64 wide

MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0010_c1s1_002301_02.jpg",
        "0007_c3s3_077419_03.jpg",
        "-1_c1s1_000401_03.jpg",  # not in the official train folder: must be skipped
        "0000_c1s1_000151_01.jpg",  # likewise
    ],
    "query": ["0002_c3s1_000776_01.jpg", "0007_c1s1_001051_00.jpg"],
    "bounding_box_test": [
        "-1_c1s1_000401_03.jpg",
        "0000_c2s1_000151_01.jpg",
        "0002_c1s1_000301_01.jpg",
        "0007_c6s1_002381_02.jpg",
    ],
}
DUKE_FILES = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0005_c1_f0000001.jpg", "0001_c5_f0051341.jpg"],
    "query": ["0005_c2_f0046985.jpg"],
    "bounding_box_test": ["0005_c3_f0048312.jpg", "0019_c8_f0130321.jpg"],
}


def _colour(name: str) -> tuple[int, int, int]:
    """A distinct flat colour per file name, so decoded pixels can be traced to their file."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(name))
    rng = np.random.default_rng(seed)
    return tuple(int(v) for v in rng.integers(20, 236, size=3))


def _jpeg(name: str, size_hw: tuple[int, int] = NATIVE) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size_hw[1], size_hw[0]), _colour(name)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _write_layout(root: Path, files: dict[str, list[str]]) -> Path:
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / folder / name).write_bytes(_jpeg(name))
    return root


@pytest.fixture
def market(tmp_path: Path) -> Path:
    root = _write_layout(tmp_path / "Market-1501-v15.09.15", MARKET_FILES)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")
    (root / "readme.txt").write_text("Market-1501 fixture")
    return root


@pytest.fixture
def duke(tmp_path: Path) -> Path:
    return _write_layout(tmp_path / "DukeMTMC-reID", DUKE_FILES)


# --------------------------------------------------------------------------- Market-1501


def test_market_train_relabels_identities_in_pid_order_and_skips_junk(market: Path) -> None:
    data = load_market1501(market, "train", image_size=None)
    assert data.classes == ["0002", "0007", "0010"]
    # files sorted by name: 0002 x2, 0007, 0010; junk -1 and distractor 0000 skipped
    assert data.labels.tolist() == [0, 0, 1, 2]
    assert data.labels.dtype == np.int64
    assert data.cams.tolist() == [1, 2, 3, 1]
    assert data.meta["skipped_junk_or_distractor"] == "2"
    assert data.images.shape == (4, *NATIVE, 3)
    assert not data.multilabel


def test_market_query_keeps_raw_pids_and_cameras(market: Path) -> None:
    data = load_market1501(market, "query", image_size=None)
    assert data.labels.tolist() == [2, 7]
    assert data.cams.tolist() == [3, 1]
    assert data.classes == ["0002", "0007"]


def test_market_gallery_keeps_junk_and_distractors(market: Path) -> None:
    data = load_market1501(market, "gallery", image_size=None)
    assert sorted(data.labels.tolist()) == [-1, 0, 2, 7]
    by_pid = dict(zip(data.labels.tolist(), data.cams.tolist(), strict=True))
    assert by_pid == {-1: 1, 0: 2, 2: 1, 7: 6}
    assert data.classes == ["-1", "0000", "0002", "0007"]
    assert data.meta["skipped_junk_or_distractor"] == "0"


def test_market_pixels_come_from_the_named_file(market: Path) -> None:
    data = load_market1501(market, "query", image_size=None)
    for image, name in zip(data.images, sorted(MARKET_FILES["query"]), strict=True):
        mean = image.reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(mean, _colour(name), atol=3)


def test_market_default_size_is_256x128_and_ints_mean_square(market: Path) -> None:
    assert load_market1501(market, "query").images.shape == (2, 256, 128, 3)
    assert load_market1501(market, "query", image_size=32).images.shape == (2, 32, 32, 3)
    resized = load_market1501(market, "query", image_size=(64, 32))
    assert resized.images.shape == (2, 64, 32, 3)
    mean = resized.images[0].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(mean, _colour(sorted(MARKET_FILES["query"])[0]), atol=3)


def test_market_reads_the_official_zip_in_place(market: Path, tmp_path: Path) -> None:
    holder = tmp_path / "zipped"
    holder.mkdir()
    with zipfile.ZipFile(holder / "Market-1501-v15.09.15.zip", "w") as archive:
        for path in sorted(market.rglob("*")):
            if path.is_file():
                archive.write(path, f"Market-1501-v15.09.15/{path.relative_to(market).as_posix()}")
    for split in ("train", "query", "gallery"):
        folder = load_market1501(market, split, image_size=None)
        zipped = load_market1501(holder, split, image_size=None)
        np.testing.assert_array_equal(folder.images, zipped.images)
        np.testing.assert_array_equal(folder.labels, zipped.labels)
        np.testing.assert_array_equal(folder.cams, zipped.cams)


def test_market_rejects_a_file_name_outside_the_pattern(market: Path) -> None:
    (market / "query" / "person_2.jpg").write_bytes(_jpeg("x"))
    with pytest.raises(ValueError, match=r"person_2\.jpg"):
        load_market1501(market, "query")


def test_market_corrupt_image_names_the_file(market: Path) -> None:
    broken = market / "query" / "0002_c3s1_000776_01.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(CorruptImageError, match=r"0002_c3s1_000776_01\.jpg"):
        load_market1501(market, "query")


def test_market_missing_folder_and_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bounding_box_train"):
        load_market1501(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_market1501(tmp_path / "nowhere", "train")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"split": "test"}, ValueError, "split"),
        ({"split": 1}, TypeError, "split"),
        ({"split": "train", "image_size": 0}, ValueError, "image_size"),
        ({"split": "train", "image_size": (256, 128, 3)}, TypeError, "image_size"),
        ({"split": "train", "image_size": True}, TypeError, "image_size"),
        ({"split": "train", "image_size": 2.5}, TypeError, "image_size"),
    ],
)
def test_market_argument_checks(market: Path, kwargs: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        load_market1501(market, **kwargs)
    with pytest.raises(TypeError, match="root"):
        load_market1501(3, "train")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- DukeMTMC-reID


def test_duke_parses_its_own_name_pattern(duke: Path) -> None:
    train = load_dukemtmc_reid(duke, "train", image_size=None)
    assert train.classes == ["0001", "0005"]
    assert train.labels.tolist() == [0, 0, 1]  # 0001_c2, 0001_c5, 0005_c1
    assert train.cams.tolist() == [2, 5, 1]
    gallery = load_dukemtmc_reid(duke, "gallery", image_size=None)
    assert gallery.labels.tolist() == [5, 19]
    assert gallery.cams.tolist() == [3, 8]
    query = load_dukemtmc_reid(duke, "query")
    assert query.images.shape == (1, 256, 128, 3)


def test_duke_rejects_market_names(duke: Path) -> None:
    (duke / "query" / "0002_c3s1_000776_01.jpg").write_bytes(_jpeg("m"))
    with pytest.raises(ValueError, match=r"0002_c3s1_000776_01\.jpg"):
        load_dukemtmc_reid(duke, "query")


# --------------------------------------------------------------------------- Omniglot retrieval

DRAWERS = 4
SIDE = 12


def _png(seed: int) -> bytes:
    """A 1-bit drawing: white paper (1) with a few black (0) stroke pixels, like Omniglot."""
    bits = np.random.default_rng(seed).random((SIDE, SIDE)) > 0.2
    bits[0, 0] = True  # paper in the corner, so polarity can be checked
    bits[SIDE // 2, SIDE // 2] = False  # a stroke in the middle
    buffer = io.BytesIO()
    Image.fromarray(bits).convert("1").save(buffer, "PNG")
    return buffer.getvalue()


def _omniglot_zip(path: Path, characters: dict[str, int]) -> None:
    """``characters`` maps 'Alphabet/characterNN' -> global character id (drives the bytes)."""
    top = path.stem
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/", "")
        for key, char_id in characters.items():
            archive.writestr(f"{top}/{key}/", "")
            for drawer in range(1, DRAWERS + 1):
                name = f"{top}/{key}/{char_id:04d}_{drawer:02d}.png"
                archive.writestr(name, _png(char_id * 100 + drawer))


SMALL1 = {
    "Balinese/character01": 1,
    "Balinese/character02": 2,
    "Greek/character01": 10,
    "Greek/character02": 11,
}
SMALL2 = {
    "Greek/character01": 10,  # byte for byte the same as in small1: seen
    "Greek/character02": 11,
    "Tagalog/character01": 20,
    "Tagalog/character02": 21,
    "Tagalog/character03": 22,
}


@pytest.fixture
def omniglot(tmp_path: Path) -> Path:
    _omniglot_zip(tmp_path / "images_background_small1.zip", SMALL1)
    _omniglot_zip(tmp_path / "images_background_small2.zip", SMALL2)
    return tmp_path


def test_omniglot_train_is_every_small1_character(omniglot: Path) -> None:
    data = load_omniglot_retrieval(omniglot, "train")
    assert data.classes == sorted(SMALL1)
    assert data.labels.tolist() == [k for k in range(len(SMALL1)) for _ in range(DRAWERS)]
    assert data.cams.tolist() == list(range(1, DRAWERS + 1)) * len(SMALL1)
    assert data.images.shape == (len(SMALL1) * DRAWERS, SIDE, SIDE, 1)


def test_omniglot_unseen_characters_are_the_small2_only_paths(omniglot: Path) -> None:
    query = load_omniglot_retrieval(omniglot, "query")
    gallery = load_omniglot_retrieval(omniglot, "gallery")
    unseen = ["Tagalog/character01", "Tagalog/character02", "Tagalog/character03"]
    assert query.classes == unseen
    assert not set(query.classes) & set(SMALL1)
    assert query.meta["excluded_seen_characters"] == "2"
    np.testing.assert_array_equal(query.images, gallery.images)
    np.testing.assert_array_equal(query.labels, gallery.labels)
    np.testing.assert_array_equal(query.cams, gallery.cams)
    assert len(query) == len(unseen) * DRAWERS


def test_omniglot_camera_filter_leaves_only_the_other_drawings(omniglot: Path) -> None:
    data = load_omniglot_retrieval(omniglot, "query")
    same_id = data.labels[:, None] == data.labels[None, :]
    same_cam = data.cams[:, None] == data.cams[None, :]
    removed = same_id & same_cam
    np.testing.assert_array_equal(removed, np.eye(len(data), dtype=bool))
    assert ((same_id & ~same_cam).sum(axis=1) == DRAWERS - 1).all()


def test_omniglot_strokes_are_bright_on_dark(omniglot: Path) -> None:
    data = load_omniglot_retrieval(omniglot, "train")
    assert set(np.unique(data.images).tolist()) <= {0, 255}
    assert (data.images[:, 0, 0, 0] == 0).all()  # paper
    assert (data.images[:, SIDE // 2, SIDE // 2, 0] == 255).all()  # stroke
    first = np.asarray(Image.open(io.BytesIO(_png(1 * 100 + 1))).convert("L"))
    np.testing.assert_array_equal(data.images[0, :, :, 0], 255 - first)


def test_omniglot_resizes(omniglot: Path) -> None:
    data = load_omniglot_retrieval(omniglot, "gallery", image_size=(6, 8))
    assert data.images.shape == (3 * DRAWERS, 6, 8, 1)


def test_omniglot_renamed_copy_of_a_training_character_is_rejected(tmp_path: Path) -> None:
    _omniglot_zip(tmp_path / "images_background_small1.zip", SMALL1)
    # Same character id under a new path: caught by id.
    _omniglot_zip(
        tmp_path / "images_background_small2.zip", {**SMALL2, "Greek_copy/character01": 10}
    )
    with pytest.raises(ValueError, match="character id 0010"):
        load_omniglot_retrieval(tmp_path, "query")


def test_omniglot_byte_identical_copy_is_rejected(tmp_path: Path) -> None:
    _omniglot_zip(tmp_path / "images_background_small1.zip", SMALL1)
    small2 = tmp_path / "images_background_small2.zip"
    _omniglot_zip(small2, SMALL2)
    with zipfile.ZipFile(small2, "a") as archive:
        archive.writestr("images_background_small2/Other/character01/0099_01.png", _png(101))
    with pytest.raises(ValueError, match="byte-identical"):
        load_omniglot_retrieval(tmp_path, "query")


def test_omniglot_missing_zip_and_bad_split(omniglot: Path) -> None:
    (omniglot / "images_background_small2.zip").unlink()
    assert len(load_omniglot_retrieval(omniglot, "train")) == len(SMALL1) * DRAWERS
    with pytest.raises(FileNotFoundError, match=r"images_background_small2\.zip"):
        load_omniglot_retrieval(omniglot, "query")
    with pytest.raises(ValueError, match="split"):
        load_omniglot_retrieval(omniglot, "test")


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_omniglot_retrieval_counts(real_dataset: Callable[..., ImageArrays]) -> None:
    train = real_dataset("omniglot-retrieval", "train")
    assert train.num_classes == 136
    assert len(train) == 2720
    query = real_dataset("omniglot-retrieval", "query")
    assert query.num_classes == 106
    assert len(query) == 2120
    assert query.images.shape == (2120, 105, 105, 1)
    assert sorted(np.unique(query.cams).tolist()) == list(range(1, 21))
    assert np.bincount(query.labels).tolist() == [20] * 106
    assert query.meta["alphabets"] == "Japanese_(katakana),Sanskrit,Tagalog"
    assert not set(query.classes) & set(train.classes)
    same = (query.labels[:, None] == query.labels[None, :]) & (
        query.cams[:, None] != query.cams[None, :]
    )
    assert (same.sum(axis=1) == 19).all()
