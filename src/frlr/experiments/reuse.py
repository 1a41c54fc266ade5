"""Finished runs of earlier experiments standing in for a new experiment's runs.

A budget curve's shortest point is often a run that a ``tune`` already trained: the same loss,
setting, seed and recipe. Training it again costs CPU hours and gives the same numbers.
``--reuse-runs DIR`` lets ``compare``, ``sweep`` and ``tune`` copy such a run in instead. Only a
finished run (a readable ``result.json``) whose config equals the requested one on every
result-affecting field (:func:`frlr.config.config_differences`) qualifies, so a copy is never a
different experiment; the copy's ``result.json`` says where it came from (``copied_from``).
Damaged or unfinished runs under DIR are passed over: they cannot stand in for anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from frlr.config import TrainConfig, config_differences
from frlr.data.errors import DataError
from frlr.io import write_json_atomic, write_text_atomic
from frlr.rundir import read_result

__all__ = ["copy_run", "find_finished"]


def find_finished(config: TrainConfig, dirs: Sequence[str | Path]) -> Path | None:
    """The first run directory (in sorted order) under ``dirs`` that holds a finished run of
    ``config``, other than ``config.out`` itself; None when there is none."""
    wanted = asdict(config)
    own = Path(config.out).resolve()
    for folder in dirs:
        for path in sorted(Path(folder).rglob("result.json")):
            if path.parent.resolve() == own:
                continue
            stat = path.stat()
            found = _finished_config(path.resolve(), (stat.st_ino, stat.st_mtime_ns, stat.st_size))
            if found is not None and not config_differences(found, wanted):
                return path.parent
    return None


@lru_cache(maxsize=4096)
def _finished_config(path: Path, version: tuple[int, int, int]) -> dict[str, Any] | None:
    """The config of the finished run ``path`` (None if damaged), read once per version of the
    file: an experiment looks up each of its runs in the same folders, and re-reading every
    ``result.json`` there for each made the lookups O(runs x candidates) reads."""
    del version  # (inode, mtime, size): part of the cache key only, so a rewritten file is reread
    try:
        return read_result(path)["config"]
    except DataError:
        return None


def copy_run(source: Path, config: TrainConfig) -> dict[str, Any]:
    """Copy the finished run in ``source`` to ``config.out`` (its config, metrics and result,
    with ``out`` rewritten; no checkpoint) and return the copy's result.

    ``result.json`` is written last, so an interrupted copy is an unfinished run, redone or
    copied again next time."""
    dest = Path(config.out)
    result = read_result(source / "result.json")
    result["config"] = {**result["config"], "out": config.out}
    result["copied_from"] = str(source)
    write_json_atomic(dest / "config.json", result["config"])
    metrics = source / "metrics.jsonl"
    if metrics.exists():
        write_text_atomic(dest / "metrics.jsonl", metrics.read_text(encoding="utf-8"))
    write_json_atomic(dest / "result.json", result)
    return result
