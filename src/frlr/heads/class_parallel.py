"""``frlr train --class-parallel``: the head of ``--classifier chunked`` sharded by class over
torchrun's processes.

Rank r trains the contiguous rows [offset_r, offset_r + K_r) of the network's last Linear
(split by [`class_shard_sizes`][frlr.torch.class_sharding.class_shard_sizes]: the first K % world
ranks one class more) as a [`ClassifierShard`][frlr.heads.class_parallel.ClassifierShard], a
module outside DDP that the linear loss takes with its ``process_group``. The backbone stays
under DDP with [`sum_allreduce_hook`][frlr.torch.class_sharding.sum_allreduce_hook]: every rank's
loss is already the global batch's mean, so the ranks' backbone gradients are summed, and each
shard's gradient is its rows of the global one; nothing is scaled by the batch shares. The
network is built whole, from the seed, and each rank copies its rows out of that whole
classifier: a class-parallel run starts from the same model as one without ``--class-parallel``,
and trains the same weights to float round-off.

Evaluation and saved models: the network keeps the whole classifier, frozen (it is neither in
DDP nor in the optimiser), and the shards' ``gather_into`` refreshes it (an all-gather) after
every epoch's training. Evaluation then runs the whole network on every rank, with the full
logits, as without ``--class-parallel``, and ``checkpoint.pt`` holds the whole model for
whatever loads one. The trade-off is memory: every
rank holds the K x d weight whole once and its shard once more; what class-parallel divides by
the world is the classifier's gradient, its optimiser state and the loss's work. That fits the
toolkit's datasets; a classifier too large for one device would need evaluation from
all-gathered per-shard logits instead, which is not built.

Checkpoints: each rank writes ``classifier-shard-{rank}-of-{world}-epoch-{E}.pt`` (its rows, the
split, and its rows' optimiser state); once all are written, rank 0 writes ``checkpoint.pt``
(the whole model, the backbone's optimiser state, and under ``class_shards`` the manifest: world
size, shard sizes, epoch and file names) and deletes older epochs' shard files. The epoch in the
name keeps a killed run resumable: ``checkpoint.pt`` names only files completed before it.
``--resume`` with the same process count restores each shard and its optimiser state bitwise;
another count is refused by the training loop (per-rank random states do not carry over).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from frlr.config import ConfigError
from frlr.heads.chunked import ChunkedHead
from frlr.io import CHECKPOINT_REMEDY, CheckpointError, load_checkpoint, save_torch_atomic
from frlr.torch.class_sharding import ShardGroup, class_shard_sizes, sum_allreduce_hook
from frlr.torch.linear import linear_argmax

__all__ = [
    "ClassParallelHead",
    "ClassifierShard",
    "remove_stale_shards",
    "require_processes",
    "restore_shard",
    "save_shard",
    "shard_file",
]

_SHARD_FILE = re.compile(r"classifier-shard-(\d+)-of-(\d+)-epoch-(\d+)\.pt")


def require_processes(world: int) -> None:
    """``--class-parallel`` in one process is refused rather than ignored: there is nothing to
    shard, and a run that silently trains unsharded is not the run that was asked for."""
    if world < 2:
        raise ConfigError(
            "--class-parallel shards the classifier over torchrun's processes, and this run has "
            "1 process; launch it with torchrun --nproc_per_node N (N >= 2), or leave "
            "--class-parallel out"
        )


def shard_file(rank: int, world: int, epoch: int) -> str:
    """The file name of rank ``rank``'s shard after ``epoch`` epochs."""
    return f"classifier-shard-{rank}-of-{world}-epoch-{epoch}.pt"


