"""Read a dataset's files the same way whether they are an extracted folder or the official archive.

Official datasets ship as zip or tar.gz archives. Extracting 100k small JPEGs costs minutes, disk
and inodes, and the decoded arrays are cached anyway, so loaders read members straight from the
archive when that is what is on disk. Every tree names its files by POSIX paths relative to the
dataset root: an archive's single top-level folder (``tiny-imagenet-200/``,
``images_background_small1/``) is stripped, so a loader sees the same names in the folder and in
the zip.

Every failure to read names the archive and the member (or the file) through
[`frlr.data.errors.DataError`][], with what is wrong and what to do: ``zipfile`` and ``gzip``
otherwise raise a bare ``zlib.error`` that names neither.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from frlr.data.errors import REDOWNLOAD, DataError, MissingDataError

_JUNK_PREFIXES = ("__MACOSX/",)
_JUNK_NAMES = (".DS_Store", "Thumbs.db")

_DAMAGED = (zlib.error, zipfile.BadZipFile, tarfile.TarError, EOFError, OSError)
"""What a damaged archive raises while a member is decompressed (a bad CRC, a cut-off stream)."""


def _is_junk(name: str) -> bool:
    return name.startswith(_JUNK_PREFIXES) or name.rsplit("/", 1)[-1] in _JUNK_NAMES


def _common_top_folder(names: list[str]) -> str:
    """The single top-level folder every member sits in (with its slash), or ''."""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        return tops.pop() + "/"
    return ""


class SourceTree:
    """Read-only view of a dataset's files: a folder, a zip or a tar archive.

    Use as a context manager so an archive's file handle is closed.
    """

    def __init__(self, location: Path) -> None:
        self.location = location
        self._names: list[str] = []
        self._name_set: set[str] = set()

    def names(self) -> list[str]:
        """Sorted file names (no folders), relative to the dataset root."""
        return list(self._names)

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def describe(self, name: str) -> str:
        """Where ``name`` lives, for error messages: a path, or ``archive.zip:member``."""
        path, member = self.locate(name)
        return path if member is None else f"{path}:{member}"

    def locate(self, name: str) -> tuple[str, str | None]:
        """``(file, None)`` for a folder's file, ``(archive, member)`` for an archive's member."""
        raise NotImplementedError

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """Several files at once; a tar archive reads them in one pass in archive order."""
        return {name: self.read(name) for name in names}

    def has(self, name: str) -> bool:
        return name in self._name_set

    def _set_names(self, names: list[str]) -> None:
        self._names = sorted(names)
        self._name_set = set(self._names)

    def error(self, name: str, problem: str, remedy: str) -> DataError:
        """A [`DataError`][] about ``name``, naming the archive and the member."""
        path, member = self.locate(name)
        return DataError(path, problem, remedy, member=member)

    def _missing(self, name: str) -> MissingDataError:
        path, member = self.locate(name)
        return MissingDataError(
            path,
            "missing dataset file",
            "the dataset is incomplete: download or extract it again",
            member=member,
        )

    def _damaged(self, name: str, exc: BaseException) -> DataError:
        """The error for a member whose bytes cannot be read back (see ``_DAMAGED``)."""
        extract = "extract the archive with another tool and point data_dir at the folder"
        if isinstance(exc, NotImplementedError):
            return self.error(
                name, f"stored with a compression Python cannot read ({exc})", extract
            )
        if isinstance(exc, RuntimeError):  # zipfile: an encrypted member
            return self.error(name, f"cannot be read ({exc})", extract)
        kind = type(exc)
        module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
        reason = f"{module}{kind.__name__}: {exc}"
        if self.locate(name)[1] is None:
            return self.error(name, f"cannot be read ({reason})", "check its permissions")
        return self.error(
            name,
            f"the archive is damaged: this member does not decompress ({reason})",
            f"the archive is corrupt: {REDOWNLOAD}",
        )

    def close(self) -> None:
        """Release the archive handle (a folder holds none)."""

    def __enter__(self) -> SourceTree:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)


class FolderTree(SourceTree):
    """An extracted dataset folder."""

    def __init__(self, location: Path) -> None:
        super().__init__(location)
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(location):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(location).as_posix()
            prefix = "" if rel == "." else rel + "/"
            found.extend(prefix + f for f in filenames if not _is_junk(prefix + f))
        self._set_names(found)

    def read(self, name: str) -> bytes:
        try:
            return (self.location / name).read_bytes()
        except FileNotFoundError:
            raise self._missing(name) from None
        except OSError as exc:
            raise self._damaged(name, exc) from exc

    def locate(self, name: str) -> tuple[str, str | None]:
        return str(self.location / name), None


class ZipTree(SourceTree):
    """A zip archive, read member by member without extracting."""

    def __init__(self, location: Path) -> None:
        super().__init__(location)
        try:
            self._zip = zipfile.ZipFile(location)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _unreadable_archive(location, "zip", exc) from exc
        members = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        members = [m for m in members if not _is_junk(m)]
        self._prefix = _common_top_folder(members)
        self._set_names([m[len(self._prefix) :] for m in members])

    def read(self, name: str) -> bytes:
        try:
            return self._zip.read(self._prefix + name)
        except KeyError:
            raise self._missing(name) from None
        except (*_DAMAGED, NotImplementedError, RuntimeError) as exc:
            raise self._damaged(name, exc) from exc

    def locate(self, name: str) -> tuple[str, str | None]:
        return str(self.location), f"{self._prefix}{name}"

    def close(self) -> None:
        self._zip.close()


class TarTree(SourceTree):
    """A (gzipped) tar archive. Members are best read in archive order: gzip cannot seek back."""

    def __init__(self, location: Path) -> None:
        super().__init__(location)
        try:
            self._tar = tarfile.open(location)  # noqa: SIM115 (closed by close())
            members = [m for m in self._tar.getmembers() if m.isfile() and not _is_junk(m.name)]
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise _unreadable_archive(location, "tar", exc) from exc
        self._prefix = _common_top_folder([m.name for m in members])
        self._members = {m.name[len(self._prefix) :]: m for m in members}
        self._set_names(list(self._members))

    def read(self, name: str) -> bytes:
        member = self._members.get(name)
        if member is None:
            raise self._missing(name)
        try:
            handle = self._tar.extractfile(member)
            if handle is not None:
                with handle:
                    return handle.read()
        except _DAMAGED as exc:
            raise self._damaged(name, exc) from exc
        raise self._missing(name)

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """One forward pass: a gzip stream re-decompresses from the start on every seek back."""
        missing = [name for name in names if name not in self._members]
        if missing:
            raise self._missing(missing[0])
        ordered = sorted(set(names), key=lambda name: self._members[name].offset_data)
        return {name: self.read(name) for name in ordered}

    def locate(self, name: str) -> tuple[str, str | None]:
        return str(self.location), f"{self._prefix}{name}"

    def close(self) -> None:
        self._tar.close()


def _unreadable_archive(location: Path, kind: str, exc: BaseException) -> DataError:
    return DataError(
        location,
        f"not a readable {kind} archive ({type(exc).__name__}: {exc})",
        f"it is damaged or cut short: {REDOWNLOAD}",
    )


def open_tree(location: str | Path) -> SourceTree:
    """Open a dataset root, whichever form it is on disk: folder, .zip, .tar, .tar.gz or .tgz."""
    if not isinstance(location, (str, os.PathLike)):
        raise TypeError(f"location must be a path, got {type(location).__name__}")
    path = Path(location)
    if path.is_dir():
        return FolderTree(path)
    if not path.exists():
        raise MissingDataError(
            path, "the dataset root does not exist", "check the path, or download the dataset"
        )
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return ZipTree(path)
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return TarTree(path)
    raise DataError(
        path,
        "the dataset root is neither a folder nor a .zip/.tar.gz archive",
        "point at the extracted folder or the official archive",
    )
