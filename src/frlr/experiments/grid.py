"""Runs over a grid of training settings, for several losses: the engine of ``frlr sweep`` over
any field and of ``frlr tune``.

A run is named by what it trains, not by who asked for it: the loss, then every setting that
the loss spec and the grid point fix, sorted by field name, then the seed
(``lr-head_bias_initprior-lr0.01-seed0``). So ``lr:head-bias-init=prior`` tuned over ``lr`` and
``lr`` tuned over ``lr`` x ``head-bias-init`` share their common runs instead of training them
twice, and a rerun finds every finished run where it left it.

A field a loss ignores is never varied for it: the head's bias initialisation for softmax
losses (a uniform bias leaves softmax unchanged, so both values would train the same network),
and a loss hyper-parameter (beta, m, r) for the losses that lack it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from frlr.catalogue import LOSS_HYPERPARAMETERS, hyperparameter_problem
from frlr.config import OPTIMIZERS, SCHEDULES, ConfigError, TrainConfig, validate
from frlr.experiments.compare import DEFAULT_RUN, RunOptions, finished_result, run_each
from frlr.experiments.results import finished_note, run_row, trained_now
from frlr.io import lock_held_elsewhere
from frlr.models import HEAD_BIAS_INITS
from frlr.rundir import RunFileError, read_metrics

__all__ = [
    "CHOICE_FIELDS",
    "LOG_FIELDS",
    "NUMBER_FIELDS",
    "SOFTMAX_LOSSES",
    "SWEEP_FIELDS",
    "GridRun",
    "applies",
    "field_name",
    "grid_runs",
    "parse_field_values",
    "run_grid",
    "run_name",
    "setting_text",
]

NUMBER_FIELDS: tuple[str, ...] = (
    "lr",
    "weight_decay",
    "momentum",
    "label_smoothing",
    "mixup",
    "cutmix",
    "warmup_epochs",
    "gamma",
    "beta",
    "m",
    "r",
)
INTEGER_FIELDS: tuple[str, ...] = ("epochs", "batch_size", "crop_padding", "num_classes")
CHOICE_FIELDS: dict[str, tuple[str, ...]] = {
    "head_bias_init": tuple(HEAD_BIAS_INITS),
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
}
SWEEP_FIELDS: tuple[str, ...] = (*NUMBER_FIELDS, *INTEGER_FIELDS, *CHOICE_FIELDS)
"""Every training field a sweep or a tuning grid can vary."""
LOG_FIELDS: tuple[str, ...] = ("lr", "weight_decay")
"""Fields drawn on a log axis (their grids are geometric)."""
SOFTMAX_LOSSES: tuple[str, ...] = ("sr", "hs-sr")
"""Losses a uniform head bias cannot change."""

Setting = tuple[str, Any]


def _flag(name: str) -> str:
    return name.replace("_", "-")


def field_name(text: str) -> str:
    """``head-bias-init`` -> ``head_bias_init``; a field no sweep can vary is a ConfigError that
    lists those it can."""
    name = str(text).strip().lower().replace("-", "_")
    if name not in SWEEP_FIELDS:
        fields = ", ".join(_flag(f) for f in SWEEP_FIELDS)
        raise ConfigError(f"--param {text!r} cannot be swept; sweepable fields: {fields}")
    return name


def setting_text(value: Any) -> str:
    """A value as run directories and tables spell it: 0.010 -> "0.01", "prior" -> "prior"."""
    return value if isinstance(value, str) else f"{value:g}"


def parse_field_values(name: str, values: str | Sequence[Any]) -> tuple[Any, ...]:
    """``"0.1,0.03"`` -> (0.1, 0.03) for a number field, ints for an integer field, names for
    a choice; each checked against the field's range, none named twice."""
    items = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    items = [v for v in items if v != ""]
    if not items:
        raise ConfigError(f"--values names no value for {_flag(name)} (got {values!r})")
    parsed = [_parse_value(name, item) for item in items]
    texts = [setting_text(v) for v in parsed]
    if len(set(texts)) != len(texts):
        raise ConfigError(f"--values names a value of {_flag(name)} twice: {','.join(texts)}")
    return tuple(parsed)


