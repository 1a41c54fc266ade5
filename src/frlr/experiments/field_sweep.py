"""``frlr sweep --param FIELD --values ... --losses ...``: several losses over the values of any
training field (learning rate, weight decay, epochs, the head's bias initialisation, ...).

Why: a table at one learning rate can be measuring the learning rate rather than the loss. This
draws each loss's metric against the field, one line per loss, so the sensitivity is visible
before anything is concluded. With ``--val-fraction`` every run also reports the held-out part
of the training split, and the figure and the tests use that (the number a choice may be made
on); the test metrics are tabulated beside it.

Runs live in ``OUT/<loss>-<settings>-seed<k>/`` (:func:`frlr.experiments.grid.run_name`) and are
trained, resumed or reused as in ``frlr compare``; the table is ``OUT/sweep.{json,csv,md}``, the
figure ``OUT/sweep_<field>.png``. Within each loss, every value is tested against the baseline
value (paired Wilcoxon over seeds). Where SR is one of several losses, every other loss's gap to
it at each value, paired by seed, is tabulated and drawn too (``OUT/sweep_<field>_gap.png``):
the budget curve's question is whether that gap closes as the field grows. After every run
trained here the tables and figures are rebuilt from every finished run in OUT, under a lock, so a
sweep that spans sessions (or two processes sharing OUT) always shows what it has so far.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from frlr.config import ConfigError, TrainConfig, validate
from frlr.experiments.compare import DEFAULT_RUN, RunOptions, parse_seeds
from frlr.experiments.figures import METRIC_AXIS, value_curves_figure
from frlr.experiments.grid import (
    LOG_FIELDS,
    applies,
    field_name,
    finished_grid_rows,
    grid_runs,
    parse_field_values,
    run_grid,
    setting_text,
)
from frlr.experiments.results import mean_cell, metric_label, p_cell, percent, summarize
from frlr.experiments.stats import mean_std, paired_wilcoxon
from frlr.experiments.sweep import LossSpec, parse_loss_specs
from frlr.io import is_main_process, run_lock, write_json_atomic, write_text_atomic
from frlr.tasks import get_task

__all__ = ["curve_points", "metric_columns", "sweep_field"]


def metric_columns(task_metrics: Sequence[str], rows: list[dict[str, Any]]) -> list[str]:
    """The validation metrics (``val_<m>``) the runs have, then the test metrics they have."""
    val = [f"val_{m}" for m in task_metrics if any(r.get(f"val_{m}") is not None for r in rows)]
    return val + [m for m in task_metrics if any(r.get(m) is not None for r in rows)]


def column_label(name: str) -> str:
    """ "val_top1" -> "val top-1", "top1" -> "test top-1"."""
    if name.startswith("val_"):
        return f"val {metric_label(name.removeprefix('val_'))}"
    return f"test {metric_label(name)}"


def _check_specs(param: str, specs: Sequence[LossSpec]) -> None:
    for spec in specs:
        if param in dict(spec.options):
            raise ConfigError(
                f"--losses {spec.key!r} fixes {param.replace('_', '-')}, which the sweep varies; "
                "drop the option or the sweep"
            )
        if param in ("beta", "m", "r") and not applies(param, spec.name):
            raise ConfigError(
                f"--param {param} does not apply to loss {spec.key!r}; sweep it over losses "
                "that take it"
            )


def sweep_field(
    base: TrainConfig,
    param: str,
    values: str | Sequence[Any],
    losses: str | Sequence[str],
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    baseline: Any = None,
    run: RunOptions = DEFAULT_RUN,
    train_runs: bool = True,
) -> dict[str, Any]:
    """Train every loss spec at every value of ``param`` and every seed, and tabulate.

    base: the recipe; its own value of ``param`` is replaced per run. baseline: the value the
    others are tested against within each loss (default the recipe's value when listed, else
    the first). run: as for :func:`frlr.experiments.compare.compare`. ``train_runs=False``
    trains nothing and tabulates the runs that have finished (a budget curve that spans
    sessions, read mid-way; n says how many seeds each point has). Returns the content of
    ``sweep.json``.
    """
    param = field_name(param)
    values = parse_field_values(param, values)
    specs = parse_loss_specs(losses)
    _check_specs(param, specs)
    seeds = parse_seeds(seeds)
    texts = [setting_text(v) for v in values]
    if baseline is None:
        own = getattr(base, param)
        baseline = setting_text(own) if own is not None and setting_text(own) in texts else texts[0]
    else:
        baseline = setting_text(parse_field_values(param, [baseline])[0])
        if baseline not in texts:
            raise ConfigError(f"--baseline {baseline} is not one of --values {','.join(texts)}")
    task = get_task(validate(base).task)
    out = run.out_dir(base, out, "sweep", param)
    say = run.say
    curves = [(spec.key, spec.name, dict(spec.options)) for spec in specs]
    runs = grid_runs(base, curves, lambda _: [{param: v} for v in values], seeds, out)
    length = "" if param == "epochs" else f" of {base.epochs} epochs"
    say(f"{len(runs)} runs{length}, in {out}")

    def describe(run: Any, row: dict[str, Any]) -> str:
        scores = "  ".join(
            f"{column_label(m)} {percent(row.get(m))}"
            for m in (f"val_{task.primary_metric}", task.primary_metric)
            if row.get(m) is not None
        )
        return f"{run.curve} {param}={setting_text(run.point[0][1])} seed {run.seed}: {scores}"

    def tables(rows: list[dict[str, Any]], *, final: bool) -> dict[str, Any]:
        results = _results(base, task, param, values, specs, seeds, baseline, rows)
        results.update(preset=run.preset, command=run.command)
        if is_main_process():
            with run_lock(out, wait=True):  # another process may share OUT
                _write(out, results, specs, say if final else None)
        return results

    def so_far() -> None:
        tables(finished_grid_rows(runs, task.metric_names), final=False)

    if train_runs:
        rows = run_grid(runs, task.metric_names, run, describe=describe, after_trained=so_far)
    else:
        rows = finished_grid_rows(runs, task.metric_names)
        if not rows:
            raise ConfigError(
                f"--no-train: none of the {len(runs)} runs in {out} has finished; nothing to "
                "tabulate"
            )
        say(f"--no-train: tables from the {len(rows)} of {len(runs)} runs that have finished")
    return tables(rows, final=True)


def _results(
    base: TrainConfig,
    task: Any,
    param: str,
    values: Sequence[Any],
    specs: Sequence[LossSpec],
    seeds: Sequence[int],
    baseline: str,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The content of ``sweep.json``: per loss and value, the means and the test against the
    baseline value, on the validation metric when there is one."""
    columns = metric_columns(task.metric_names, rows)
    selection = columns[0]
    texts = [setting_text(v) for v in values]
    reference = next((spec.key for spec in specs if spec.name == "sr"), None)
    reference = reference if len(specs) > 1 else None
    summary = {}
    for spec in specs:
        mine = [r for r in rows if r["curve"] == spec.key]
        summary[spec.key] = summarize(
            mine,
            texts,
            seeds,
            baseline,
            selection,
            columns,
            group_of=lambda r: setting_text(r["point"][param]),
            label=lambda key: f"{param} = {key}",
        )
    return {
        "kind": "sweep-grid",
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "param": param,
        "values": list(values),
        "losses": [spec.key for spec in specs],
        "labels": {spec.key: spec.label for spec in specs},
        "seeds": list(seeds),
        "primary_metric": task.primary_metric,
        "selection_metric": selection,
        "metric_columns": columns,
        "baseline": baseline,
        "summary": {key: entry["losses"] for key, entry in summary.items()},
        "reference": reference,
        "gaps": reference_gaps(rows, specs, param, texts, reference, selection),
        "footnote": next(iter(summary.values()))["footnote"],
        "runs": rows,
        "config": {
            k: v for k, v in asdict(base).items() if k not in ("loss", "seed", "out", param)
        },
    }


