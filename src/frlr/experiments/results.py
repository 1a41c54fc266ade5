"""The results tables that ``frlr compare``, ``frlr sweep`` and ``frlr report`` share: one row
per run, and per group (a loss, or a swept value) the mean and sample standard deviation over
seeds of each metric, the wall time, and the paired Wilcoxon test against the baseline group.

The report recomputes these from the run directories with the same functions, so its tables
agree with ``results.md``/``sweep.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from frlr.experiments.stats import mean_std, paired_wilcoxon, significance_footnote

__all__ = [
    "METRIC_LABELS",
    "finished_note",
    "mean_cell",
    "metric_label",
    "p_cell",
    "percent",
    "run_row",
    "summarize",
    "trained_now",
]

METRIC_LABELS = {
    "top1": "top-1",
    "top5": "top-5",
    "rank1": "Rank-1",
    "rank5": "Rank-5",
    "rank10": "Rank-10",
    "mAP": "mAP",
    "balanced_acc_image": "bal. acc. per image",
    "balanced_acc_class": "bal. acc. per class",
}
"""Task metric -> its spelling in tables and footnotes."""


def metric_label(metric: str) -> str:
    """The table spelling of a task metric: "top1" -> "top-1", "val_rank1" -> "val Rank-1"."""
    if metric.startswith("val_"):
        return f"val {METRIC_LABELS.get(metric[4:], metric[4:])}"
    return METRIC_LABELS.get(metric, metric)


def percent(value: float | None) -> str:
    """A fraction as a per-cent cell: 0.9312 -> "93.12%", None -> "n/a"."""
    return "n/a" if value is None else f"{100 * value:.2f}%"


def run_row(
    loss: str,
    seed: int,
    run_dir: Path,
    status: str,
    result: dict[str, Any],
    metric_names: Sequence[str],
) -> dict[str, Any]:
    """One row of the runs table: the loss, seed, every metric of the task (None when the run
    lacks it), training loss, epochs, wall time, status ("trained", "resumed", "reused",
    "copied", "finished") and the run's directory."""
    metrics = result.get("metrics", {})
    row: dict[str, Any] = {"loss": loss, "seed": seed}
    row.update({name: metrics.get(name) for name in metric_names})
    row.update(
        train_loss=result.get("train_loss"),
        epochs=result.get("epochs"),
        wall_time_s=float(result.get("wall_time_s", math.nan)),
        status=status,
        run_dir=str(run_dir),
    )
    return row


def trained_now(status: str) -> bool:
    """Whether this process trained the run (so its wall time says how fast runs go now)."""
    return status in ("trained", "resumed")


def finished_note(status: str, result: dict[str, Any]) -> str:
    """What a progress line adds for a run this process did not train."""
    if status == "copied":
        return f"  (copied from {result.get('copied_from')})"
    return "  (finished before)" if status == "reused" else ""


def summarize(
    runs: list[dict[str, Any]],
    losses: Sequence[str],
    seeds: Sequence[int],
    baseline: str,
    primary: str,
    metric_names: Sequence[str],
    group_of: Callable[[dict[str, Any]], str] = lambda row: row["loss"],
    label: Callable[[str], str] = str.upper,
    tested: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per group (a loss; a swept value for ``frlr sweep``): metric mean/std, wall time and the
    paired test against ``baseline``. ``group_of`` names a row's group, ``label`` a group.

    ``tested`` metrics (default: the primary one) are each tested, in ``entry["tests"]``;
    the primary metric's test is also ``p_value``, ``p_note`` and ``p_statistic``.
    """
    tested = list(tested) if tested else [primary]
    if baseline not in losses:
        baseline = losses[0]
    by_loss = {loss: {row["seed"]: row for row in runs if group_of(row) == loss} for loss in losses}
    summary = {}
    for loss in losses:
        rows = [by_loss[loss][s] for s in seeds if s in by_loss[loss]]
        entry: dict[str, Any] = {"n": len(rows)}
        for name in metric_names:
            values = [r[name] for r in rows if r[name] is not None]
            if values:
                entry[f"{name}_mean"], entry[f"{name}_std"] = mean_std(values)
        times = [r["wall_time_s"] for r in rows]
        entry["wall_time_s_mean"], _ = mean_std(times)
        entry["wall_time_s_total"] = float(sum(times))
        if loss != baseline:
            entry["tests"] = {}
            for metric in tested:
                paired = [
                    s
                    for s in seeds
                    if s in by_loss[loss]
                    and s in by_loss[baseline]
                    and by_loss[loss][s][metric] is not None
                    and by_loss[baseline][s][metric] is not None
                ]
                test = paired_wilcoxon(
                    [by_loss[loss][s][metric] for s in paired],
                    [by_loss[baseline][s][metric] for s in paired],
                )
                entry["tests"][metric] = {
                    "p_value": test.p_value,
                    "p_note": test.note,
                    "p_statistic": test.statistic,
                }
                if metric == primary:
                    entry.update(p_value=test.p_value, p_note=test.note, p_statistic=test.statistic)
        summary[loss] = entry
    names = [metric_label(m) for m in tested]
    tested_label = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    footnote = significance_footnote(len(seeds), tested_label, label(baseline))
    return {"baseline": baseline, "losses": summary, "footnote": footnote}


def mean_cell(entry: dict[str, Any], name: str) -> str:
    """A summary entry's mean ± std of ``name`` in per cent: "93.12 ± 0.41" ("n/a" if none)."""
    if f"{name}_mean" not in entry:
        return "n/a"
    return f"{100 * entry[f'{name}_mean']:.2f} ± {100 * entry[f'{name}_std']:.2f}"


def p_cell(entry: dict[str, Any], is_baseline: bool) -> str:
    """A summary entry's p-value against the baseline, with its note ("—" for the baseline)."""
    if is_baseline:
        return "—"
    if entry.get("p_value") is None:
        return f"n/a ({entry.get('p_note', '')})"
    note = f" ({entry['p_note']})" if entry.get("p_note") else ""
    return f"{entry['p_value']:.3g}{note}"
