"""``frlr sweep``: one loss, one hyper-parameter over a list of values (the paper's Fig. 6 and 7).

    frlr sweep --param m --values 5,10,25,50,75,100 --dataset cifar100 --seeds 3   # HS-LR, Fig. 6
    frlr sweep --param r --values 0,0.5,1,2,3,5 --dataset cifar100                 # SS-LR, Fig. 7
    frlr sweep --param beta --values 1,5,10,20 --loss hs-lr

Every (value, seed) run lives in ``OUT/<loss>-<param><value>-seed<k>/`` and is trained,
resumed, reused or refused exactly as a run of ``frlr compare`` (the same
:func:`frlr.experiments.compare.run_or_reuse`), so rerunning a sweep continues it. The loss
defaults to HS-LR for m and SS-LR for r and beta; a parameter the loss does not take is an error
that names the ones it does.

The table (``OUT/sweep.{json,csv,md}``) gives per value the mean and sample standard deviation
over seeds of the task's metrics and the paired Wilcoxon p-value of the primary metric against
the baseline value: the loss's own default (m = 25, r = 2, beta = 10) when it is swept, else the
first value. ``OUT/sweep_<param>.png`` plots the primary metric against the value with error
bars (one standard deviation) and every seed as a dot.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from frlr.catalogue import (
    HYPERPARAMETERS,
    LOSS_HYPERPARAMETERS,
    LOSS_NAMES,
    canonical_loss_name,
    default_hyperparameter,
    hyperparameter_problem,
)
from frlr.config import ConfigError, TrainConfig, validate
from frlr.experiments.compare import experiment_dir, parse_seeds, run_each
from frlr.experiments.figures import sweep_figure
from frlr.experiments.results import metric_label, percent, run_row, summarize
from frlr.io import is_main_process, write_json_atomic, write_text_atomic
from frlr.tasks import Task, get_task
from frlr.train import train

__all__ = [
    "DEFAULT_LOSS",
    "SWEEPABLE",
    "default_value",
    "parse_param",
    "parse_values",
    "run_dir_name",
    "sweep",
    "value_text",
]

SWEEPABLE: tuple[str, ...] = tuple(sorted({p for ps in LOSS_HYPERPARAMETERS.values() for p in ps}))
"""Every loss hyper-parameter a sweep can vary."""

DEFAULT_LOSS = {
    name: spec.figure_loss for name, spec in HYPERPARAMETERS.items() if spec.figure_loss
}
"""The loss swept when ``--loss`` is not given: the one the parameter belongs to in the paper."""


def value_text(value: float) -> str:
    """A value as it appears in run directories and tables: 25.0 -> "25", 0.5 -> "0.5"."""
    return f"{value:g}"


def run_dir_name(loss: str, param: str, value: float, seed: int) -> str:
    return f"{loss}-{param}{value_text(value)}-seed{seed}"


def default_value(loss: str, param: str) -> float | None:
    """The loss's own default for ``param`` (hs-lr m: 25), from the loss catalogue."""
    return default_hyperparameter(loss, param)


def parse_param(param: str, loss: str | None = None) -> tuple[str, str]:
    """(param, loss), checked: the parameter must be one the loss takes."""
    name = param.strip().lower() if isinstance(param, str) else param
    if name not in SWEEPABLE:
        raise ConfigError(
            f"unknown --param {param!r}; a sweep varies one of: {', '.join(SWEEPABLE)}"
        )
    if loss is not None and canonical_loss_name(loss.strip()) is None:
        known = ", ".join(LOSS_NAMES)
        raise ConfigError(f"unknown --loss {loss.strip().lower()!r}; known: {known}")
    loss = DEFAULT_LOSS[name] if loss is None else canonical_loss_name(loss.strip()) or loss
    takes = LOSS_HYPERPARAMETERS[loss]
    if name not in takes:
        accepted = ", ".join(takes) if takes else "none"
        raise ConfigError(
            f"--param {name} does not apply to loss {loss!r} (its hyper-parameters: {accepted})"
        )
    return name, loss


