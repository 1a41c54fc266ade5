"""``--classifier chunked``: the network's last Linear fused with a logits-free loss
([`frlr.torch.linear`][frlr.torch.linear_lr_loss]), which never forms the (N, K) logits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from frlr.config import ConfigError
from frlr.data.mixing import mix_batch_sparse
from frlr.heads.base import ClassifierHead, TrainingBatch
from frlr.heads.options import ShardLayout, loss_options
from frlr.torch import linear
from frlr.torch.linear import LINEAR_LOSSES, linear_argmax, positive_lists

__all__ = ["ChunkedHead", "Features"]

LINEAR_LOSS_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    name: getattr(linear, f"linear_{name.replace('-', '_')}_loss") for name in LINEAR_LOSSES
}
"""The functional form of each logits-free loss (``hs-lr``: ``linear_hs_lr_loss``), called
with every option of a step at once ([`loss_options`][frlr.heads.loss_options])."""


class Features(nn.Module):
    """The network up to its classifier: what DDP runs when the classifier is fused with the
    loss. The model is its submodule, so DDP still reduces the classifier's gradient (which
    reaches it through the loss).

    Args:
        model: a network with ``features(x)`` and a Linear ``classifier``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.features(x)


class ChunkedHead(ClassifierHead):
    """The network returns its features; the loss takes them with the classifier's weight and
    bias, chunk by chunk over the classes, and the top class is found the same way. Mixed
    targets stay sparse: each row's two labels, their weights and eps, never an (N, K) row.

    Args:
        config: the run's validated config.
    """

    shard: ShardLayout | None = None
    """Where this rank's rows sit among the ranks' when the classifier is sharded."""

    def network(self, model: nn.Module) -> nn.Module:
        """The model up to its classifier; a network without ``features(x)`` and a Linear
        classifier is refused."""
        head = getattr(model, "classifier", None)
        if not callable(getattr(model, "features", None)) or not isinstance(head, nn.Linear):
            raise ConfigError(
                f"--classifier chunked needs a network with features(x) and a Linear "
                f"classifier; arch {self.config.arch!r} has not"
            )
        return Features(model)

    def attach(self, model: nn.Module, rank: int, world: int, device: torch.device) -> None:
        """The rows the loss trains: the model's whole classifier."""
        del rank, world, device
        self.rows: nn.Module = model.classifier
        self.loss_function = LINEAR_LOSS_FUNCTIONS[self.config.loss]

    def mix(
        self, images: Tensor, targets: Tensor, generator: torch.Generator, num_classes: int
    ) -> TrainingBatch:
        """[`mix_batch_sparse`][frlr.data.mixing.mix_batch_sparse]: the same draws as the
        dense mixing, its targets as label pairs with their weights."""
        del num_classes
        mixed = mix_batch_sparse(images, targets, generator, **self.mixing)
        return TrainingBatch(mixed.images, mixed.targets, mixed.dominant, mixed)

    def loss(self, net: nn.Module, batch: TrainingBatch) -> tuple[Tensor, Tensor]:
        """(the loss of the features against the classifier's rows, the features); multi-hot
        rows reach it as positive lists."""
        features = net(batch.images)
        targets = batch.targets
        target = positive_lists(targets) if targets.is_floating_point() else targets
        options = loss_options(self.config, mixed=batch.mixed, shard=self.shard)
        weight, bias = self.rows.weight, self.rows.bias
        return self.loss_function(features, weight, target, bias=bias, **options), features

    def argmax(self, outputs: Tensor) -> Tensor:
        """The top class of each row of the features, class chunk by class chunk."""
        return linear_argmax(outputs, self.rows.weight, self.rows.bias)
