"""How a benchmark names and reruns itself: as a module of the ``benchmarks`` package, started
from the repository root, so that its package imports resolve wherever the caller stands."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
"""The repository root: the folder that holds the ``benchmarks`` package."""


def command_line(module: str, args: Sequence[str] | None = None) -> str:
    """The command a record names, ``python -m benchmarks.x ARGS`` (this process's arguments
    unless ``args`` is given), quoted so that it can be pasted into a shell."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if args is None else args)])


def run_module(module: str, args: Sequence[str], **options: Any) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh process of this interpreter, from the repository
    root (a fresh process is how a benchmark reads one method's peak memory alone); its output
    is captured as text. ``options`` go to [`subprocess.run`][subprocess.run]."""
    argv = [sys.executable, "-m", module, *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, **options)
