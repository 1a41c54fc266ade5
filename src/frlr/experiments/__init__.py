"""Experiments over the losses, each many training runs: ``frlr compare`` and ``frlr sweep``.

* :func:`frlr.experiments.compare.compare`: train every (loss, seed) pair with one recipe, skip
  finished runs, tabulate mean +- std per loss and the paired Wilcoxon p-value against the
  task's baseline, SR or LR (``results.json``, ``results.csv``, ``results.md``);
* :func:`frlr.experiments.sweep.sweep`: one loss hyper-parameter (m, r, beta) over values x
  seeds, through compare's run-or-reuse machinery (``sweep.json``, ``sweep.csv``, ``sweep.md``
  and the plot of Fig. 6/7, :mod:`frlr.experiments.figures`);
* :func:`frlr.experiments.field_sweep.sweep_field`: several losses over the values of any
  training field (``frlr sweep --param lr --losses ...``), on :mod:`frlr.experiments.grid`;
* :func:`frlr.experiments.tune.tune`: each loss at its best grid point on a validation split,
  then over seeds on the whole training split (``frlr tune``);
* :mod:`frlr.experiments.results`: the results tables compare, sweep and the report share;
* :mod:`frlr.experiments.stats`: mean/std over seeds, the paired test and its footnote.

What a task is (targets, metrics, baseline) lives with the training loop in :mod:`frlr.tasks`,
the small networks with the zoo in :mod:`frlr.models`. The report (:mod:`frlr.report`) reads
what these write; only the ``frlr`` command chains an experiment and its report.
"""

from frlr.experiments.stats import PairedTest, mean_std, min_two_sided_p, paired_wilcoxon

__all__ = ["PairedTest", "mean_std", "min_two_sided_p", "paired_wilcoxon"]
