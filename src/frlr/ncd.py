"""Negative-class-distraction (NCD) records: the history buffer, JSON lines, verdict and figure.

The paper (Dong, Zhu and Gong, AAAI 2019, "The Negative Class Distraction Problem", Fig. 2)
tracks four quantities while LR trains on Tiny ImageNet: (a) the overall loss, (b) the loss of
the positive (ground-truth) class, (c) the loss of the negative classes and (d) the ratio of the
gradient the positive class receives to the gradient all negatives receive. At K = 200 LR starts
at a negative loss of about 140 against a positive loss of 0.4 and a near-zero gradient ratio:
the K - 1 negatives drown the one positive. This module holds what is framework-neutral about
those records (plain Python, no numpy, no torch, matplotlib imported only inside
[`plot_ncd`][]), so the PyTorch monitor (``frlr.torch.diagnostics``) and the Keras callback
(``frlr.keras.diagnostics``) share one record format, one verdict and one figure.

A record is a flat dict: ``step``, ``label`` and the fields of ``NCDStats``. JSON has no
infinity or NaN, so a non-finite number is written as the string "inf", "-inf" or "nan" and
read back as a float.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frlr.style import loss_color, loss_label, plain_log_labels

NCD_THRESHOLD = 0.05
"""Default gradient-ratio threshold below which a step counts as distracted.

At initialisation (logits about 0, every probability 1/2) the ratios follow from the losses'
definitions:

* LR (Eq. 3): 0.5 / (0.5 (K - 1)) = 1 / (K - 1): 0.11 at K = 10, 0.010 at K = 100 and
  0.005 at K = 200;
* HS-LR (Eq. 5): 0.5 / (beta/n * n * 0.5) = 1 / beta = 0.1 for the paper's beta = 10;
* SS-LR (Eq. 6): 0.5 / (beta 2^-r (r/2 log 2 + 1/2)) = 0.17 for beta = 10, r = 2;
* SR (Eq. 4): exactly 1 at every step, since softmax gradients sum to zero per sample.

The rectified losses are designed to start at a ratio of about 1/beta = 0.1 (the paper's
balance weight); 0.05 is half that, so they pass with a factor 2 (HS-LR) to 3.4 (SS-LR) of
margin while LR fails for every K >= 22. That matches the paper's Table 1: LR is on par with
SR on CIFAR-10 (K = 10, ratio 0.11, not flagged) and clearly worse on CIFAR-100 and Tiny
ImageNet (K = 100, 200, flagged).
"""

EARLY_STEPS = 10
"""Default length, in optimiser steps from the first record, of the window that
[`ncd_verdict`][] judges.

