"""Boundary checks shared by the metrics: accept torch tensors or numpy arrays, name the culprit.

Every public metric converts its inputs here, so the error messages read the same everywhere
and no metric silently casts labels to floats or scores to integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` as a torch tensor (numpy arrays are shared, not copied), else ``TypeError``.

    Lists and tuples are accepted for convenience and converted by ``numpy.asarray``.
    """
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def as_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a numpy array (a tensor is detached and copied to the CPU), else TypeError."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def check_float_matrix(value: torch.Tensor, name: str) -> None:
    """A finite floating (rows, columns) matrix: scores or features."""
    if not value.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {value.dtype}")
    if value.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, columns), got shape {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_integer_vector(value: torch.Tensor, name: str, length: int | None = None) -> None:
    """A 1-D integer vector (labels, identities, cameras), optionally of a given length."""
    if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        raise ValueError(f"{name} must have an integer dtype, got {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(value.shape)}")
    if length is not None and value.shape[0] != length:
        raise ValueError(f"{name} has {value.shape[0]} entries, expected {length}")


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as a positive Python int; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_ranks(value: Any, name: str) -> tuple[int, ...]:
    """One rank or several (top-k's k, CMC's ranks) as a tuple of positive ints; an empty
    sequence is refused, since a metric of no rank is a mistake, not an empty result."""
    ranks = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not ranks:
        raise ValueError(f"{name} must name at least one rank, got an empty sequence")
    return tuple(check_positive_int(rank, name) for rank in ranks)
