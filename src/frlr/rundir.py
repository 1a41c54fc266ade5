"""The files of a run directory, read back with their shape checked, and what makes two runs'
numbers differ.

``train --resume``, ``compare``, ``sweep`` and ``report`` read ``result.json``, ``config.json``,
``metrics.jsonl`` and ``checkpoint.pt`` written by earlier processes, maybe by an older frlr,
maybe damaged since (cut short, overwritten, edited by hand). A file read here either has the
keys and types the toolkit relies on, or raises :class:`RunFileError` (a
:class:`~frlr.data.DataError`, so the command line prints one line and exits 1) naming the
file, what is wrong and what to do. Keys this version does not know are kept: newer runs add
keys (``split``, ``val_metrics``, ``tuned``) that older readers must pass through.

Plain typed checks, no schema library: the schemas are a few flat objects, and the messages
say what to do with a run directory, which a generic validator's would not.

Numerics: :func:`numerics` is what changes a run's numbers without being part of its config
(CPU threads, device, default dtype, torch and frlr versions); the training loop records it for
each segment of a resumed run (:data:`NUMERICS_FIELDS`).
"""

from __future__ import annotations

import errno
import json
import os
import typing
from pathlib import Path
from typing import Any

import torch

from frlr import __version__
from frlr.config import FIELD_TYPES, ConfigError, seed_problem
from frlr.data.errors import DataError

__all__ = [
    "NUMERICS_FIELDS",
    "RunFileError",
    "check_checkpoint",
    "check_out_dir",
    "check_result",
    "numerics",
    "read_config",
    "read_metrics",
    "read_result",
]

NUMERICS_FIELDS = ("threads", "device", "dtype", "torch", "frlr")
"""What changes a run's numbers besides its config: recorded per segment of a resumed run."""


class RunFileError(DataError):
    """A file of a run directory that is missing a key, has one of the wrong type, or is not
    JSON: names the file, what is wrong and what to do (rerun the run, or delete it)."""