def parse_values(values: str | Sequence[float], param: str, loss: str) -> tuple[float, ...]:
    """``"5,10,25"`` -> (5.0, 10.0, 25.0), each checked by the loss's own validation."""
    if isinstance(values, str):
        try:
            parsed = [float(part) for part in values.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--values must be numbers like 5,10,25, got {values!r}") from None
    else:
        parsed = [float(v) for v in values]
    if not parsed:
        raise ConfigError(f"--values names no value (got {values!r})")
    texts = [value_text(v) for v in parsed]
    if len(set(texts)) != len(texts):
        raise ConfigError(f"--values names a value twice: {','.join(texts)}")
    for value in parsed:
        if not math.isfinite(value):
            raise ConfigError(f"--values: {param} must be finite, got {value}")
        problem = hyperparameter_problem(param, value)
        if problem is not None:
            raise ConfigError(f"--values: {param} = {value_text(value)} for {loss}: {problem}")
    return tuple(parsed)


def _run_config(
    base: TrainConfig, loss: str, param: str, value: float, seed: int, out: Path
) -> TrainConfig:
    name = run_dir_name(loss, param, value, seed)
    return validate(replace(base, loss=loss, seed=seed, out=str(out / name), **{param: value}))


def sweep(
    base: TrainConfig,
    param: str,
    values: str | Sequence[float],
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    loss: str | None = None,
    baseline: float | None = None,
    preset: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    train_fn: Callable[..., dict[str, Any]] = train,
    command: str | None = None,
) -> dict[str, Any]:
    """Train ``base`` with ``loss`` at every value of ``param`` and every seed, and tabulate.

    base: the recipe (loss, seed, out and ``param`` are set per run; the loss's other
        hyper-parameters come from it, and one it does not take is an error).
    loss: default :data:`DEFAULT_LOSS` of ``param``. baseline: the value the others are tested
        against (default: the loss's default value when swept, else the first value).
    out: default ``runs/<dataset>-<arch>[-<preset>]-sweep-<param>``.
    progress: a bar over the runs and per-run bars (default: when stderr is a terminal).
    train_fn, command: as for :func:`frlr.experiments.compare.compare`; every run's config is
    checked before the first run starts, and the report is the caller's next step.
    Returns the content of ``sweep.json``.
    """
    param, loss = parse_param(param, loss)
    values = parse_values(values, param, loss)
    seeds = parse_seeds(seeds)
    baseline = _check_request(base, param, loss, values, baseline)
    task = get_task(validate(replace(base, loss=loss)).task)
    out = Path(out) if out is not None else experiment_dir(base, preset, "sweep", param)
    say = log if (log is not None and is_main_process()) else (lambda _: None)
    configs = [
        (value, seed, _run_config(base, loss, param, value, seed, out))
        for seed in seeds
        for value in values
    ]
    runs = _run_all(configs, loss, param, task, train_fn, progress, say)
    metric_names = [m for m in task.metric_names if any(r[m] is not None for r in runs)]
    keys = [value_text(v) for v in values]
    summary = summarize(
        runs,
        keys,
        seeds,
        value_text(baseline),
        task.primary_metric,
        metric_names,
        group_of=lambda row: value_text(row["value"]),
        label=lambda key: f"{param} = {key}",
    )
    for key, value in zip(keys, values, strict=True):
        summary["losses"][key] = {"value": value, **summary["losses"][key]}
    config = {k: v for k, v in asdict(base).items() if k not in ("loss", "seed", "out", param)}
    results = {
        "kind": "sweep",
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "preset": preset,
        "loss": loss,
        "param": param,
        "values": list(values),
        "seeds": list(seeds),
        "primary_metric": task.primary_metric,
        "baseline": summary["baseline"],
        "summary": summary["losses"],
        "footnote": summary["footnote"],
        "runs": runs,
        "config": config,
        "command": command,
    }
    if is_main_process():
        _write_tables(out, results, metric_names, say)
    return results


def _check_request(
    base: TrainConfig, param: str, loss: str, values: Sequence[float], baseline: float | None
) -> float:
    """The recipe gives no value of ``param`` and no hyper-parameter the loss does not take;
    returns the baseline value, one of ``values``."""
    if getattr(base, param) is not None:
        raise ConfigError(
            f"--{param} {getattr(base, param):g} conflicts with the sweep over {param}: the "
            "values come from --values; drop it"
        )
    takes = LOSS_HYPERPARAMETERS[loss]
    for name in ("beta", "m", "r"):
        if getattr(base, name) is not None and name not in takes:
            raise ConfigError(
                f"--{name} does not apply to loss {loss!r} (its hyper-parameters: "
                f"{', '.join(takes)})"
            )
    if baseline is None:
        default = default_value(loss, param)
        return default if default in values else values[0]
    if value_text(baseline) not in {value_text(v) for v in values}:
        raise ConfigError(
            f"--baseline {value_text(baseline)} is not one of --values "
            f"{','.join(map(value_text, values))}"
        )
    return baseline


def _run_all(
    configs: list[tuple[float, int, TrainConfig]],
    loss: str,
    param: str,
    task: Task,
    train_fn: Callable[..., dict[str, Any]],
    progress: bool | None,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Train, resume or reuse every (value, seed) run in turn, with a bar over the runs: their
    rows, each with the value."""
    show = is_main_process() and (progress if progress is not None else sys.stderr.isatty())
    bar = tqdm(total=len(configs), desc=f"sweep {loss} {param}", unit="run", dynamic_ncols=True)
    bar = bar if show else None
    write = bar.write if bar is not None else say
    rows: dict[int, dict[str, Any]] = {}

    def done(index: int, status: str, result: dict[str, Any]) -> None:
        value, seed, config = configs[index]
        row = rows[index] = {
            "param": param,
            "value": value,
            **run_row(loss, seed, Path(config.out), status, result, task.metric_names),
        }
        write(
            f"[{index + 1}/{len(configs)}] {loss} {param}={value_text(value):<5} seed {seed}: "
            f"{metric_label(task.primary_metric)} {percent(row.get(task.primary_metric))}  "
            f"{row['wall_time_s']:.1f}s" + ("  (finished before)" if status == "reused" else "")
        )
        if bar is not None:
            bar.update()

    try:
        run_each([config for _, _, config in configs], train_fn, progress, done, write)
    finally:
        if bar is not None:
            bar.close()
    return [rows[index] for index in range(len(configs))]


def _write_tables(
    out: Path, results: dict[str, Any], metric_names: list[str], say: Callable[[str], None]
) -> None:
    """``sweep.{json,csv,md}`` and ``sweep_<param>.png`` in ``out``; the table printed. A
    figure that fails is a warning: the tables are written first and kept."""
    write_json_atomic(out / "sweep.json", results)
    write_text_atomic(out / "sweep.csv", _csv(results["runs"], metric_names))
    markdown = _markdown(results, metric_names)
    write_text_atomic(out / "sweep.md", markdown)
    figure = out / f"sweep_{results['param']}.png"
    try:
        sweep_figure(results, figure)
    except Exception as error:  # the table is written; a figure must not lose it
        warnings.warn(f"sweep figure {figure} failed: {error!r}", stacklevel=3)
    say("")
    say(markdown)
    say(f"results: {out / 'sweep.md'} (also sweep.json, sweep.csv, {figure.name})")


def _csv(runs: list[dict[str, Any]], metric_names: Sequence[str]) -> str:
    columns = ["loss", "param", "value", "seed", *metric_names, "train_loss", "epochs"]
    columns += ["wall_time_s", "status", "run_dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in runs:
        writer.writerow({k: row.get(k) for k in columns})
    return buffer.getvalue()


def _mean_cell(entry: dict[str, Any], name: str) -> str:
    if f"{name}_mean" not in entry:
        return "n/a"
    return f"{100 * entry[f'{name}_mean']:.2f} ± {100 * entry[f'{name}_std']:.2f}"


def _p_cell(entry: dict[str, Any], is_baseline: bool) -> str:
    if is_baseline:
        return "—"
    if entry.get("p_value") is None:
        return f"n/a ({entry.get('p_note', '')})"
    note = f" ({entry['p_note']})" if entry.get("p_note") else ""
    return f"{entry['p_value']:.3g}{note}"


def _markdown(results: dict[str, Any], metric_names: Sequence[str]) -> str:
    param, baseline, config = results["param"], results["baseline"], results["config"]
    loss = results["loss"].upper()
    recipe = (
        f"{config['optimizer']} lr {config['lr']:g}, {config['schedule']} schedule, "
        f"batch {config['batch_size']}, {config['epochs']} epochs"
        + (", bf16" if config["bf16"] else "")
    )
    others = ", ".join(
        f"{name} {config[name]:g}"
        for name in LOSS_HYPERPARAMETERS[results["loss"]]
        if name != param and config.get(name) is not None
    )
    lines = [
        f"## {results['dataset']}, {results['arch']}, {loss}: "
        f"{metric_label(results['primary_metric'])} against {param} over "
        f"{len(results['seeds'])} seeds",
        "",
        (f"Preset `{results['preset']}`: " if results["preset"] else "Recipe: ")
        + f"{recipe}; {loss} {others + ', ' if others else ''}{param} in "
        f"{', '.join(map(value_text, results['values']))}; "
        f"seeds {', '.join(map(str, results['seeds']))}.",
        "",
    ]
    header = [param, *[f"{metric_label(m)} (%)" for m in metric_names]]
    header += [f"p vs {param} = {baseline}", "runs", "wall time / run (s)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, entry in results["summary"].items():
        cells = [key, *[_mean_cell(entry, m) for m in metric_names]]
        cells += [_p_cell(entry, key == baseline), str(entry["n"])]
        cells.append(f"{entry['wall_time_s_mean']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"mean ± sample standard deviation over seeds. {results['footnote']}",
        "",
        "### Runs",
        "",
        f"| {param} | seed | "
        + " | ".join(f"{metric_label(m)} (%)" for m in metric_names)
        + " | wall time (s) |",
        "|" + "---|" * (len(metric_names) + 3),
    ]
    for row in results["runs"]:
        cells = " | ".join("n/a" if row[m] is None else f"{100 * row[m]:.2f}" for m in metric_names)
        lines.append(
            f"| {value_text(row['value'])} | {row['seed']} | {cells} | {row['wall_time_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"