class ClassifierShard(nn.Module):
    """This rank's rows of a whole Linear classifier, and the collectives over its shards.

    Args:
        whole: the network's classifier (K, d), as initialised; its rows are copied.
        world: the number of processes; rank: this one's. Every rank builds its shard at the
            same point: building makes a new process group.
    """

    def __init__(self, whole: nn.Linear, world: int, rank: int) -> None:
        super().__init__()
        num_classes = whole.weight.shape[0]
        if num_classes < world:
            raise ConfigError(
                f"--class-parallel: the {num_classes} classes cannot be split over {world} "
                f"processes (every rank needs one); run at most {num_classes} processes"
            )
        self.sizes = class_shard_sizes(num_classes, world)
        self.rank, self.world, self.num_classes = rank, world, num_classes
        self.offset = sum(self.sizes[:rank])
        rows = slice(self.offset, self.offset + self.sizes[rank])
        self.weight = nn.Parameter(whole.weight.detach()[rows].clone())
        bias = None if whole.bias is None else nn.Parameter(whole.bias.detach()[rows].clone())
        self.register_parameter("bias", bias)
        # A group of its own per run: the classifier's collectives stay apart from DDP's on
        # the default group. Each loss call checks the layout across the ranks.
        self.process_group = dist.new_group(list(range(world)))
        self.shards = ShardGroup(self.process_group)

    @torch.no_grad()
    def argmax(self, features: Tensor) -> Tensor:
        """The top class of each of this rank's rows over every rank's classes (ties: the lower
        class, as ``torch.argmax``): every rank scores the gathered global batch against its
        own classes, then the ranks' best scores are compared."""
        return linear_argmax(features, self.weight, self.bias, process_group=self.process_group)

    @torch.no_grad()
    def gather_into(self, whole: nn.Linear) -> None:
        """Copy every rank's rows into ``whole`` on every rank (an all-gather)."""
        whole.weight.copy_(self._gather(self.weight))
        if self.bias is not None:
            whole.bias.copy_(self._gather(self.bias))

    def _gather(self, tensor: Tensor) -> Tensor:
        most = max(self.sizes)
        every = self.shards.all_gather_rows(tensor.detach(), self.sizes)
        return torch.cat([every[r * most : r * most + n] for r, n in enumerate(self.sizes)])


def _positions(optimizer: torch.optim.Optimizer, shard: ClassifierShard) -> dict[str, int]:
    """The shard's parameters' indices in ``optimizer.state_dict()``, by parameter name."""
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    index = {id(p): i for i, p in enumerate(flat)}
    return {name: index[id(p)] for name, p in shard.named_parameters()}


