"""The collectives of a classifier sharded by class over processes (gloo on CPU, NCCL on GPU).

Each rank holds the contiguous classes ``[class_offset, class_offset + K_r)`` of ``num_classes``
and its own local batch. The loss over the global batch (all ranks' batches in rank order)
against the whole classifier needs, per step:

* one all-gather of a small int64 row per rank: whether it accepted its input, its layout
  (class_offset, K_r, num_classes) and its batch's shape. Every rank checks the same gathered
  table, so a layout that does not tile the classes, or an input one rank refused, raises on
  every rank rather than leaving the others waiting in a collective (``ShardGroup.agree``);
  the layout may change between calls, checked each time at no extra collective;
* one all-gather of the features and targets (every rank scores the global batch against its
  classes), padded to the largest local batch because gloo's all-gather takes equal shapes;
* one all-reduce of per-row sums (LR, SS-LR, HS-LR; SR first takes a MAX for its log-sum-exp);
* one reduce-scatter of the features' gradient: each rank computed the global batch's gradient
  through its own classes, and a sample's gradient is the sum over all ranks.

Combining with DDP on the backbone: every rank's loss is already the *global* loss, and the
features' gradient that reaches rank r's backbone is already the global loss's gradient for
rank r's rows. The backbone's true gradient is therefore the SUM of the ranks' backbone
gradients, not their mean. DDP's default all-reduce averages, which would divide the
backbone's gradient by the world size a second time; register ``sum_allreduce_hook`` on the
DDP module (``ddp.register_comm_hook(None, sum_allreduce_hook)``) so that it sums. The sharded
classifier itself must stay outside DDP: its gradient is per-rank and must not be reduced.

``frlr train --classifier chunked --class-parallel`` does all this for the toolkit's networks
(``frlr.heads.class_parallel``), with the split of ``class_shard_sizes``: contiguous, in rank
order, the first ``K % world`` ranks one class more than the others.

This module was ``frlr.torch.distributed``, which still re-exports its public names.
"""

import itertools
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def _all_gather_single(out: Tensor, tensor: Tensor, group: object) -> None:
    """``out`` = every rank's flat ``tensor`` in rank order. torch >= 2.13 names the flat-tensor
    collectives ``*_single``, earlier versions ``*_tensor``; looked up at each call, so whatever
    wraps ``torch.distributed``'s collectives (the class-parallel benchmark counts their bytes)
    sees this one."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, tensor, group=group)


def _reduce_scatter_single(out: Tensor, tensor: Tensor, group: object) -> None:
    """``out`` = this rank's block of ``tensor`` summed over the ranks (named as above)."""
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    scatter(out, tensor, group=group)


def collectives_ready() -> bool:
    """Whether a process group can run collectives here (torch.distributed initialised)."""
    return dist.is_available() and dist.is_initialized()


