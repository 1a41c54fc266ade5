"""Fetch an official dataset archive and refuse it unless its published checksum matches.

The archive is streamed to a hidden ``.part`` file beside its destination, hashed on the way,
and renamed into place only when the digest matches, so an interrupted or tampered download never
looks like a dataset. Any URL ``urllib`` opens works, ``file://`` included (which is how the
tests exercise this without a network).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from frlr.data.errors import DataError
from frlr.data.images import progress

_CHUNK = 1 << 20


class ChecksumError(DataError):
    """A file's digest differs from the published one; the message names the file.

    A [`DataError`][frlr.data.DataError] (so a ``ValueError``): code that already handles bad input
    catches it too. The message reads ``<file> has <algorithm> <digest>, expected ...; <remedy>``.

    Args:
        path: the file, or the archive that holds ``member``.
        problem: what is wrong with it.
        remedy: what the user can do about it.
        member: the file inside the archive ``path``, or None for a plain file.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from frlr.data import ChecksumError, RemoteFile
        >>> from frlr.data.download import verify_checksum
        >>> path = Path(tempfile.mkdtemp()) / "a.zip"
        >>> _ = path.write_bytes(b"not the published archive")
        >>> published = RemoteFile("https://example.org/a.zip", "a.zip", md5="0" * 32)
        >>> try:
        ...     verify_checksum(path, published)
        ... except ChecksumError as error:
        ...     print("refused:", str(error).endswith("delete it and download again"))
        refused: True
    """

    def _message(self) -> str:
        return f"{self.location} {self.problem}; {self.remedy}"


@dataclass(frozen=True)
class RemoteFile:
    """One official archive: where it lives and the checksum its publisher gives.

    A download is kept only when its digest matches, so every RemoteFile needs a checksum.

    Attributes:
        url: where to fetch it; any URL ``urllib`` opens, ``file://`` included.
        filename: the bare file name it is saved under.
        md5: the published MD5 digest, hex.
        sha256: the published SHA-256 digest, hex (preferred when both are given).

    Examples:
        >>> from frlr.data import RemoteFile
        >>> remote = RemoteFile(
        ...     "https://example.org/data.zip", "data.zip", sha256="AB" * 32
        ... )
        >>> remote.algorithm, remote.digest[:4]
        ('sha256', 'abab')
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.md5 is None and self.sha256 is None:
            raise ValueError(f"RemoteFile {self.filename!r} needs an md5 or a sha256 to check")
        if "/" in self.filename or self.filename in ("", ".", ".."):
            raise ValueError(f"filename must be a bare file name, got {self.filename!r}")

    @property
    def algorithm(self) -> str:
        """The hashlib name of the checksum checked: "sha256" when given, else "md5"."""
        return "sha256" if self.sha256 is not None else "md5"

    @property
    def digest(self) -> str:
        """The expected hex digest, lower-case."""
        value = self.sha256 if self.sha256 is not None else self.md5
        assert value is not None
        return value.lower()


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify_checksum(path: str | Path, remote: RemoteFile) -> None:
    """Raise [`ChecksumError`][] naming ``path`` unless it matches ``remote``'s checksum."""
    actual = file_digest(path, remote.algorithm)
    if actual != remote.digest:
        raise ChecksumError(
            path,
            f"has {remote.algorithm} {actual}, expected {remote.digest} "
            f"(published for {remote.url})",
            "delete it and download again",
        )


def open_url(url: str) -> BinaryIO:
    """Open ``url`` for streaming; the one network call, so tests can replace it."""
    request = urllib.request.Request(url, headers={"User-Agent": "frlr"})
    return urllib.request.urlopen(request, timeout=60)


def download_file(remote: RemoteFile, directory: str | Path) -> Path:
    """Download ``remote`` into ``directory`` (once) and return its verified path.

    An existing file is checked, not re-downloaded; a mismatch there is an error rather than a
    silent overwrite, since it may be someone's hand-placed copy.
    """
    if not isinstance(remote, RemoteFile):
        raise TypeError(f"remote must be a RemoteFile, got {type(remote).__name__}")
    directory = Path(directory).expanduser()
    destination = directory / remote.filename
    if destination.exists():
        verify_checksum(destination, remote)
        return destination
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{remote.filename}.{os.getpid()}.part"
    hasher = hashlib.new(remote.algorithm)
    try:
        with open_url(remote.url) as response, open(partial, "wb") as out:
            length = getattr(response, "headers", {}).get("Content-Length")
            total = -(-int(length) // _CHUNK) if length else 0
            chunks = iter(lambda: response.read(_CHUNK), b"")
            for chunk in progress(chunks, total=total, desc=f"downloading {remote.filename}"):
                hasher.update(chunk)
                out.write(chunk)
        actual = hasher.hexdigest()
        if actual != remote.digest:
            raise ChecksumError(
                destination,
                f"(downloaded from {remote.url}) has {remote.algorithm} {actual}, "
                f"expected {remote.digest}",
                "the file was discarded: try the download again, or fetch it by hand",
            )
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination
