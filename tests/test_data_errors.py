"""Data errors a user can act on: each names the file (the archive and its member), what is wrong
and what to do, in one line, as one exception type (:class:`frlr.data.DataError`); and a cache
folder that takes no files costs one warning, not the run.

Every fault is made on fabricated files in the official formats: a Tiny ImageNet zip with a
member's compressed bytes damaged, a truncated JPEG, a CIFAR tar.gz cut short. Tests may run as
root, where ``chmod`` does not stop writes, so an unwritable cache folder is simulated two other
ways: a folder below a regular file (the OS refuses it for every user) and a file system that
answers EROFS or ENOSPC (a monkeypatched writer).
"""

from __future__ import annotations

import errno
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import frlr.data.cache as cache_module
from frlr.data import CorruptImageError, DataError, MissingDataError, load_dataset
from frlr.data.sources import open_tree
from test_data_cifar import make_cifar10, make_targz
from test_data_tiny_imagenet import make_tiny_imagenet, zip_folder

MEMBER = "tiny-imagenet-200/train/n01000001/images/n01000001_2.JPEG"


def tiny_zip(tmp_path: Path, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """The fabricated Tiny ImageNet as ``data/tiny-imagenet-200.zip``, members compressed."""
    folder = make_tiny_imagenet(tmp_path / "build")
    data = tmp_path / "data"
    data.mkdir()
    archive = data / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w", compression) as handle:
        for path in sorted(folder.rglob("*")):
            handle.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def damage_member(archive: Path, member: str, offset: int = 4, length: int = 24) -> None:
    """Flip ``length`` bytes of ``member``'s stored data, leaving the zip's directory intact."""
    with zipfile.ZipFile(archive) as handle:
        info = handle.getinfo(member)
    raw = bytearray(archive.read_bytes())
    header = info.header_offset
    name_length = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length + offset
    assert start + length <= header + 30 + name_length + extra_length + info.compress_size
    for i in range(start, start + length):
        raw[i] ^= 0xFF
    archive.write_bytes(bytes(raw))


def patch_central_directory(archive: Path, member: str, offset: int, value: int) -> None:
    """Overwrite a 2-byte field of ``member``'s central-directory entry (zip spec 4.3.12)."""
    raw = bytearray(archive.read_bytes())
    entry = raw.index(b"PK\x01\x02")
    name = member.encode()
    while raw[entry + 46 : entry + 46 + len(name)] != name:
        entry = raw.index(b"PK\x01\x02", entry + 4)
    raw[entry + offset : entry + offset + 2] = value.to_bytes(2, "little")
    archive.write_bytes(bytes(raw))


def assert_one_line_naming(exc: DataError, path: Path, member: str | None) -> str:
    message = str(exc)
    assert "\n" not in message
    assert exc.path == str(path) and exc.member == member
    assert str(path) in message and (member is None or member in message)
    assert exc.problem in message and exc.remedy in message and exc.remedy
    return message


def test_damaged_zip_member_names_archive_and_member(tmp_path: Path) -> None:
    """Was a bare ``zlib.error: invalid code lengths set``, naming neither."""
    archive = tiny_zip(tmp_path)
    damage_member(archive, MEMBER)
    with pytest.raises(DataError) as caught:
        load_dataset("tiny-imagenet", "train", tmp_path / "data", cache_dir=tmp_path / "c")
    message = assert_one_line_naming(caught.value, archive, MEMBER)
    assert "damaged" in message and "download it again" in message
    assert not isinstance(caught.value, CorruptImageError)  # the archive, not the image, is bad
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


def test_stored_zip_member_with_a_bad_crc_is_named(tmp_path: Path) -> None:
    archive = tiny_zip(tmp_path, zipfile.ZIP_STORED)
    damage_member(archive, MEMBER, offset=40, length=8)
    with open_tree(archive) as tree, pytest.raises(DataError) as caught:
        tree.read("train/n01000001/images/n01000001_2.JPEG")
    message = assert_one_line_naming(caught.value, archive, MEMBER)
    assert "CRC" in message


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        (10, 9, "compression Python cannot read"),  # method 9: Deflate64, which zipfile lacks
        (8, 1, "encrypted"),  # general-purpose flag bit 0: a password-protected member
    ],
)
def test_unreadable_zip_member_says_to_extract_it_elsewhere(
    tmp_path: Path, field: int, value: int, words: str
) -> None:
    archive = tiny_zip(tmp_path)
    patch_central_directory(archive, MEMBER, field, value)
    with open_tree(archive) as tree, pytest.raises(DataError) as caught:
        tree.read("train/n01000001/images/n01000001_2.JPEG")
    message = assert_one_line_naming(caught.value, archive, MEMBER)
    assert words in message and "extract the archive" in message


def test_truncated_image_in_a_zip_names_archive_and_member(tmp_path: Path) -> None:
    folder = make_tiny_imagenet(tmp_path / "build")
    image = folder / "val" / "images" / "val_2.JPEG"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    archive = zip_folder(folder, tmp_path / "tiny-imagenet-200.zip")
    with pytest.raises(CorruptImageError) as caught:
        load_dataset("tiny-imagenet", "val", archive, use_cache=False)
    member = "tiny-imagenet-200/val/images/val_2.JPEG"
    message = assert_one_line_naming(caught.value, archive, member)
    assert isinstance(caught.value, DataError) and "truncated" in message


