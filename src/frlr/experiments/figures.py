"""The sweep's figure (the paper's Fig. 6 for m, Fig. 7 for r), drawn by ``frlr sweep`` beside
its table, and the axis labels of the task metrics and hyper-parameters that the report's
figures use too. The look (sizes, fonts, colours, atomic saving) is :mod:`frlr.style`'s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from frlr.catalogue import default_hyperparameter
from frlr.style import COLUMN, FONT, loss_color, loss_label, new_figure, save_figure, style_axes

__all__ = ["METRIC_AXIS", "PARAM_AXIS", "metric_axis_label", "sweep_figure"]

METRIC_AXIS = {
    "top1": "test top-1 accuracy (%)",
    "top5": "test top-5 accuracy (%)",
    "rank1": "Rank-1 (%)",
    "rank5": "Rank-5 (%)",
    "rank10": "Rank-10 (%)",
    "mAP": "mAP (%)",
    "balanced_acc_image": "balanced accuracy, per image (%)",
    "balanced_acc_class": "balanced accuracy, per class (%)",
}
"""Axis label of each task metric (every metric is a fraction, drawn in per cent)."""

PARAM_AXIS = {
    "m": "m, hard-selected negatives (% of K - 1)",
    "r": "r, soft-selection exponent",
    "beta": "β, weight of the negative term",
}
"""Axis label of each swept hyper-parameter (Eq. 5 and 6)."""


def metric_axis_label(metric: str) -> str:
    return METRIC_AXIS.get(metric, f"test {metric} (%)")


def sweep_figure(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """The primary metric against the swept value (Fig. 6 for m, Fig. 7 for r): mean over seeds
    with an error bar of one sample standard deviation, every seed as a dot, the loss's paper
    default marked. ``results`` is shaped like ``sweep.json`` (param, loss, primary_metric,
    summary: value -> means, runs)."""
    param, loss, primary = results["param"], results["loss"], results["primary_metric"]
    rows = [entry for entry in results["summary"].values() if f"{primary}_mean" in entry]
    if not rows:
        raise ValueError(f"no finished run of the sweep has {primary!r}")
    rows.sort(key=lambda entry: entry["value"])
    values = np.array([entry["value"] for entry in rows])
    mean = np.array([100 * entry[f"{primary}_mean"] for entry in rows])
    std = np.array([100 * entry[f"{primary}_std"] for entry in rows])
    color = loss_color(loss)
    fig = new_figure(COLUMN, 2.7)
    ax = fig.add_subplot()
    points = [
        (row["value"], 100 * row[primary])
        for row in results.get("runs", [])
        if row.get(primary) is not None
    ]
    if points:
        x, y = zip(*points, strict=True)
        ax.scatter(x, y, s=9, color="0.55", alpha=0.7, linewidths=0, label="one seed", zorder=2)
    n = max((entry["n"] for entry in rows), default=0)
    ax.errorbar(
        values,
        mean,
        yerr=std,
        color=color,
        marker="o",
        markersize=4,
        linewidth=1.4,
        capsize=3,
        label=f"{loss_label(loss)}, mean ± std (n = {n})",
        zorder=3,
    )
    default = default_hyperparameter(loss, param)
    if default is not None and values.min() <= default <= values.max():
        ax.axvline(
            default,
            color="0.4",
            linewidth=0.8,
            linestyle=":",
            label=f"default {param} = {default:g}",
        )
    if param == "beta" and values.min() > 0 and values.max() / values.min() >= 20:
        ax.set_xscale("log")
    style_axes(ax, PARAM_AXIS.get(param, param), metric_axis_label(primary))
    if len(values) <= 8:
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.minorticks_off()
    ax.legend(fontsize=FONT["legend"], frameon=False, loc="best")
    return save_figure(fig, path)
