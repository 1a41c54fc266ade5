"""Negative class distraction (NCD) diagnostics for Keras 3 ``model.fit``, on any backend.

[`NCDCallback`][] is the Keras twin of ``frlr.torch.diagnostics.NCDMonitor``: every
``every`` optimiser steps it runs the model on a fixed probe batch (``model(x, training=False)``),
computes the paper's Fig. 2 quantities with [`ncd_stats_numpy`][] and records them in the same
bounded history and JSON-lines format (``frlr.ncd.NCDRecorder``), so ``frlr.ncd.ncd_verdict``
and ``frlr.ncd.plot_ncd`` work on it unchanged. The statistics are computed in float64
numpy from the logits, analytically (no gradient tape), with the loss maths of
``frlr.keras._maths`` (the functions the losses call, here on NumPy arrays, with each term's
derivative written beside it) and the definitions of the torch ``ncd_stats`` (its module
docstring has the table): positive and negative parts of the loss,
summed |dL/dz| over positive and negative logits and their ratio, and the probabilities.

Keras layouts: logits (N, ..., K) with classes last; targets are class indices (N, ...) or
(N, ..., 1), or a {0, 1} multi-hot tensor of the logits' shape, as for ``frlr.keras`` losses.
The batch loss is the Keras one ("sum_over_batch_size", the mean over samples), which is
torch's "mean" for every loss but SR with a class weight (torch divides by sum_i w[y_i]).
"""

from __future__ import annotations

import math
import os
from typing import Any

import keras
import numpy as np

from frlr.catalogue import (
    LOSS_HYPERPARAMETERS,
    LOSS_NAMES,
    canonical_loss_name,
    check_option_names,
)
from frlr.keras import _maths
from frlr.keras._inputs import check_options, check_weight_values
from frlr.keras._maths import NP
from frlr.ncd import NCDRecorder, NCDStats, gradient_ratio

__all__ = ["NCDCallback", "ncd_stats_numpy"]

_OPTIONS = {
    name: {
        "weight",
        *LOSS_HYPERPARAMETERS[name],
        *(("alpha",) if LOSS_HYPERPARAMETERS[name] else ()),
        *(("normalization",) if name.endswith("lr") else ()),  # the LR family
    }
    for name in LOSS_NAMES
}
"""The options each loss's statistics take: its hyper-parameters (from the catalogue), alpha
with beta, the class weight, and the LR family's normalization."""


def _check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    check_option_names(f"loss {name!r}", options, _OPTIONS[name])
    check_options(
        normalization=options.get("normalization", "paper"),
        **{key: options.get(key) for key in ("beta", "m", "r", "alpha")},
    )
    if options.get("weight") is not None:
        check_weight_values(np.asarray(options["weight"], np.float64))
    return options


