"""One look for every figure: a fixed colour per loss, so SR is the same blue in every plot.

Colours are the Okabe-Ito colour-blind-safe palette. The LR family shares warm hues (LR in
vermillion, its rectified forms HS-LR and SS-LR in orange and green), the softmax family cool
ones (SR in blue, HS-SR in purple). Every figure is sized for a paper column (3.5 in, or 7 in for
panels side by side) at 200 dpi with text of 8 pt and more, and written atomically. Stdlib only:
importing this imports no plotting library (the figure helpers import matplotlib to draw).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from frlr.catalogue import LOSS_LABELS, LOSS_NAMES, canonical_loss_name

__all__ = [
    "COLUMN",
    "DPI",
    "FALLBACK_COLORS",
    "FONT",
    "LOSS_COLORS",
    "LOSS_LABELS",
    "loss_color",
    "loss_label",
    "new_figure",
    "plain_log_labels",
    "save_figure",
    "style_axes",
]

LOSS_COLORS: dict[str, str] = dict(
    zip(
        LOSS_NAMES,
        (
            "#0072B2",  # sr: blue
            "#D55E00",  # lr: vermillion
            "#E69F00",  # hs-lr: orange
            "#009E73",  # ss-lr: bluish green
            "#CC79A7",  # hs-sr: reddish purple
        ),
        strict=True,
    )
)
"""Loss name (:data:`frlr.catalogue.LOSS_NAMES`) -> matplotlib colour."""

FALLBACK_COLORS: tuple[str, ...] = ("#56B4E9", "#F0E442", "#000000", "#999999")
"""Colours for series whose loss is not one of the five (cycled in order)."""


def loss_color(loss: str, index: int = 0) -> str:
    """The palette colour of ``loss``; an unknown name gets ``FALLBACK_COLORS[index]`` (cycled)."""
    key = canonical_loss_name(loss)
    return LOSS_COLORS.get(key or "", FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def loss_label(loss: str) -> str:
    """The paper's spelling of a loss name ("ss-lr" -> "SS-LR"); unknown names pass through."""
    key = canonical_loss_name(loss)
    return LOSS_LABELS[key] if key is not None else str(loss)


DPI = 200
COLUMN = 3.5  # inches: one column of a two-column paper
FONT = {"label": 9, "tick": 8, "legend": 8, "title": 9}


def new_figure(width: float, height: float):
    """A bare matplotlib Figure (no pyplot: no backend or global state changes), constrained
    layout, at the report's resolution."""
    from matplotlib.figure import Figure  # plotting is optional: imported only to draw

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def style_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    """Labelled axes in the paper's sizes, a light grid, no top or right spine."""
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


def plain_log_labels(ax: Any) -> None:
    """Tick labels as plain numbers (0.01, 0.5, 140), not 10^x; minor ticks labelled too when
    the axis spans less than about one decade, so a narrow panel still has numbers on it."""
    from matplotlib.ticker import FuncFormatter, NullFormatter  # imported only to draw

    def plain(value: float, _position: int) -> str:
        return f"{value:.3g}"

    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    low, high = ax.get_ylim()
    narrow = low > 0 and math.log10(high / low) < 1.3
    ax.yaxis.set_minor_formatter(FuncFormatter(plain) if narrow else NullFormatter())
