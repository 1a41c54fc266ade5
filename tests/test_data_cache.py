"""The decoded-array cache: hits, invalidation, atomic writes, corrupt sources and entries."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import frlr.data.cache as cache_module
import frlr.data.images as images_module
from frlr.data import CorruptImageError, ImageArrays, load_dataset
from frlr.data.cache import cache_path, cached, default_cache_dir, load_arrays, save_arrays


def write(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    write(root / "train" / "a" / "1.png", (10, 20, 30))
    write(root / "train" / "b" / "1.png", (40, 50, 60))
    return root


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def small_arrays(value: int = 7) -> ImageArrays:
    return ImageArrays(
        images=np.full((2, 3, 3, 1), value, dtype=np.uint8),
        labels=np.array([[1, 0], [0, 1]], dtype=np.uint8),
        classes=["first class", "second"],
        cams=np.array([3, 4], dtype=np.int64),
        meta={"note": "kept"},
    )


def test_save_load_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "entry.npz"
    save_arrays(small_arrays(), path, extra={"fingerprint": "abc"})
    loaded, extra = load_arrays(path)
    np.testing.assert_array_equal(loaded.images, small_arrays().images)
    np.testing.assert_array_equal(loaded.labels, small_arrays().labels)
    np.testing.assert_array_equal(loaded.cams, [3, 4])
    assert loaded.labels.dtype == np.uint8 and loaded.multilabel
    assert loaded.classes == ["first class", "second"] and loaded.meta == {"note": "kept"}
    assert extra == {"fingerprint": "abc"}


def test_cached_builds_once_per_key(tmp_path: Path) -> None:
    calls = []

    def build() -> ImageArrays:
        calls.append(1)
        return small_arrays()

    for _ in range(3):
        cached(["toy", "train", None], build, tmp_path)
    assert len(calls) == 1
    cached(["toy", "train", 16], build, tmp_path)
    assert len(calls) == 2
    assert len(entries(tmp_path)) == 2
    assert cache_path(["toy", "train", None], tmp_path).name.startswith("toy-train-None-")


def test_second_load_does_not_decode(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c")

    def refuse(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(images_module, "decode_image", refuse)
    second = load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(first.images, second.images)
    assert first.classes == second.classes
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c", use_cache=False)


def test_changed_source_file_invalidates_entry(dataset: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "c"
    before = load_dataset("imagefolder", "train", dataset, cache_dir=cache_dir)
    image = dataset / "train" / "a" / "1.png"
    write(image, (99, 99, 99))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = load_dataset("imagefolder", "train", dataset, cache_dir=cache_dir)
    assert before.images[0, 0, 0].tolist() == [10, 20, 30]
    assert after.images[0, 0, 0].tolist() == [99, 99, 99]
    assert len(entries(cache_dir)) == 1  # rebuilt in place, no stale entry left


def test_added_source_file_invalidates_entry(dataset: Path, tmp_path: Path) -> None:
    assert len(load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c")) == 2
    write(dataset / "train" / "b" / "2.png", (1, 1, 1))
    assert len(load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c")) == 3


def test_image_size_is_part_of_the_key(dataset: Path, tmp_path: Path) -> None:
    small = load_dataset("imagefolder", "train", dataset, image_size=2, cache_dir=tmp_path / "c")
    full = load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c")
    assert small.images.shape[1:] == (2, 2, 3) and full.images.shape[1:] == (4, 4, 3)
    assert len(entries(tmp_path / "c")) == 2


def test_corrupt_image_is_named_and_nothing_is_cached(dataset: Path, tmp_path: Path) -> None:
    bad = dataset / "train" / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated PNG
    with pytest.raises(CorruptImageError, match=re.escape(str(bad))):
        load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c")
    assert entries(tmp_path / "c") == []


def test_failed_write_leaves_no_partial_file(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(handle: object, **arrays: np.ndarray) -> None:
        handle.write(b"PK\x03\x04 half an npz")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        load_dataset("imagefolder", "train", dataset, cache_dir=tmp_path / "c")
    assert entries(tmp_path / "c") == []


def test_unreadable_entry_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    path = cache_path(["toy"], tmp_path)
    cached(["toy"], small_arrays, tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        rebuilt = cached(["toy"], lambda: small_arrays(9), tmp_path)
    assert int(rebuilt.images[0, 0, 0, 0]) == 9
    assert int(load_arrays(path)[0].images[0, 0, 0, 0]) == 9


def test_default_cache_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRLR_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    cached(["toy"], small_arrays)
    assert len(entries(tmp_path / "here")) == 1
    monkeypatch.delenv("FRLR_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "frlr"


def test_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="key_parts"):
        cached("toy", small_arrays, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_parts"):
        cached([], small_arrays, tmp_path)
    with pytest.raises(TypeError, match="build"):
        cached(["toy"], "not callable", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="build must return ImageArrays"):
        cached(["toy"], lambda: np.zeros(3), tmp_path)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="cache_dir"):
        cached(["toy"], small_arrays, 3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cached(["toy"], small_arrays, tmp_path, sources=[tmp_path / "nowhere"])
    assert entries(tmp_path) == []
