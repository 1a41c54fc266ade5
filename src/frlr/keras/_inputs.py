"""Argument checks and input standardisation for ``frlr.keras``, at the boundary.

Shapes and dtypes are checked whenever they are known; values (index range, targets in
[0, 1], class weights finite and >= 0) only when the tensor is concrete: eager TensorFlow,
JAX outside ``jit``, eager PyTorch. Inside ``tf.function`` / ``jax.jit`` those values do not
exist yet, so only the shapes are checked.
Every error names the argument and the value.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from frlr.catalogue import check_hyperparameters, check_normalization
from frlr.keras._maths import IndexTarget

TARGETS = ("auto", "index", "multi_hot")
REFERENCE_REDUCTIONS = ("mean", "sum_over_batch_size")
HALF_DTYPES = ("float16", "bfloat16")


def check_options(
    *,
    from_logits: Any = True,
    target: Any = "auto",
    normalization: Any = "paper",
    beta: Any = None,
    m: Any = None,
    r: Any = None,
    alpha: Any = None,
) -> None:
    """Raise TypeError/ValueError for a bad hyper-parameter, naming it and its value."""
    if from_logits is not True:
        raise ValueError(
            f"from_logits={from_logits!r} is not supported: frlr losses take logits z and use "
            "-log p = softplus(-z), -log(1 - p) = softplus(z); probabilities saturate to 0 and 1 "
            "in float32 and lose the tails those forms keep. Drop the final sigmoid/softmax "
            "activation and pass logits (from_logits=True)."
        )
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    check_normalization(normalization)
    check_hyperparameters(beta=beta, m=m, r=r, alpha=alpha)


def check_reference_reduction(normalization: str, reduction: Any) -> None:
    if normalization == "reference" and reduction not in REFERENCE_REDUCTIONS:
        raise ValueError(
            "normalization='reference' pools over the whole batch into one number; reduction "
            f"must be one of {REFERENCE_REDUCTIONS}, got {reduction!r}"
        )


def is_concrete(x: Any) -> bool:
    """Whether ``x``'s values exist now (not traced or symbolic)."""
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly() and not tf.is_symbolic_tensor(x)
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if backend == "torch":
        import torch

        return not torch.compiler.is_compiling()
    return True


def concrete_values(x: Any) -> np.ndarray | None:
    """``x`` as a NumPy array when its values exist now, else None (traced or symbolic)."""
    if not is_concrete(x):
        return None
    return x if isinstance(x, np.ndarray) else np.asarray(ops.convert_to_numpy(x))


def weight_list(weight: Any) -> list[float] | None:
    """A per-class weight as a plain list (what a Loss keeps and serialises)."""
    if weight is None:
        return None
    values = np.asarray(weight if isinstance(weight, (list, tuple)) else concrete_values(weight))
    if values.ndim != 1:
        raise ValueError(
            f"weight must be a 1-D array of K per-class weights, got shape {values.shape}"
        )
    check_weight_values(values)
    return [float(v) for v in values]


