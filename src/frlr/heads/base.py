"""What the training loop asks of a classifier head, and what every head does alike.

A head is the one object that knows how the network's last Linear meets the loss: the loop
builds the network, hands it to the head, and from then on calls the head without asking which
one it is. The defaults here are those of a head that the ordinary DDP average trains and that
one ``checkpoint.pt`` holds whole; the class-parallel head overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from frlr.config import TrainConfig
from frlr.data.mixing import SparseMixedBatch

__all__ = ["ClassifierHead", "TrainingBatch"]


@dataclass(frozen=True)
class TrainingBatch:
    """One step's normalised batch after the head's mixing.

    Attributes:
        images: the (N, C, H, W) float batch the network takes.
        targets: what the loss trains on: class indices or multi-hot rows, soft (N, K) rows
            after dense mixing, or each row's label pair after sparse mixing.
        labels: what the training accuracy counts against: each sample's own labels, or the
            larger-weight sample's of a mixed pair.
        mixed: the sparse mixing's record (pairs' weights, smoothing) for a logits-free loss;
            None otherwise.
    """

    images: Tensor
    targets: Tensor
    labels: Tensor
    mixed: SparseMixedBatch | None = None


class ClassifierHead:
    """The classifier head of one run, chosen once from its config by
    [`choose_head`][frlr.heads.choose_head].

    The loop calls, in order: `check_processes` before the run directory is touched;
    `network` on the built model, then `configure_ddp` on its DDP wrapper when there
    are several processes, then `attach`; `trained_parameters` for the optimiser; per
    step `batch`, `loss`, `argmax` and `ddp_loss`; after each epoch's
    training `gather`; around each checkpoint `save_state` and `checkpoint_saved`,
    and `restore_state` on a resume.

    Args:
        config: the run's validated config.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.mixing = {
            "mixup": config.mixup,
            "cutmix": config.cutmix,
            "label_smoothing": config.label_smoothing,
        }

    def check_processes(self, world: int) -> None:
        """Refuse a process count this head cannot train with (any count will do here)."""
        del world

    def network(self, model: nn.Module) -> nn.Module:
        """The module that runs each step (before DDP and compilation): the model itself."""
        return model

    def configure_ddp(self, ddp: nn.parallel.DistributedDataParallel) -> None:
        """How DDP reduces the gradients: its default average of the ranks' shares (each rank's
        loss is weighted by its share of the global batch, `ddp_loss`)."""
        del ddp

    def attach(self, model: nn.Module, rank: int, world: int, device: torch.device) -> None:
        """Take the built model's classifier and make the loss; after `network`
        and DDP, before the optimiser."""
        raise NotImplementedError

    def trained_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """What the optimiser steps: the model's trainable parameters."""
        return [p for p in model.parameters() if p.requires_grad]

    def batch(
        self, images: Tensor, targets: Tensor, generator: torch.Generator, num_classes: int
    ) -> TrainingBatch:
        """The step's batch as this head's loss takes it: mixed and smoothed as the config
        asks (drawing from ``generator``), unchanged when it asks for neither."""
        if not any(self.mixing.values()):
            return TrainingBatch(images, targets, targets)
        return self.mix(images, targets, generator, num_classes)

    def mix(
        self, images: Tensor, targets: Tensor, generator: torch.Generator, num_classes: int
    ) -> TrainingBatch:
        """Mixup, CutMix and label smoothing of one batch, in this head's form of targets."""
        raise NotImplementedError

    def loss(self, net: nn.Module, batch: TrainingBatch) -> tuple[Tensor, Tensor]:
        """(this rank's loss of the batch, the outputs `argmax` reads) after running
        ``net`` on the batch's images."""
        raise NotImplementedError

    def argmax(self, outputs: Tensor) -> Tensor:
        """Each sample's top class from `loss`'s outputs (no gradient)."""
        raise NotImplementedError

    def ddp_loss(self, loss: Tensor, rows: int, global_rows: int, world: int) -> Tensor:
        """The loss to differentiate: under DDP, this rank's mean weighted by its share of the
        global batch, so that DDP's average is the gradient of the global batch mean even when
        the shards differ by one sample."""
        return loss * (rows * world / global_rows) if world > 1 else loss

    def gather(self) -> None:
        """Make the model's classifier whole for evaluation and ``checkpoint.pt``: it is."""

    def save_state(
        self, optimizer: torch.optim.Optimizer, run_dir: Path, epoch: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the optimiser state ``checkpoint.pt`` holds, the head's own entries of it) after
        ``epoch`` epochs: the whole optimiser state, nothing of its own."""
        del run_dir, epoch
        return optimizer.state_dict(), {}

    def checkpoint_saved(self, run_dir: Path, epoch: int) -> None:
        """Tidy up once rank 0 has written ``checkpoint.pt`` of ``epoch``: nothing to do."""
        del run_dir, epoch

    def restore_state(
        self, optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any], run_dir: Path
    ) -> dict[str, Any]:
        """The optimiser state to load on a resume, from the loaded ``checkpoint``: its own."""
        del optimizer, run_dir
        return checkpoint["optimizer"]
