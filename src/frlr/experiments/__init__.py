"""Experiments over the losses: ``compare`` (every loss x seed, resumable, with significance).

* :func:`compare` (:mod:`frlr.experiments.compare`): train every (loss, seed) pair with one
  recipe, skip finished runs, tabulate mean +- std per loss and the paired Wilcoxon p-value
  against the task's baseline, SR or LR (``results.json``, ``results.csv``, ``results.md``);
* :func:`frlr.experiments.sweep.sweep`: one loss hyper-parameter (m, r, beta) over values x
  seeds, through compare's run-or-reuse machinery (``sweep.json``, ``sweep.csv``, ``sweep.md``);
* :class:`Task` (:mod:`frlr.experiments.tasks`): what differs between the paper's settings
  (labels, training accuracy, metrics, baseline): classification, re-id and multi-label;
* :mod:`frlr.experiments.stats`: mean/std over seeds, the paired test and its footnote;
* :mod:`frlr.experiments.small_models`: ``small-cnn`` and ``mlp`` for 8x8 digits.
"""

from frlr.experiments.small_models import ARCHS, SMALL_MODELS, build_model
from frlr.experiments.stats import PairedTest, mean_std, min_two_sided_p, paired_wilcoxon
from frlr.experiments.tasks import (
    KNOWN_TASKS,
    TASKS,
    ClassificationTask,
    EvalData,
    MultilabelTask,
    ReidTask,
    Task,
    UnsupportedTaskError,
    get_task,
)

__all__ = [
    "ARCHS",
    "KNOWN_TASKS",
    "SMALL_MODELS",
    "TASKS",
    "ClassificationTask",
    "EvalData",
    "MultilabelTask",
    "PairedTest",
    "ReidTask",
    "Task",
    "UnsupportedTaskError",
    "build_model",
    "compare",
    "get_task",
    "mean_std",
    "min_two_sided_p",
    "paired_wilcoxon",
]


def __getattr__(name: str):
    # compare imports frlr.train, which imports this package: load it on first use.
    if name == "compare":
        from frlr.experiments.compare import compare

        return compare
    raise AttributeError(f"module 'frlr.experiments' has no attribute {name!r}")