def _parse_value(name: str, item: Any) -> Any:
    if name in CHOICE_FIELDS:
        choice = str(item).strip().lower()
        if choice not in CHOICE_FIELDS[name]:
            known = ", ".join(CHOICE_FIELDS[name])
            raise ConfigError(f"{_flag(name)} {item!r} is not one of: {known}")
        return choice
    kind = int if name in INTEGER_FIELDS else float
    try:
        number = float(item)
    except (TypeError, ValueError):
        raise ConfigError(f"{_flag(name)} takes numbers, got {item!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{_flag(name)} must be finite, got {item!r}")
    if kind is int and not number.is_integer():
        raise ConfigError(f"{_flag(name)} takes integers, got {item!r}")
    if name in ("beta", "m", "r"):
        problem = hyperparameter_problem(name, number)
        if problem is not None:
            raise ConfigError(f"{_flag(name)} = {item}: {problem}")
    return kind(number)


def applies(name: str, loss: str) -> bool:
    """Whether varying field ``name`` can change what ``loss`` trains."""
    if name in ("beta", "m", "r"):
        return name in LOSS_HYPERPARAMETERS[loss]
    return not (name == "head_bias_init" and loss in SOFTMAX_LOSSES)


def run_name(loss: str, settings: Iterable[Setting], seed: int) -> str:
    """The run directory of ``loss`` with ``settings`` and ``seed`` (see the module docstring)."""
    parts = [f"{name}{setting_text(value)}" for name, value in sorted(settings)]
    return "-".join([loss, *parts, f"seed{seed}"])


@dataclass(frozen=True)
class GridRun:
    """One run of a grid: its curve (the loss spec's key), grid point, seed and config."""

    curve: str
    point: tuple[Setting, ...]
    seed: int
    config: TrainConfig


def run_config(
    base: TrainConfig,
    loss: str,
    fixed: Mapping[str, Any],
    point: Mapping[str, Any],
    seed: int,
    out: Path,
) -> TrainConfig:
    """``base`` for one run: its beta, m, r reach only a loss that takes them (as in ``frlr
    compare``); the spec's own settings ``fixed``, then the grid ``point``, override it."""
    keep = LOSS_HYPERPARAMETERS[loss]
    hyper = {name: getattr(base, name) if name in keep else None for name in ("beta", "m", "r")}
    settings = {**fixed, **point}
    name = run_name(loss, settings.items(), seed)
    try:
        return validate(
            replace(base, loss=loss, seed=seed, out=str(out / name), **{**hyper, **settings})
        )
    except ConfigError as error:
        shown = ", ".join(f"{_flag(k)} {setting_text(v)}" for k, v in sorted(settings.items()))
        raise ConfigError(f"{loss} with {shown or 'the recipe'}: {error}") from None


def grid_runs(
    base: TrainConfig,
    curves: Sequence[tuple[str, str, Mapping[str, Any]]],
    points: Callable[[str], Sequence[Mapping[str, Any]]],
    seeds: Sequence[int],
    out: Path,
) -> list[GridRun]:
    """Every (curve, point, seed) run, seed-major so that every point of a seed finishes before
    the next seed starts. ``curves`` are (key, loss, fixed settings); ``points(loss)`` the grid
    points that loss is trained at. Every config is validated before anything runs."""
    return [
        GridRun(
            key, tuple(sorted(point.items())), seed, run_config(base, loss, fixed, point, seed, out)
        )
        for seed in seeds
        for key, loss, fixed in curves
        for point in points(loss)
    ]