Why the start, and why counted in steps. NCD is a property of the beginning of training, where
the paper shows it (Fig. 2): every loss whose classifier has a bias drifts to a ratio of about
1, because at a stationary point of the bias b_k the batch's dL/dz_k sum to zero, and for these
losses the positive entries' gradients are negative and the negatives' positive, so their
absolute sums balance. How long the distracted phase lasts is set by how fast the optimiser
pushes the negatives' logits down to the class prior, i.e. by the learning rate, not by the
length of the run: measured with ``benchmarks/ncd_figure.py`` (ResNet-20, Tiny ImageNet, SGD
lr 0.1), LR's ratio stays below 0.05 for the first 19 steps (0-18) and passes 0.5 at step 51
of 624, so a window that is a share of the run dilutes it away on long runs. Ten steps asks
that the distraction persist past a transient while staying inside the phase at the paper's
learning rate (lower rates lengthen the phase).
"""

NUMERIC_FIELDS: tuple[str, ...] = (
    "total",
    "positive",
    "negative",
    "grad_positive",
    "grad_negative",
    "gradient_ratio",
    "prob_positive",
    "prob_negative_mean",
    "prob_negative_max",
)


# ---------------------------------------------------------------------------------------------
# One step's statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NCDStats:
    """The NCD statistics of one batch (see ``frlr.torch.diagnostics.ncd_stats``).

    loss: the loss name ("sr", "lr", "hs-lr", "ss-lr", "hs-sr").
    num_classes: K.
    num_samples: samples counted (ignored ones excluded).
    total: the loss over the batch, "mean" reduction; equals ``positive + negative``.
    positive, negative: the loss's positive-class part and negative-class part, same reduction.
    grad_positive, grad_negative: sum over the batch of |dL/dz| at positive / negative logits,
        of the batch loss L (so each sample's share is divided by the sample count).
    gradient_ratio: grad_positive / grad_negative; +inf when only the denominator is 0, 1.0
        when both are 0 (no side pulls harder than the other).
    prob_positive: mean probability of the positive classes; prob_negative_mean and
        prob_negative_max: mean and max over negative entries. Sigmoid probabilities for the LR
        family, softmax for SR and HS-SR.
    """

    loss: str
    num_classes: int
    num_samples: int
    total: float
    positive: float
    negative: float
    grad_positive: float
    grad_negative: float
    gradient_ratio: float
    prob_positive: float
    prob_negative_mean: float
    prob_negative_max: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gradient_ratio(grad_positive: float, grad_negative: float) -> float:
    """grad_positive / grad_negative, with 0/0 = 1 (balanced) and x/0 = inf for x > 0."""
    if grad_negative > 0:
        return grad_positive / grad_negative
    if grad_positive > 0:
        return math.inf
    if math.isnan(grad_positive) or math.isnan(grad_negative):
        return math.nan
    return 1.0


# ---------------------------------------------------------------------------------------------
# Bounded history
# ---------------------------------------------------------------------------------------------


class HalvingHistory:
    """At most ``capacity`` records of an arbitrarily long run, evenly spaced over all of it.

    Records are offered in order and numbered 0, 1, 2, ...; the buffer keeps exactly those whose
    number is a multiple of ``stride``. When a kept record would overflow the buffer, every
    other record is dropped and the stride doubles, so after n offers the history holds the
    records 0, stride, 2 stride, ... < n with stride the smallest power of two that fits them
    in ``capacity``. Memory is O(capacity) and the spacing is uniform (in offers) at all times.
    """

    def __init__(self, capacity: int = 2048) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 2:
            raise ValueError(f"capacity must be an int >= 2, got {capacity!r}")
        self.capacity = capacity
        self.stride = 1
        self.offered = 0
        self._records: list[dict[str, Any]] = []

    def accepts_next(self) -> bool:
        """Whether the next offered record will be kept (lets callers skip computing it)."""
        return self.offered % self.stride == 0

    def offer(self, record: dict[str, Any]) -> bool:
        """Offer the next record; returns whether it was kept."""
        number = self.offered
        self.offered += 1
        if number % self.stride:
            return False
        while len(self._records) >= self.capacity:
            self._records = self._records[::2]
            self.stride *= 2
            if number % self.stride:
                return False
        self._records.append(record)
        return True

    def skip(self) -> None:
        """Count an offer whose record the caller did not compute (``accepts_next()`` was False)."""
        if self.accepts_next():
            raise RuntimeError("skip() is only for records the history would drop")
        self.offered += 1

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)


# ---------------------------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------------------------


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


class JsonlWriter:
    """Append one JSON object per line to ``path``, flushed after every line.

    The file is opened on the first record (truncated unless ``append``), so a monitor that
    never records leaves no empty file behind. Lines are strict JSON (non-finite numbers as the
    strings "inf"/"-inf"/"nan"); a crash loses at most the line being written.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = Path(path)
        self.append = bool(append)
        self._file = None

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a" if self.append else "w", encoding="utf-8")  # noqa: SIM115
        line = json.dumps({k: _json_number(v) for k, v in record.items()}, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file written by ``JsonlWriter``, in file order.

    "inf"/"-inf"/"nan" strings in numeric fields become floats. An unparsable last line (a
    run killed mid-write) is dropped with a warning; an unparsable line elsewhere is an error.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                warnings.warn(f"{path}: dropped a truncated last line ({error})", stacklevel=2)
                break
            raise ValueError(f"{path}, line {number}: not JSON ({error})") from None
        if not isinstance(record, dict) or "step" not in record:
            raise ValueError(f"{path}, line {number}: expected an object with a 'step' field")
        for name in NUMERIC_FIELDS:
            if isinstance(record.get(name), str):
                record[name] = float(record[name])
        records.append(record)
    return records


def truncate_history(path: str | os.PathLike, before_step: int) -> int:
    """Keep only the lines of ``path`` whose step is below ``before_step``; returns how many.

    A run resumed from a checkpoint records again the steps after it, which the interrupted
    run may have written already. The file is replaced atomically; a missing file is left so.
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the truncated last line of a killed run
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and step < before_step:
            kept.append(line + "\n")
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text("".join(kept), encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return len(kept)


# ---------------------------------------------------------------------------------------------
# Several histories, from whatever the caller holds
# ---------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One run's records under one label, with the loss that names its colour."""

    label: str
    loss: str
    records: list[dict[str, Any]] = field(repr=False)


def _is_record(item: Any) -> bool:
    return isinstance(item, Mapping) and "step" in item and "gradient_ratio" in item


def _series_from_records(records: Sequence[Mapping[str, Any]], label: str | None) -> list[Series]:
    """Split records by their ``label`` field (one file may hold several runs)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    losses: dict[str, str] = {}
    for record in records:
        if not _is_record(record):
            raise ValueError(f"not an NCD record (needs 'step' and 'gradient_ratio'): {record!r}")
        key = label or str(record.get("label") or record.get("loss") or "run")
        groups.setdefault(key, []).append(dict(record))
        losses.setdefault(key, str(record.get("loss", key)))
    return [
        Series(key, losses[key], sorted(rs, key=lambda r: r["step"])) for key, rs in groups.items()
    ]


def as_series(histories: Any, label: str | None = None) -> list[Series]:
    """Normalise what the caller holds into labelled series.

    Accepted: a monitor or callback (anything with ``history`` and ``label``), a JSON-lines path,
    a list of records, a mapping ``label -> any of these``, or a list of any of these.
    """
    if isinstance(histories, (str, os.PathLike)):
        records = read_history(histories)
        if not records:
            raise ValueError(f"{histories}: no records")
        return _series_from_records(records, label)
    if hasattr(histories, "history") and hasattr(histories, "label"):
        records = histories.history
        loss = str(getattr(histories, "loss", histories.label))
        return [Series(label or str(histories.label), loss, [dict(r) for r in records])]
    if isinstance(histories, Mapping) and not _is_record(histories):
        series: list[Series] = []
        for key, value in histories.items():
            series.extend(as_series(value, label=str(key)))
        return series
    if isinstance(histories, Iterable) and not isinstance(histories, (bytes, Mapping)):
        items = list(histories)
        if items and all(_is_record(item) for item in items):
            return _series_from_records(items, label)
        series = []
        for item in items:
            series.extend(as_series(item))
        return series
    raise TypeError(
        "histories must be a monitor, a JSON-lines path, a list of records, a mapping "
        f"label -> history, or a list of those; got {type(histories).__name__}"
    )


# ---------------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossVerdict:
    """The verdict on one history: is its early gradient ratio below the threshold?"""

    label: str
    loss: str
    present: bool
    early_steps: tuple[int, int]
    early_records: int
    fraction_below: float
    median_ratio: float
    initial_ratio: float


@dataclass(frozen=True)
class NCDVerdict:
    """Whether negative class distraction is present, per history, and which losses removed it.

    present: True when any history shows NCD.
    per_loss: label -> ``LossVerdict``.
    removed_by: labels of rectified losses (anything but plain "lr" and "sr") that show no NCD
        where another history in the same comparison does.
    summary: the verdict in one paragraph, for logs and reports.
    """

    present: bool
    per_loss: dict[str, LossVerdict]
    removed_by: tuple[str, ...]
    threshold: float
    early_steps: int | None
    early_fraction: float | None
    summary: str


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _judge(
    series: Series,
    threshold: float,
    early_steps: int | None,
    early_fraction: float | None,
    min_records: int,
):
    records = [r for r in series.records if r.get("gradient_ratio") is not None]
    if not records:
        raise ValueError(f"history {series.label!r} has no records")
    first, last = records[0]["step"], records[-1]["step"]
    end = first + early_steps if early_fraction is None else first + early_fraction * (last - first)
    early = [r for r in records if r["step"] <= end]
    if len(early) < min_records:
        early = records[:min_records]
    ratios = [float(r["gradient_ratio"]) for r in early]
    below = sum(1 for value in ratios if value < threshold)
    fraction = below / len(ratios)
    return LossVerdict(
        label=series.label,
        loss=series.loss,
        present=fraction > 0.5,
        early_steps=(int(early[0]["step"]), int(early[-1]["step"])),
        early_records=len(early),
        fraction_below=fraction,
        median_ratio=_median(ratios),
        initial_ratio=ratios[0],
    )


def _check_verdict_options(
    threshold: Any, early_fraction: Any, early_steps: Any, min_early_records: Any
) -> None:
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if early_fraction is not None and (
        not isinstance(early_fraction, (int, float)) or not 0 < early_fraction <= 1
    ):
        raise ValueError(f"early_fraction must be in (0, 1] or None, got {early_fraction!r}")
    if isinstance(early_steps, bool) or not isinstance(early_steps, int) or early_steps < 0:
        raise ValueError(f"early_steps must be an int >= 0, got {early_steps!r}")
    if isinstance(min_early_records, bool) or not isinstance(min_early_records, int):
        raise TypeError(f"min_early_records must be an int, got {min_early_records!r}")
    if min_early_records < 1:
        raise ValueError(f"min_early_records must be >= 1, got {min_early_records}")


def _summary(
    present: list[LossVerdict],
    absent: list[LossVerdict],
    removed_by: tuple[str, ...],
    threshold: float,
) -> str:
    """The verdict in one paragraph: the distracted histories, the others, what removed it."""

    def describe(v: LossVerdict) -> str:
        return (
            f"{v.label} (ratio < {threshold:g} at {v.fraction_below:.0%} of {v.early_records} "
            f"early records, steps {v.early_steps[0]}-{v.early_steps[1]}; median "
            f"{v.median_ratio:.3g}, first {v.initial_ratio:.3g})"
        )

    parts = []
    if present:
        parts.append("NCD present in " + "; ".join(describe(v) for v in present) + ".")
    if absent:
        head = "NCD absent in " if present else "No NCD: absent in "
        parts.append(head + "; ".join(describe(v) for v in absent) + ".")
    if removed_by:
        parts.append("Removed by: " + ", ".join(removed_by) + ".")
    return " ".join(parts)


def ncd_verdict(
    history: Any,
    threshold: float = NCD_THRESHOLD,
    early_fraction: float | None = None,
    *,
    early_steps: int = EARLY_STEPS,
    min_early_records: int = 3,
) -> NCDVerdict:
    """Say whether negative class distraction is present, and which loss removed it.

    NCD is *present* in a history when the gradient ratio (positive / negative, summed
    |dL/dz|) is below ``threshold`` in more than half of the early records: those of the
    first ``early_steps`` optimiser steps after the first record (or, when ``early_fraction``
    is given, of that share of the recorded step range), at least ``min_early_records`` of
    them. Record every step at the start of training for a sharp verdict (``every=1``).
    Why the window is counted in steps, and ten of them:
    [`EARLY_STEPS`][frlr.ncd.EARLY_STEPS]; why the threshold is 0.05, from each loss's ratio
    at initialisation: [`NCD_THRESHOLD`][frlr.ncd.NCD_THRESHOLD].

    Args:
        history: a monitor, a JSON-lines path, a list of records, a mapping label -> any of
            these (to compare losses), or a list of them.
        threshold: the gradient ratio below which a step is distracted, in (0, 1].
        early_fraction: judge this share (0, 1] of the recorded step range instead of
            ``early_steps``.
        early_steps: the length of the judged window in optimiser steps (>= 0); default 10.
        min_early_records: the fewest records judged when the window holds fewer (>= 1);
            default 3.

    Returns:
        The ``NCDVerdict``, with ``present``, ``per_loss``, ``removed_by`` and ``summary``.

    Examples:
        A record needs ``step`` and ``gradient_ratio``; ``loss`` names the loss (the
        histories of a monitor, a Keras ``NCDCallback`` or a JSON-lines file have them all):

        >>> from frlr.ncd import ncd_verdict  # also frlr.torch.ncd_verdict
        >>> lr = [{"step": s, "loss": "lr", "gradient_ratio": 0.005 * (s + 1)} for s in range(20)]
        >>> ss_lr = [{"step": s, "loss": "ss-lr", "gradient_ratio": 0.17} for s in range(20)]
        >>> verdict = ncd_verdict({"LR": lr, "SS-LR": ss_lr})
        >>> verdict.present, verdict.removed_by
        (True, ('SS-LR',))
        >>> judged = verdict.per_loss["LR"]  # steps 0-10: 9 of the 11 ratios are below 0.05
        >>> judged.early_steps, round(judged.fraction_below, 2)
        ((0, 10), 0.82)
    """
    _check_verdict_options(threshold, early_fraction, early_steps, min_early_records)
    series = as_series(history)
    if not series:
        raise ValueError("history holds no series to judge")
    per_loss = {
        s.label: _judge(s, threshold, early_steps, early_fraction, min_early_records)
        for s in series
    }
    present = [v for v in per_loss.values() if v.present]
    absent = [v for v in per_loss.values() if not v.present]
    removed_by = tuple(v.label for v in absent if v.loss not in ("lr", "sr")) if present else ()
    return NCDVerdict(
        present=bool(present),
        per_loss=per_loss,
        removed_by=removed_by,
        threshold=float(threshold),
        early_steps=None if early_fraction is not None else early_steps,
        early_fraction=None if early_fraction is None else float(early_fraction),
        summary=_summary(present, absent, removed_by, threshold),
    )


# ---------------------------------------------------------------------------------------------
# Figure: the paper's Fig. 2, for several losses at once
# ---------------------------------------------------------------------------------------------

PANELS: tuple[tuple[str, str, str], ...] = (
    ("total", "(a) Overall loss", "loss (nats per sample)"),
    ("positive", "(b) Positive-class loss", "loss (nats per sample)"),
    ("negative", "(c) Negative-class loss", "loss (nats per sample)"),
    ("gradient_ratio", "(d) Gradient ratio, positive / negative", "ratio (dimensionless)"),
)


def _geometric_smooth(values, window: int):
    """Centred moving geometric mean (the right average on a log axis); NaN where none."""
    import numpy as np  # this module is plain Python until a figure is drawn

    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < 2:
        return values
    window = min(window, len(values))  # np.convolve(mode="same") returns the longer length
    logs = np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)
    finite = np.isfinite(logs)
    kernel = np.ones(window)
    sums = np.convolve(np.where(finite, logs, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.exp(sums / np.maximum(counts, 1)), np.nan)


def plot_ncd(
    histories: Any,
    path: str | os.PathLike | None = None,
    *,
    threshold: float | None = NCD_THRESHOLD,
    smooth: int = 1,
    title: str | None = None,
    xscale: str = "linear",
    figsize: tuple[float, float] = (7.0, 5.4),
    dpi: int = 200,
):
    """Draw the four panels of the paper's Fig. 2 for one or several runs; save when ``path``.

    (a) overall loss, (b) positive-class loss, (c) negative-class loss, (d) gradient ratio of
    positive to negative classes, all against the training iteration on a log y axis. Each loss
    has its colour from ``frlr.style.LOSS_COLORS`` (runs sharing a loss get different
    line styles). Values <= 0 cannot sit on a log axis and are left out: SR's negative-class
    loss is 0 by its definition (Eq. 4 has no negative term), which panel (c) states.

    Args:
        histories: as for [`ncd_verdict`][]: monitors, JSON-lines paths, record lists, or a
            mapping label -> one of those.
        path: where to save; the suffix picks the format (.png, .svg, .pdf). None: don't save.
        threshold: draw the verdict's threshold in panel (d); None leaves it out.
        smooth: window (in records) of a centred moving geometric mean; 1 plots raw values.
            With smoothing, the raw values are drawn faintly behind.
        title: a figure title.
        xscale: "linear" (as in the paper) or "symlog" (linear up to step 10, logarithmic
            after), which spreads out the first steps where NCD lives.
        figsize: the figure's (width, height) in inches; default (7, 5.4).
        dpi: the saved image's dots per inch; default 200.

    Returns:
        the matplotlib ``Figure`` (no pyplot state is touched).

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> runs = {name: frlr.NCDMonitor(name) for name in ("lr", "ss-lr")}
        >>> for step in range(3):
        ...     for monitor in runs.values():
        ...         _ = monitor.update(torch.zeros(8, 200), torch.arange(8), step)
        >>> figure = frlr.plot_ncd(runs, "ncd.png", dpi=50)  # writes ncd.png
        >>> len(figure.axes), figure.axes[3].get_title()
        (4, '(d) Gradient ratio, positive / negative')
    """
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be an int >= 1, got {smooth!r}")
    if xscale not in ("linear", "symlog"):
        raise ValueError(f"xscale must be 'linear' or 'symlog', got {xscale!r}")
    try:
        from matplotlib.figure import Figure  # plotting is optional: imported only to draw
    except ImportError as error:  # pragma: no cover
        raise ImportError('plot_ncd needs matplotlib: pip install "frlr[toolkit]"') from error

    series = as_series(histories)
    if not series:
        raise ValueError("histories holds no series to plot")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    zero_negative = _draw_series(axes, series, smooth)
    _format_panels(axes, series, xscale)
    _draw_ratio_references(axes[1, 1], threshold)
    if zero_negative:
        axes[1, 0].set_title(
            f"(c) Negative-class loss ({', '.join(zero_negative)}: 0 by definition, not drawn)",
            fontsize=9,
        )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        _save(fig, Path(path))
    return fig


def _draw_series(axes, series: list[Series], smooth: int) -> list[str]:
    """Each run's line in every panel (its loss's colour, a line style per run of the same
    loss); returns the names of the runs whose negative-class loss is 0 throughout (SR)."""
    import numpy as np  # this module is plain Python until a figure is drawn

    styles = ("-", "--", "-.", ":")
    seen: dict[str, int] = {}
    zero_negative = []
    for index, s in enumerate(series):
        count = seen.get(s.loss, 0)
        seen[s.loss] = count + 1
        color, style = loss_color(s.loss, index), styles[count % len(styles)]
        name = s.label if s.label != s.loss else loss_label(s.loss)
        steps = np.array([r["step"] for r in s.records], dtype=float)
        for ax, (key, _, _) in zip(axes.flat, PANELS, strict=True):
            values = np.array([float(r.get(key, math.nan)) for r in s.records], dtype=float)
            values[~(values > 0) | ~np.isfinite(values)] = np.nan
            if key == "negative" and np.all(np.isnan(values)):
                zero_negative.append(name)
                continue
            if smooth > 1:
                ax.plot(steps, values, color=color, linestyle=style, linewidth=0.6, alpha=0.25)
                values = _geometric_smooth(values, smooth)
            label = name if key == "total" else None
            ax.plot(steps, values, color=color, linestyle=style, linewidth=1.3, label=label)
    return zero_negative


def _format_panels(axes, series: list[Series], xscale: str) -> None:
    """Log y axes, the panels' titles and units, and the shared step axis."""
    for ax, (_, panel_title, ylabel) in zip(axes.flat, PANELS, strict=True):
        ax.set_yscale("log")
        ax.set_title(panel_title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
        plain_log_labels(ax)
    for ax in axes[1]:
        ax.set_xlabel("training iteration (optimiser steps)", fontsize=8)
    if xscale == "symlog":
        axes[0, 0].set_xscale("symlog", linthresh=10)  # shared by all four panels
        first = min(r["step"] for s in series for r in s.records)
        last = max(r["step"] for s in series for r in s.records)
        axes[0, 0].set_xlim(first, max(last, first + 1))


def _draw_ratio_references(ratio_ax, threshold: float | None) -> None:
    """Panel (d)'s reference lines: the balance SR keeps (1) and the verdict's threshold."""
    ratio_ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":", label="1 (balanced; SR)")
    if threshold is not None:
        ratio_ax.axhline(
            threshold,
            color="0.5",
            linewidth=0.8,
            linestyle="--",
            label=f"NCD threshold {threshold:g}",
        )
    ratio_ax.legend(fontsize=7, loc="best", frameon=False)


def _save(fig, path: Path) -> None:
    """Save ``fig`` in the format the suffix names, atomically (a partial file, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    fig.savefig(partial, format=path.suffix.lstrip(".") or "png")
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------
# A monitor's records: what the PyTorch monitor and the Keras callback share
# ---------------------------------------------------------------------------------------------


class NCDRecorder:
    """What an NCD monitor is apart from its framework: its options checked, at most
    ``capacity`` records kept in memory ([`HalvingHistory`][]) and every one written to
    ``path`` ([`JsonlWriter`][]), and the verdict and figure on them. ``frlr.torch``'s
    ``NCDMonitor`` and ``frlr.keras``'s ``NCDCallback`` are recorders, so both check, keep and
    write their records alike.

    Args:
        loss: the registry name of the monitored loss; the default label.
        every: record every ``every`` steps, a positive int.
        capacity: the most records kept in memory (>= 2).
        path: a JSON-lines file to write; None writes nothing.
        append: append to ``path`` instead of truncating it.
        label: the run's name in plots and verdicts, a str; None: the loss's name.
    """

    def __init__(
        self,
        loss: str,
        *,
        every: int,
        capacity: int,
        path: str | os.PathLike | None,
        append: bool,
        label: str | None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if label is not None and not isinstance(label, str):
            raise TypeError(f"label must be a str or None, got {type(label).__name__}")
        self.loss = loss
        self.every = every
        self.label = label or loss
        self.last: NCDStats | None = None
        self._history = HalvingHistory(capacity)
        self._writer = JsonlWriter(path, append) if path is not None else None

    @property
    def history(self) -> list[dict[str, Any]]:
        """The kept records (dicts: step, label and the ``NCDStats`` fields), oldest first."""
        return self._history.records

    @property
    def path(self) -> Path | None:
        """The JSON-lines file written, or None."""
        return None if self._writer is None else self._writer.path

    def verdict(self, **kwargs: Any) -> NCDVerdict:
        """[`ncd_verdict`][frlr.ncd.ncd_verdict] on this run's history."""
        return ncd_verdict(self, **kwargs)

    def plot(self, path: str | os.PathLike | None = None, **kwargs: Any):
        """[`plot_ncd`][frlr.ncd.plot_ncd] of this run alone; returns the figure."""
        return plot_ncd(self, path, **kwargs)

    def _record(self, step: int, measure: Callable[[], NCDStats]) -> NCDStats | None:
        """Record ``measure()`` as ``step`` when the record is kept anywhere (in the file or in
        memory); else count it as offered without measuring. Returns the statistics, or None."""
        if self._writer is None and not self._history.accepts_next():
            self._history.skip()
            return None
        stats = measure()
        record = {"step": step, "label": self.label, **stats.as_dict()}
        if self._writer is not None:
            self._writer.write(record)
        self._history.offer(record)
        self.last = stats
        return stats

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
