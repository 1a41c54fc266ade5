"""The report's figures, drawn like a paper's: the curves of Fig. 4 and 5, the sweeps of Fig. 6
and 7, the t-SNE panels of Fig. 1 (Fig. 2 is :func:`frlr.ncd.plot_ncd`).

Every figure is a bare ``matplotlib.figure.Figure`` rendered by the Agg canvas (pyplot is never
imported, so no backend or global state of the caller changes), sized for a paper column
(3.5 in, or 7 in for panels side by side) at 200 dpi with text of 8 pt and more, coloured by
loss with :mod:`frlr.style`. The values of a sweep share one loss, so they get shades of its
colour, light (small) to dark (large). Each file is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frlr.report.runs import Group
from frlr.style import loss_color, loss_label

__all__ = [
    "METRIC_AXIS",
    "PARAM_AXIS",
    "curves_figure",
    "loss_curves_figure",
    "metric_axis_label",
    "save_figure",
    "sweep_figure",
    "tsne_figure",
]

DPI = 200
COLUMN = 3.5  # inches: one column of a two-column paper
FONT = {"label": 9, "tick": 8, "legend": 8, "title": 9}

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


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _style(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel, fontsize=FONT["label"])
    ax.set_ylabel(ylabel, fontsize=FONT["label"])
    ax.tick_params(which="both", labelsize=FONT["tick"])
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` atomically (a partial file, then a rename); the suffix picks
    the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        fig.savefig(partial, format=path.suffix.lstrip(".") or "png", dpi=DPI)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _series(group: Group, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Epochs, mean and sample std over the group's seeds of ``key`` in metrics.jsonl."""
    by_epoch: dict[int, list[float]] = {}
    for run in group.runs:
        for record in run.history:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and "epoch" in record:
                by_epoch.setdefault(int(record["epoch"]), []).append(float(value))
    epochs = np.array(sorted(by_epoch), dtype=float)
    mean = np.array([np.mean(by_epoch[int(e)]) for e in epochs])
    std = np.array(
        [np.std(by_epoch[int(e)], ddof=1) if len(by_epoch[int(e)]) > 1 else 0.0 for e in epochs]
    )
    return epochs, mean, std, max((len(v) for v in by_epoch.values()), default=0)