def reference_gaps(
    rows: list[dict[str, Any]],
    specs: Sequence[LossSpec],
    param: str,
    texts: Sequence[str],
    reference: str | None,
    metric: str,
) -> dict[str, dict[str, dict[str, Any]]]:
    """loss -> value -> the paired gap of ``metric`` to the reference loss (mean, std, n, p over
    the seeds both finished); empty without a reference."""
    if reference is None:
        return {}
    score = {(r["curve"], setting_text(r["point"][param]), r["seed"]): r.get(metric) for r in rows}
    gaps: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in specs:
        if spec.key == reference:
            continue
        gaps[spec.key] = {}
        for text in texts:
            seeds = sorted(
                seed
                for (curve, value, seed), v in score.items()
                if curve == spec.key and value == text and v is not None
                if score.get((reference, text, seed)) is not None
            )
            mine = [score[spec.key, text, seed] for seed in seeds]
            theirs = [score[reference, text, seed] for seed in seeds]
            mean, std = mean_std([a - b for a, b in zip(mine, theirs, strict=True)])
            test = paired_wilcoxon(mine, theirs)
            gaps[spec.key][text] = {
                "mean": None if not seeds else mean,
                "std": None if not seeds else std,
                "n": len(seeds),
                "p": test.p_value,
            }
    return gaps


