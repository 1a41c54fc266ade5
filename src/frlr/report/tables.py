"""The report's tables, recomputed from the finished runs on disk with ``frlr compare``'s own
statistics (mean, sample standard deviation, paired Wilcoxon test against the baseline group),
so they hold every run in the directory and agree with ``results.md``/``sweep.md`` when those
were written after the last run."""

from __future__ import annotations

import math
from typing import Any

from frlr.experiments import results
from frlr.experiments.results import metric_label, run_row
from frlr.report.document import Table
from frlr.report.runs import Experiment, Group

__all__ = ["results_table", "runs_cell", "runs_table", "summarize", "sweep_results"]


def _group_label(experiment: Experiment, key: str) -> str:
    return next((g.label for g in experiment.groups if g.key == key), key)


def _rows(experiment: Experiment) -> list[dict[str, Any]]:
    rows = []
    for group in experiment.groups:
        for run in group.finished:
            row = run_row(
                run.loss, run.seed, run.path, "finished", run.result or {}, experiment.metric_names
            )
            row.update(group=group.key, value=group.value)
            rows.append(row)
    return rows


def summarize(experiment: Experiment) -> dict[str, Any]:
    """{"baseline", "losses": group key -> mean/std/p entry, "footnote", "rows"}."""
    rows = _rows(experiment)
    summary = results.summarize(
        rows,
        [g.key for g in experiment.groups],
        experiment.seeds,
        experiment.baseline,
        experiment.primary_metric,
        experiment.metric_names,
        group_of=lambda row: row["group"],
        label=lambda key: _group_label(experiment, key),
        tested=experiment.tested_metrics,
    )
    summary["rows"] = rows
    return summary


def sweep_results(experiment: Experiment, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary shaped like ``sweep.json``, for :func:`frlr.experiments.figures.sweep_figure`."""
    return {
        "param": experiment.param,
        "loss": experiment.loss,
        "primary_metric": experiment.primary_metric,
        "summary": {
            g.key: {"value": g.value, **summary["losses"][g.key]} for g in experiment.groups
        },
        "runs": summary["rows"],
    }


def _mean_cell(entry: dict[str, Any], name: str) -> str:
    mean, std = entry.get(f"{name}_mean"), entry.get(f"{name}_std")
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if entry.get("n") == 1:  # one seed: no spread to show
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _p_cell(entry: dict[str, Any], metric: str, primary: str, is_baseline: bool) -> str:
    if is_baseline:
        return "baseline"
    test = entry.get("tests", {}).get(metric, entry if metric == primary else {})
    if test.get("p_value") is None:
        return f"n/a ({test.get('p_note') or 'no finished pairs'})"
    note = f" ({test['p_note']})" if test.get("p_note") else ""
    return f"{test['p_value']:.3g}{note}"


def runs_cell(group: Group) -> str:
    """The runs column: "3", or "1 of 2; seed 0 damaged" (in-progress runs count in the total;
    damaged and missing ones are named, and none enters a mean or a test)."""
    finished = len(group.finished)
    total = len(group.runs) + len(group.missing)
    parts = [str(finished) if finished == total else f"{finished} of {total}"]
    for what, seeds in (
        ("damaged", [run.seed for run in group.damaged]),
        ("missing", group.missing),
    ):
        if seeds:
            parts.append(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} {what}")
    return "; ".join(parts)


def results_table(experiment: Experiment, summary: dict[str, Any]) -> Table:
    """One row per group: metric mean ± std (%), p against the baseline, runs, wall time."""
    baseline = summary["baseline"]
    first = experiment.param if experiment.kind == "sweep" else "loss"
    metrics = experiment.metric_names
    tested = experiment.tested_metrics
    against = _group_label(experiment, baseline)
    header = [str(first), *[f"{metric_label(m)} (%)" for m in metrics]]
    if len(tested) == 1:
        header.append(f"p vs {against}")
    else:
        header += [f"p {metric_label(m)} vs {against}" for m in tested]
    header += ["runs", "wall time / run (s)"]
    rows = []
    for group in experiment.groups:
        entry = summary["losses"][group.key]
        wall = entry.get("wall_time_s_mean", math.nan)
        rows.append(
            [
                group.key if experiment.kind == "sweep" else group.label,
                *[_mean_cell(entry, m) for m in metrics],
                *[
                    _p_cell(entry, m, experiment.primary_metric, group.key == baseline)
                    for m in tested
                ],
                runs_cell(group),
                "n/a" if not math.isfinite(wall) else f"{wall:.1f}",
            ]
        )
    note = (
        "Mean ± sample standard deviation over seeds of the finished runs (a single seed: its "
        f"value). {summary['footnote']}"
    )
    return Table(header, rows, note)


def _status(group: Group, run) -> str:
    if run.damaged:
        return "damaged (see Damaged or missing runs)"
    if run.result is not None:
        return "diverged" if run.result.get("diverged") else "finished"
    epochs = run.config.get("epochs", "?")
    done = max((int(r.get("epoch", 0)) for r in run.history), default=0)
    return f"in progress ({done} of {epochs} epochs)"


def runs_table(experiment: Experiment) -> Table:
    """One row per run: status, final metrics, training loss, epochs, wall time, device."""
    metrics = experiment.metric_names
    header = ["run", "seed", "status", *[f"{metric_label(m)} (%)" for m in metrics]]
    header += ["train loss", "epochs", "wall time (s)", "device"]
    rows = []
    total = 0.0
    for group in experiment.groups:
        for run in group.runs:
            result = run.result or {}
            last = run.history[-1] if run.history else {}
            values = result.get("metrics") or {
                k.removeprefix("test_"): v for k, v in last.items() if k.startswith("test_")
            }
            wall = result.get("wall_time_s", last.get("elapsed_s"))
            total += float(wall) if isinstance(wall, (int, float)) else 0.0
            loss = result.get("train_loss", last.get("train_loss"))
            rows.append(
                [
                    run.name,
                    str(run.seed),
                    _status(group, run),
                    *[
                        "n/a" if values.get(m) is None else f"{100 * values[m]:.2f}"
                        for m in metrics
                    ],
                    "n/a" if loss is None else f"{loss:.4g}",
                    str(result.get("epochs", len(run.history))),
                    "n/a" if wall is None else f"{wall:.1f}",
                    str((result.get("hardware") or {}).get("device", "n/a")),
                ]
            )
        for seed in group.missing:
            name = experiment.run_name(group, seed)
            rows.append([name, str(seed), "missing", *["n/a"] * (len(header) - 3)])
    hours = f" ({total / 3600:.2f} h)" if total >= 360 else ""
    note = (
        f"Final-epoch test metrics; wall time of all runs together {total:.1f} s{hours}. An "
        "unfinished run shows its last recorded epoch."
    )
    return Table(header, rows, note)
