"""Tables, figures and reports over training records: ``frlr report RUN_DIR``.

* :func:`build_report` (:mod:`frlr.report.build`): a comparison or sweep directory ->
  ``RUN_DIR/report/report.md`` and ``report.html`` with the paper's figures;
* :mod:`frlr.report.runs`: what a run directory holds, grouped by loss or swept value;
* :mod:`frlr.report.tables`: the results and per-run tables, recomputed from the runs;
* :mod:`frlr.report.figures`: the curves (Fig. 4, 5), the sweep (Fig. 6, 7) and t-SNE (Fig. 1);
* :mod:`frlr.report.embedding`: test features from a checkpoint, and their t-SNE;
* :mod:`frlr.report.provenance`: commands, versions, hardware;
* :mod:`frlr.report.document`: the blocks and their Markdown and HTML renderings.

The framework-neutral pieces that the loss libraries also use live outside this package:
:mod:`frlr.ncd` (NCD records, verdict, Fig. 2) and :mod:`frlr.style` (one colour per loss), so
``frlr.torch`` and ``frlr.keras`` never import the toolkit.
"""

__all__ = ["build_report"]


def __getattr__(name: str):
    # build imports frlr.train and matplotlib helpers: load it on first use.
    if name == "build_report":
        from frlr.report.build import build_report

        return build_report
    raise AttributeError(f"module 'frlr.report' has no attribute {name!r}")