def curve_points(
    summary: dict[str, dict[str, Any]], values: Sequence[Any], metric: str
) -> list[tuple[Any, Any, Any, int]]:
    """(value, mean, std, n) of ``metric`` per value, for :func:`value_curves_figure`."""
    points = []
    for value in values:
        entry = summary.get(setting_text(value), {})
        points.append(
            (value, entry.get(f"{metric}_mean"), entry.get(f"{metric}_std"), entry.get("n", 0))
        )
    return points


def _write(
    out: Path,
    results: dict[str, Any],
    specs: Sequence[LossSpec],
    say: Callable[[str], None] | None,
) -> None:
    """``sweep.{json,csv,md}`` and the figure; a figure that fails is a warning, never a lost
    table. ``say`` (None mid-way) is given the table."""
    param, metric = results["param"], results["selection_metric"]
    write_json_atomic(out / "sweep.json", results)
    write_text_atomic(out / "sweep.csv", _csv(results))
    markdown = _markdown(results)
    write_text_atomic(out / "sweep.md", markdown)
    figure = out / f"sweep_{param}.png"
    curves = [
        {
            "label": spec.label,
            "loss": spec.name,
            "points": curve_points(results["summary"][spec.key], results["values"], metric),
        }
        for spec in specs
    ]
    base = metric.removeprefix("val_")
    axis = METRIC_AXIS.get(base, base).replace("test ", "")
    ylabel = f"{'validation' if metric.startswith('val_') else 'test'} {axis}"
    try:
        value_curves_figure(
            curves, figure, param=param, metric=metric, ylabel=ylabel, log_x=param in LOG_FIELDS
        )
    except Exception as error:  # the table is written; a figure must not lose it
        warnings.warn(f"sweep figure {figure} failed: {error!r}", stacklevel=3)
    if results["gaps"]:
        _gap_figure(out / f"sweep_{param}_gap.png", results, specs, ylabel)
    if say is not None:
        say("")
        say(markdown)
        say(f"results: {out / 'sweep.md'} (also sweep.json, sweep.csv, {figure.name})")


def _gap_figure(
    path: Path, results: dict[str, Any], specs: Sequence[LossSpec], ylabel: str
) -> None:
    """Each loss's gap to the reference against the field, zero being the reference."""
    param, gaps = results["param"], results["gaps"]
    texts = {setting_text(v): v for v in results["values"]}
    curves = [
        {
            "label": spec.label,
            "loss": spec.name,
            "points": [
                (texts[text], g["mean"], g["std"], g["n"]) for text, g in gaps[spec.key].items()
            ],
        }
        for spec in specs
        if spec.key in gaps
    ]
    reference = results["labels"][results["reference"]]
    try:
        value_curves_figure(
            curves,
            path,
            param=param,
            metric=results["selection_metric"],
            ylabel=f"gap in {ylabel.removesuffix(' (%)')} (pp)",  # the title names the reference
            log_x=param in LOG_FIELDS,
            title=f"gap to {reference}, paired by seed",
            zero_line=True,
        )
    except Exception as error:  # the table is written; a figure must not lose it
        warnings.warn(f"sweep gap figure {path} failed: {error!r}", stacklevel=3)


