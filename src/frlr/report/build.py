"""``frlr report RUN_DIR``: a finished (or running) comparison or sweep as a paper-style report.

    frlr report runs/digits-small-cnn-cpu          # -> RUN_DIR/report/report.md, report.html

Writes into ``RUN_DIR/report/``: ``report.md`` and ``report.html`` (offline: no script, no
CDN, images by relative path) and the figures they show, each made only when its data exists:

* the results table with the paired significance test, recomputed from the runs on disk;
* ``sweep_<param>.png`` (sweeps): the primary metric against the value (Fig. 6 and 7);
* ``test_<metric>.png``: the task's primary test metric per epoch, mean ± std over seeds (Fig. 5);
* ``train_loss.png``: the training loss per epoch on a log axis (Fig. 4);
* ``ncd.png``: the four NCD panels (Fig. 2) of each group's first seed, from ``ncd.jsonl``
  (runs trained with ``--ncd-every N``), with the verdict of :func:`frlr.ncd.ncd_verdict`;
* ``tsne.png`` (classification): t-SNE of test features of each group's first finished seed
  (Fig. 1; what is embedded is in :mod:`frlr.report.embedding`). Re-id and multi-label runs
  get no t-SNE: their features answer another question (identities, several labels per image);

then the per-run table and how to reproduce it all (commands, versions, hardware, wall times).
A figure that fails is a warning and a line in the report, never a lost report.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import frlr
from frlr.experiments.results import metric_label
from frlr.io import write_text_atomic
from frlr.ncd import ncd_verdict, plot_ncd, read_history
from frlr.report import embedding, figures, provenance, tables
from frlr.report.document import Code, Figure, Heading, Paragraph, Table, to_html, to_markdown
from frlr.report.runs import Experiment, load_experiment
from frlr.style import loss_label

__all__ = ["build_report"]


class _Attempts:
    """Runs each figure's code; a failure warns and is listed, the report goes on."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.failures: list[str] = []
        self.log = log

    def __call__(self, what: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except Exception as error:
            message = f"{what}: {type(error).__name__}: {error}"
            warnings.warn(f"frlr report: {message} (the rest of the report is made)", stacklevel=2)
            self.failures.append(message)
            return None


def _title(experiment: Experiment) -> str:
    config = (experiment.saved or {}).get("config") or experiment.runs[0].config
    where = f"{config.get('dataset', '?')}, {config.get('arch', '?')}"
    if experiment.kind == "sweep":
        return f"{where}: {str(experiment.loss).upper()} against {experiment.param}"
    return f"{where}: {', '.join(g.label for g in experiment.groups)}"


def _first_runs(experiment: Experiment, finished: bool):
    """(group, its lowest-seed run) per group, finished runs only when asked."""
    for group in experiment.groups:
        runs = group.finished if finished else group.runs
        if runs:
            yield group, runs[0]


def _tsne(experiment: Experiment, out: Path, classes: int, per_class: int) -> Figure:
    chosen = list(_first_runs(experiment, finished=True))
    if not chosen:
        raise ValueError("no finished run to embed")
    data = embedding.load_feature_data(chosen[0][1].config, classes, per_class)
    panels = []
    for group, run in chosen:
        features = embedding.run_features(run, data)
        coords = embedding.tsne_2d(features)
        panels.append((f"{group.label} (seed {run.seed})", group.color, coords, data.labels))
    figures.tsne_figure(panels, data.class_names, out / "tsne.png")
    names = [  # WordNet lists synonyms: "goldfish, Carassius auratus" -> "goldfish"
        data.class_names[c].split(",")[0].strip() if c < len(data.class_names) else str(c)
        for c in data.class_ids
    ]
    n = len(data.labels)
    caption = (
        f"t-SNE of test-set features (model.features, the classifier's input) of each "
        f"{'value' if experiment.kind == 'sweep' else 'loss'}'s lowest-seed finished run, for "
        f"the first {len(data.class_ids)} class ids ({', '.join(names)}), at most {per_class} "
        f"images of each drawn with numpy seed {embedding.SELECTION_SEED} ({n} points, the same "
        f"in every panel); scikit-learn TSNE, PCA init, random_state {embedding.TSNE_SEED}, "
        f"perplexity {embedding.perplexity_for(n):.3g}. Compare the paper's Fig. 1."
    )
    return Figure("tsne.png", caption, "t-SNE of test features per loss")


def _ncd(experiment: Experiment, out: Path) -> tuple[Figure, str] | None:
    paths = {
        group.label: str(run.ncd_path)
        for group, run in _first_runs(experiment, finished=False)
        if run.ncd_path is not None
    }
    if not paths:
        return None
    last = max(r["step"] for path in paths.values() for r in read_history(path))
    xscale = "symlog" if last > 200 else "linear"  # spread out the first steps of long runs
    plot_ncd(paths, out / "ncd.png", xscale=xscale)
    every = {run.config.get("ncd_every") for run in experiment.runs if run.ncd_path}
    caption = (
        "Negative class distraction (the paper's Fig. 2) of each group's lowest-seed run, "
        f"recorded every {', '.join(str(e) for e in sorted(every, key=str))} training step(s) on "
        "the training batch: (a) loss, (b) positive-class part, (c) negative-class part, (d) "
        "ratio of the gradient on the positive logit to that on the negatives (log y axes"
        + ("; steps linear to 10, logarithmic after)." if xscale == "symlog" else ").")
    )
    try:
        verdict = ncd_verdict(paths).summary
    except Exception as error:  # the figure stands without the verdict
        verdict = f"No verdict: {error}"
    return Figure("ncd.png", caption, "NCD panels"), verdict


def build_report(
    run_dir: str | Path,
    *,
    tsne: bool = True,
    tsne_classes: int = embedding.TSNE_CLASSES,
    tsne_points: int = embedding.TSNE_POINTS,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Write ``run_dir/report/`` for a ``frlr compare`` or ``frlr sweep`` directory and return
    the path of ``report.md`` (``report.html`` lies beside it).

    tsne: embed test features (classification only; a few seconds per loss on a CPU).
    tsne_classes, tsne_points: how many classes (the first ids) and images per class.
    The sections, in order: results (and the sweep's plot), convergence, NCD, the feature
    embedding, the runs and their reproduction; a figure that fails is listed under "Not made".
    """
    say = log if log is not None else (lambda _: None)
    experiment = load_experiment(run_dir)
    out = experiment.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    attempt = _Attempts(say)
    summary = tables.summarize(experiment)
    title = _title(experiment)
    blocks: list[Any] = [
        Heading(title, 1),
        _overview(experiment),
        Heading("Results"),
        tables.results_table(experiment, summary),
    ]
    if experiment.kind == "sweep":
        blocks += _sweep_section(experiment, summary, out, attempt)
    blocks += _convergence_section(experiment, out, attempt)
    ncd = attempt("ncd.png", lambda: _ncd(experiment, out))
    if ncd:
        figure, verdict = ncd
        blocks += [Heading("Negative class distraction"), figure, Paragraph(verdict)]
    if experiment.problems:
        blocks.append(Heading("Damaged or missing runs"))
        blocks.append(
            Paragraph(
                "Left out of every mean, test and figure above (a damaged config.json or "
                "metrics.jsonl beside a sound result.json costs only its curves):",
                True,
            )
        )
        blocks += [Paragraph(problem) for problem in experiment.problems]
    blocks += _embedding_section(experiment, out, attempt, tsne, tsne_classes, tsne_points)
    blocks += [Heading("Runs"), tables.runs_table(experiment), Heading("Reproduction")]
    blocks += _reproduction_section(experiment, attempt)
    if attempt.failures:
        blocks.append(Heading("Not made"))
        blocks += [Paragraph(failure) for failure in attempt.failures]
    write_text_atomic(out / "report.md", to_markdown(blocks))
    write_text_atomic(out / "report.html", to_html(blocks, title))
    flawed = f"; {len(experiment.problems)} damaged file(s) or missing run(s) listed there"
    say(
        f"report: {out / 'report.md'} and report.html ({len(attempt.failures)} figure(s) "
        f"failed{flawed if experiment.problems else ''})"
    )
    return out / "report.md"


def _overview(experiment: Experiment) -> Paragraph:
    """What the experiment is, how far it got, and when and from where the report was made."""
    runs = experiment.runs
    finished = sum(run.finished for run in runs)
    missing = sum(len(group.missing) for group in experiment.groups)
    damaged = sum(bool(run.damaged) for run in runs)
    flaws = [f"{n} {what}" for n, what in ((damaged, "damaged"), (missing, "missing")) if n]
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = {
        "sweep": f"Sweep of {experiment.param} for {str(experiment.loss).upper()}",
        "run": "One run",
    }.get(experiment.kind, "Comparison of losses")
    return Paragraph(
        f"{what}, task {experiment.task}, primary metric {experiment.primary_metric}: "
        f"{finished} of {len(runs) + missing} runs finished"
        + (f" ({', '.join(flaws)}: see Damaged or missing runs)" if flaws else "")
        + ", seeds "
        f"{', '.join(map(str, experiment.seeds)) or 'none'}. "
        f"Made by frlr {frlr.__version__} on {made} from {experiment.path}."
    )


def _sweep_section(
    experiment: Experiment, summary: dict[str, Any], out: Path, attempt: _Attempts
) -> list[Any]:
    """The primary metric against the swept value (Fig. 6, 7)."""
    primary = experiment.primary_metric
    name = f"sweep_{experiment.param}.png"
    made = attempt(
        name,
        lambda: figures.sweep_figure(tables.sweep_results(experiment, summary), out / name),
    )
    if not made:
        return []
    caption = (
        f"Test {metric_label(primary)} against {experiment.param}: mean over seeds with an "
        "error bar of one sample standard deviation, each seed a grey dot, the loss's default "
        "dotted. Compare the paper's Fig. 6 (m) and Fig. 7 (r)."
    )
    return [Figure(name, caption, f"{primary} against {experiment.param}")]


def _convergence_section(experiment: Experiment, out: Path, attempt: _Attempts) -> list[Any]:
    """The test metric and the training loss per epoch (Fig. 5, Fig. 4)."""
    primary = experiment.primary_metric
    legend = loss_label(str(experiment.loss)) if experiment.kind == "sweep" else None
    blocks: list[Any] = [Heading("Convergence")]
    name = f"test_{primary}.png"
    if attempt(
        name,
        lambda: figures.curves_figure(
            experiment.groups,
            f"test_{primary}",
            figures.metric_axis_label(primary),
            out / name,
            legend_title=legend,
        ),
    ):
        caption = (
            f"Test {metric_label(primary)} after each epoch: mean over seeds (line) and one "
            "sample standard deviation (band). Compare the paper's Fig. 5."
        )
        blocks.append(Figure(name, caption, f"test {primary} per epoch"))
    if attempt(
        "train_loss.png",
        lambda: figures.curves_figure(
            experiment.groups,
            "train_loss",
            "training loss (nats per sample)",
            out / "train_loss.png",
            percent=False,
            logy=True,
            legend_title=legend,
        ),
    ):
        caption = (
            "Training loss per epoch (mean over the epoch's batches; log axis), mean over "
            "seeds and one standard deviation. Each loss is on its own scale: LR sums K "
            "binary terms per sample. Compare the paper's Fig. 4."
        )
        blocks.append(Figure("train_loss.png", caption, "training loss per epoch"))
    return blocks


def _embedding_section(
    experiment: Experiment,
    out: Path,
    attempt: _Attempts,
    tsne: bool,
    tsne_classes: int,
    tsne_points: int,
) -> list[Any]:
    """The t-SNE of test features per loss (Fig. 1), or why there is none."""
    blocks: list[Any] = [Heading("Feature embedding")]
    if experiment.task != "classification":
        blocks.append(
            Paragraph(f"No t-SNE for task {experiment.task}: it embeds class features.", True)
        )
    elif not tsne:
        blocks.append(Paragraph("t-SNE skipped (--no-tsne).", True))
    elif not any(run.finished for run in experiment.runs):
        blocks.append(Paragraph("No t-SNE yet: it embeds the features of finished runs.", True))
    else:
        figure = attempt("tsne.png", lambda: _tsne(experiment, out, tsne_classes, tsne_points))
        if figure:
            blocks.append(figure)
    return blocks


def _reproduction_section(experiment: Experiment, attempt: _Attempts) -> list[Any]:
    """The command as invoked, an equivalent one from the saved configs, one ``frlr train``
    line per run, the versions and the hardware."""
    command = (experiment.saved or {}).get("command")
    blocks: list[Any] = [
        Paragraph(
            "As invoked:"
            if command
            else "The invoking command was not recorded (compare() called from Python, or a "
            "run directory written before frlr recorded it)."
        )
    ]
    if command:
        blocks.append(Code([command]))
    equivalent = experiment.kind != "run" and attempt(
        "equivalent command", lambda: provenance.compare_command(experiment)
    )
    if equivalent:
        blocks += [Paragraph("Equivalent, from the saved configs:"), Code([equivalent])]
    trains = attempt("train commands", lambda: provenance.train_commands(experiment))
    if trains:
        blocks.append(Code(trains, f"Each run alone ({len(trains)} frlr train commands)"))
    versions = provenance.version_rows(experiment)
    hardware = provenance.hardware_rows(experiment)
    if versions:
        blocks += [Heading("Versions", 3), Table(["package", "version"], versions)]
    if hardware:
        blocks += [Heading("Hardware", 3), Table(["", "value"], hardware)]
    return blocks
