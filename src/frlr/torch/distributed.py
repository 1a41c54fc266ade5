"""The collectives of a classifier sharded by class over processes (gloo on CPU, NCCL on GPU).

Each rank holds the contiguous classes ``[class_offset, class_offset + K_r)`` of ``num_classes``
and its own local batch. The loss over the global batch (all ranks' batches in rank order)
against the whole classifier needs, per step:

* one all-gather of the features and targets (every rank scores the global batch against its
  classes), padded to the largest local batch because gloo's all-gather takes equal shapes;
* one all-reduce of per-row sums (LR, SS-LR, HS-LR; SR first takes a MAX for its log-sum-exp);
* one reduce-scatter of the features' gradient: each rank computed the global batch's gradient
  through its own classes, and a sample's gradient is the sum over all ranks.

Combining with DDP on the backbone: every rank's loss is already the *global* loss, and the
features' gradient that reaches rank r's backbone is already the global loss's gradient for
rank r's rows. The backbone's true gradient is therefore the SUM of the ranks' backbone
gradients, not their mean. DDP's default all-reduce averages, which would divide the
backbone's gradient by the world size a second time; register :func:`sum_allreduce_hook` on the
DDP module (``ddp.register_comm_hook(None, sum_allreduce_hook)``) so that it sums. The sharded
classifier itself must stay outside DDP: its gradient is per-rank and must not be reduced.

``frlr train --classifier chunked --class-parallel`` does all this for the toolkit's networks
(:mod:`frlr.class_parallel`), with the split of :func:`class_shard_sizes`: contiguous, in rank
order, the first ``K % world`` ranks one class more than the others.
"""

import weakref

import torch
import torch.distributed as dist
from torch import Tensor

# torch >= 2.13 names the flat-tensor collectives *_single; earlier versions *_tensor.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

# The layout (class_offset, K_r, num_classes) each process group was first called with: the
# cross-rank consistency check runs once per group, later calls compare against it locally.
# Keyed weakly by the group itself (not its id, which a destroyed group's successor may reuse):
# a destroyed group's entry goes with it, and a new default group is checked afresh.
_CHECKED_LAYOUTS: weakref.WeakKeyDictionary[object, tuple[int, int, int]] = (
    weakref.WeakKeyDictionary()
)


class ClassShards:
    """One process group's view of a class-sharded classifier: rank, world size, collectives.

    ``sent_bytes`` counts what this rank has handed to collectives in this call, and
    :func:`sent_bytes` in this process so far (the benchmark reports them).
    """

    total_sent_bytes = 0

    def __init__(self, group, class_offset: int, local_classes: int, num_classes: int) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                "process_group was given but torch.distributed is not initialised; call "
                "torch.distributed.init_process_group first"
            )
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.sent_bytes = 0
        self._check_layout(class_offset, local_classes, num_classes)

    def _check_layout(self, class_offset: int, local_classes: int, num_classes: int) -> None:
        layout = (class_offset, local_classes, num_classes)
        key = self.group if self.group is not None else dist.group.WORLD
        known = _CHECKED_LAYOUTS.get(key)
        if known is not None:
            if known != layout:
                raise ValueError(
                    f"class_offset, weight.shape[0], num_classes = {layout} differ from the "
                    f"first call on this process group {known}: the class layout is fixed"
                )
            return
        mine = torch.tensor(layout, dtype=torch.int64)
        every = self.all_gather_equal(mine)  # (world, 3)
        offsets, sizes, totals = every.unbind(1)
        if bool((totals != num_classes).any()):
            raise ValueError(
                f"num_classes differs across ranks: {totals.tolist()}; every rank must pass the "
                "same num_classes"
            )
        expected = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        if bool((offsets != expected).any()) or int(sizes.sum()) != num_classes:
            raise ValueError(
                f"class_offset must tile [0, num_classes={num_classes}) in rank order: got "
                f"offsets {offsets.tolist()} for shard sizes {sizes.tolist()} (expected offsets "
                f"{expected.tolist()} and sizes summing to num_classes)"
            )
        _CHECKED_LAYOUTS[key] = layout

    # -- collectives ---------------------------------------------------------------------------

    def _count(self, tensor: Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        self.sent_bytes += size
        ClassShards.total_sent_bytes += size

    def all_gather_equal(self, tensor: Tensor) -> Tensor:
        """(world, *shape): every rank's tensor of one common shape, stacked in rank order."""
        out = tensor.new_empty(self.world * tensor.numel())
        _all_gather_single(out, tensor.contiguous().view(-1), group=self.group)
        self._count(tensor)
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
        self._count(tensor)
        return tensor

    def reduce_scatter_rows(self, tensor: Tensor) -> Tensor:
        """Sum (world * n, ...) over the ranks and keep this rank's block of n rows."""
        block = tensor.shape[0] // self.world
        out = tensor.new_empty((block, *tensor.shape[1:]))
        _reduce_scatter_single(out, tensor.contiguous(), group=self.group)
        self._count(tensor)
        return out


def class_shard_sizes(num_classes: int, world_size: int) -> list[int]:
    """Classes per rank, in rank order: ``num_classes // world_size`` each, and one more for the
    first ``num_classes % world_size`` ranks (so no two shards differ by more than one class).
    Rank r's first class is the sum of the sizes before it.

    Examples:
        >>> from frlr.torch.distributed import class_shard_sizes
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


def sent_bytes() -> int:
    """Bytes this process has handed to the class-parallel collectives so far."""
    return ClassShards.total_sent_bytes


def sum_allreduce_hook(state: object, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """A DDP communication hook that sums gradients over the ranks instead of averaging.

    For a backbone under DDP feeding a class-parallel loss: each rank's loss is the global loss
    already, so the ranks' backbone gradients are parts of one gradient and must be summed.
    """
    del state
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda future: future.value()[0])