def check_weight_values(values: np.ndarray) -> None:
    """A class weight scales a loss term, so it must be finite and >= 0: a negative weight
    rewards the loss for the wrong class, NaN/inf poison every sample. Only concrete values can
    be checked: a symbolic weight (inside ``tf.function``/``jax.jit``) passes unchecked, and a
    bad value there gives a negative or non-finite loss."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        index = int(np.argwhere(bad.reshape(-1))[0, 0])
        raise ValueError(
            f"weight must be finite and >= 0 for every class, got weight[{index}] = "
            f"{values.reshape(-1)[index]!r}"
        )


def _shape_str(shape: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


class Batch:
    """Logits flattened to (M, K) in the compute dtype, with index or multi-hot targets.

    ``z``: (M, K) float32 (float64 stays float64; float16/bfloat16 are computed in float32).
    ``y``: (M,) int32 class indices, or None. ``t``: (M, K) multi-hot/soft target, or None.
    ``weight``: (K,) per-class weight, or None.
    """

    def __init__(self, y_true: Any, y_pred: Any, *, target: str, weight: Any) -> None:
        y_pred = ops.convert_to_tensor(y_pred)
        pred_dtype = keras.backend.standardize_dtype(y_pred.dtype)
        if not pred_dtype.startswith(("float", "bfloat")):
            raise TypeError(f"y_pred must hold floating-point logits, got dtype {pred_dtype}")
        pred_shape = tuple(y_pred.shape)
        if len(pred_shape) < 2:
            raise ValueError(
                f"y_pred must have shape (N, K) or (N, ..., K) with classes last, got shape "
                f"{_shape_str(pred_shape)}"
            )
        num_classes = pred_shape[-1]
        if num_classes is None:
            raise ValueError("y_pred's last axis (the K classes) must have a static size")
        if num_classes < 2:
            raise ValueError(
                f"y_pred must have K >= 2 classes on its last axis, got K = {num_classes}"
            )
        self.dtype = "float64" if pred_dtype == "float64" else "float32"
        self.num_classes = int(num_classes)
        self.out_shape = None if len(pred_shape) == 2 else ops.shape(y_pred)[:-1]
        self.z = ops.reshape(ops.cast(y_pred, self.dtype), (-1, self.num_classes))

        y_true = ops.convert_to_tensor(y_true)
        true_dtype = keras.backend.standardize_dtype(y_true.dtype)
        true_shape = tuple(y_true.shape)
        lead = pred_shape[:-1]
        index_shapes = (lead, (*lead, 1))
        dense_shape = pred_shape
        if target == "auto":
            if len(true_shape) == len(pred_shape) and true_shape[-1] in (None, 1):
                last = true_shape[-1]
                target = "index" if last == 1 or "int" in true_dtype else "multi_hot"
            else:
                target = "multi_hot" if len(true_shape) == len(pred_shape) else "index"
        expected = index_shapes if target == "index" else (dense_shape,)
        if not any(_compatible(true_shape, shape) for shape in expected):
            wanted = " or ".join(_shape_str(s) for s in expected)
            kind = "class-index" if target == "index" else "multi-hot"
            raise ValueError(
                f"y_true ({kind} target) must have shape {wanted} for y_pred of shape "
                f"{_shape_str(pred_shape)}, got shape {_shape_str(true_shape)}"
            )
        self.index = target == "index"
        self.y = self.t = None
        if self.index:
            if true_dtype == "bool":
                raise TypeError("y_true of class indices must be integer or float, got dtype bool")
            self._check_indices(y_true)
            self.y = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        else:
            self._check_dense(y_true)
            self.t = ops.reshape(ops.cast(y_true, self.dtype), (-1, self.num_classes))
        self.weight = self._weight(weight)

    def _check_indices(self, y_true: Any) -> None:
        values = concrete_values(y_true)
        if values is None or values.size == 0:
            return
        bad = (values < 0) | (values >= self.num_classes) | (values != np.floor(values))
        if bad.any():
            raise ValueError(
                f"y_true holds class index {values[bad].flat[0].item()!r} outside "
                f"{{0, ..., {self.num_classes - 1}}} (K = {self.num_classes})"
            )

    def _check_dense(self, y_true: Any) -> None:
        if not is_concrete(y_true) or math.prod(y_true.shape) == 0:
            return
        # Two reductions where the target lives, no copy: this runs at every eager call
        # (torch), on (N, K) targets. NaN reaches min and max and fails both comparisons.
        dtype = keras.backend.standardize_dtype(y_true.dtype)
        wide = "float64" if dtype == "float64" else "float32"  # NumPy has no bfloat16
        low, high = (ops.convert_to_numpy(ops.cast(f(y_true), wide)) for f in (ops.min, ops.max))
        if low >= 0 and high <= 1:
            return
        values = concrete_values(y_true).astype(np.float64)
        bad = ~((values >= 0) & (values <= 1))
        if bad.any():
            raise ValueError(
                f"y_true values must lie in [0, 1], got {values[bad].flat[0].item()!r}"
            )

    def _weight(self, weight: Any) -> Any:
        if weight is None:
            return None
        weight = ops.convert_to_tensor(weight)
        if tuple(weight.shape) not in ((self.num_classes,), (None,)):
            raise ValueError(
                f"weight must have shape ({self.num_classes},), one per class, got shape "
                f"{_shape_str(tuple(weight.shape))}"
            )
        values = concrete_values(weight)
        if values is not None:
            check_weight_values(values)
        return ops.cast(weight, self.dtype)

    def target(self) -> Any:
        """The multi-hot/soft target, or the class indices as an ``IndexTarget`` (no one-hot)."""
        if self.t is not None:
            return self.t
        return IndexTarget(self.y, self.num_classes)

    def dense_target(self) -> Any:
        """(M, K) targets: the multi-hot/soft target, or the one-hot of the indices."""
        if self.t is not None:
            return self.t
        return ops.one_hot(self.y, self.num_classes, dtype=self.dtype)

    def per_sample(self, rows: Any) -> Any:
        """(M,) row losses back to y_pred's leading shape (N, ...)."""
        return rows if self.out_shape is None else ops.reshape(rows, self.out_shape)


def _compatible(shape: tuple, expected: tuple) -> bool:
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected, strict=True)
    )