def _flatten(logits: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, ..., K) logits and index / multi-hot targets -> float64 (M, K) logits and targets."""
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        raise TypeError(f"logits must be floating point, got dtype {z.dtype}")
    if z.ndim < 2 or z.shape[-1] < 2:
        raise ValueError(f"logits must be (N, ..., K) with K >= 2, got shape {z.shape}")
    num_classes = z.shape[-1]
    z = z.reshape(-1, num_classes).astype(np.float64)
    y = np.asarray(target)
    if np.issubdtype(y.dtype, np.integer):
        if y.shape == (*np.asarray(logits).shape[:-1], 1):
            y = y[..., 0]
        if y.shape != np.asarray(logits).shape[:-1]:
            raise ValueError(
                f"class-index target must have shape {np.asarray(logits).shape[:-1]}, got {y.shape}"
            )
        y = y.reshape(-1)
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"target holds a class index outside [0, {num_classes})")
        t = np.zeros_like(z)
        t[np.arange(len(y)), y] = 1.0
        return z, t
    if y.dtype == bool or np.issubdtype(y.dtype, np.floating):
        if y.shape != np.asarray(logits).shape:
            raise ValueError(f"a multi-hot target must have the logits' shape, got {y.shape}")
        t = y.reshape(-1, num_classes).astype(np.float64)
        if np.any((t != 0) & (t != 1)):
            raise ValueError("target must be multi-hot with values in {0, 1}")
        return z, t
    raise TypeError(f"target must hold class indices or a multi-hot array, got dtype {y.dtype}")


def ncd_stats_numpy(logits: Any, target: Any, loss: Any = "ss-lr", **options: Any) -> NCDStats:
    """The NCD statistics of one batch in float64 numpy: [`ncd_stats`][frlr.torch.ncd_stats]
    for Keras.

    Args:
        logits: (N, ..., K) logits, classes last (any array: numpy, or a backend tensor
            converted with ``keras.ops.convert_to_numpy``).
        target: class indices (N, ...) / (N, ..., 1) or a {0, 1} multi-hot array of the logits'
            shape (not for "hs-sr").
        loss: "sr", "lr", "hs-lr", "ss-lr" or "hs-sr", or an ``frlr.keras`` loss object,
            whose options are then used.
        **options: the loss's options as for [`get_loss`][frlr.keras.get_loss]: weight (K,),
            normalization, beta, m, r, alpha (defaults beta = 10, m = 25, r = 2, as in the
            paper).

    Returns:
        The batch's ``NCDStats``, the parts of Keras's "sum_over_batch_size" loss.

    Examples:
        At initialisation (logits 0) LR's positive part is log 2 against 199 log 2 for the
        negatives of K = 200, and the gradient ratio is 1 / 199, as ``frlr.torch`` finds:

        >>> import numpy as np
        >>> from frlr.keras import ncd_stats_numpy
        >>> stats = ncd_stats_numpy(np.zeros((4, 200)), np.arange(4), "lr")
        >>> round(stats.positive, 4), round(stats.negative, 4), round(stats.gradient_ratio, 4)
        (0.6931, 137.9363, 0.005)
        >>> round(ncd_stats_numpy(np.zeros((4, 200)), np.arange(4), "ss-lr").gradient_ratio, 4)
        0.1676
    """
    name, o = _resolve_loss(loss, options)
    z, t = _flatten(logits, target)
    rows, num_classes = z.shape
    if name == "hs-sr" and np.any(t.sum(1) != 1):
        raise ValueError("hs-sr takes class-index (single-label) targets only")
    w = None if o.get("weight") is None else np.asarray(o["weight"], np.float64)
    if w is not None and w.shape != (num_classes,):
        raise ValueError(f"weight must have shape ({num_classes},), got {w.shape}")
    reference = o.get("normalization", "paper") == "reference"
    terms = _terms(name, z, t, w, o, reference)
    if isinstance(terms, _maths.Terms):
        positive_terms, negative_terms = terms.parts(NP, z)
        grad = terms.gradient(NP, z)
        probs = NP.sigmoid(z)
    else:  # softmax: the loss at a class counts as positive, its selected-negative part not
        positive_terms, negative_terms = terms.parts(NP, z)
        if negative_terms is None:
            negative_terms = np.zeros_like(z)
        grad = terms.gradient(z)
        probs = np.exp(NP.log_softmax(z, axis=1))
    scale = 1.0 if reference else 1.0 / max(rows, 1)  # the batch-pooled number; Keras's mean
    pos = t > 0
    abs_grad = scale * np.abs(grad)
    grad_positive = float(abs_grad[pos].sum())
    grad_negative = float(abs_grad[~pos].sum())
    positive = scale * float(positive_terms.sum())
    negative = scale * float(negative_terms.sum())
    return NCDStats(
        loss=name,
        num_classes=num_classes,
        num_samples=rows,
        total=positive + negative,
        positive=positive,
        negative=negative,
        grad_positive=grad_positive,
        grad_negative=grad_negative,
        gradient_ratio=gradient_ratio(grad_positive, grad_negative),
        prob_positive=float(probs[pos].mean()) if pos.any() else math.nan,
        prob_negative_mean=float(probs[~pos].mean()) if (~pos).any() else math.nan,
        prob_negative_max=float(probs[~pos].max()) if (~pos).any() else math.nan,
    )


def _terms(
    name: str,
    z: np.ndarray,
    t: np.ndarray,
    w: np.ndarray | None,
    o: dict[str, Any],
    reference: bool,
) -> Any:
    """The loss's terms on the batch, from the maths the ``frlr.keras`` losses call."""
    hyper = {"beta": o.get("beta", 10.0), "alpha": o.get("alpha")}
    m, r = o.get("m", 25.0), o.get("r", 2.0)
    index = False  # |N_i| from the target itself: the same numbers as the index shortcut
    if reference:
        return _maths.reference_terms(NP, name, z, t, w, m=m, r=r, **hyper)
    if name == "lr":
        return _maths.lr_terms(NP, t, w)
    if name == "ss-lr":
        return _maths.ss_lr_terms(NP, z, t, w, r=r, index=index, **hyper)
    if name == "hs-lr":
        return _maths.hs_lr_terms(NP, z, t, w, m=m, index=index, **hyper)
    if name == "sr":
        return _maths.sr_terms(t, w)
    return _maths.hs_sr_terms(NP, z, t, w, m=m, **hyper)