def curves_figure(
    groups: Sequence[Group],
    key: str,
    ylabel: str,
    path: str | os.PathLike,
    *,
    percent: bool = True,
    logy: bool = False,
    legend_title: str | None = None,
) -> Path:
    """``key`` of metrics.jsonl against the epoch, one line per group: the mean over seeds and
    a band of one sample standard deviation (Fig. 4 with ``train_loss``, Fig. 5 with a test
    metric). ``legend_title``: e.g. the loss of a sweep, whose groups are values."""
    fig = _figure(COLUMN, 3.0)
    ax = fig.add_subplot()
    drawn = 0
    longest = 0
    seeds = []
    for group in groups:
        epochs, mean, std, n = _series(group, key)
        if not len(epochs):
            continue
        scale = 100.0 if percent else 1.0
        low, high = (mean - std) * scale, (mean + std) * scale
        if logy:  # a band reaching 0 cannot sit on a log axis
            low = np.maximum(low, mean * scale * 0.2)
        marker = "o" if len(epochs) <= 20 else None
        seeds.append(n)
        label = group.label
        ax.plot(
            epochs,
            mean * scale,
            color=group.color,
            linewidth=1.4,
            marker=marker,
            markersize=2.5,
            label=label,
        )
        if n > 1:
            ax.fill_between(epochs, low, high, color=group.color, alpha=0.18, linewidth=0)
        drawn += 1
        longest = max(longest, int(epochs.max()))
    if not drawn:
        raise ValueError(f"no run recorded {key!r} in metrics.jsonl")
    _style(ax, "epoch", ylabel)
    if logy:
        from frlr.ncd import _plain_log_labels

        ax.set_yscale("log")
        low, high = ax.get_ylim()
        decade = 10 ** math.floor(math.log10(low))
        if low / decade < 1.6:  # show the decade's tick just under the lowest curve
            ax.set_ylim(decade * 0.95, high)
        _plain_log_labels(ax)  # 0.5, 1, 2 rather than 5 x 10^-1
    if longest <= 10:
        ax.set_xticks(range(1, longest + 1))
    # Below the axes: curves of several losses fill the plot, a legend inside would hide one.
    handles, labels = ax.get_legend_handles_labels()
    if len(set(seeds)) == 1:
        spread = "mean ± std over" if seeds[0] > 1 else "one run,"
        count = f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''}"
        title = f"{legend_title + ': ' if legend_title else ''}{spread} {count}"
    else:  # groups with different seed counts say theirs
        labels = [f"{label} (n = {n})" for label, n in zip(labels, seeds, strict=True)]
        title = legend_title
    fit = int(COLUMN * 72 / (0.6 * FONT["legend"]) // (max(map(len, labels)) + 6))
    fig.legend(
        handles,
        labels,
        fontsize=FONT["legend"],
        frameon=False,
        loc="outside lower center",
        ncol=max(1, min(len(labels), fit)),
        title=title,
        title_fontsize=FONT["legend"],
        columnspacing=1.2,
        handlelength=1.6,
    )
    return save_figure(fig, path)


def sweep_figure(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """The primary metric against the swept value (Fig. 6 for m, Fig. 7 for r): mean over seeds
    with an error bar of one sample standard deviation, every seed as a dot, the loss's paper
    default marked. ``results`` is shaped like ``sweep.json`` (param, loss, primary_metric,
    summary: value -> means, runs)."""
    from frlr.experiments.sweep import default_value

    param, loss, primary = results["param"], results["loss"], results["primary_metric"]
    rows = [entry for entry in results["summary"].values() if f"{primary}_mean" in entry]
    if not rows:
        raise ValueError(f"no finished run of the sweep has {primary!r}")
    rows.sort(key=lambda entry: entry["value"])
    values = np.array([entry["value"] for entry in rows])
    mean = np.array([100 * entry[f"{primary}_mean"] for entry in rows])
    std = np.array([100 * entry[f"{primary}_std"] for entry in rows])
    color = loss_color(loss)
    fig = _figure(COLUMN, 2.7)
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
    default = default_value(loss, param)
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
    _style(ax, PARAM_AXIS.get(param, param), metric_axis_label(primary))
    if len(values) <= 8:
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.minorticks_off()
    ax.legend(fontsize=FONT["legend"], frameon=False, loc="best")
    return save_figure(fig, path)


def _short_name(name: str, limit: int = 22) -> str:
    """A class name fit for a legend: WordNet's first synonym ("bullfrog, Rana ..." ->
    "bullfrog"), cut at ``limit`` characters."""
    first = str(name).split(",")[0].strip() or str(name)
    return first if len(first) <= limit else first[: limit - 1] + "…"


def tsne_figure(
    panels: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    path: str | os.PathLike,
) -> Path:
    """One t-SNE panel per group (label, colour, (n, 2) coordinates, class of each point), the
    classes coloured alike in every panel (Fig. 1); the panel title carries the loss colour."""
    if not panels:
        raise ValueError("no t-SNE panel to draw")
    from matplotlib import colormaps

    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    side = min(2.0, 7.0 / columns)
    width = max(side * columns, COLUMN)
    names = [_short_name(name) for name in class_names]
    fig = _figure(width, side * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    palette = colormaps["tab10"]
    classes = sorted({int(c) for _, _, _, labels in panels for c in labels})
    handles = []
    for ax, (label, color, coords, labels) in zip(axes, panels, strict=False):
        for index, cls in enumerate(classes):
            chosen = labels == cls
            handle = ax.scatter(
                coords[chosen, 0],
                coords[chosen, 1],
                s=4,
                color=palette(index % 10),
                alpha=0.8,
                linewidths=0,
                label=names[cls] if cls < len(names) else str(cls),
            )
            if len(handles) < len(classes):
                handles.append(handle)
        ax.set_title(label, fontsize=FONT["title"], color=color, fontweight="bold")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1", fontsize=FONT["tick"])
        ax.set_ylabel("t-SNE 2", fontsize=FONT["tick"])
        ax.set_aspect("equal", adjustable="datalim")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    longest = max(len(h.get_label()) for h in handles)
    fit = max(1, int(width * 72 / (0.6 * FONT["legend"]) // (longest + 6)))  # chars per inch
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), fit),
        fontsize=FONT["legend"],
        frameon=False,
        markerscale=2.5,
        title="class",
        title_fontsize=FONT["legend"],
    )
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
    fig = _figure(2 * COLUMN, 2.8)
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
    _style(
        left, name, f"{METRIC_AXIS.get(primary, primary).split(' (')[0]} − {baseline_label} (pp)"
    )
    _style(right, name, "NCD gradient ratio at init (pos / neg)")
    left.set_title(f"accuracy gap to {baseline_label}, paired by seed", fontsize=FONT["title"])
    right.set_title("gradient balance at step 0 (LR: 1/(K−1))", fontsize=FONT["title"])
    left.legend(fontsize=FONT["legend"] - 1, frameon=False, loc="best")
    right.legend(fontsize=FONT["legend"] - 1, frameon=False, loc="best")
    return save_figure(fig, path)
