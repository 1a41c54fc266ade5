"""Files written so that a killed process never leaves half of one: each is written to a
temporary file beside its destination, flushed to disk, then renamed over it (``os.replace`` is
atomic on POSIX and Windows), so a reader sees the old file or the new one, never a torn one.
Under DDP only the first process writes: :func:`is_main_process`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["is_main_process", "save_torch_atomic", "write_json_atomic", "write_text_atomic"]


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_atomic(path: str | Path, mode: str, write: Any) -> None:
    """Create ``path``'s folder, call ``write(handle)`` on a temporary file opened in ``mode``,
    fsync it and rename it over ``path``; the temporary file never outlives the call."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _atomic_path(path)
    try:
        with open(temporary, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
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
    """``torch.save(state)`` to ``path`` atomically (a checkpoint is whole or absent)."""
    _write_atomic(path, "wb", lambda handle: torch.save(state, handle))


def is_main_process() -> bool:
    """Rank 0 under torchrun (or the only process): the one that writes files and prints."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"
