"""The classifier head of a training run: how the network's last Linear meets the loss.

The training loop ([`frlr.train`][frlr.train]) asks [`choose_head`][frlr.heads.choose_head] once
for its run's head and from then on calls it without asking which one it is
([`ClassifierHead`][frlr.heads.ClassifierHead] lists the calls). Each head owns its forward and
loss call, its argmax, its loss's options, how DDP reduces its gradients, its state in
checkpoints and its evaluation-time gather:

* [`MaterialisedHead`][frlr.heads.MaterialisedHead], ``--classifier materialised``: the network
  returns its logits, the loss takes them with dense targets; ``checkpoint.pt`` holds it all.
* [`ChunkedHead`][frlr.heads.ChunkedHead], ``--classifier chunked``: the network returns its
  features, the logits-free loss takes them with the classifier's weight and bias and sparse
  targets; ``checkpoint.pt`` holds it all.
* [`ClassParallelHead`][frlr.heads.ClassParallelHead], ``--classifier chunked
  --class-parallel``: as the chunked head, over this rank's shard of the classifier; the
  backbone's DDP sums, the whole classifier is gathered for evaluation, and each rank
  checkpoints its shard in a file of its own.

The loss's options are built in one place, [`loss_options`][frlr.heads.loss_options].

The package, lowest module first (each imports only those before it): ``options``, ``base``,
``materialised``, ``chunked``, ``class_parallel``.
"""

from __future__ import annotations

from frlr.config import TrainConfig
from frlr.heads.base import ClassifierHead, TrainingBatch
from frlr.heads.chunked import ChunkedHead
from frlr.heads.class_parallel import ClassParallelHead
from frlr.heads.materialised import MaterialisedHead
from frlr.heads.options import loss_options

__all__ = [
    "ChunkedHead",
    "ClassParallelHead",
    "ClassifierHead",
    "MaterialisedHead",
    "TrainingBatch",
    "choose_head",
    "loss_options",
]


def choose_head(config: TrainConfig) -> ClassifierHead:
    """The head ``config`` asks for: ``--classifier`` and ``--class-parallel`` decide it, here
    only.

    Args:
        config: a validated config (``--class-parallel`` only with ``--classifier chunked``).

    Examples:
        >>> from frlr.config import TrainConfig
        >>> from frlr.heads import choose_head
        >>> type(choose_head(TrainConfig(classifier="chunked"))).__name__
        'ChunkedHead'
    """
    if config.classifier == "materialised":
        return MaterialisedHead(config)
    if config.class_parallel:
        return ClassParallelHead(config)
    return ChunkedHead(config)