def _csv(results: dict[str, Any]) -> str:
    param, metrics = results["param"], results["metric_columns"]
    columns = ["loss", "curve", param, "seed", *metrics, "train_loss", "epochs", "wall_time_s"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*columns, "run_dir"], lineterminator="\n")
    writer.writeheader()
    for row in results["runs"]:
        cells = {k: row.get(k) for k in columns if k != param}
        writer.writerow(
            {**cells, param: setting_text(row["point"][param]), "run_dir": row["run_dir"]}
        )
    return buffer.getvalue()


def _markdown(results: dict[str, Any]) -> str:
    param, columns, baseline = results["param"], results["metric_columns"], results["baseline"]
    config = results["config"]
    flag = param.replace("_", "-")
    parts = {  # the swept field is not part of the recipe (its config leaves it out)
        "optimizer": lambda v: v,
        "schedule": lambda v: f"{v} schedule",
        "batch_size": lambda v: f"batch {v}",
        "epochs": lambda v: f"{v} epochs",
        "lr": lambda v: f"lr {v:g}",
    }
    recipe = ", ".join(text(config[k]) for k, text in parts.items() if k != param)
    recipe += (
        f"; validation: {100 * config['val_fraction']:g}% of the training split held out"
        if config.get("val_fraction")
        else ""
    )
    lines = [
        f"## {results['dataset']}, {results['arch']}: {flag} for "
        f"{', '.join(results['labels'].values())} over {len(results['seeds'])} seeds",
        "",
        (f"Preset `{results['preset']}`: " if results["preset"] else "Recipe: ") + recipe + ".",
        "",
    ]
    header = ["loss", flag, *[f"{column_label(m)} (%)" for m in columns]]
    header += [f"p vs {flag} = {baseline} ({column_label(results['selection_metric'])})", "runs"]
    header.append("wall time / run (s)")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in results["losses"]:
        for value_key, entry in results["summary"][key].items():
            cells = [results["labels"][key], value_key, *[mean_cell(entry, m) for m in columns]]
            cells += [p_cell(entry, value_key == baseline), str(entry["n"])]
            cells.append(f"{entry['wall_time_s_mean']:.1f}" if entry["n"] else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"mean ± sample standard deviation over seeds. {results['footnote']}", ""]
    return "\n".join(lines + _gap_lines(results)) + "\n"


def _gap_lines(results: dict[str, Any]) -> list[str]:
    """The paired gap of every loss to the reference (SR) at each value, with its p."""
    if not results.get("gaps"):
        return []
    flag, metric = results["param"].replace("_", "-"), results["selection_metric"]
    reference = results["labels"][results["reference"]]
    header = ["loss", *[f"{flag} = {text}" for text in next(iter(results["gaps"].values()))]]
    lines = [
        f"### {column_label(metric)} gap to {reference} per {flag} "
        "(pp, paired by seed: mean ± SD, p, n)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key, per_value in results["gaps"].items():
        cells = [results["labels"][key]]
        for gap in per_value.values():
            if gap["mean"] is None:
                cells.append("n/a")
                continue
            spread = f" ± {100 * gap['std']:.2f}" if gap["n"] > 1 else ""
            p = "n/a" if gap["p"] is None else f"{gap['p']:.3g}"
            cells.append(f"{100 * gap['mean']:+.2f}{spread} (p {p}, n {gap['n']})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"p: two-sided paired Wilcoxon signed-rank test against {reference} at the same value "
        "and seed.",
        "",
    ]
    return lines
