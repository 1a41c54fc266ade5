"""Decode a dataset once, then load it from an uncompressed .npz in well under a second.

A cache entry is one file, ``<cache_dir>/<label>-<hash>.npz``, where the hash covers the loader
arguments (``key_parts``: dataset name, split, image size, root path ...). Inside it sits a
fingerprint of the source files (relative paths, sizes and mtimes, hashed), so editing, adding or
removing a source file makes the entry stale and the next load rebuilds it in place, with no
stale files left to pile up. Files are written to a temporary name and renamed
(``os.replace``), so a crash or a decoding error never leaves a half-written entry; an unreadable
entry is rebuilt with a warning.

The cache folder is ``cache_dir`` if given, else ``$FRLR_CACHE``, else ``~/.cache/frlr``.

The cache only saves time, so a folder that cannot be written (read-only, full, not a folder)
costs a warning, not the run: the first failed write warns once per folder and process, and the
data is decoded afresh on every load after it, with nothing written there again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from frlr.data.arrays import ImageArrays

CACHE_FORMAT = 2  # 2: deep (16-bit, float) images scaled to 8 bits, no longer clipped
"""Bump when the stored layout or any loader's output changes, to orphan old entries."""

UNWRITABLE_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENOTDIR,
        errno.EEXIST,
    }
)
"""Write failures that mean "this folder takes no files" (read-only, full, a file in the way):
the cache is skipped with a warning. Any other error is a bug or a fault worth raising."""

_unwritable_dirs: set[Path] = set()
"""Cache folders a write already failed in, in this process: warned about once, then skipped."""