def _rerun(path: Path) -> str:
    run = path.parent
    return (
        f"delete it and rerun the command to finish the run again (from {run / 'checkpoint.pt'} "
        f"when there is one), or delete {run} to train it afresh"
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _load_json(path: Path, remedy: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RunFileError(path, f"is not text ({error.reason})", remedy) from None
    if not text.strip():
        raise RunFileError(path, "is empty (cut short?)", remedy)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        raise RunFileError(path, f"{problem}: cut short or overwritten", remedy) from None


def _object(path: Path, value: Any, remedy: str, what: str = "the file") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RunFileError(path, f"{what} is {_kind(value)}, not a JSON object", remedy)
    return value


def _field_matches(name: str, value: object) -> bool:
    """``value`` as JSON holds it fits TrainConfig field ``name``'s type."""
    hint = FIELD_TYPES[name]
    args = typing.get_args(hint)
    if value is None:
        return type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if typing.get_origin(hint) is tuple or typing.get_origin(base) is tuple:
        return isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return _is_number(value)
    if base is str:
        return isinstance(value, str)
    return True


def _check_config(path: Path, config: Any, remedy: str, what: str) -> dict[str, Any]:
    """A run's config as saved: an object with loss, seed and dataset, each known field of its
    type (fields missing are an older frlr's: their defaults; unknown ones a newer frlr's)."""
    config = _object(path, config, remedy, what)
    for name in ("dataset", "loss", "seed"):
        if name not in config:
            raise RunFileError(path, f"{what} has no {name!r}", remedy)
    for name, value in config.items():
        if name in FIELD_TYPES and not _field_matches(name, value):
            raise RunFileError(
                path, f"{what}'s {name!r} is {_kind(value)} ({value!r}), of the wrong type", remedy
            )
    problem = seed_problem(config["seed"], f"{what}'s 'seed'")
    if problem is not None:
        raise RunFileError(path, problem, remedy)
    return config


_RESULT_TYPES: dict[str, tuple[str, Any]] = {
    "status": ("a string", lambda v: v == "finished"),
    "seed": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "loss": ("a string", lambda v: isinstance(v, str)),
    "epochs": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "wall_time_s": ("a number", _is_number),
    "train_loss": ("a number", lambda v: v is None or _is_number(v)),
    "train_acc": ("a number", lambda v: v is None or _is_number(v)),
    "diverged": ("true/false", lambda v: isinstance(v, bool)),
    "segments": ("a list", lambda v: isinstance(v, list)),
}
"""Optional keys of ``result.json`` the toolkit reads, and the test each passes when present."""


def check_result(path: str | Path, result: Any) -> dict[str, Any]:
    """``result.json``'s content checked: an object with ``config`` (a run config) and
    ``metrics`` (metric -> number or null), every other key it reads of its type, and the
    loss and seed the same as its config's. Raises :class:`RunFileError` naming ``path``."""
    path = Path(path)
    remedy = _rerun(path)
    result = _object(path, result, remedy)
    for key in ("config", "metrics"):
        if key not in result:
            raise RunFileError(path, f"has no {key!r}: not a finished run's result", remedy)
    config = _check_config(path, result["config"], remedy, "'config'")
    metrics = _object(path, result["metrics"], remedy, "'metrics'")
    for name, value in metrics.items():
        if value is not None and not _is_number(value):
            raise RunFileError(
                path, f"metric {name!r} is {_kind(value)} ({value!r}), not a number", remedy
            )
    for key, (kind, test) in _RESULT_TYPES.items():
        if key in result and not test(result[key]):
            wanted = "'finished'" if key == "status" else kind
            raise RunFileError(path, f"{key!r} is {result[key]!r}, where {wanted} belongs", remedy)
    for key in ("loss", "seed"):
        if key in result and result[key] != config[key]:
            raise RunFileError(
                path,
                f"{key!r} is {result[key]!r} but its config's is {config[key]!r}: not one run's",
                remedy,
            )
    return result


def read_result(path: str | Path) -> dict[str, Any]:
    """``result.json``, checked by :func:`check_result`."""
    path = Path(path)
    return check_result(path, _load_json(path, _rerun(path)))


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json``: a run config (:func:`check_result`'s ``config`` rules)."""
    path = Path(path)
    remedy = (
        f"it is written when the run starts: delete {path.parent} and rerun the command to "
        "train the run afresh"
    )
    return _check_config(path, _load_json(path, remedy), remedy, "the file")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """``metrics.jsonl``: one object per epoch, each with an integer ``epoch``, in order. The
    file is written whole (atomically), so any bad line is damage, not a run killed mid-write."""
    path = Path(path)
    remedy = (
        f"the run's per-epoch curves are lost: delete {path.parent} and rerun the command to "
        "record them again"
    )
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise RunFileError(path, f"is not text ({error.reason})", remedy) from None
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunFileError(path, f"line {number} is not JSON ({error.msg})", remedy) from None
        if not isinstance(record, dict):
            raise RunFileError(path, f"line {number} is {_kind(record)}, not an object", remedy)
        epoch = record.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch != len(records) + 1:
            raise RunFileError(
                path, f"line {number} has epoch {epoch!r}, where {len(records) + 1} belongs", remedy
            )
        records.append(record)
    return records


_CHECKPOINT_TYPES: dict[str, tuple[str, Any]] = {
    "epoch": ("a whole number of epochs", lambda v: isinstance(v, int) and v >= 0),
    "config": ("an object", lambda v: isinstance(v, dict)),
    "history": ("a list of epoch records", lambda v: isinstance(v, list)),
    "world_size": ("a process count", lambda v: isinstance(v, int) and v >= 1),
    "elapsed_s": ("a number", _is_number),
    "rng": ("a list of per-rank states", lambda v: isinstance(v, list) and len(v) >= 1),
    "segments": ("a list", lambda v: isinstance(v, list)),
}


def check_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """A loaded training checkpoint's plain-data entries of their types, its history one record
    per epoch trained; raises :class:`RunFileError` naming ``path``."""
    path = Path(path)
    remedy = "it is damaged or not this frlr's: delete it to start the run afresh"
    for key, (kind, test) in _CHECKPOINT_TYPES.items():
        if key in state and (isinstance(state[key], bool) or not test(state[key])):
            raise RunFileError(path, f"{key!r} is {_kind(state[key])}, not {kind}", remedy)
    history = state.get("history", [])
    if len(history) != state.get("epoch", len(history)) or not all(
        isinstance(r, dict) for r in history
    ):
        raise RunFileError(
            path, f"holds {len(history)} epoch records for epoch {state.get('epoch')}", remedy
        )
    if "config" in state:
        _check_config(path, state["config"], remedy, "'config'")


def numerics(device: torch.device) -> dict[str, Any]:
    """What changes a run's numbers besides its config, now: torch's CPU threads, the device
    (with the GPU's name), the default dtype and the torch and frlr versions."""
    where = device.type
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    return {
        "threads": torch.get_num_threads(),
        "device": where,
        "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "torch": str(torch.__version__),  # a TorchVersion would not load with weights_only
        "frlr": __version__,
    }


def check_out_dir(path: str | Path, flag: str = "--out") -> None:
    """``path`` can hold run files: a directory, or one that can be made, in a place this
    process can write (made nowhere yet). Raises :class:`~frlr.config.ConfigError` saying what
    is wrong with it, where writing would fail later with a bare OSError."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        where = "" if existing == path else f": {existing} is a file"
        raise ConfigError(
            f"{flag} {path} is not a directory{where}; choose another {flag}, or move the file"
        )
    probe = existing / f".frlr-write-test-{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(
            f"{flag} {path} cannot be written ({reason} in {existing}); choose a directory you "
            "can write to"
        ) from None
