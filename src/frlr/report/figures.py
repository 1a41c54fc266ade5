"""The report's figures, drawn like a paper's: the curves of Fig. 4 and 5, the t-SNE panels of
Fig. 1 (Fig. 2 is :func:`frlr.ncd.plot_ncd`; the sweeps of Fig. 6 and 7 are
:func:`frlr.experiments.figures.sweep_figure`, which ``frlr sweep`` draws too).

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

import numpy as np

from frlr.experiments.figures import (
    METRIC_AXIS,
    PARAM_AXIS,
    loss_curves_figure,
    metric_axis_label,
    sweep_figure,
)
from frlr.report.runs import Group
from frlr.style import (
    COLUMN,
    FONT,
    new_figure,
    plain_log_labels,
    save_figure,
    style_axes,
)

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
    fig = new_figure(COLUMN, 3.0)
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
    style_axes(ax, "epoch", ylabel)
    if logy:
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        decade = 10 ** math.floor(math.log10(low))
        if low / decade < 1.6:  # show the decade's tick just under the lowest curve
            ax.set_ylim(decade * 0.95, high)
        plain_log_labels(ax)  # 0.5, 1, 2 rather than 5 x 10^-1
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
    from matplotlib import colormaps  # plotting is optional: imported only to draw

    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    side = min(2.0, 7.0 / columns)
    width = max(side * columns, COLUMN)
    names = [_short_name(name) for name in class_names]
    fig = new_figure(width, side * rows + 0.6)
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
