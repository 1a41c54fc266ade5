"""What the ranks of a class-parallel call exchange, and the same operations in one process.

A loss asks ``Exchange`` to sum, take the max, gather or scatter; in one process each of
these is the identity, so no loss or sweep tests whether it is sharded. ``ShardedExchange``
does them over a process group with ``frlr.torch.class_sharding.ShardGroup``: the one
agreement on every rank's layout and batch first, then the global batch, the reductions of
per-row sums, the features' gradient back to its rank, and HS-LR's candidates and held rows."""

from __future__ import annotations

import torch
from torch import Tensor

from frlr.torch.class_sharding import ShardGroup

EXCHANGED = 7
"""Fields of a rank's row in the class-parallel exchange: class_offset, K_r, num_classes (the
layout ``ShardGroup.agree`` checks), local rows, positive-list width, multi_label,
weighted."""

LocalBatch = tuple[Tensor, Tensor, Tensor | None]
"""One rank's checked (positives, counted, weights)."""


class Exchange:
    """One process: every rank-wide operation is the identity."""

    rank = 0
    world = 1
    sharded = False

    def reduce_sum(self, tensor: Tensor) -> Tensor:
        return tensor

    def reduce_max(self, tensor: Tensor) -> Tensor:
        return tensor

    def reduce_min(self, tensor: Tensor) -> Tensor:
        return tensor

    def gather_ragged(self, tensor: Tensor) -> Tensor:
        """Every rank's 1-D tensor, concatenated in rank order."""
        return tensor

    def gather_columns(self, block: Tensor) -> Tensor:
        """(M, K) from every rank's (M, K_r) columns, in class order."""
        return block

    def own_rows(self, tensor: Tensor, local_rows: int) -> Tensor:
        """This rank's rows of a global-batch tensor."""
        del local_rows
        return tensor

    def features_grad(self, grad: Tensor, local_rows: int) -> Tensor:
        """The global batch's features gradient summed over ranks, this rank's rows."""
        del local_rows
        return grad

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """Every rank's per-row tensor, padded to the largest local batch."""
        return tensor


class ShardedExchange(Exchange):
    """A process group's ranks, each holding contiguous classes and its own local batch."""

    sharded = True

    def __init__(self, process_group: object) -> None:
        self.shards = ShardGroup(process_group)
        self.rank, self.world = self.shards.rank, self.shards.world
        self.rows_per_rank: list[int] = []
        self.classes_per_rank: list[int] = []
        self.width = 0

    def agree(self, features: object, local: LocalBatch | Exception, fields: list[int]) -> None:
        """This rank's layout, batch shape and target kind against every rank's, in the one
        exchange of ``ShardGroup.agree`` (which raises on every rank when any rank's
        local checks failed: ``local`` is then that rank's error)."""
        failure = local if isinstance(local, Exception) else None
        mine = [-1] * EXCHANGED if failure is not None else fields
        every = self.shards.agree(mine, self.shards.device_for(features), failure)
        if len({tuple(row[5:]) for row in every}) > 1:
            raise ValueError(
                "target must be class indices (N,) on every rank or positive lists (N, P) on "
                "every rank, with target_weights on every rank or on none, not a mix"
            )
        self.rows_per_rank = [row[3] for row in every]
        self.classes_per_rank = [row[1] for row in every]
        self.width = max(row[4] for row in every)

    @property
    def block_rows(self) -> int:
        return max(self.rows_per_rank)

    def gather_batch(self, x: Tensor, local: LocalBatch) -> tuple[Tensor, LocalBatch]:
        """The global batch, each rank's block padded to the largest (padding rows count
        nowhere: their ``counted`` is False and their lists empty)."""
        positives, counted, weights = local
        rows, width = self.rows_per_rank, self.width
        padded = positives.new_full((x.shape[0], width), -1)
        padded[:, : positives.shape[1]] = positives
        every_x = self.shards.all_gather_rows(x, rows)
        every_positives = self.shards.all_gather_rows(padded + 1, rows) - 1  # padding -> -1
        every_counted = self.shards.all_gather_rows(counted, rows)
        every_weights = None
        if weights is not None:  # the weights travel with their classes (padding: weight 0)
            padded_weights = weights.new_zeros((x.shape[0], width))
            padded_weights[:, : weights.shape[1]] = weights
            every_weights = self.shards.all_gather_rows(padded_weights, rows)
        return every_x, (every_positives, every_counted, every_weights)

    def reduce_sum(self, tensor: Tensor) -> Tensor:
        return self.shards.all_reduce(tensor)

    def reduce_max(self, tensor: Tensor) -> Tensor:
        return self.shards.all_reduce(tensor, "max")

    def reduce_min(self, tensor: Tensor) -> Tensor:
        return self.shards.all_reduce(tensor.neg_(), "max").neg_()

    def gather_ragged(self, tensor: Tensor) -> Tensor:
        return self.shards.all_gather_ragged(tensor)

    def gather_columns(self, block: Tensor) -> Tensor:
        sizes = self.classes_per_rank
        most = max(sizes)
        every = self.shards.all_gather_rows(block.t().contiguous(), sizes)
        parts = [every[r * most : r * most + k] for r, k in enumerate(sizes)]
        return torch.cat(parts).t()

    def own_rows(self, tensor: Tensor, local_rows: int) -> Tensor:
        start = self.rank * self.block_rows
        return tensor[start : start + local_rows]

    def features_grad(self, grad: Tensor, local_rows: int) -> Tensor:
        return self.shards.reduce_scatter_rows(grad)[:local_rows]

    def gather_rows(self, tensor: Tensor) -> Tensor:
        return self.shards.all_gather_rows(tensor, self.rows_per_rank)