def _resolve_loss(loss: Any, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A loss name, or an ``frlr.keras`` loss object whose options are then used."""
    if isinstance(loss, str):
        name = canonical_loss_name(loss)
        if name is None:
            raise ValueError(f"loss must be one of {', '.join(_OPTIONS)}, got {loss!r}")
        return name, _check_options(name, dict(options))
    from frlr.keras.losses import LOSSES  # the loss classes, only when an object is passed

    names = [key for key, cls in LOSSES.items() if type(loss) is cls]
    if not names:
        raise TypeError(f"loss must be a name or an frlr.keras loss, got {type(loss).__name__}")
    merged: dict[str, Any] = dict(loss.hyper)
    if loss.weight is not None:
        merged["weight"] = loss.weight
    if loss.normalization is not None:
        merged["normalization"] = loss.normalization
    merged.update(options)
    return names[0], _check_options(names[0], merged)


class NCDCallback(keras.callbacks.Callback, NCDRecorder):
    """Record the NCD statistics of a fixed probe batch during ``model.fit``.

    At the start of training (step 0) and after every ``every``-th optimiser step, the model
    runs on ``(x, y)`` in inference mode and [`ncd_stats_numpy`][] records the paper's Fig. 2
    quantities. Records go to ``history`` (at most ``capacity``, evenly spaced over the run)
    and, one JSON line each, to ``path``: the format of ``frlr.torch``'s ``NCDMonitor``, so
    ``verdict`` and ``plot`` (or ``frlr.ncd``) read both. Inference mode keeps batch norm and
    dropout out of the measurement, so the probe is comparable across steps:

    ```python
    probe = NCDCallback(x_train[:256], y_train[:256], "ss-lr", every=20, path="ncd.jsonl")
    model.fit(x_train, y_train, callbacks=[probe])
    print(probe.verdict().summary)
    ```

    Args:
        x: the probe batch's inputs, what ``model(x)`` takes; kept for the whole run.
        y: the probe batch's targets: class indices (N, ...) / (N, ..., 1) or a {0, 1}
            multi-hot array of the logits' shape.
        loss: a loss name or an ``frlr.keras`` loss object (its options are used); default
            "ss-lr".
        every: record every ``every`` optimiser steps (counted across epochs); default 50.
        capacity: the most records kept in memory (>= 2).
        path: a JSON-lines file to write; None writes nothing.
        append: append to ``path`` instead of truncating it.
        label: the run's name in plots and verdicts (default: the loss name).
        **loss_options: the loss's options (beta, m, r, alpha, weight, normalization).

    Examples:
        ``model.fit`` calls the hooks; here the first record is taken by hand, on a model
        whose logits start at 0 (so LR's gradient ratio is 1 / (K - 1) at K = 200):

        >>> import keras
        >>> import numpy as np
        >>> import frlr.keras as frlr
        >>> head = keras.layers.Dense(200, kernel_initializer="zeros")  # bias 0 too
        >>> model = keras.Sequential([keras.Input((3,)), head])
        >>> probe = frlr.NCDCallback(np.ones((4, 3)), np.arange(4), "lr", every=10)
        >>> probe.set_model(model)
        >>> probe.on_train_begin()  # step 0, then every 10 optimiser steps
        >>> probe.history[0]["step"], round(probe.last.gradient_ratio, 4)
        (0, 0.005)
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        loss: Any = "ss-lr",
        *,
        every: int = 50,
        capacity: int = 2048,
        path: str | os.PathLike | None = None,
        append: bool = False,
        label: str | None = None,
        **loss_options: Any,
    ) -> None:
        keras.callbacks.Callback.__init__(self)
        name, self.options = _resolve_loss(loss, loss_options)
        NCDRecorder.__init__(
            self, name, every=every, capacity=capacity, path=path, append=append, label=label
        )
        self.x, self.y = x, np.asarray(y)
        self.step = 0

    def record(self) -> NCDStats | None:
        """Measure the probe batch now, as step ``self.step`` (None if not kept anywhere)."""

        def measure() -> NCDStats:
            logits = keras.ops.convert_to_numpy(self.model(self.x, training=False))
            return ncd_stats_numpy(logits, self.y, self.loss, **self.options)

        return self._record(self.step, measure)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.step == 0 and self._history.offered == 0:
            self.record()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self.record()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close_file()
        if self._writer is not None:
            self._writer.append = True  # a second fit() continues the file
