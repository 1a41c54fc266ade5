"""Downloads: checksum verification, no partial files, and the registry's download=True path.

No network: file:// URLs and a replaced ``open_url`` stand in for the official servers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

import frlr.data.download as download_module
import frlr.data.registry as registry
from frlr.data import ChecksumError, RemoteFile, dataset_info, load_dataset
from frlr.data.download import download_file, verify_checksum

PAYLOAD = b"official archive bytes" * 1000


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "server" / "archive.zip"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def remote_for(path: Path, **digest: str) -> RemoteFile:
    return RemoteFile(path.as_uri(), "archive.zip", **digest)


def test_file_url_download_with_md5_and_sha256(source: Path, tmp_path: Path) -> None:
    for algorithm in ("md5", "sha256"):
        digest = hashlib.new(algorithm, PAYLOAD).hexdigest()
        target = tmp_path / f"dest-{algorithm}"
        path = download_file(remote_for(source, **{algorithm: digest.upper()}), target)
        assert path == target / "archive.zip" and path.read_bytes() == PAYLOAD
        assert sorted(p.name for p in target.iterdir()) == ["archive.zip"]


def test_checksum_mismatch_discards_the_download(source: Path, tmp_path: Path) -> None:
    wrong = RemoteFile(source.as_uri(), "archive.zip", md5="0" * 32)
    with pytest.raises(ChecksumError, match=r"archive\.zip.*expected 0{32}"):
        download_file(wrong, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_existing_file_is_verified_not_refetched(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = remote_for(source, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    download_file(good, tmp_path)

    def no_network(url: str) -> io.BytesIO:
        raise AssertionError("fetched again")

    monkeypatch.setattr(download_module, "open_url", no_network)
    assert download_file(good, tmp_path).read_bytes() == PAYLOAD
    (tmp_path / "archive.zip").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match=r"archive\.zip has sha256"):
        download_file(good, tmp_path)
    with pytest.raises(ChecksumError):
        verify_checksum(tmp_path / "archive.zip", good)


def test_remote_file_needs_a_checksum() -> None:
    with pytest.raises(ValueError, match="md5 or a sha256"):
        RemoteFile("https://example.org/x.zip", "x.zip")
    with pytest.raises(ValueError, match="filename"):
        RemoteFile("https://example.org/x.zip", "../x.zip", md5="0" * 32)


def test_official_checksums_are_published_values() -> None:
    cifar10 = dataset_info("cifar10").downloads[0]
    assert cifar10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar10.md5 == "c58f30108f718f92721af3b95e74349a"
    assert dataset_info("cifar100").downloads[0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert dataset_info("tiny-imagenet").downloads[0].md5 == "90528d7ca1a48142e341f4ef8d21d0de"
    assert dataset_info("omniglot").downloads[0].md5 == "68d2efa1b9178cc56df9314c21c6e718"


def fake_cifar10_targz() -> bytes:
    """A CIFAR-10 archive in the official layout holding 2 train and 1 test image per batch."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        def add(name: str, obj: dict) -> None:
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
        pixels = np.zeros((2, 3072), dtype=np.uint8)
        for b in range(1, 6):
            add(f"data_batch_{b}", {"data": pixels, "labels": [b, b]})
        add("test_batch", {"data": pixels[:1], "labels": [9]})
    return buffer.getvalue()


def test_registry_download_checks_the_published_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = fake_cifar10_targz()
    monkeypatch.setattr(download_module, "open_url", lambda url: io.BytesIO(archive))
    with pytest.raises(ChecksumError, match=r"cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", "train", tmp_path / "data", download=True, cache_dir=tmp_path)
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()


def test_registry_download_then_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = fake_cifar10_targz()
    served = tmp_path / "server" / "cifar-10-python.tar.gz"
    served.parent.mkdir()
    served.write_bytes(archive)
    info = dataset_info("cifar10")
    local = RemoteFile(
        served.as_uri(), info.downloads[0].filename, md5=hashlib.md5(archive).hexdigest()
    )
    monkeypatch.setitem(registry._INFOS, "cifar10", dataclasses.replace(info, downloads=(local,)))
    data_dir = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("cifar10", "train", data_dir, cache_dir=tmp_path / "c")
    train = load_dataset("cifar10", "train", data_dir, download=True, cache_dir=tmp_path / "c")
    assert train.labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert (data_dir / "cifar-10-python.tar.gz").read_bytes() == archive
    (data_dir / "cifar-10-python.tar.gz").write_bytes(archive + b"junk")
    with pytest.raises(ChecksumError, match="delete it and download again"):
        load_dataset("cifar10", "test", data_dir, download=True, cache_dir=tmp_path / "c")
