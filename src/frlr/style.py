"""One look for every figure: a fixed colour per loss, so SR is the same blue in every plot.

Colours are the Okabe-Ito colour-blind-safe palette. The LR family shares warm hues (LR in
vermillion, its rectified forms HS-LR and SS-LR in orange and green), the softmax family cool
ones (SR in blue, HS-SR in purple). Stdlib only: importing this imports no plotting library.
"""

from __future__ import annotations

from frlr.catalogue import LOSS_LABELS, LOSS_NAMES, canonical_loss_name

__all__ = ["FALLBACK_COLORS", "LOSS_COLORS", "LOSS_LABELS", "loss_color", "loss_label"]

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