def save_shard(
    shard: ClassifierShard, optimizer: torch.optim.Optimizer, run_dir: Path, epoch: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write this rank's shard file after ``epoch`` epochs and wait for every rank's; return
    what rank 0's ``checkpoint.pt`` holds of it: the optimiser state without the shard's
    parameters, and the manifest."""
    state = optimizer.state_dict()
    positions = _positions(optimizer, shard)
    own = {name: state["state"][i] for name, i in positions.items() if i in state["state"]}
    save_torch_atomic(
        {
            "format": 1,
            "epoch": epoch,
            "rank": shard.rank,
            "sizes": shard.sizes,
            "weight": shard.weight.detach(),
            "bias": None if shard.bias is None else shard.bias.detach(),
            "optimizer": own,
        },
        run_dir / shard_file(shard.rank, shard.world, epoch),
    )
    dist.barrier(group=shard.process_group)  # checkpoint.pt may name the files only once all exist
    shared = set(positions.values())
    backbone = {
        "state": {i: s for i, s in state["state"].items() if i not in shared},
        "param_groups": state["param_groups"],
    }
    manifest = {
        "world_size": shard.world,
        "num_classes": shard.num_classes,
        "sizes": shard.sizes,
        "epoch": epoch,
        "files": [shard_file(rank, shard.world, epoch) for rank in range(shard.world)],
    }
    return backbone, manifest


def remove_stale_shards(run_dir: Path, epoch: int) -> None:
    """Delete the shard files of epochs before ``epoch`` (rank 0, once ``checkpoint.pt`` of
    ``epoch`` is written; later ones, of a killed run, are overwritten when trained again)."""
    for path in run_dir.glob("classifier-shard-*.pt"):
        match = _SHARD_FILE.fullmatch(path.name)
        if match is not None and int(match.group(3)) < epoch:
            path.unlink(missing_ok=True)


def restore_shard(
    shard: ClassifierShard,
    optimizer: torch.optim.Optimizer,
    checkpoint: dict[str, Any],
    run_dir: Path,
) -> dict[str, Any]:
    """Load this rank's rows from the shard file ``checkpoint``'s manifest names; return the
    checkpoint's optimiser state with the shard's parameters' state put back."""
    manifest = checkpoint["class_shards"]
    path = run_dir / manifest["files"][shard.rank]
    if manifest["sizes"] != shard.sizes:
        raise CheckpointError(
            run_dir / "checkpoint.pt",
            f"splits the classifier as {manifest['sizes']}, this run as {shard.sizes}",
            "resume with the same data and number of processes",
        )
    if not path.exists():
        raise CheckpointError(path, "missing (checkpoint.pt names it)", CHECKPOINT_REMEDY)
    saved = load_checkpoint(path, ("epoch", "sizes", "weight", "bias", "optimizer"))
    if (saved["epoch"], saved["sizes"]) != (manifest["epoch"], shard.sizes):
        problem = (
            f"holds epoch {saved['epoch']} split {saved['sizes']}; checkpoint.pt names epoch "
            f"{manifest['epoch']} split {shard.sizes}"
        )
        raise CheckpointError(path, problem, CHECKPOINT_REMEDY)
    with torch.no_grad():
        shard.weight.copy_(saved["weight"])
        if shard.bias is not None:
            shard.bias.copy_(saved["bias"])
    positions = _positions(optimizer, shard)
    state = checkpoint["optimizer"]
    own = {positions[name]: value for name, value in saved["optimizer"].items()}
    return {"state": {**state["state"], **own}, "param_groups": state["param_groups"]}


class ClassParallelHead(ChunkedHead):
    """[`ChunkedHead`][frlr.heads.ChunkedHead] over this rank's
    [`ClassifierShard`][frlr.heads.class_parallel.ClassifierShard]: the loss gathers the global
    batch, so each rank's loss is the global batch's mean and the backbone's DDP sums; the
    model's whole classifier is frozen, refreshed from the shards for evaluation and
    ``checkpoint.pt``; each rank checkpoints its shard in a file of its own.

    Args:
        config: the run's validated config (``--classifier chunked --class-parallel``).
    """

    shard: ClassifierShard  # made by attach: this rank's rows, which the loss and argmax use

    def check_processes(self, world: int) -> None:
        """One process is refused: there is nothing to shard
        ([`require_processes`][frlr.heads.class_parallel.require_processes])."""
        require_processes(world)

    def network(self, model: nn.Module) -> nn.Module:
        """The model up to its classifier, whose whole copy is frozen: the shards train it."""
        net = super().network(model)
        model.classifier.requires_grad_(False)
        return net

    def configure_ddp(self, ddp: nn.parallel.DistributedDataParallel) -> None:
        """Sum the backbone's gradients over the ranks: every rank's loss is the global one."""
        ddp.register_comm_hook(None, sum_allreduce_hook)

    def attach(self, model: nn.Module, rank: int, world: int, device: torch.device) -> None:
        """This rank's shard of the classifier (every rank at once: it makes a process group)."""
        super().attach(model, rank, world, device)
        self.whole = model.classifier
        self.shard = self.rows = ClassifierShard(model.classifier, world, rank)

    def trained_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The model's trainable parameters (not its frozen classifier), then the shard's."""
        return [*super().trained_parameters(model), *self.shard.parameters()]

    def argmax(self, outputs: Tensor) -> Tensor:
        """The top class over every rank's classes, for this rank's rows."""
        return self.shard.argmax(outputs)

    def ddp_loss(self, loss: Tensor, rows: int, global_rows: int, world: int) -> Tensor:
        """The loss itself: it is the global batch's mean already, and DDP sums."""
        del rows, global_rows, world
        return loss

    def gather(self) -> None:
        """Every rank's rows into the model's whole classifier, on every rank."""
        self.shard.gather_into(self.whole)

    def save_state(
        self, optimizer: torch.optim.Optimizer, run_dir: Path, epoch: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """This rank's shard file ([`save_shard`][frlr.heads.class_parallel.save_shard]); the
        backbone's optimiser state and the manifest, ``class_shards``, for ``checkpoint.pt``."""
        optimizer_state, manifest = save_shard(self.shard, optimizer, run_dir, epoch)
        return optimizer_state, {"class_shards": manifest}

    def checkpoint_saved(self, run_dir: Path, epoch: int) -> None:
        """Delete the shard files of earlier epochs: ``checkpoint.pt`` no longer names them."""
        remove_stale_shards(run_dir, epoch)

    def restore_state(
        self, optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any], run_dir: Path
    ) -> dict[str, Any]:
        """This rank's shard and its optimiser state, from the file the manifest names
        ([`restore_shard`][frlr.heads.class_parallel.restore_shard])."""
        return restore_shard(self.shard, optimizer, checkpoint, run_dir)