def default_cache_dir() -> Path:
    """``$FRLR_CACHE`` when set, else ``~/.cache/frlr``.

    Read at every call, so setting the variable redirects later loads.

    Examples:
        >>> from unittest import mock
        >>> from frlr.data import default_cache_dir
        >>> with mock.patch.dict("os.environ", {"FRLR_CACHE": "/scratch/frlr-cache"}):
        ...     print(default_cache_dir())
        /scratch/frlr-cache
    """
    env = os.environ.get("FRLR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "frlr"


def _check_dir(value: object, argument: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a path or None, got {type(value).__name__}")
    return Path(value).expanduser()


def source_fingerprint(sources: Iterable[str | os.PathLike[str]]) -> str:
    """Hash of every source file's path, size and mtime (folders are walked); cheap, no reading.

    Content hashing 100k JPEGs would cost as much as decoding them; size plus nanosecond mtime
    catches every edit made through the file system.
    """
    digest = hashlib.sha256()
    for source in sources:
        root = Path(source).expanduser().resolve()
        if not root.exists():
            raise FileNotFoundError(f"source {root} does not exist")
        digest.update(f"root {root}\n".encode())
        if root.is_file():
            stat = root.stat()
            digest.update(f"{root.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            continue
        lines = []
        for dirpath, _dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            for filename in filenames:
                stat = os.stat(os.path.join(dirpath, filename))
                name = filename if rel == "." else f"{rel}/{filename}"
                lines.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
        digest.update("".join(sorted(lines)).encode())
    return digest.hexdigest()


def _key_json(key_parts: Sequence[object]) -> str:
    if isinstance(key_parts, (str, bytes)) or not isinstance(key_parts, Sequence):
        raise TypeError(f"key_parts must be a sequence, got {type(key_parts).__name__}")
    if not key_parts:
        raise ValueError("key_parts must not be empty")
    return json.dumps([CACHE_FORMAT, *key_parts], sort_keys=True, default=str)


def cache_path(key_parts: Sequence[object], cache_dir: str | Path | None = None) -> Path:
    """Where the entry for ``key_parts`` lives; its name starts with the first parts, readable."""
    key = _key_json(key_parts)
    directory = _check_dir(cache_dir, "cache_dir") or default_cache_dir()
    label = "-".join(str(part) for part in key_parts[:3])
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:64]
    return directory / f"{label}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def save_arrays(arrays: ImageArrays, path: str | Path, extra: dict[str, str] | None = None) -> None:
    """Write ``arrays`` to ``path`` atomically: a temporary file in the same folder, then rename."""
    if not isinstance(arrays, ImageArrays):
        raise TypeError(f"arrays must be ImageArrays, got {type(arrays).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "images": arrays.images,
        "labels": arrays.labels,
        "classes": np.array(arrays.classes, dtype=str),
        "meta": np.array(json.dumps(arrays.meta, sort_keys=True)),
    }
    if arrays.cams is not None:
        payload["cams"] = arrays.cams
    for name, value in (extra or {}).items():
        payload[f"__{name}__"] = np.array(value)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, **payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_arrays(path: str | Path) -> tuple[ImageArrays, dict[str, str]]:
    """Read an entry written by ``save_arrays``: the arrays and the extra strings."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as stored:
        files = set(stored.files)
        arrays = ImageArrays(
            images=stored["images"],
            labels=stored["labels"],
            classes=[str(c) for c in stored["classes"]],
            cams=stored["cams"] if "cams" in files else None,
            meta=json.loads(str(stored["meta"])),
        )
        extra = {f[2:-2]: str(stored[f]) for f in files if f.startswith("__") and f.endswith("__")}
    return arrays, extra


def cached(
    key_parts: Sequence[object],
    build: Callable[[], ImageArrays],
    cache_dir: str | Path | None = None,
    sources: Iterable[str | os.PathLike[str]] = (),
) -> ImageArrays:
    """Return the cached arrays for ``key_parts``, building and storing them on a miss.

    Args:
        key_parts: the loader arguments that change the output (name, split, image_size,
            root ...); JSON-serialisable values, anything else by ``str``.
        build: decodes the dataset; called only on a miss or when ``sources`` changed.
        cache_dir: where entries live; default ``$FRLR_CACHE`` or ``~/.cache/frlr``.
        sources: files or folders the arrays are decoded from; their fingerprint is checked on
            every load, so an edited source invalidates the entry.

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> from frlr.data import ImageArrays, cached
        >>> calls = []
        >>> def build():
        ...     calls.append(1)
        ...     return ImageArrays(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), ["a", "b"])
        >>> cache_dir = tempfile.mkdtemp()
        >>> first = cached(["toy", "train"], build, cache_dir)
        >>> again = cached(["toy", "train"], build, cache_dir)   # read back, not rebuilt
        >>> len(calls), np.array_equal(first.images, again.images)
        (1, True)
    """
    if not callable(build):
        raise TypeError(f"build must be callable, got {type(build).__name__}")
    path = cache_path(key_parts, cache_dir)
    fingerprint = source_fingerprint(sources)
    key = _key_json(key_parts)
    try:
        arrays, extra = load_arrays(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        if not _unreadable_dir(exc):
            warnings.warn(f"cache file {path} is unreadable ({exc}); rebuilding it", stacklevel=2)
    else:
        if extra.get("fingerprint") == fingerprint and extra.get("key") == key:
            return arrays
    arrays = build()
    if not isinstance(arrays, ImageArrays):
        raise TypeError(f"build must return ImageArrays, got {type(arrays).__name__}")
    if path.parent in _unwritable_dirs:
        return arrays
    try:
        save_arrays(arrays, path, extra={"fingerprint": fingerprint, "key": key})
    except OSError as exc:
        if exc.errno not in UNWRITABLE_ERRNOS:
            raise
        _unwritable_dirs.add(path.parent)
        warnings.warn(
            f"cache folder {path.parent} cannot be written ({exc.strerror or exc}); going on "
            "without the cache, so every run decodes the data afresh: pass a writable "
            "cache_dir (or set FRLR_CACHE) to cache it",
            stacklevel=2,
        )
    return arrays


def _unreadable_dir(exc: BaseException) -> bool:
    """True for a cache folder that cannot even be looked into (a file in the way, no access):
    that is the write's warning to give, not an unreadable-entry one."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOTDIR, errno.EACCES)
