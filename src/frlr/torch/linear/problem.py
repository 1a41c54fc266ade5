"""One call of a linear loss: its inputs checked, as the global batch against this rank's
classes, and what every loss reads of it chunk by chunk (logits, target blocks, row weights).

The chunk's matrix products and their dtype are reached from here (``Problem.classifier``,
``Problem.logits``, ``Problem.consume``, ``Problem.rounding_unit``), made by
``frlr.torch.linear.products``, and nowhere else."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from frlr.torch._conventions import check_reduction
from frlr.torch.class_sharding import collectives_ready
from frlr.torch.linear.exchange import Exchange, LocalBatch, ShardedExchange
from frlr.torch.linear.inputs import (
    check_int,
    check_num_classes,
    check_smoothing,
    check_tensors,
    compute_dtype,
    default_chunk_size,
    local_targets,
    local_weights,
)
from frlr.torch.linear.products import Products, product_dtype


class Strategy(Protocol):
    """What the problem reads of its loss while checking: ``single_label`` (softmax takes
    class indices only) and ``float32_logits`` (no half-precision logits, see
    ``frlr.torch.linear.products``)."""

    single_label: bool
    float32_logits: bool


@dataclass
class Grads:
    """The gradients being built, in the compute dtype for features, the parameters' for W, b."""

    features: Tensor | None
    weight: Tensor | None
    bias: Tensor | None

    def fields(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        return self.features, self.weight, self.bias


@dataclass
class Options:
    """The call's options besides the tensors."""

    reduction: str
    ignore_index: int
    chunk_size: int | None
    process_group: object
    class_offset: int
    num_classes: int | None
    target_weights: Tensor | None = None
    label_smoothing: float = 0.0


class Problem:
    """One call's inputs, checked, as the global batch against this rank's classes.

    ``make_loss`` builds the loss (checking its hyper-parameters) among the local checks: with
    a process group, a rank whose checks raise still joins the one exchange every rank makes
    first, so every rank raises instead of the others waiting in a collective."""

    def __init__(
        self,
        make_loss: Callable[[], Strategy],
        features: Tensor,
        weight: Tensor,
        target: Tensor,
        bias: Tensor | None,
        options: Options,
    ) -> None:
        self.exchange: Exchange = Exchange()
        local: LocalBatch | Exception
        try:
            self.loss = make_loss()
            self._check_options(features, weight, bias, options)
            local = self._local_batch(target, features.shape[0], options)
        except Exception as error:  # told to every rank by agree: none may wait for this one
            if options.process_group is None or not collectives_ready():
                raise  # no collective to join: as without a process group
            local = error
        x = None
        if options.process_group is not None:
            exchange = ShardedExchange(options.process_group)
            self.exchange = exchange
            exchange.agree(features, local, self._fields(features, local))
            assert not isinstance(local, Exception)  # agree raised it
            x, local = exchange.gather_batch(features.detach().to(self.dtype), local)
        assert not isinstance(local, Exception)
        self.positives, self.counted, self.weights = local
        self.x = (features.detach().to(self.dtype) if x is None else x).contiguous()
        self.products = Products(self.x, self.dtype, self.product_dtype, self.loss.float32_logits)
        self.local_rows = features.shape[0]
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach().to(self.dtype)
        self.bias_dtype = None if bias is None else bias.dtype
        self.chunk = options.chunk_size or default_chunk_size(self.x.shape[0], self.local_classes)
        self.count = self.counted.sum()
        self.row_weight = self.counted.to(self.dtype)
        if self.reduction == "mean":
            self.row_weight = self.row_weight / self.count.clamp(min=1)
        self._row_masses()

    def _check_options(
        self, features: Tensor, weight: Tensor, bias: Tensor | None, options: Options
    ) -> None:
        """The checks of everything but the target this rank can make alone."""
        check_tensors(features, weight, bias)
        self.smoothing = check_smoothing(options.label_smoothing)
        check_reduction(options.reduction)
        check_int("ignore_index", options.ignore_index, -(2**62))
        if options.chunk_size is not None:
            check_int("chunk_size", options.chunk_size, 1)
        offset = check_int("class_offset", options.class_offset, 0)
        local_classes, num_classes = weight.shape[0], options.num_classes
        if options.process_group is None:
            if offset != 0:
                raise ValueError(
                    f"class_offset applies to a class-parallel classifier (process_group); "
                    f"got class_offset={offset} without one"
                )
            if num_classes is not None and num_classes != local_classes:
                raise ValueError(
                    f"num_classes={num_classes} differs from weight.shape[0]={local_classes} "
                    "without a process_group"
                )
            num_classes = local_classes
        elif num_classes is None:
            raise ValueError("num_classes is required with a process_group (all ranks' classes)")
        check_num_classes(num_classes)
        if offset + local_classes > num_classes:
            raise ValueError(
                f"class_offset + weight.shape[0] = {offset + local_classes} exceeds "
                f"num_classes = {num_classes}"
            )
        self.reduction = options.reduction
        self.num_classes, self.class_offset, self.local_classes = num_classes, offset, local_classes
        self.dtype = compute_dtype(features, weight, bias)
        self.product_dtype = product_dtype(features, weight, self.dtype)
        self.device = features.device  # weight and bias checked on it; the targets next

    def _local_batch(self, target: Tensor, rows: int, options: Options) -> LocalBatch:
        """(positives, counted, weights) of this rank's rows, checked."""
        target_weights = options.target_weights
        for name, value in (("target", target), ("target_weights", target_weights)):
            if isinstance(value, Tensor) and value.device != self.device:
                raise ValueError(
                    f"{name} is on {value.device} and features on {self.device}; put "
                    "the targets on the features' device"
                )
        weighted = target_weights is not None
        positives, counted, self.multi_label = local_targets(
            target, rows, self.num_classes, options.ignore_index, self.loss.single_label, weighted
        )
        weights = None
        if weighted:
            positives, weights = local_weights(target_weights, target, positives, self.dtype)
        return positives, counted, weights

    def _fields(self, features: Tensor, local: LocalBatch | Exception) -> list[int]:
        if isinstance(local, Exception):
            return []
        positives, _, weights = local
        return [
            self.class_offset, self.local_classes, self.num_classes, features.shape[0],
            positives.shape[1], int(self.multi_label), int(weights is not None),
        ]  # fmt: skip

    def _row_masses(self) -> None:
        """Per-row constants of the target t = (1 - eps) sparse + eps/K, in closed form:
        ``positive_mass`` sum_k t_k, ``certain`` the classes with t_k = 1 (HS-LR never selects
        them; only eps = 0 with a weight of 1 makes one) as lists, -1 elsewhere, and
        ``num_certain`` their count. Without weights and eps these are |P_i| and P_i."""
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
        # A dense target's t_k softplus(-z_k) is 0 inf = NaN at z_k = -inf, t_k = 0, as in the
        # materialised loss: with a non-finite input, every chunk takes a dense block.
        self.always_dense = (self.soft or self.multi_label) and not self._all_finite()

    def _all_finite(self) -> bool:
        """Whether x, W and b are finite (W a chunk at a time: no (K, d) temporary)."""
        parts = [self.x] + ([] if self.bias is None else [self.bias])
        parts += [self.weight[start:stop] for start, stop in self.chunks()]
        return all(bool(torch.isfinite(t).all()) for t in parts)

    # -- the chunk's matrix product: its dtype and its rounding ----------------------------------

    def chunks(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.local_classes, self.chunk):
            yield start, min(start + self.chunk, self.local_classes)

    def classifier(self, start: int, stop: int) -> Tensor:
        """Classes [start, stop) of the weight in the logits' operand dtype."""
        return self.products.classifier(self.weight[start:stop])

    def operand_rows(self, rows: Tensor) -> Tensor:
        """Rows of the features as ``logits`` multiplies them."""
        return self.products.x_logits[rows]

    def logits(self, start: int, stop: int, w: Tensor, x: Tensor | None = None) -> Tensor:
        """z = X W_c^T + b_c for classes [start, stop) of this rank, in the compute dtype (of
        ``x``, rows from ``operand_rows``: some rows)."""
        x = self.products.x_logits if x is None else x
        bias = None if self.bias is None else self.bias[start:stop]
        return self.products.logits(x, w, bias)

    def rounding_unit(self) -> float:
        """The unit roundoff of ``logits``' sums (see ``Products.rounding_unit`` in
        ``frlr.torch.linear.products``)."""
        return self.products.rounding_unit(self.device)

    # -- targets ---------------------------------------------------------------------------------

    def listed_in(self, lists: Tensor, start: int, stop: int, rows: Tensor | None = None):
        """(row, place in the list, column) of the listed classes among [start, stop) of this
        rank, for ``lists`` (N, P) such as ``positives`` or ``certain``."""
        lists = lists if rows is None else lists[rows]
        low = self.class_offset + start
        inside = (lists >= low) & (lists < self.class_offset + stop)
        r, p = inside.nonzero(as_tuple=True)
        return r, p, lists[r, p] - low

    def certain_in(self, start: int, stop: int, rows: Tensor | None = None):
        """(row, column) pairs of the classes with t = 1 among [start, stop) of this rank."""
        r, _, c = self.listed_in(self.certain, start, stop, rows)
        return r, c

    def soft_block(self, start: int, stop: int, rows: Tensor | None = None) -> Tensor | None:
        """The dense target t = (1 - eps) sparse + eps/K of these classes (N, C), of ``rows``
        only when given; None when it is all zero (eps = 0 and no listed class here)."""
        r, p, c = self.listed_in(self.positives, start, stop, rows)
        if r.numel() == 0 and not self.smoothing and not self.always_dense:
            return None
        base = self.smoothing / self.num_classes
        height = self.x.shape[0] if rows is None else rows.numel()
        block = self.x.new_full((height, stop - start), base)
        weights = self.weights if rows is None or self.weights is None else self.weights[rows]
        mass = 1.0 if weights is None else weights[r, p]
        block[r, c] = base + (1.0 - self.smoothing) * mass  # classes are distinct per row
        return block

    def target_block(self, start: int, stop: int):
        """The block function's target for these classes: index targets as (local column,
        present); positive lists and soft targets as a dense block, (None, None) when all
        zero."""
        if self.soft or self.multi_label:
            return self.soft_block(start, stop), None
        return self.index_columns(start, stop)

    def index_columns(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Index targets' (local column, present) for classes [start, stop) of this rank: the
        column is clamped into the chunk where absent. Element-wise on (N,), with no nonzero:
        on a GPU the chunk loop then never waits for the device."""
        column = self.positives[:, 0] - (self.class_offset + start)  # -1: no target, absent
        present = (column >= 0) & (column < stop - start)
        return column.clamp_(0, stop - start - 1), present

    def whole_target(self, rows: Tensor) -> tuple[Tensor, Tensor | None]:
        """The target of ``rows`` over all classes, as the materialised loss takes it: index
        targets as (class (M,), present (M,)), the others as a dense (M, K) block."""
        if self.soft or self.multi_label:
            block = self.soft_block(-self.class_offset, self.num_classes - self.class_offset, rows)
            if block is None:
                block = self.x.new_zeros(rows.numel(), self.num_classes)
            return block, None
        y = self.positives[rows, 0]
        return y.clamp(min=0), y >= 0

    # -- output ----------------------------------------------------------------------------------

    def output(self, rows: Tensor) -> Tensor:
        rows = torch.where(self.counted, rows, torch.zeros_like(rows))
        if self.reduction == "none":
            return self.exchange.own_rows(rows, self.local_rows).clone()
        total = rows.sum()
        return total if self.reduction == "sum" else total / self.count.clamp(min=1)

    def features_grad(self, grad: Tensor) -> Tensor:
        return self.exchange.features_grad(grad, self.local_rows)

    def new_grads(self, need: tuple[bool, bool, bool]) -> Grads:
        w = self.weight
        return Grads(
            torch.zeros_like(self.x) if need[0] else None,
            torch.empty_like(w) if need[1] else None,
            torch.empty(w.shape[0], dtype=self.bias_dtype, device=w.device) if need[2] else None,
        )

    def consume(self, g: Tensor, start: int, stop: int, w: Tensor, grads: Grads) -> None:
        """Chunk gradient -> dW_c = G^T X and db_c = 1^T G (written once), dX += G W_c."""
        weight = None if grads.weight is None else grads.weight[start:stop]
        self.products.gradients(g, self.products.x, w, weight, grads.features)
        if grads.bias is not None:
            grads.bias[start:stop] = g.sum(0)
