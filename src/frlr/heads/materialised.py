"""``--classifier materialised``: the network returns its logits and the loss takes them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from frlr.data.mixing import mix_batch
from frlr.heads.base import ClassifierHead, TrainingBatch
from frlr.heads.options import loss_options
from frlr.torch.losses import LOSSES

__all__ = ["MaterialisedHead"]


class MaterialisedHead(ClassifierHead):
    """The network's own last layer makes the (N, K) logits; the loss module of
    [`LOSSES`][frlr.torch.LOSSES] takes them with dense targets (soft (N, K) rows when mixed).
    Its outputs are the logits, which the NCD monitor reads too.

    Args:
        config: the run's validated config.
    """

    def attach(self, model: nn.Module, rank: int, world: int, device: torch.device) -> None:
        """The loss module, with the config's hyper-parameters."""
        del model, rank, world
        self.criterion = LOSSES[self.config.loss](**loss_options(self.config)).to(device)

    def mix(
        self, images: Tensor, targets: Tensor, generator: torch.Generator, num_classes: int
    ) -> TrainingBatch:
        """[`mix_batch`][frlr.data.mixing.mix_batch]: soft (N, K) targets."""
        mixed = mix_batch(images, targets, generator, num_classes=num_classes, **self.mixing)
        return TrainingBatch(mixed.images, mixed.targets, mixed.dominant)

    def loss(self, net: nn.Module, batch: TrainingBatch) -> tuple[Tensor, Tensor]:
        """(the loss of the logits, the logits)."""
        logits = net(batch.images)
        return self.criterion(logits, batch.targets), logits

    def argmax(self, outputs: Tensor) -> Tensor:
        """The top class of each row of the logits."""
        return outputs.detach().argmax(dim=1)
