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

__all__ = [
    "METRIC_AXIS",
    "PARAM_AXIS",
    "loss_curves_figure",
    "metric_axis_label",
    "sweep_figure",
    "value_curves_figure",
]

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


_VARIANT_STYLES = ("--", ":", "-.")


def loss_curves_figure(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Two panels against a data field (the number of classes K), log-scale x, one curve per
    loss of a ``frlr sweep --losses`` (``results`` shaped like its ``sweep.json``).

    Left: each loss's primary metric minus the baseline's (SR), paired by seed, mean with an
    error bar of one sample standard deviation of the paired differences; a point's marker is
    hollow when fewer seeds than the most finished there, and the legend gives the range of n.
    Right: the NCD gradient ratio at initialisation (positive over negative gradient mass; LR:
    1/(K-1)), log-scale, for every loss. A loss variant (``ss-lr:r=0``) takes its base loss's
    colour with a dashed line. Points without runs are skipped, so partial sweeps draw.
    """
    param, primary, baseline = results["param"], results["primary_metric"], results["baseline"]
    rows = results["summary"]
    keys = list(dict.fromkeys(row["loss"] for row in rows))
    fig = new_figure(2 * COLUMN, 2.8)
    left, right = fig.subplots(1, 2)
    variants: dict[str, int] = {}
    most = max((row["delta_n"] for row in rows if row["loss"] != baseline), default=0)
    for index, key in enumerate(keys):
        mine = sorted((row for row in rows if row["loss"] == key), key=lambda row: row["value"])
        name = mine[0]["loss_name"]
        color = loss_color(name, index)
        variant = key != name
        if variant:
            variants[name] = variants.get(name, -1) + 1
        style = _VARIANT_STYLES[variants[name] % len(_VARIANT_STYLES)] if variant else "-"
        label = mine[0]["label"]
        right.plot(
            [row["value"] for row in mine],
            [row["ncd_ratio_init"] for row in mine],
            color=color,
            linestyle=style,
            marker="o",
            markersize=3,
            linewidth=1.3,
            label=label,
        )
        if key == baseline:
            continue
        drawn = [row for row in mine if row["delta_mean"] is not None]
        if not drawn:
            continue
        x = np.array([row["value"] for row in drawn], dtype=float)
        y = np.array([100 * row["delta_mean"] for row in drawn])
        err = np.array([100 * row["delta_std"] if row["delta_n"] > 1 else 0.0 for row in drawn])
        counts = [row["delta_n"] for row in drawn]
        n_text = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
        left.errorbar(
            x,
            y,
            yerr=err,
            color=color,
            linestyle=style,
            linewidth=1.3,
            capsize=2.5,
            label=f"{label}, n = {n_text}",
            zorder=3,
        )
        full = np.array([count == most for count in counts])
        left.scatter(x[full], y[full], s=16, color=color, zorder=4)
        left.scatter(x[~full], y[~full], s=16, facecolors="white", edgecolors=color, zorder=4)
    baseline_label = next(row["label"] for row in rows if row["loss"] == baseline)
    left.axhline(0.0, color=loss_color(rows[0]["loss_name"]), linewidth=1.0, label=baseline_label)
    name = "number of classes K" if param == "num_classes" else param
    values = sorted({row["value"] for row in rows})
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.minorticks_off()
    right.set_yscale("log")
    style_axes(
        left, name, f"{METRIC_AXIS.get(primary, primary).split(' (')[0]} − {baseline_label} (pp)"
    )
    style_axes(right, name, "NCD gradient ratio at init (pos / neg)")
    left.set_title(f"accuracy gap to {baseline_label}, paired by seed", fontsize=FONT["title"])
    right.set_title("gradient balance at step 0 (LR: 1/(K−1))", fontsize=FONT["title"])
    left.legend(fontsize=FONT["legend"] - 1, frameon=False, loc="best")
    right.legend(fontsize=FONT["legend"] - 1, frameon=False, loc="best")
    return save_figure(fig, path)


def value_curves_figure(
    curves: list[dict[str, Any]],
    path: str | os.PathLike,
    *,
    param: str,
    metric: str,
    ylabel: str,
    log_x: bool = False,
    title: str | None = None,
    zero_line: bool = False,
) -> Path:
    """A metric against the values of one field, one line per curve (``frlr sweep`` over any
    field, and ``frlr tune``'s validation curves). Each curve is ``{"label", "loss", "points":
    [(value, mean, std, n), ...]}`` in fractions; choice fields (strings) are drawn at equally
    spaced positions. A variant of a loss (a second curve of it) is dashed. ``zero_line``:
    a gap's reference, at 0. More than four curves put the legend beside the axes, where it
    covers no line."""
    beside = sum(1 for c in curves if c["points"]) > 4
    fig = new_figure(COLUMN * (1.7 if beside else 1.0), 2.8)
    ax = fig.add_subplot()
    values = list(dict.fromkeys(p[0] for c in curves for p in c["points"]))
    categorical = any(isinstance(v, str) for v in values)
    if not categorical:
        values = sorted(values)
    position = {v: (i if categorical else v) for i, v in enumerate(values)}
    seen: dict[str, int] = {}
    drawn = 0
    for index, curve in enumerate(curves):
        points = [p for p in curve["points"] if p[1] is not None and np.isfinite(p[1])]
        if not points:
            continue
        if not categorical:
            points.sort(key=lambda p: p[0])
        seen[curve["loss"]] = seen.get(curve["loss"], -1) + 1
        style = _VARIANT_STYLES[(seen[curve["loss"]] - 1) % 3] if seen[curve["loss"]] else "-"
        ax.errorbar(
            [position[p[0]] for p in points],
            [100 * p[1] for p in points],
            yerr=[100 * p[2] if p[3] > 1 else 0.0 for p in points],
            color=loss_color(curve["loss"], index),
            linestyle=style,
            marker="o",
            markersize=3.5,
            linewidth=1.3,
            capsize=2.5,
            label=curve["label"],
        )
        drawn += 1
    if not drawn:  # a sweep read mid-way, before any point of it has finished
        ax.text(
            0.5,
            0.5,
            "no finished points yet",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.4",
        )
    if zero_line:
        ax.axhline(0.0, color="0.4", linewidth=0.9, zorder=1)
    if log_x and not categorical:
        ax.set_xscale("log")
    style_axes(ax, PARAM_AXIS.get(param, param.replace("_", " ")), ylabel)
    if categorical or len(values) <= 8:
        ax.set_xticks([position[v] for v in values])
        ax.set_xticklabels([v if isinstance(v, str) else f"{v:g}" for v in values])
        ax.minorticks_off()
    if title:
        ax.set_title(title, fontsize=FONT["title"])
    if beside:
        fig.legend(fontsize=FONT["legend"] - 1, frameon=False, loc="outside right upper")
    elif drawn:
        ax.legend(fontsize=FONT["legend"] - 1, frameon=False, loc="best")
    return save_figure(fig, path)
