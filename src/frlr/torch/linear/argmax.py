"""Each row's top class over class chunks (and over ranks), without the N x K logits, by
``torch.argmax``'s rule whatever the chunking: the largest logit, NaN above every number,
ties (NaN ties included) to the lower class."""

from __future__ import annotations

import torch
from torch import Tensor

from frlr.torch._conventions import no_autocast
from frlr.torch.class_sharding import ShardGroup
from frlr.torch.linear.inputs import check_int, check_tensors, compute_dtype, default_chunk_size


def _beats(value: Tensor, best: Tensor) -> Tensor:
    """Whether a later class's ``value`` replaces the ``best`` so far: strictly larger, or NaN
    over a number (a tie keeps the earlier, lower class)."""
    return (value > best) | (torch.isnan(value) & ~torch.isnan(best))


def _local_argmax(x: Tensor, weight: Tensor, bias: Tensor | None, chunk: int):
    """(best value, its class) per row over this weight's classes, each logit computed once."""
    best = x.new_full((x.shape[0],), -torch.inf)
    top = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, weight.shape[0], chunk):
        z = x @ weight[start : start + chunk].detach().to(x.dtype).t()
        if bias is not None:
            z += bias[start : start + chunk].detach().to(x.dtype)
        index = z.argmax(1)  # torch's own rule inside the chunk
        value = z.gather(1, index[:, None])[:, 0]
        better = _beats(value, best)
        best = torch.where(better, value, best)
        top = torch.where(better, index + start, top)
    return best, top


def linear_argmax(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    chunk_size: int | None = None,
    *,
    process_group: object = None,
) -> Tensor:
    """The class of each row's largest logit, argmax_k (x_i w_k + b_k), over class chunks
    (``torch.argmax``'s rule: NaN counts as the largest, ties go to the lower class, whatever
    ``chunk_size``), without the N x K logits.

    Args:
        features: (N, d), this rank's own rows when class-parallel.
        weight: (K, d), laid out like ``nn.Linear.weight``; this rank's classes when
            class-parallel (contiguous, in rank order, as the linear losses take them).
        bias: (K,) or None.
        chunk_size: classes per chunk; None: as in [`linear_lr_loss`][frlr.torch.linear_lr_loss].
        process_group: shard the classes over this group: every rank scores every rank's
            rows against its classes, and each gets its own rows' classes over all ranks.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features = torch.randn(8, 16)
        >>> bool((frlr.linear_argmax(features, head.weight, head.bias)
        ...       == head(features).argmax(1)).all())
        True
    """
    check_tensors(features, weight, bias)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, 1)
    compute = compute_dtype(features, weight, bias)
    with torch.no_grad(), no_autocast(features.device):
        x = features.detach().to(compute)
        shards = None if process_group is None else ShardGroup(process_group)
        rows = [x.shape[0]]
        if shards is not None:
            sizes = torch.tensor([x.shape[0], weight.shape[0]], device=x.device)
            table = shards.all_gather_equal(sizes).tolist()
            rows, classes = [r for r, _ in table], [k for _, k in table]
            offset = sum(classes[: shards.rank])
            x = shards.all_gather_rows(x, rows)
        chunk = chunk_size or default_chunk_size(x.shape[0], weight.shape[0])
        best, top = _local_argmax(x, weight, bias, chunk)
        if shards is None:
            return top
        values = shards.all_gather_equal(best)  # (world, rows), rank order = class order
        tops = shards.all_gather_equal(top + offset)
        winner, chosen = values[0], tops[0]
        for rank in range(1, shards.world):
            better = _beats(values[rank], winner)
            winner = torch.where(better, values[rank], winner)
            chosen = torch.where(better, tops[rank], chosen)
        start = shards.rank * max(rows)
        return chosen[start : start + features.shape[0]]
