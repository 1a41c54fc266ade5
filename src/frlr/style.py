"""One look for every figure: a fixed colour per loss, so SR is the same blue in every plot.

Colours are the Okabe-Ito colour-blind-safe palette. The LR family shares warm hues (LR in
vermillion, its rectified forms HS-LR and SS-LR in orange and green), the softmax family cool
ones (SR in blue, HS-SR in purple). Stdlib only: importing this imports no plotting library.
"""

from __future__ import annotations

LOSS_COLORS: dict[str, str] = {
    "sr": "#0072B2",  # blue
    "lr": "#D55E00",  # vermillion
    "hs-lr": "#E69F00",  # orange
    "ss-lr": "#009E73",  # bluish green
    "hs-sr": "#CC79A7",  # reddish purple
}
"""Loss name (as in ``frlr.torch.get_loss``) -> matplotlib colour."""

LOSS_LABELS: dict[str, str] = {
    "sr": "SR",
    "lr": "LR",
    "hs-lr": "HS-LR",
    "ss-lr": "SS-LR",
    "hs-sr": "HS-SR",
}
"""Loss name -> the paper's spelling, for legends."""

FALLBACK_COLORS: tuple[str, ...] = ("#56B4E9", "#F0E442", "#000000", "#999999")
"""Colours for series whose loss is not one of the five (cycled in order)."""


def loss_color(loss: str, index: int = 0) -> str:
    """The palette colour of ``loss``; an unknown name gets ``FALLBACK_COLORS[index]`` (cycled)."""
    key = loss.lower().replace("_", "-") if isinstance(loss, str) else ""
    return LOSS_COLORS.get(key, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def loss_label(loss: str) -> str:
    """The paper's spelling of a loss name ("ss-lr" -> "SS-LR"); unknown names pass through."""
    key = loss.lower().replace("_", "-") if isinstance(loss, str) else str(loss)
    return LOSS_LABELS.get(key, str(loss))
