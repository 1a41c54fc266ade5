"""Losses that never hold the logits: the classifier fused with the loss in class chunks.

For features X (N, d) and a classifier W (K, d), b (K,) with K from 10^5 to 10^7 classes, the
logits Z = X W^T + b are N x K -- 4 GB at N = 1,024, K = 10^6 -- and set the memory, not the
network. These losses compute Z one chunk of C classes at a time and never allocate N x K:

    L = sum_i w_i sum_c rows_i(Z[:, c])           (c: chunks of classes, w_i the reduction)

LR (Eq. 3) and SS-LR (Eq. 6) are sums over classes of terms that depend on one logit and on
per-row constants (1/|P_i|, beta/|N_i|), so the chunked sum is exact and each logit's gradient
G_ij = w_i d rows_i / d z_ij needs only z_ij. The gradient is consumed as soon as it exists:

    dW_c = G_c^T X,    db_c = 1^T G_c,    dX += G_c W_c          (one chunk at a time)

in the forward pass itself when the loss is reduced to a scalar, so the backward only scales
dX, dW, db by the incoming gradient: three matrix products per chunk, no recomputation. With
``reduction="none"`` the per-row weights w_i arrive only in the backward, which then recomputes
each chunk's logits once. HS-LR (Eq. 5) first finds each row's exact top-n threshold by
counting over the chunks (:mod:`frlr.torch._streamed_selection`); SR, the softmax baseline,
first takes an online log-sum-exp over the chunks.

Every sigmoid loss's maths is the per-block function of :mod:`frlr.torch._kernels` (the same
one the materialised losses call); this module only chunks, reduces and communicates.

Memory: beyond the gradients of W and X (the unavoidable floor), a few (N, C) float32 buffers
and (N, d) float32 accumulators. ``chunk_size=None`` sizes C so that one (N, C) float32 buffer
is ``CHUNK_BYTES`` (8 MiB): small enough to stay in the allocator's reuse range and in cache.

Class-parallel: with ``process_group`` each rank holds the classes [class_offset, class_offset +
K_r) of ``num_classes`` and passes its own local batch; see :mod:`frlr.torch.distributed`.

Soft targets (mixup, label smoothing) stay sparse: class lists with ``target_weights`` and a
``label_smoothing`` eps give t = (1 - eps) sparse + eps/K. The per-row constants (sum_k t_k,
the negative mass M, HS-LR's n) follow in closed form from the lists and eps, and each chunk
builds its own (N, C) target block for the same block functions, which take soft blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from frlr.catalogue import (
    HYPERPARAMETERS,
    LOSS_HYPERPARAMETERS,
    canonical_loss_name,
    check_hyperparameters,
    num_hard_negatives,
)
from frlr.torch import _kernels as kernels
from frlr.torch import _streamed_selection as selection
from frlr.torch import fused
from frlr.torch.distributed import ClassShards, collectives_ready

Reduction = Literal["mean", "sum", "none"]

_REDUCTIONS = ("mean", "sum", "none")
CHUNK_BYTES = 8 << 20
"""The memory budget of one (N, chunk) buffer when ``chunk_size`` is None."""


def default_chunk_size(num_rows: int, num_classes: int, itemsize: int = 4) -> int:
    """Classes per chunk: one (num_rows, chunk) buffer of ``CHUNK_BYTES``, a multiple of 64."""
    chunk = CHUNK_BYTES // (itemsize * max(num_rows, 1))
    if chunk >= 64:
        chunk -= chunk % 64
    return max(1, min(num_classes, chunk))


# ---------------------------------------------------------------------------------------------
# Input checks and the global batch
# ---------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_tensors(features: object, weight: object, bias: object) -> None:
    for name, value in (("features", features), ("weight", weight)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if value.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(value.shape)}")
    if features.shape[1] != weight.shape[1]:  # type: ignore[union-attr]
        raise ValueError(
            f"weight must have shape (K, d) with d = features.shape[1] = {features.shape[1]}, "  # type: ignore[union-attr]
            f"got weight of shape {tuple(weight.shape)}"  # type: ignore[union-attr]
        )
    if weight.shape[0] < 1:  # type: ignore[union-attr]
        raise ValueError(f"weight must hold at least one class, got shape {tuple(weight.shape)}")  # type: ignore[union-attr]
    if bias is not None:
        if not isinstance(bias, Tensor) or not bias.is_floating_point():
            raise TypeError(f"bias must be a floating-point tensor or None, got {bias!r:.60}")
        if bias.shape != weight.shape[:1]:  # type: ignore[union-attr]
            raise ValueError(
                f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"  # type: ignore[union-attr]
            )
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and value.device != features.device:  # type: ignore[union-attr]
            raise ValueError(
                f"{name} is on {value.device} and features on {features.device}; put "  # type: ignore[union-attr]
                "features, weight and bias on one device"
            )


def compute_dtype(features: Tensor, weight: Tensor, bias: Tensor | None) -> torch.dtype:
    """float64 when any of the three is float64 (its precision is kept, as torch's type
    promotion keeps it), float32 otherwise: half-precision inputs accumulate in float32."""
    wide = any(t is not None and t.dtype == torch.float64 for t in (features, weight, bias))
    return torch.float64 if wide else torch.float32


def _local_targets(
    target: object,
    num_rows: int,
    num_classes: int,
    ignore_index: int,
    single_label_only: bool,
    weighted: bool = False,
) -> tuple[Tensor, Tensor, bool]:
    """(positives (N, P) int64 with -1 for none, counted (N,) bool, multi_label) of one rank.
    ``weighted``: ``target_weights`` come with the lists, which may then repeat a class."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.dtype in (torch.bool, torch.complex64):
        raise TypeError(
            f"target must be int64 class indices (N,) or positive lists (N, P), got dtype "
            f"{target.dtype}; a dense multi-hot target would itself be N x K"
        )
    if target.dim() not in (1, 2) or target.shape[0] != num_rows:
        raise ValueError(
            f"target must have shape ({num_rows},) or ({num_rows}, P) for features of "
            f"{num_rows} rows, got {tuple(target.shape)}"
        )
    multi_label = target.dim() == 2
    if weighted and not multi_label:
        raise ValueError(
            "target_weights pair with positive lists (N, P); index targets (N,) are one class "
            "per row with weight 1 (soften them with label_smoothing)"
        )
    if multi_label and single_label_only and not weighted:
        raise ValueError(
            "linear_sr_loss takes class indices (N,): softmax is single-label, got a target of "
            f"shape {tuple(target.shape)}"
        )
    positives = target.long() if multi_label else target.long().unsqueeze(1)
    listed = positives != ignore_index
    bad = listed & ((positives < 0) | (positives >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"target holds class {positives[bad][0].item()} outside [0, num_classes="
            f"{num_classes}) (ignore_index={ignore_index})"
        )
    positives = torch.where(listed, positives, -1)
    if multi_label and positives.shape[1] > 1 and not weighted:
        ordered = positives.sort(1).values
        twice = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
        if bool(twice.any()):
            row = int(twice.any(1).nonzero()[0])
            raise ValueError(
                f"target row {row} lists class {ordered[row, 1:][twice[row]][0].item()} twice; "
                "positive lists hold distinct classes"
            )
    counted = torch.ones_like(listed[:, 0]) if multi_label else listed[:, 0]
    return positives, counted, multi_label


def _check_smoothing(label_smoothing: object) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(f"label_smoothing must be a real number, got {label_smoothing!r}")
    if not 0 <= label_smoothing < 1:  # NaN fails too
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def _local_weights(
    target_weights: object, target: Tensor, positives: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(classes (N, P), weights (N, P)) of one rank: each row's classes distinct (-1 padding,
    weight 0), a class listed twice carrying the sum of its weights.

    The sum must stay <= 1 (a target is a probability per class); a sum of several weights
    within float round-off of 1 counts as exactly 1, as lam + (1 - lam) of a mixup pair whose
    two labels agree is meant to (the dense mix lerp(e_y, e_y, lam) is e_y exactly)."""
    if not isinstance(target_weights, Tensor):
        raise TypeError(
            f"target_weights must be a torch.Tensor or None, got {type(target_weights).__name__}"
        )
    if not target_weights.is_floating_point():
        raise TypeError(f"target_weights must be a float tensor, got dtype {target_weights.dtype}")
    if target_weights.shape != target.shape:
        raise ValueError(
            f"target_weights must have the shape of target {tuple(target.shape)}, got "
            f"{tuple(target_weights.shape)}"
        )
    listed = positives >= 0
    weights = target_weights.detach().to(device=positives.device, dtype=dtype)
    bad = listed & ~((weights >= 0) & (weights <= 1))  # NaN included
    if bool(bad.any()):
        raise ValueError(f"target_weights must lie in [0, 1], got {weights[bad][0].item()}")
    weights = torch.where(listed, weights, 0.0)
    if positives.shape[1] < 2:
        return positives, weights
    classes, order = positives.sort(1)
    weights = weights.gather(1, order)
    starts = torch.ones_like(listed)
    starts[:, 1:] = classes[:, 1:] != classes[:, :-1]
    run = starts.long().cumsum(1) - 1  # each entry's place among the row's distinct classes
    summed = torch.zeros_like(weights).scatter_add_(1, run, weights)
    repeats = torch.zeros_like(run).scatter_add_(1, run, torch.ones_like(run))
    merged = torch.full_like(positives, -1).scatter_(1, run, classes)
    summed = torch.where(merged >= 0, summed, 0.0)
    rounding = max(torch.finfo(target_weights.dtype).eps, torch.finfo(dtype).eps)
    slack = positives.shape[1] * rounding  # of P weights, rounded to the compute dtype
    if bool((summed > 1 + slack).any()):
        row, place = (summed > 1 + slack).nonzero()[0].tolist()
        raise ValueError(
            f"target_weights of class {merged[row, place].item()} in target row {row} sum to "
            f"{summed[row, place].item()} > 1; a class listed more than once carries the sum "
            "of its weights, which must stay <= 1"
        )
    rounded = (repeats > 1) & ((summed - 1).abs() <= slack)
    return merged, torch.where(rounded, 1.0, summed.clamp(max=1.0))


def _fields(grads: _Grads) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    return grads.features, grads.weight, grads.bias


@dataclass
class _Grads:
    """The gradients being built, in the compute dtype for features, the parameters' for W, b."""

    features: Tensor | None
    weight: Tensor | None
    bias: Tensor | None


_EXCHANGED = 7
"""Fields of a rank's row in the class-parallel exchange: class_offset, K_r, num_classes (the
layout :meth:`ClassShards.agree` checks), local rows, positive-list width, multi_label,
weighted."""


class _Problem:
    """One call's inputs, checked, as the global batch against this rank's classes.

    ``make_loss`` builds the loss (checking its hyper-parameters) among the local checks: with
    a process group, a rank whose checks raise still joins the one exchange every rank makes
    first, so every rank raises instead of the others waiting in a collective."""

    def __init__(
        self,
        make_loss: Callable[[], _ChunkedLoss],
        features: Tensor,
        weight: Tensor,
        target: Tensor,
        bias: Tensor | None,
        reduction: str,
        ignore_index: int,
        chunk_size: int | None,
        process_group: object,
        class_offset: int,
        num_classes: int | None,
        target_weights: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.shards: ClassShards | None = None
        local: tuple[Tensor, Tensor, Tensor | None] | Exception
        try:
            self.loss = make_loss()
            self._check_options(
                features, weight, bias, reduction, ignore_index, chunk_size, process_group,
                class_offset, num_classes, label_smoothing,
            )  # fmt: skip
            local = self._local_batch(target, features.shape[0], ignore_index, target_weights)
        except Exception as error:  # told to every rank by _agree: none may wait for this one
            if process_group is None or not collectives_ready():
                raise  # no collective to join: as without a process group
            local = error
        if process_group is not None:
            self.shards = ClassShards(process_group)
            local = self._agree(features, local)
        assert not isinstance(local, Exception)  # _agree raised it
        positives, counted, weights = local
        x = features.detach().to(self.dtype)
        self.local_rows = features.shape[0]
        if self.shards is None:
            self.x, self.positives, self.counted = x.contiguous(), positives, counted
            self.weights = weights
            self.block_rows = features.shape[0]
        else:
            self._gather(x, positives, counted, weights)
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach().to(self.dtype)
        self.bias_dtype = None if bias is None else bias.dtype
        rows = self.x.shape[0]
        self.chunk = chunk_size or default_chunk_size(rows, self.local_classes)
        self.count = self.counted.sum()
        if reduction == "mean":
            self.row_weight = self.counted.to(self.dtype) / self.count.clamp(min=1)
        else:
            self.row_weight = self.counted.to(self.dtype)
        self._row_masses()

    def _check_options(
        self, features: Tensor, weight: Tensor, bias: Tensor | None, reduction: str,
        ignore_index: int, chunk_size: int | None, process_group: object, class_offset: int,
        num_classes: int | None, label_smoothing: float,
    ) -> None:  # fmt: skip
        """The checks of everything but the target this rank can make alone."""
        _check_tensors(features, weight, bias)
        self.smoothing = _check_smoothing(label_smoothing)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        _check_int("ignore_index", ignore_index, -(2**62))
        if chunk_size is not None:
            _check_int("chunk_size", chunk_size, 1)
        _check_int("class_offset", class_offset, 0)
        local_classes = weight.shape[0]
        if process_group is None:
            if class_offset != 0:
                raise ValueError(
                    f"class_offset applies to a class-parallel classifier (process_group); "
                    f"got class_offset={class_offset} without one"
                )
            if num_classes is not None and num_classes != local_classes:
                raise ValueError(
                    f"num_classes={num_classes} differs from weight.shape[0]={local_classes} "
                    "without a process_group"
                )
            num_classes = local_classes
        elif num_classes is None:
            raise ValueError("num_classes is required with a process_group (all ranks' classes)")
        _check_int("num_classes", num_classes, 2)
        if class_offset + local_classes > num_classes:
            raise ValueError(
                f"class_offset + weight.shape[0] = {class_offset + local_classes} exceeds "
                f"num_classes = {num_classes}"
            )
        self.reduction = reduction
        self.num_classes = num_classes
        self.class_offset = class_offset
        self.local_classes = local_classes
        self.dtype = compute_dtype(features, weight, bias)
        self.device = features.device  # weight and bias checked on it; the targets next

    def _local_batch(
        self, target: Tensor, rows: int, ignore_index: int, target_weights: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(positives, counted, weights) of this rank's rows, checked."""
        weighted = target_weights is not None
        single_label_only = isinstance(self.loss, _SR)
        for name, value in (("target", target), ("target_weights", target_weights)):
            if isinstance(value, Tensor) and value.device != self.device:
                raise ValueError(
                    f"{name} is on {value.device} and features on {self.device}; put "
                    "the targets on the features' device"
                )
        positives, counted, self.multi_label = _local_targets(
            target, rows, self.num_classes, ignore_index, single_label_only, weighted
        )
        weights = None
        if weighted:
            positives, weights = _local_weights(target_weights, target, positives, self.dtype)
        return positives, counted, weights

    def _agree(
        self, features: Tensor, local: tuple[Tensor, Tensor, Tensor | None] | Exception
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Class-parallel: this rank's layout, batch shape and target kind against every
        rank's, in the one exchange of :meth:`ClassShards.agree` (which raises on every rank
        when any rank's ``local`` checks failed); ``local`` back once all agree."""
        shards = self.shards
        assert shards is not None
        failure = local if isinstance(local, Exception) else None
        fields = [-1] * _EXCHANGED
        if not isinstance(local, Exception):
            positives, _, weights = local
            fields = [
                self.class_offset, self.local_classes, self.num_classes, features.shape[0],
                positives.shape[1], int(self.multi_label), int(weights is not None),
            ]  # fmt: skip
        every = shards.agree(fields, shards.device_for(features), failure)
        if len({tuple(row[5:]) for row in every}) > 1:
            raise ValueError(
                "target must be class indices (N,) on every rank or positive lists (N, P) on "
                "every rank, with target_weights on every rank or on none, not a mix"
            )
        self.rows_per_rank = [row[3] for row in every]
        self.width = max(row[4] for row in every)
        return local

    def _row_masses(self) -> None:
        """Per-row constants of the target t = (1 - eps) sparse + eps/K, in closed form:
        ``positive_mass`` sum_k t_k, ``certain`` the classes with t_k = 1 (HS-LR never selects
        them; only eps = 0 with a weight of 1 makes one) as lists, -1 elsewhere, and
        ``num_certain`` their count. Without weights and eps these are today's |P_i| and P_i."""
        self.soft = self.weights is not None or self.smoothing > 0
        listed = (self.positives >= 0).sum(1).to(self.dtype)
        mass = listed if self.weights is None else self.weights.sum(1)
        if self.smoothing:
            mass = mass * (1.0 - self.smoothing) + self.smoothing
            self.certain = torch.full_like(self.positives, -1)
        elif self.weights is None:
            self.certain = self.positives
        else:
            self.certain = torch.where(self.weights == 1, self.positives, -1)
        self.positive_mass = mass
        self.num_certain = (self.certain >= 0).sum(1).to(self.dtype)

    def _gather(
        self, x: Tensor, positives: Tensor, counted: Tensor, weights: Tensor | None
    ) -> None:
        """The global batch, each rank's block padded to the largest (padding rows don't count)."""
        shards = self.shards
        assert shards is not None
        rows, width = self.rows_per_rank, self.width
        self.block_rows = max(rows)
        padded = positives.new_full((x.shape[0], width), -1)
        padded[:, : positives.shape[1]] = positives
        self.x = shards.all_gather_rows(x, rows)
        self.positives = shards.all_gather_rows(padded + 1, rows) - 1  # padding rows -> -1
        self.counted = shards.all_gather_rows(counted, rows)
        self.weights = None
        if weights is not None:  # the weights travel with their classes (padding: weight 0)
            padded_weights = weights.new_zeros((x.shape[0], width))
            padded_weights[:, : weights.shape[1]] = weights
            self.weights = shards.all_gather_rows(padded_weights, rows)

    # -- chunks --------------------------------------------------------------------------------

    def chunks(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.local_classes, self.chunk):
            yield start, min(start + self.chunk, self.local_classes)

    def classifier(self, start: int, stop: int) -> Tensor:
        w = self.weight[start:stop]
        return w if w.dtype == self.dtype else w.to(self.dtype)

    def logits(self, start: int, stop: int, w: Tensor, x: Tensor | None = None) -> Tensor:
        """z = X W_c^T + b_c for classes [start, stop) of this rank (of ``x``: some rows)."""
        x = self.x if x is None else x
        if self.bias is None:
            return x @ w.t()
        return torch.addmm(self.bias[start:stop], x, w.t())

    def listed_in(self, lists: Tensor, start: int, stop: int, rows: Tensor | None = None):
        """(row, place in the list, column) of the listed classes among [start, stop) of this
        rank, for ``lists`` (N, P) such as ``positives`` or ``certain``."""
        lists = lists if rows is None else lists[rows]
        low = self.class_offset + start
        inside = (lists >= low) & (lists < self.class_offset + stop)
        r, p = inside.nonzero(as_tuple=True)
        return r, p, lists[r, p] - low

    def positives_in(self, start: int, stop: int, rows: Tensor | None = None):
        """(row, column) pairs of the positives among classes [start, stop) of this rank."""
        r, _, c = self.listed_in(self.positives, start, stop, rows)
        return r, c

    def certain_in(self, start: int, stop: int, rows: Tensor | None = None):
        """(row, column) pairs of the classes with t = 1 among [start, stop) of this rank."""
        r, _, c = self.listed_in(self.certain, start, stop, rows)
        return r, c

    def soft_block(self, start: int, stop: int) -> Tensor | None:
        """The dense target t = (1 - eps) sparse + eps/K of these classes (N, C); None when it
        is all zero (eps = 0 and no listed class here)."""
        r, p, c = self.listed_in(self.positives, start, stop)
        if r.numel() == 0 and not self.smoothing:
            return None
        base = self.smoothing / self.num_classes
        block = self.x.new_full((self.x.shape[0], stop - start), base)
        mass = 1.0 if self.weights is None else self.weights[r, p]
        block[r, c] = base + (1.0 - self.smoothing) * mass  # classes are distinct per row
        return block

    def target_block(self, start: int, stop: int):
        """The block function's target for these classes: index targets as (local column,
        present); positive lists as a dense block, (None, None) when none is in them; soft
        targets (weights, eps) as their dense block."""
        if self.soft:
            return self.soft_block(start, stop), None
        if not self.multi_label:
            return self.index_columns(start, stop)
        r, c = self.positives_in(start, stop)
        if r.numel() == 0:
            return None, None
        dense = self.x.new_zeros(self.x.shape[0], stop - start)
        dense[r, c] = 1.0
        return dense, None

    def index_columns(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Index targets' (local column, present) for classes [start, stop) of this rank: the
        column is clamped into the chunk where absent. Element-wise on (N,), with no nonzero:
        on a GPU the chunk loop then never waits for the device."""
        column = self.positives[:, 0] - (self.class_offset + start)  # -1: no target, absent
        present = (column >= 0) & (column < stop - start)
        return column.clamp_(0, stop - start - 1), present

    # -- reductions ----------------------------------------------------------------------------

    def reduce_sum(self, tensor: Tensor) -> Tensor:
        return tensor if self.shards is None else self.shards.all_reduce(tensor)

    def own_rows(self, tensor: Tensor) -> Tensor:
        """This rank's rows of a global-batch tensor."""
        if self.shards is None:
            return tensor
        start = self.shards.rank * self.block_rows
        return tensor[start : start + self.local_rows]

    def output(self, rows: Tensor) -> Tensor:
        rows = torch.where(self.counted, rows, torch.zeros_like(rows))
        if self.reduction == "none":
            return self.own_rows(rows).clone()
        total = rows.sum()
        return total if self.reduction == "sum" else total / self.count.clamp(min=1)

    def features_grad(self, grad: Tensor) -> Tensor:
        """The global batch's features gradient summed over ranks, this rank's rows."""
        if self.shards is None:
            return grad
        return self.shards.reduce_scatter_rows(grad)[: self.local_rows]

    def new_grads(self, need: tuple[bool, bool, bool]) -> _Grads:
        w = self.weight
        return _Grads(
            torch.zeros_like(self.x) if need[0] else None,
            torch.empty_like(w) if need[1] else None,
            torch.empty(w.shape[0], dtype=self.bias_dtype, device=w.device) if need[2] else None,
        )

    def consume(self, g: Tensor, start: int, stop: int, w: Tensor, grads: _Grads) -> None:
        """Chunk gradient -> dW_c = G^T X and db_c = 1^T G (written once), dX += G W_c."""
        if grads.weight is not None:
            if grads.weight.dtype == g.dtype:
                torch.mm(g.t(), self.x, out=grads.weight[start:stop])
            else:
                grads.weight[start:stop] = g.t() @ self.x
        if grads.bias is not None:
            grads.bias[start:stop] = g.sum(0)
        if grads.features is not None:
            grads.features.addmm_(g, w)


# ---------------------------------------------------------------------------------------------
# The losses over chunks: each gives its chunk's row losses and gradient.
# ---------------------------------------------------------------------------------------------


class _ChunkedLoss:
    """prepare(): whatever must be known of whole rows first (collectives included);
    block(): a chunk's partial row losses and d rows / dz; finish(): the rows over all classes."""

    def prepare(self, problem: _Problem) -> None:
        del problem

    def block(
        self, problem: _Problem, z: Tensor, start: int, stop: int, need_grad: bool
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def scaled_block(
        self, problem: _Problem, z: Tensor, start: int, stop: int, scale: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """block() with its gradient times the per-row weights ``scale`` (None: no gradient)."""
        rows, grad = self.block(problem, z, start, stop, scale is not None)
        if grad is not None:
            grad.mul_(scale[:, None])
        return rows, grad

    def after_sweep(self, problem: _Problem, rows: Tensor, scale: Tensor, grads: _Grads | None):
        """Contributions decided only once every chunk is seen (HS-LR's candidates)."""
        del problem, rows, scale, grads

    def finish(self, problem: _Problem, rows: Tensor) -> Tensor:
        return problem.reduce_sum(rows)


class _LR(_ChunkedLoss):
    def block(self, problem, z, start, stop, need_grad):
        target, present = problem.target_block(start, stop)
        return kernels.lr_block(z, target, present, need_grad=need_grad)


def _per_mass(numerator: float, mass: Tensor) -> Tensor:
    """numerator / mass per row, 0 where the mass is 0 (a term without mass is absent)."""
    return torch.where(mass > 0, numerator / mass.clamp(min=torch.finfo(mass.dtype).tiny), 0.0)


def _positive_scale(problem: _Problem) -> Tensor | float:
    """1 / sum_k t_k (|P_i| for lists; 0 without positive mass); 1 for index targets."""
    if not (problem.multi_label or problem.soft):
        return 1.0
    return _per_mass(1.0, problem.positive_mass)


class _SSLR(_ChunkedLoss):
    """Eq. (6) per chunk by the block function; with ``compiled``, index targets in float32 take
    :func:`frlr.torch.fused.ss_lr_chunk` instead: the same maths in one compiled loop that
    reads the chunk once and writes the rows and the already-weighted gradient."""

    def __init__(self, r: float, beta: float, compiled: bool = False) -> None:
        check_hyperparameters(beta=beta, r=r)
        self.r, self.beta, self.compiled = float(r), float(beta), self.check_compiled(compiled)

    @staticmethod
    def check_compiled(compiled: object) -> bool:
        if not isinstance(compiled, bool):
            raise TypeError(f"compiled must be True or False, got {compiled!r}")
        return compiled

    def prepare(self, problem):
        self.pos_scale = _positive_scale(problem)
        if problem.multi_label or problem.soft:  # beta / M, M = sum_k (1 - t_k)
            self.neg_scale = _per_mass(self.beta, problem.num_classes - problem.positive_mass)
        else:
            self.neg_scale = self.beta / (problem.num_classes - 1)
        self.fused = self.compiled and isinstance(self.neg_scale, float)
        self.fused = self.fused and problem.dtype == torch.float32
        if self.fused:  # a tensor, made once: a float would be a constant of the compiled code
            self.alpha = torch.full((1,), self.neg_scale, device=problem.x.device)

    def scaled_block(self, problem, z, start, stop, scale):
        if self.fused:
            column, present = problem.target_block(start, stop)
            if column is None:  # no positive in these classes
                y = torch.full((z.shape[0],), -1, dtype=torch.int64, device=z.device)
            else:
                y = column if present is None else torch.where(present, column, -1)
            found = fused.ss_lr_chunk(z, y, self.r, self.alpha, scale)
            if found is not None:
                return found
            self.fused = False  # torch.compile is unavailable here (it warned once)
        return super().scaled_block(problem, z, start, stop, scale)

    def block(self, problem, z, start, stop, need_grad):
        target, present = problem.target_block(start, stop)
        return kernels.ss_lr_block(
            z, target, present, None, self.pos_scale, self.neg_scale, self.r, need_grad=need_grad
        )


class _HSLR(_ChunkedLoss):
    """Eq. (5) over chunks: the threshold first (counted over all chunks and ranks), then one
    sweep with the block function; the few logits at the threshold's bin are collected during
    that sweep and their share decided at its end."""

    def __init__(self, beta: float, m: float) -> None:
        check_hyperparameters(beta=beta, m=m)
        self.beta, self.m = float(beta), float(m)

    def prepare(self, problem):
        self.pos_scale = _positive_scale(problem)
        if problem.multi_label or problem.soft:  # n from the negative mass M = K - sum_k t_k
            n = kernels.num_hard_negatives_rows(problem.num_classes - problem.positive_mass, self.m)
        else:
            n = torch.full_like(
                problem.positive_mass, num_hard_negatives(problem.num_classes - 1, self.m)
            )
        n = torch.where(problem.counted, n, 0.0)
        self.neg_scale = torch.where(n > 0, self.beta / n.clamp(min=1), 0.0)
        num_negatives = problem.num_classes - problem.num_certain  # the candidates, t < 1
        self.selection = selection.find_selection(
            lambda rows: self._negative_chunks(problem, rows),
            self._sample(problem),
            n,
            num_negatives,
            self._bound(problem),
            problem.reduce_sum,
            lambda lo, hi: self._reduce_band(problem, lo, hi),
        )

    @staticmethod
    def _negative_chunks(problem: _Problem, rows: Tensor | None) -> Iterator[Tensor]:
        if rows is not None and rows.numel() == problem.x.shape[0]:
            rows = None
        x = None if rows is None else problem.x[rows]
        for start, stop in problem.chunks():
            z = problem.logits(start, stop, problem.classifier(start, stop), x)
            r, c = problem.certain_in(start, stop, rows)
            z[r, c] = -torch.inf
            yield z

    @staticmethod
    def _sample(problem: _Problem) -> Tensor:
        """Logits of ~selection.SAMPLE evenly strided classes of this rank, t = 1 at -inf."""
        stride = -(-problem.local_classes // selection.SAMPLE)
        columns = torch.arange(0, problem.local_classes, stride, device=problem.x.device)
        w = problem.weight[columns].to(problem.dtype)
        z = problem.x @ w.t()
        if problem.bias is not None:
            z += problem.bias[columns]
        local = problem.certain - problem.class_offset
        hit = (local >= 0) & (local < problem.local_classes) & (local % stride == 0)
        r, p = hit.nonzero(as_tuple=True)
        z[r, local[r, p] // stride] = -torch.inf
        return z

    @staticmethod
    def _bound(problem: _Problem) -> Tensor:
        """|z_ik| <= ||x_i|| max_k ||w_k|| + max_k |b_k|, widened past any rounding."""
        peaks = problem.x.new_zeros(2)
        peaks[0] = problem.weight.to(problem.dtype).norm(dim=1).max()
        if problem.bias is not None:
            peaks[1] = problem.bias.abs().max()
        if problem.shards is not None:
            problem.shards.all_reduce(peaks, "max")
        norms = problem.x.norm(dim=1)
        return (norms * peaks[0] + peaks[1]) * 1.01 + 1.0

    @staticmethod
    def _reduce_band(problem: _Problem, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        if problem.shards is None:
            return lo, hi
        both = torch.stack([-lo, hi])
        problem.shards.all_reduce(both, "max")
        return -both[0], both[1]

    def block(self, problem, z, start, stop, need_grad):
        target, present = problem.target_block(start, stop)
        chosen = self.selection
        rows, grad = kernels.hs_lr_block(
            z,
            target,
            present,
            None,
            self.pos_scale,
            self.neg_scale,
            chosen.threshold,
            chosen.tie_share,
            need_grad=need_grad,
        )
        found_rows, found_cols = chosen.candidates(z, problem.certain_in(start, stop))
        end = self._filled + found_rows.numel()
        if end > self._found[0].numel():
            raise RuntimeError("hard selection collected more candidates than it counted")
        self._found[0][self._filled : end] = found_rows
        self._found[1][self._filled : end] = found_cols + start
        self._found[2][self._filled : end] = z[found_rows, found_cols]
        if len(self._found) > 3:  # soft targets: each candidate's t, its negative mass 1 - t
            self._found[3][self._filled : end] = (
                0.0 if target is None else target[found_rows, found_cols]
            )
        self._filled = end
        return rows, grad

    def start_sweep(self, problem: _Problem) -> None:
        """Candidate buffers sized by the count pass, filled chunk by chunk: small tensors kept
        from every chunk would pin the heap between the chunk-sized buffers (glibc then grows
        RSS by megabytes per chunk)."""
        total = self.selection.expected
        index = torch.empty(total, dtype=torch.int64, device=problem.x.device)
        self._found = (index, torch.empty_like(index), problem.x.new_empty(total))
        if problem.soft:
            self._found += (problem.x.new_empty(total),)
        self._filled = 0

    def after_sweep(self, problem, rows, scale, grads):
        cand_rows, cand_cols, values, *soft = (t[: self._filled] for t in self._found)
        del self._found
        if problem.shards is None:
            every_rows, every_values = cand_rows, values
        else:
            every_rows = problem.shards.all_gather_ragged(cand_rows)
            every_values = problem.shards.all_gather_ragged(values)
        num_rows = problem.x.shape[0]
        u, share = selection.resolve_candidates(
            every_values, every_rows, self.selection.wanted, num_rows
        )
        if values.numel() == 0:
            return
        # this rank's candidates as a padded (M, width) block of the same block function
        order = cand_rows.argsort(stable=True)
        cand_rows, cand_cols, values = cand_rows[order], cand_cols[order], values[order]
        counts = torch.bincount(cand_rows, minlength=num_rows)
        place = torch.arange(cand_rows.numel(), device=cand_rows.device)
        place -= (counts.cumsum(0) - counts)[cand_rows]
        block = values.new_full((num_rows, int(counts.max())), -torch.inf)
        block[cand_rows, place] = values
        target = None
        if soft:  # the candidates' targets, in the same layout (padding: t = 0 at -inf)
            target = torch.zeros_like(block)
            target[cand_rows, place] = soft[0][order]
        extra, grad = kernels.hs_lr_block(
            block, target, None, None, 0.0, self.neg_scale, u, share, need_grad=grads is not None
        )
        rows += extra
        if grads is None:
            return
        g = grad[cand_rows, place] * scale[cand_rows]
        if grads.bias is not None:
            grads.bias.index_add_(0, cand_cols, g.to(grads.bias.dtype))
        # (candidates, d) temporaries, in slices of about one chunk buffer
        step = max(1, CHUNK_BYTES // (problem.x.element_size() * problem.x.shape[1]))
        for start in range(0, g.numel(), step):
            part = slice(start, start + step)
            r, c, gp = cand_rows[part], cand_cols[part], g[part].unsqueeze(1)
            if grads.features is not None:
                grads.features.index_add_(0, r, gp * problem.weight[c].to(problem.dtype))
            if grads.weight is not None:
                grads.weight.index_add_(0, c, (gp * problem.x[r]).to(grads.weight.dtype))


class _SR(_ChunkedLoss):
    """Softmax cross-entropy over chunks: log-sum-exp online (running max, rescaled sum), over
    ranks by a MAX then a SUM; then d/dz = softmax(z) - onehot(y) chunk by chunk. A soft target
    t gives -sum_k t_k log softmax(z)_k = (sum_k t_k) lse - sum_k t_k z_k, d/dz =
    (sum_k t_k) softmax(z) - t."""

    def prepare(self, problem):
        """lse = peak + log(total) online; the rows as sum_k t_k (peak - z_k) + (sum_k t_k)
        log(total): each logit's distance to the peak is exact where it matters (Sterbenz),
        whereas lse - z_y would cancel two rounded numbers of the logits' size (2^-9 apart at
        2e4). ``gap`` holds sum_k t_k (peak - z_k) over the classes seen; when the peak grows
        by g, every earlier term grows by g (``mass`` g)."""
        rows = problem.x.shape[0]
        peak = problem.x.new_full((rows,), -torch.inf)
        total, gap, mass = (problem.x.new_zeros(rows) for _ in range(3))
        for start, stop in problem.chunks():
            z = problem.logits(start, stop, problem.classifier(start, stop))
            new_peak = torch.maximum(peak, z.amax(1))
            grow = new_peak - peak  # +inf at the first chunk, where total and mass are 0
            total = total * torch.exp(-grow) + torch.exp(z - new_peak[:, None]).sum(1)
            gap += torch.where(mass > 0, mass * grow, 0.0)
            peak = new_peak
            if problem.soft:
                t = problem.soft_block(start, stop)
                if t is not None:
                    gap += torch.linalg.vecdot(torch.sub(peak[:, None], z), t)
                    mass += t.sum(1)
            else:  # each row's class lies in one chunk
                column, present = problem.index_columns(start, stop)
                here = peak - z.gather(1, column[:, None])[:, 0]
                gap += torch.where(present, here, 0.0)
                mass += present.to(mass.dtype)
        if problem.shards is not None:
            shared = problem.shards.all_reduce(peak.clone(), "max")
            grow = shared - peak
            total *= torch.exp(-grow)
            gap += torch.where(mass > 0, mass * grow, 0.0)
            peak = shared
            problem.shards.all_reduce(total)
            problem.shards.all_reduce(gap)
        self.peak, self.total = peak, total
        if problem.soft:
            self.rows = gap + problem.positive_mass * torch.log(total)
        else:
            self.rows = gap + torch.log(total)

    def block(self, problem, z, start, stop, need_grad):
        rows = z.new_zeros(z.shape[0])
        if not need_grad:
            return rows, None
        # softmax = exp(z - peak) / total, the subtraction exact near the peak
        grad = torch.sub(z, self.peak[:, None]).exp_().div_(self.total[:, None])
        if problem.soft:
            grad.mul_(problem.positive_mass[:, None])
            t = problem.soft_block(start, stop)
            return rows, grad if t is None else grad.sub_(t)
        column, present = problem.index_columns(start, stop)
        grad.scatter_add_(1, column[:, None], present[:, None].to(grad.dtype).neg_())
        return rows, grad

    def finish(self, problem, rows):
        return self.rows


def _sweep(loss: _ChunkedLoss, problem: _Problem, scale: Tensor | None, grads: _Grads | None):
    """One pass over the chunks: partial rows, and (with ``grads``) the gradients for per-row
    weights ``scale``. Returns this rank's partial rows (before ``finish``)."""
    rows = problem.x.new_zeros(problem.x.shape[0])
    if isinstance(loss, _HSLR):
        loss.start_sweep(problem)
    if isinstance(loss, _SR) and grads is None:
        return rows
    for start, stop in problem.chunks():
        w = problem.classifier(start, stop)
        z = problem.logits(start, stop, w)
        part, g = loss.scaled_block(problem, z, start, stop, None if grads is None else scale)
        rows += part
        if grads is not None:
            problem.consume(g, start, stop, w, grads)
    loss.after_sweep(problem, rows, scale, grads)
    return rows


class _LinearLossFn(torch.autograd.Function):
    """Features, weight, bias -> the loss; the gradients are built in the forward pass when the
    loss is a scalar (only scaled in the backward), recomputed in the backward for "none"."""

    @staticmethod
    def forward(ctx, features, weight, bias, loss, problem):  # type: ignore[override]
        need = tuple(ctx.needs_input_grad[:3])
        ctx.problem, ctx.loss, ctx.need = problem, loss, need
        ctx.dtypes = (features.dtype, weight.dtype)
        loss.prepare(problem)
        if problem.reduction == "none" or not any(need):
            ctx.grads = None
            return problem.output(loss.finish(problem, _sweep(loss, problem, None, None)))
        grads = problem.new_grads(need)
        rows = _sweep(loss, problem, problem.row_weight, grads)
        if grads.features is not None:
            grads.features = problem.features_grad(grads.features)
        ctx.grads = grads
        return problem.output(loss.finish(problem, rows))

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True: the gradients here are not a graph
            raise RuntimeError(
                "the linear losses compute their gradients analytically and have no second "
                "derivative; call backward / autograd.grad without create_graph=True"
            )
        problem, grads = ctx.problem, ctx.grads
        if grads is None:  # reduction "none": per-row weights, one recomputing sweep
            scale = grad_out.to(problem.dtype)
            if problem.shards is not None:
                scale = problem.shards.all_gather_rows(scale, problem.rows_per_rank)
            scale = torch.where(problem.counted, scale, 0.0)
            grads = problem.new_grads(ctx.need)
            _sweep(ctx.loss, problem, scale, grads)
            if grads.features is not None:
                grads.features = problem.features_grad(grads.features)
        elif kernels._graph_is_kept():  # the saved gradients may be needed again
            grads = _Grads(
                *(None if t is None else t * grad_out.to(t.dtype) for t in _fields(grads))
            )
        else:  # hand the saved gradients over (autograd can adopt them without a copy)
            ctx.grads = None
            if not bool(grad_out == 1):
                for t in _fields(grads):
                    if t is not None:
                        t.mul_(grad_out.to(t.dtype))
        features = None if grads.features is None else grads.features.to(ctx.dtypes[0])
        return features, grads.weight, grads.bias, None, None


# ---------------------------------------------------------------------------------------------
# Functional API
# ---------------------------------------------------------------------------------------------


def _no_autocast(device: torch.device):
    """The chunks accumulate in float32 whatever an autocast region asks for."""
    return torch.autocast(device.type, enabled=False)


def _linear_loss(
    make_loss: Callable[[], _ChunkedLoss],
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None,
    reduction: str,
    ignore_index: int,
    chunk_size: int | None,
    process_group: object,
    class_offset: int,
    num_classes: int | None,
    target_weights: Tensor | None,
    label_smoothing: float,
) -> Tensor:
    """The loss ``make_loss()`` builds (its hyper-parameters checked with the other inputs, see
    :class:`_Problem`) over the chunks."""
    problem = _Problem(
        make_loss,
        features,
        weight,
        target,
        bias,
        reduction,
        ignore_index,
        chunk_size,
        process_group,
        class_offset,
        num_classes,
        target_weights=target_weights,
        label_smoothing=label_smoothing,
    )
    with _no_autocast(features.device):
        return _LinearLossFn.apply(features, weight, bias, problem.loss, problem)


def linear_lr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    """``frlr.torch.lr_loss(features @ weight.T + bias, target)`` without the N x K logits.

    LR, Eq. (3): loss_i = sum_{k in P_i} softplus(-z_k) + sum_{k in N_i} softplus(z_k),
    z = x_i W^T + b, computed over chunks of classes with the gradient consumed per chunk.

    Args:
        features: (N, d) float32/float16/bfloat16; the loss is computed in float64 when
            features, weight or bias is float64, in float32 otherwise.
        weight: (K, d), laid out like ``nn.Linear.weight`` (this rank's classes when
            class-parallel); float16/bfloat16 weights are accumulated in float32.
        target: int64 class indices (N,), or int64 positive lists (N, P) padded with
            ``ignore_index`` -- sparse multi-label, equal to the multi-hot target of the
            materialised loss. A class index equal to ``ignore_index`` drops its row.
        bias: (K,) or None.
        target_weights: float (N, P) weights in [0, 1] of the listed classes of a (N, P)
            ``target``: a sparse soft target, class ``target[i, p]`` carrying
            ``target_weights[i, p]`` (padding entries are ignored, whatever their weight). A
            class listed twice in a row carries the sum of its weights, which must stay <= 1
            (a sum within float round-off of 1 is 1). None: every listed class has weight 1.
            No gradient flows to it. Mixup of two labels a, b is ``target = [a, b]``,
            ``target_weights = [lam, 1 - lam]``.
        label_smoothing: eps in [0, 1): the target becomes t = (1 - eps) sparse + eps / K,
            K = ``num_classes`` (timm's smoothing; smoothing then mixing gives the same t). With
            index targets (N,) too. Per-row masses are formed in closed form and each chunk
            builds its (N, C) target block, so nothing N x K is held; the losses of a soft t
            are the materialised ones' on the dense t (see :func:`frlr.torch.ss_lr_loss`).
        reduction: "mean" over the counted rows, "sum", or "none" (this rank's rows).
        ignore_index: the ignored class index, and the padding of positive lists.
        chunk_size: classes per chunk; None sizes one (N, chunk) float32 buffer at
            ``CHUNK_BYTES``. The result does not depend on it beyond float round-off.
        process_group: shard the classifier by class over this group's ranks; each rank
            passes its own local batch, and the loss is that of the global batch (all ranks'
            batches in rank order) against the whole classifier. See
            :mod:`frlr.torch.distributed` for the collectives and DDP.
        class_offset: this rank's first class (class-parallel only).
        num_classes: the whole classifier's class count (class-parallel only).

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_lr_loss(features, head.weight, target, bias=head.bias)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.lr_loss(head(features), target))
        True

        Soft targets without a dense one: mixup of two labels per row, then smoothing.

        >>> pairs = torch.stack([target, target.flip(0)], 1)  # (8, 2) class lists
        >>> lam = torch.tensor([[0.7, 0.3]]).expand(8, 2)
        >>> soft = frlr.linear_lr_loss(features, head.weight, pairs, bias=head.bias,
        ...                            target_weights=lam, label_smoothing=0.1)
        >>> dense = 0.9 * torch.zeros(8, 1000).index_put_(
        ...     (torch.arange(8).repeat_interleave(2), pairs.reshape(-1)), lam.reshape(-1),
        ...     accumulate=True) + 0.1 / 1000
        >>> torch.allclose(soft, frlr.lr_loss(head(features), dense))
        True
    """
    return _linear_loss(
        _LR, features, weight, target, bias, reduction, ignore_index, chunk_size,
        process_group, class_offset, num_classes, target_weights, label_smoothing,
    )  # fmt: skip


def linear_ss_lr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    r: float = 2.0,
    beta: float = 10.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
    compiled: bool = False,
) -> Tensor:
    """``frlr.torch.ss_lr_loss(features @ weight.T + bias, target, r=r, beta=beta)`` without
    the N x K logits.

    SS-LR, Eq. (6): loss_i = mean_{k in P_i} softplus(-z_k)
    + (beta / |N_i|) sum_{k in N_i} sigmoid(z_k)^r softplus(z_k). A soft target t
    (``target_weights``, ``label_smoothing``): sum_k t_k softplus(-z_k) / sum_k t_k
    + (beta / M) sum_k (1 - t_k) p_k^r softplus(z_k), M = sum_k (1 - t_k).

    Args:
        r: the attending power, >= 0; 2 in the paper.
        beta: the balance weight, 10 in the paper.
        features, weight, target, bias: as in :func:`linear_lr_loss`.
        target_weights, label_smoothing: as in :func:`linear_lr_loss`.
        reduction, ignore_index, chunk_size: as in :func:`linear_lr_loss`.
        process_group, class_offset, num_classes: as in :func:`linear_lr_loss`.
        compiled: compute each chunk of index targets in float32 by one loop compiled with
            ``torch.compile`` (:func:`frlr.torch.fused.ss_lr_chunk`): the same maths, about a
            third of the eager element-wise time; the first call compiles (seconds, again for
            a new chunk or batch shape), and where compilation is unavailable it warns once
            and computes eagerly. Soft targets, positive lists and float64 stay eager.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_ss_lr_loss(features, head.weight, target, bias=head.bias, r=1.0)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.ss_lr_loss(head(features), target, r=1.0))
        True

        Mixup's two labels with weights lam, 1 - lam, and label smoothing:

        >>> pairs = torch.stack([target, target.flip(0)], 1)
        >>> lam = torch.tensor([[0.7, 0.3]]).expand(8, 2)
        >>> loss = frlr.linear_ss_lr_loss(features, head.weight, pairs, bias=head.bias,
        ...                               target_weights=lam, label_smoothing=0.1)
    """
    return _linear_loss(
        lambda: _SSLR(r, beta, compiled), features, weight, target, bias, reduction, ignore_index,
        chunk_size, process_group, class_offset, num_classes, target_weights, label_smoothing,
    )  # fmt: skip


def linear_hs_lr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    beta: float = 10.0,
    m: float = 25.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    """``frlr.torch.hs_lr_loss(features @ weight.T + bias, target, beta=beta, m=m)`` without
    the N x K logits.

    HS-LR, Eq. (5): loss_i = mean_{k in P_i} softplus(-z_k) + (beta / n_i) sum over the n_i
    highest-logit negatives of softplus(z_k), n_i = max(1, floor(m/100 |N_i|)). The exact
    per-row threshold is counted over the chunks first (one more matrix product per chunk);
    negatives tied at the threshold share the remaining places equally (the materialised
    loss's top-k picks some of them instead: same value, another subgradient).

    A soft target t (``target_weights``, ``label_smoothing``): sum_k t_k softplus(-z_k) /
    sum_k t_k + (beta / n_i) sum_{k in S_i} (1 - t_k) softplus(z_k), n_i = max(1, floor(m/100
    M_i)), M_i = sum_k (1 - t_k), S_i the n_i highest logits among the classes with t_k < 1
    (with eps > 0 that is every class; with eps = 0 a listed weight of 1 is excluded).

    Args:
        beta: the balance weight, 10 in the paper.
        m: the percentage of negative classes kept, in (0, 100]; 25 in the paper.
        features, weight, target, bias: as in :func:`linear_lr_loss`.
        target_weights, label_smoothing: as in :func:`linear_lr_loss`.
        reduction, ignore_index, chunk_size: as in :func:`linear_lr_loss`.
        process_group, class_offset, num_classes: as in :func:`linear_lr_loss`.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_hs_lr_loss(features, head.weight, target, bias=head.bias, m=10.0)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.hs_lr_loss(head(features), target, m=10.0))
        True

        Index targets with label smoothing (the true class is then a candidate negative too):

        >>> loss = frlr.linear_hs_lr_loss(features, head.weight, target, bias=head.bias,
        ...                               label_smoothing=0.1)
        >>> dense = torch.nn.functional.one_hot(target, 1000) * 0.9 + 0.1 / 1000
        >>> torch.allclose(loss, frlr.hs_lr_loss(head(features), dense))
        True
    """
    return _linear_loss(
        lambda: _HSLR(beta, m), features, weight, target, bias, reduction, ignore_index, chunk_size,
        process_group, class_offset, num_classes, target_weights, label_smoothing,
    )  # fmt: skip


def linear_sr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    """``F.cross_entropy(features @ weight.T + bias, target)`` without the N x K logits: the
    softmax baseline with the same chunking.

    loss_i = log sum_k e^{z_k} - z_{y_i}: the log-sum-exp is taken online over the chunks
    (running max m, sum s <- s e^{m - m'} + sum e^{z - m'}), then d/dz = softmax(z) - onehot(y)
    chunk by chunk. A soft target t (``target_weights``, ``label_smoothing``) gives the soft
    cross-entropy -sum_k t_k log softmax(z)_k, ``F.cross_entropy`` with probabilities.

    Args:
        features, weight, bias: as in :func:`linear_lr_loss`.
        target: int64 class indices (N,) (softmax is single-label), or class lists (N, P)
            with ``target_weights``.
        target_weights, label_smoothing: as in :func:`linear_lr_loss`.
        reduction, ignore_index, chunk_size: as in :func:`linear_lr_loss`.
        process_group, class_offset, num_classes: as in :func:`linear_lr_loss`.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_sr_loss(features, head.weight, target, bias=head.bias)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.sr_loss(head(features), target))
        True
        >>> smoothed = frlr.linear_sr_loss(features, head.weight, target, bias=head.bias,
        ...                                label_smoothing=0.1)
        >>> torch.allclose(smoothed, frlr.sr_loss(head(features), target, label_smoothing=0.1))
        True
    """
    return _linear_loss(
        _SR, features, weight, target, bias, reduction, ignore_index, chunk_size,
        process_group, class_offset, num_classes, target_weights, label_smoothing,
    )  # fmt: skip


def linear_argmax(
    features: Tensor, weight: Tensor, bias: Tensor | None = None, chunk_size: int | None = None
) -> Tensor:
    """The class of each row's largest logit, argmax_k (x_i w_k + b_k), over class chunks
    (ties: the lower class index, as ``torch.argmax``), without the N x K logits.

    Args:
        features: (N, d).
        weight: (K, d), laid out like ``nn.Linear.weight``.
        bias: (K,) or None.
        chunk_size: classes per chunk; None: as in :func:`linear_lr_loss`.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features = torch.randn(8, 16)
        >>> bool((frlr.linear_argmax(features, head.weight, head.bias)
        ...       == head(features).argmax(1)).all())
        True
    """
    _check_tensors(features, weight, bias)
    if chunk_size is not None:
        _check_int("chunk_size", chunk_size, 1)
    compute = compute_dtype(features, weight, bias)
    num_classes = weight.shape[0]
    chunk = chunk_size or default_chunk_size(features.shape[0], num_classes)
    with torch.no_grad(), _no_autocast(features.device):
        x = features.detach().to(compute)
        best = x.new_full((x.shape[0],), -torch.inf)
        top = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for start in range(0, num_classes, chunk):
            z = x @ weight[start : start + chunk].detach().to(compute).t()
            if bias is not None:
                z += bias[start : start + chunk].detach().to(compute)
            value, index = z.max(1)
            better = value > best  # strictly: a tie keeps the earlier, lower class
            best = torch.where(better, value, best)
            top = torch.where(better, index + start, top)
    return top


def positive_lists(multi_hot: Tensor, ignore_index: int = -100) -> Tensor:
    """A multi-hot target (N, K) as the positive lists (N, P) the linear losses take: each row's
    positive classes in increasing order, padded with ``ignore_index`` to the longest row.

    Args:
        multi_hot: (N, K) {0, 1} (float or bool).
        ignore_index: the padding.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> frlr.positive_lists(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
        tensor([[   1,    2],
                [   0, -100]])
    """
    if not isinstance(multi_hot, Tensor) or multi_hot.dim() != 2:
        raise ValueError(f"multi_hot must be a (N, K) tensor, got {multi_hot!r:.80}")
    hot = multi_hot > 0.5
    width = max(int(hot.sum(1).max()) if hot.numel() else 0, 1)
    # stable sort of "not hot" puts each row's positives first, in class order
    order = (~hot).to(torch.int8).argsort(dim=1, stable=True)[:, :width]
    return torch.where(hot.gather(1, order), order, ignore_index)


# ---------------------------------------------------------------------------------------------
# Modules and the registry
# ---------------------------------------------------------------------------------------------


def _paper_defaults(loss: str) -> dict[str, float]:
    """The catalogue's hyper-parameters of ``loss`` with the paper's defaults (beta, r / m)."""
    return {name: HYPERPARAMETERS[name].default for name in LOSS_HYPERPARAMETERS[loss]}  # type: ignore[misc]


class _LinearLoss(nn.Module):
    """Holds the options; ``forward(features, weight, target, bias=None, target_weights=None,
    *, label_smoothing=None)``, so one module serves any classifier (``loss(h, head.weight, y,
    head.bias)``); a per-call ``label_smoothing`` replaces the module's. Keyword-only options:
    the loss's hyper-parameters (``_hyper``, with the paper's defaults) and the shared ones of
    the functional form (label_smoothing, reduction, ignore_index, chunk_size, process_group,
    class_offset, num_classes)."""

    _fn: Callable[..., Tensor]
    _hyper: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        ignore_index: int = -100,
        chunk_size: int | None = None,
        process_group: object = None,
        class_offset: int = 0,
        num_classes: int | None = None,
        **hyper: float,
    ) -> None:
        super().__init__()
        unknown = sorted(set(hyper) - set(self._hyper))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected option(s) {unknown}; its "
                f"hyper-parameters are {sorted(self._hyper)}"
            )
        check_hyperparameters(**hyper)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.options = {
            **self._hyper,
            **hyper,
            "label_smoothing": _check_smoothing(label_smoothing),
            "reduction": reduction,
            "ignore_index": ignore_index,
            "chunk_size": chunk_size,
            "process_group": process_group,
            "class_offset": class_offset,
            "num_classes": num_classes,
        }

    def forward(
        self,
        features: Tensor,
        weight: Tensor,
        target: Tensor,
        bias: Tensor | None = None,
        target_weights: Tensor | None = None,
        *,
        label_smoothing: float | None = None,
    ) -> Tensor:
        options = self.options
        if label_smoothing is not None:
            options = {**options, "label_smoothing": label_smoothing}
        return type(self)._fn(
            features, weight, target, bias=bias, target_weights=target_weights, **options
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "process_group")


class LinearLRLoss(_LinearLoss):
    """Module form of :func:`linear_lr_loss`.

    Args:
        label_smoothing: as in :func:`linear_lr_loss` (a call may pass its own), keyword-only.
        reduction, ignore_index, chunk_size, process_group, class_offset, num_classes: as in
            :func:`linear_lr_loss`, keyword-only.
        hyper: the loss's hyper-parameters by name (none), default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearLRLoss()
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_lr_loss)


class LinearSSLRLoss(_LinearLoss):
    """Module form of :func:`linear_ss_lr_loss` (r = 2, beta = 10 as in the paper).

    Args:
        compiled: as in :func:`linear_ss_lr_loss`, keyword-only.
        options: keyword-only, as for the other linear modules: label_smoothing (a call may
            pass its own), reduction, ignore_index, chunk_size, process_group, class_offset,
            num_classes as in :func:`linear_lr_loss`, and the hyper-parameters r and beta,
            default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearSSLRLoss(r=1.0)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_ss_lr_loss)
    _hyper: ClassVar[dict[str, float]] = _paper_defaults("ss-lr")

    def __init__(self, *, compiled: bool = False, **options) -> None:
        super().__init__(**options)
        self.options["compiled"] = _SSLR.check_compiled(compiled)


class LinearHSLRLoss(_LinearLoss):
    """Module form of :func:`linear_hs_lr_loss` (beta = 10, m = 25 as in the paper).

    Args:
        label_smoothing: as in :func:`linear_lr_loss` (a call may pass its own), keyword-only.
        reduction, ignore_index, chunk_size, process_group, class_offset, num_classes: as in
            :func:`linear_lr_loss`, keyword-only.
        hyper: the loss's hyper-parameters by name (beta, m), default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearHSLRLoss(m=10.0)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_hs_lr_loss)
    _hyper: ClassVar[dict[str, float]] = _paper_defaults("hs-lr")


class LinearSRLoss(_LinearLoss):
    """Module form of :func:`linear_sr_loss` (softmax cross-entropy, the baseline).

    Args:
        label_smoothing: as in :func:`linear_lr_loss` (a call may pass its own), keyword-only.
        reduction, ignore_index, chunk_size, process_group, class_offset, num_classes: as in
            :func:`linear_lr_loss`, keyword-only.
        hyper: the loss's hyper-parameters by name (none), default the paper's.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> criterion = frlr.LinearSRLoss()
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = criterion(features, head.weight, target, head.bias)
        >>> loss.backward()
    """

    _fn = staticmethod(linear_sr_loss)


LINEAR_LOSSES: dict[str, type[_LinearLoss]] = {
    "sr": LinearSRLoss,
    "lr": LinearLRLoss,
    "hs-lr": LinearHSLRLoss,
    "ss-lr": LinearSSLRLoss,
}


def get_linear_loss(name: str, **options) -> nn.Module:
    """The logits-free loss module for ``name`` ("sr", "lr", "hs-lr", "ss-lr"; the same
    spellings as :func:`frlr.torch.get_loss`).

    Args:
        name: the loss, in any of the catalogue's spellings ("SS_LR", "ss-lr").
        options: keyword arguments of its module (hyper-parameters, reduction, chunk_size...).

    Examples:
        >>> import frlr.torch as frlr
        >>> frlr.get_linear_loss("SS_LR", r=1.0).options["r"]
        1.0
    """
    key = canonical_loss_name(name)
    if key not in LINEAR_LOSSES:
        raise ValueError(f"unknown linear loss name {name!r}; known: {', '.join(LINEAR_LOSSES)}")
    try:
        return LINEAR_LOSSES[key](**options)
    except TypeError as error:
        raise TypeError(f"linear loss {name!r}: {error}") from None
