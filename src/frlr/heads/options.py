"""The keyword options of the training loss, built here and nowhere else.

Three sources give them: the catalogue names each loss's hyper-parameters
([`frlr.catalogue`][frlr.catalogue]), the config gives their values (the catalogue's paper
default where it leaves one out), and a batch mixed in sparse form for a logits-free loss
brings its target weights and label smoothing. A class-parallel head adds where its shard of the
classifier sits among the ranks' (its process group, its first class, the class count).
"""

from __future__ import annotations

from typing import Any, Protocol

from frlr.catalogue import LOSS_HYPERPARAMETERS, default_hyperparameter
from frlr.config import TrainConfig
from frlr.data.mixing import SparseMixedBatch

__all__ = ["ShardLayout", "loss_options"]


class ShardLayout(Protocol):
    """Where one rank's rows of a class-sharded classifier sit (a
    [`ClassifierShard`][frlr.heads.class_parallel.ClassifierShard] is one)."""

    process_group: object
    offset: int
    num_classes: int


def loss_options(
    config: TrainConfig,
    *,
    mixed: SparseMixedBatch | None = None,
    shard: ShardLayout | None = None,
) -> dict[str, Any]:
    """The options of ``config``'s loss: every hyper-parameter the catalogue gives it, with the
    config's value or the paper's default, then ``mixed``'s sparse soft targets and ``shard``'s
    layout when given.

    The hyper-parameters alone (no ``mixed``, no ``shard``) are what a run reports in
    ``result.json`` and what the NCD statistics take; a logits-free head passes all three to
    its loss at every step.

    Args:
        config: the run's config (its ``loss``, ``beta``, ``m``, ``r``).
        mixed: this step's batch after [`mix_batch_sparse`][frlr.data.mixing.mix_batch_sparse].
        shard: this rank's rows of a class-parallel classifier.

    Examples:
        >>> from frlr.config import TrainConfig
        >>> from frlr.heads import loss_options
        >>> loss_options(TrainConfig(loss="ss-lr", r=1.0))
        {'beta': 10.0, 'r': 1.0}
    """
    options: dict[str, Any] = {}
    for name in LOSS_HYPERPARAMETERS[config.loss]:
        given = getattr(config, name)
        options[name] = default_hyperparameter(config.loss, name) if given is None else given
    if mixed is not None:
        options["target_weights"] = mixed.target_weights
        options["label_smoothing"] = mixed.label_smoothing
    if shard is not None:
        options["process_group"] = shard.process_group
        options["class_offset"] = shard.offset
        options["num_classes"] = shard.num_classes
    return options