def run_grid(
    runs: Sequence[GridRun],
    metric_names: Sequence[str],
    run: RunOptions = DEFAULT_RUN,
    *,
    describe: Callable[[GridRun, dict[str, Any]], str] | None = None,
    after_trained: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Train, resume or reuse every run (:func:`frlr.experiments.compare.run_each`: runs another
    process holds are waited for last) as ``run`` says, saying after each one what it scored
    and how long the rest should take. ``after_trained`` is called after each run trained here
    but the last (a grid that spans sessions keeps its tables current). Returns one row per
    run: its test metrics, its validation metrics as ``val_<metric>`` (None without
    ``--val-fraction``), the curve and the point."""
    rows: dict[int, dict[str, Any]] = {}
    seconds_per_epoch: list[float] = []

    def done(index: int, status: str, result: dict[str, Any]) -> None:
        grid_run = runs[index]
        row = rows[index] = _grid_row(grid_run, status, result, metric_names)
        if trained_now(status) and result.get("epochs"):
            seconds_per_epoch.append(_epoch_seconds(Path(grid_run.config.out), row, result))
        waiting = [r for i, r in enumerate(runs) if i not in rows]
        left = sum(r.config.epochs for r in waiting)
        eta = ""
        if seconds_per_epoch and left:
            per_epoch = statistics.median(seconds_per_epoch)
            # processes sharing OUT share what is left: each other one holds a run's lock now
            processes = 1 + sum(lock_held_elsewhere(r.config.out) for r in waiting)
            eta = f"  about {left * per_epoch / 60 / processes:.0f} min left"
            if processes > 1:
                eta += f" ({processes} processes)"
        text = describe(grid_run, row) if describe else _describe(grid_run, row, metric_names[0])
        note = finished_note(status, result)
        run.say(f"[{len(rows)}/{len(runs)}] {text}  {row['wall_time_s']:.0f}s{note}{eta}")
        if after_trained is not None and trained_now(status) and len(rows) < len(runs):
            after_trained()

    run_each([grid_run.config for grid_run in runs], run, done)
    return [rows[index] for index in range(len(runs))]


def _epoch_seconds(run_dir: Path, row: dict[str, Any], result: dict[str, Any]) -> float:
    """A typical epoch's seconds in this run: the mean of its recorded epoch times less those
    over 3x their median, so a pause (a suspended process, a machine shared for a while) does
    not inflate the time left while the evaluation epochs (every few, ~1.2x) still count; the
    mean over the whole run where the epochs carry no times."""
    try:
        times = [
            float(r["epoch_time_s"])
            for r in read_metrics(run_dir / "metrics.jsonl")
            if isinstance(r.get("epoch_time_s"), int | float)
        ]
    except (OSError, RunFileError):
        times = []
    if not times:
        return row["wall_time_s"] / float(result["epochs"])
    median = statistics.median(times)
    return statistics.fmean(t for t in times if t <= 3 * median)


def finished_grid_rows(
    runs: Sequence[GridRun], metric_names: Sequence[str]
) -> list[dict[str, Any]]:
    """The rows of the runs that have finished (status "finished"), training nothing: the
    tables of a grid still being trained, or interrupted, from what it has so far. A finished
    run with another result-affecting config is a :class:`ConfigError`, as when it is reused."""
    rows = []
    for grid_run in runs:
        result = finished_result(grid_run.config)
        if result is None:
            continue
        rows.append(_grid_row(grid_run, "finished", result, metric_names))
    return rows


def _grid_row(
    grid_run: GridRun, status: str, result: dict[str, Any], metric_names: Sequence[str]
) -> dict[str, Any]:
    config = grid_run.config
    row = run_row(config.loss, grid_run.seed, Path(config.out), status, result, metric_names)
    val = result.get("val_metrics") or {}
    row.update({f"val_{m}": val.get(m) for m in metric_names})
    row.update(curve=grid_run.curve, point=dict(grid_run.point))
    return row


def _describe(run: GridRun, row: dict[str, Any], metric: str) -> str:
    """``ss-lr head-bias-init=zero lr=0.001 seed 0: val mAP 4.12%  test mAP 3.98%``."""
    settings = " ".join(f"{_flag(k)}={setting_text(v)}" for k, v in run.point)
    scores = [
        f"{label} {metric} {100 * row[key]:.2f}%"
        for label, key in (("val", f"val_{metric}"), ("test", metric))
        if row.get(key) is not None
    ]
    return f"{run.curve} {settings} seed {run.seed}: {'  '.join(scores)}".replace("  :", ":")