def test_garbage_image_names_the_file_not_a_buffer(tmp_path: Path) -> None:
    folder = make_tiny_imagenet(tmp_path / "build")
    image = folder / "val" / "images" / "val_0.JPEG"
    image.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CorruptImageError) as caught:
        load_dataset("tiny-imagenet", "val", folder, use_cache=False)
    message = assert_one_line_naming(caught.value, image, None)
    assert "BytesIO" not in message and "26 bytes" in message


def test_zip_cut_short_is_named(tmp_path: Path) -> None:
    archive = tiny_zip(tmp_path)
    archive.write_bytes(archive.read_bytes()[:-200])  # the central directory is gone
    with pytest.raises(DataError) as caught:
        load_dataset("tiny-imagenet", "train", tmp_path / "data", use_cache=False)
    assert "not a readable zip archive" in assert_one_line_naming(caught.value, archive, None)


def test_tar_gz_cut_short_is_named(tmp_path: Path) -> None:
    archive = make_targz(make_cifar10(tmp_path / "build"), tmp_path / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError) as caught:
        load_dataset("cifar10", "test", archive, use_cache=False)
    error = caught.value
    assert error.path == str(archive) and "download it again" in str(error)


def test_missing_member_is_a_data_error_and_file_not_found(tmp_path: Path) -> None:
    archive = tiny_zip(tmp_path)
    with open_tree(archive) as tree, pytest.raises(MissingDataError) as caught:
        tree.read("val/images/val_99.JPEG")
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, DataError)
    assert_one_line_naming(caught.value, archive, "tiny-imagenet-200/val/images/val_99.JPEG")
    with pytest.raises(MissingDataError, match="download=True"):
        load_dataset("cifar10", "train", tmp_path / "empty", use_cache=False)


def test_data_error_survives_pickling_with_its_fields() -> None:
    """A DDP worker's error reaches the launcher whole (default pickling loses the fields)."""
    error = MissingDataError("a.zip", "missing dataset file", "extract it again", member="b.png")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is MissingDataError and str(copy) == str(error)
    assert (copy.path, copy.member, copy.problem, copy.remedy) == (
        "a.zip",
        "b.png",
        "missing dataset file",
        "extract it again",
    )


def load_both_splits(data: Path, cache_dir: Path) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train = load_dataset("tiny-imagenet", "train", data, cache_dir=cache_dir)
        val = load_dataset("tiny-imagenet", "val", data, cache_dir=cache_dir)
        again = load_dataset("tiny-imagenet", "val", data, cache_dir=cache_dir)
    assert len(train) == 6 and len(val) == 4
    np.testing.assert_array_equal(val.images, again.images)
    return [w for w in seen if "cache" in str(w.message)]


@pytest.mark.parametrize("below", [True, False], ids=["below-a-file", "is-a-file"])
def test_cache_folder_that_is_a_file_warns_once_and_goes_on(tmp_path: Path, below: bool) -> None:
    data = tmp_path / "data"
    make_tiny_imagenet(data)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder's parent should be")
    cache_dir = blocker / "cache" if below else blocker
    warned = load_both_splits(data, cache_dir)
    assert len(warned) == 1
    message = str(warned[0].message)
    assert str(cache_dir) in message and "going on without the cache" in message
    assert "FRLR_CACHE" in message
    assert blocker.read_text().startswith("a file")


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")],
)
def test_read_only_or_full_cache_folder_warns_once_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    data = tmp_path / "data"
    make_tiny_imagenet(data)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    attempts = []

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        attempts.append(kwargs.get("dir"))
        raise OSError(code, words)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    warned = load_both_splits(data, cache_dir)
    assert len(warned) == 1 and words in str(warned[0].message)
    assert str(cache_dir) in str(warned[0].message)
    assert attempts == [cache_dir]  # after the first refusal, the folder is not tried again
    assert list(cache_dir.iterdir()) == []


def test_disk_full_mid_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    make_tiny_imagenet(data)

    def full(handle: object, **arrays: np.ndarray) -> None:
        handle.write(b"PK\x03\x04 half an npz")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.np, "savez", full)
    with pytest.warns(UserWarning, match="No space left on device"):
        arrays = load_dataset("tiny-imagenet", "val", data, cache_dir=tmp_path / "c")
    assert len(arrays) == 4 and list((tmp_path / "c").iterdir()) == []


def test_other_write_errors_still_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only "this folder takes no files" is forgiven; an I/O error is a fault worth seeing."""
    data = tmp_path / "data"
    make_tiny_imagenet(data)

    def broken(handle: object, **arrays: np.ndarray) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cache_module.np, "savez", broken)
    with pytest.raises(OSError, match="Input/output error"):
        load_dataset("tiny-imagenet", "val", data, cache_dir=tmp_path / "c")
