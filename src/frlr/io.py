"""Files written so that a killed process never leaves half of one: each is written to a
temporary file beside its destination, flushed to disk, then renamed over it (``os.replace`` is
atomic on POSIX and Windows), so a reader sees the old file or the new one, never a torn one.
Under DDP only the first process writes: :func:`is_main_process`.

A full disk is named: any write that fails with ENOSPC (or a quota, EDQUOT) raises
:class:`NoSpaceError`, ``no space left on device writing <path>``. A checkpoint is serialised in
memory first and then written, so a full disk is that OSError rather than torch's
``inline_container.cc: unexpected pos``. A checkpoint that cannot be read back is a
:class:`CheckpointError` naming the file and what to do.

:func:`run_lock` keeps two processes from training the same run directory at once.
"""

from __future__ import annotations

import errno
import io
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from frlr.data.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; run_lock then locks nothing
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CheckpointError",
    "NoSpaceError",
    "is_main_process",
    "load_checkpoint",
    "lock_holder",
    "run_lock",
    "save_torch_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_FULL = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(OSError):
    """A write failed because the disk (or the user's quota) is full; names the file.

    An ``OSError`` with errno ENOSPC, so code that handles disk errors still catches it; the
    message says what happened in words, where, and what to do.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(errno.ENOSPC, "no space left on device", os.fspath(path))

    def __str__(self) -> str:
        return (
            f"no space left on device writing {self.filename}; free some space there, or "
            "write elsewhere (another --out)"
        )


class CheckpointError(DataError):
    """A checkpoint that cannot be loaded: the message names the file and what to do."""


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_atomic(path: str | Path, mode: str, write: Any) -> None:
    """Create ``path``'s folder, call ``write(handle)`` on a temporary file opened in ``mode``,
    fsync it and rename it over ``path``; the temporary file never outlives the call."""
    path = Path(path)
    temporary = _atomic_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if exc.errno in _FULL and not isinstance(exc, NoSpaceError):
            raise NoSpaceError(path) from exc
        raise
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over."""
    _write_atomic(path, "w", lambda handle: handle.write(text))


def write_json_atomic(path: str | Path, value: Any) -> None:
    """``value`` as indented JSON (numpy scalars as numbers, paths as strings), atomically."""
    write_text_atomic(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_torch_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state)`` to ``path`` atomically (a checkpoint is whole or absent).

    Serialised in memory, then written as plain bytes: torch's own file writer reports a full
    disk as ``inline_container.cc: unexpected pos``, a plain write as ENOSPC
    (:class:`NoSpaceError`).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _write_atomic(path, "wb", lambda handle: handle.write(buffer.getbuffer()))


CHECKPOINT_REMEDY = (
    "it is damaged, cut short or not a frlr checkpoint: delete it to start the run afresh, "
    "or restore a good copy"
)


def load_checkpoint(path: str | Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A checkpoint written by :func:`save_torch_atomic`, on the CPU, tensors and plain data only.

    ``weights_only=True``: a checkpoint that would run code when unpickled is refused. Any failure
    to read it, or a missing one of ``keys``, is a :class:`CheckpointError` naming ``path``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        problem = f"cannot be loaded ({type(exc).__name__}: {_load_failure(exc)})"
        raise CheckpointError(path, problem, CHECKPOINT_REMEDY) from exc
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        problem = f"is not a frlr training checkpoint (no {', '.join(map(repr, missing))})"
        raise CheckpointError(path, problem, CHECKPOINT_REMEDY)
    return state


def _load_failure(exc: BaseException) -> str:
    """The reason inside torch's load error, without its advice to load with weights_only=False
    (which would run whatever code the file holds)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        reasons = [  # torch's numbered advice (load with weights_only=False) is left out
            line.split("WeightsUnpickler error:", 1)[1].split(" Please use")[0].strip()
            for line in lines[1:]
            if "WeightsUnpickler error:" in line
        ]
        lines = [reason for reason in reasons if reason] or ["not tensors and plain data only"]
    return (lines or [type(exc).__name__])[0][:200]


@contextmanager
def run_lock(run_dir: str | Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive lock on ``run_dir`` while a run is trained there; yields whether held.

    ``wait=False`` yields False at once when another process holds it (the caller skips the run
    for now); ``wait=True`` blocks until it is free. The lock is ``fcntl.flock`` on
    ``run_dir/.lock``, which the kernel releases when the holder's file is closed, whatever
    ends the process (kill -9 included), so a crashed holder never blocks the next one and no
    stale-lock rule (pid, host, heartbeat) can misjudge. The file holds the holder's pid and host
    for people to read. Under torchrun (WORLD_SIZE > 1) every rank runs every run together, so
    nothing is locked; nor where ``fcntl`` is missing (Windows). ``flock`` is per machine: on a
    network file system two machines may not see each other's locks.
    """
    if not _runs_are_locked():
        yield True
        return
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _runs_are_locked() -> bool:
    """Runs are locked where fcntl exists and not under torchrun (there every rank runs every
    run together)."""
    return fcntl is not None and int(os.environ.get("WORLD_SIZE", "1")) <= 1


def lock_held_elsewhere(run_dir: str | Path) -> bool:
    """Whether another process holds ``run_dir``'s lock now (is training the run there): a
    non-blocking probe that never creates the run's folder. False where runs are not locked."""
    path = Path(run_dir) / ".lock"
    if not _runs_are_locked() or not path.exists():
        return False
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def lock_holder(run_dir: str | Path) -> str:
    """Who holds (or last held) ``run_dir``'s lock, as "pid PID on HOST", for messages."""
    try:
        pid, host = (Path(run_dir) / ".lock").read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return "another process"
    return f"pid {pid} on {host}"


def is_main_process() -> bool:
    """Rank 0 under torchrun (or the only process): the one that writes files and prints."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"