class ShardGroup:
    """The process group over which a classifier is sharded by class: this rank, the world
    size, the check that the ranks' shards tile the classes, and the collectives the shards
    exchange (each rank holds one shard: its contiguous classes)."""

    def __init__(self, group) -> None:
        if not collectives_ready():
            raise ValueError(
                "process_group was given but torch.distributed is not initialised; call "
                "torch.distributed.init_process_group first"
            )
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def device_for(self, features: object) -> torch.device:
        """Where this call's collectives run: the features' device; when the features are no
        tensor (a refused input) the backend's, the current CUDA device for NCCL, else the CPU."""
        if isinstance(features, Tensor):
            return features.device
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def agree(
        self, fields: Sequence[int], device: torch.device, failure: Exception | None = None
    ) -> list[list[int]]:
        """Every rank's ``fields`` (class_offset, K_r, num_classes, then the caller's), from one
        all-gather that also carries whether each rank accepted its input.

        A rank whose local checks raised ``failure`` still joins (its fields are ignored), so
        the others never wait in a collective it will not reach: if any rank failed, every rank
        raises -- the failed ones their own error, the others a ValueError naming them and their
        messages (gathered only then). Otherwise the layout is checked on the gathered table,
        which every rank holds alike, so a bad layout raises the same error on every rank.
        """
        mine = torch.tensor([int(failure is None), *fields], dtype=torch.int64, device=device)
        table = self.all_gather_equal(mine).tolist()
        refused = [rank for rank, row in enumerate(table) if not row[0]]
        if refused:
            self._refuse(refused, failure)
        every = [row[1:] for row in table]
        self._check_layout(*([row[i] for row in every] for i in range(3)))
        return every

    def _refuse(self, refused: list[int], failure: Exception | None) -> None:
        """Raise on every rank after some refused their input; every rank is here together."""
        messages: list[str | None] = [None] * self.world
        mine = None if failure is None else _describe(failure)
        dist.all_gather_object(messages, mine, group=self.group)
        if failure is not None:
            raise failure
        raise ValueError(
            "; ".join(f"rank {rank} refused its input: {messages[rank]}" for rank in refused)
        )

    @staticmethod
    def _check_layout(offsets: list[int], sizes: list[int], totals: list[int]) -> None:
        """The ranks' classes tile [0, num_classes) in rank order, one num_classes for all."""
        if len(set(totals)) > 1:
            raise ValueError(
                f"num_classes differs across ranks: {totals}; every rank must pass the same "
                "num_classes"
            )
        expected = [0, *itertools.accumulate(sizes)][:-1]
        if offsets != expected or sum(sizes) != totals[0]:
            raise ValueError(
                f"class_offset must tile [0, num_classes={totals[0]}) in rank order: got "
                f"offsets {offsets} for shard sizes {sizes} (expected offsets {expected} and "
                "sizes summing to num_classes)"
            )

    # -- collectives ---------------------------------------------------------------------------

    def all_gather_equal(self, tensor: Tensor) -> Tensor:
        """(world, *shape): every rank's tensor of one common shape, stacked in rank order."""
        out = tensor.new_empty(self.world * tensor.numel())
        _all_gather_single(out, tensor.contiguous().view(-1), group=self.group)
        return out.view(self.world, *tensor.shape)

    def all_gather_rows(self, tensor: Tensor, rows_per_rank: list[int]) -> Tensor:
        """Every rank's (n_r, ...) tensor, padded to the largest n_r: (world * max n_r, ...).

        The padding rows are zeros; the caller masks them (they carry zero row weight)."""
        most = max(rows_per_rank)
        padded = tensor.new_zeros((most, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        return self.all_gather_equal(padded).reshape(self.world * most, *tensor.shape[1:])

    def all_gather_ragged(self, tensor: Tensor) -> Tensor:
        """Every rank's 1-D tensor of its own length, concatenated in rank order."""
        lengths = self.all_gather_equal(torch.tensor([tensor.numel()], device=tensor.device))
        lengths = lengths.reshape(-1).tolist()
        gathered = self.all_gather_rows(tensor.reshape(-1), lengths)
        most = max(lengths)
        return torch.cat([gathered[r * most : r * most + n] for r, n in enumerate(lengths)])

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In place, SUM or MAX over the ranks."""
        reduce_op = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
        dist.all_reduce(tensor, op=reduce_op, group=self.group)
        return tensor

    def reduce_scatter_rows(self, tensor: Tensor) -> Tensor:
        """Sum (world * n, ...) over the ranks and keep this rank's block of n rows."""
        block = tensor.shape[0] // self.world
        out = tensor.new_empty((block, *tensor.shape[1:]))
        _reduce_scatter_single(out, tensor.contiguous(), group=self.group)
        return out


def class_shard_sizes(num_classes: int, world_size: int) -> list[int]:
    """Classes per rank, in rank order: ``num_classes // world_size`` each, and one more for the
    first ``num_classes % world_size`` ranks (so no two shards differ by more than one class).
    Rank r's first class is the sum of the sizes before it.

    Examples:
        >>> from frlr.torch.class_sharding import class_shard_sizes
        >>> class_shard_sizes(10, 4)
        [3, 3, 2, 2]
    """
    if world_size < 1 or num_classes < world_size:
        raise ValueError(
            f"{num_classes} classes cannot be split over {world_size} ranks: every rank needs "
            "at least one class"
        )
    base, extra = divmod(num_classes, world_size)
    return [base + (rank < extra) for rank in range(world_size)]


def sum_allreduce_hook(state: object, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """A DDP communication hook that sums gradients over the ranks instead of averaging.

    For a backbone under DDP feeding a class-parallel loss: each rank's loss is the global loss
    already, so the ranks' backbone gradients are parts of one gradient and must be summed.
    """
    del state
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def _describe(error: Exception) -> str:
    """A refused input's message for the other ranks; the type too when it is not the usual
    ValueError or TypeError of a checked argument."""
    if isinstance(error, (ValueError, TypeError)):
        return str(error)
    return f"{type(error).__name__}: {error}"
