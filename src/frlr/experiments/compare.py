"""``frlr compare``: train every (loss, seed) pair with one recipe and test the differences.

    frlr compare --dataset cifar10 --arch resnet32 --losses sr,lr,hs-lr,ss-lr --seeds 6
    frlr compare --dataset tiny-imagenet --data-dir /data --preset cpu --seeds 3 --out runs/t

Every run lives in ``OUT/<loss>-seed<k>/`` (see :mod:`frlr.train`). A run with a
``result.json`` is finished and skipped; one with only a checkpoint resumes from it; so an
interrupted comparison continues where it stopped when the same command is run again. A
finished run whose config differs from the requested one (other than where or how fast it
runs) is an error rather than silently reused.

The table, printed and written to ``OUT/results.{json,csv,md}``, gives per loss the mean and
sample standard deviation over seeds of every metric of the task, and the p-value of the paired
Wilcoxon signed-rank test of the task's tested metrics against the baseline loss, with the
wall time of every run. The task (``--task``, default: the dataset's) decides the metrics, the
tested ones and the baseline (:mod:`frlr.tasks`): top-1 against SR for
classification; Rank-1 and mAP against SR for re-id; mAP and both balanced accuracies against
LR for multi-label, where SR does not apply (and is left out of the default losses).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from frlr.catalogue import (
    LOSS_HYPERPARAMETERS,
    LOSS_NAMES,
    TABLE_1_LOSSES,
    canonical_loss_name,
)
from frlr.config import ConfigError, TrainConfig, config_differences, seed_problem, validate
from frlr.data import dataset_info
from frlr.experiments.results import finished_note, metric_label, percent, run_row, summarize
from frlr.experiments.reuse import copy_run, find_finished
from frlr.io import (
    is_main_process,
    lock_holder,
    run_lock,
    write_json_atomic,
    write_text_atomic,
)
from frlr.rundir import read_result
from frlr.tasks import Task, get_task
from frlr.train import train

__all__ = [
    "DEFAULT_RUN",
    "RunOptions",
    "compare",
    "default_losses",
    "experiment_dir",
    "finished_result",
    "parse_losses",
    "parse_seeds",
    "run_dir_name",
    "run_each",
    "run_or_reuse",
]

DEFAULT_LOSSES = TABLE_1_LOSSES
"""The losses of the paper's Table 1 (less those a task cannot train: see default_losses)."""


def default_losses(task: str | Task) -> tuple[str, ...]:
    """:data:`DEFAULT_LOSSES` less the losses ``task`` cannot train (multilabel: no SR)."""
    task = get_task(task) if isinstance(task, str) else task
    return tuple(loss for loss in DEFAULT_LOSSES if loss not in task.unsupported_losses)


def parse_losses(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"sr,lr,hs-lr"`` -> ("sr", "lr", "hs-lr"), checked against the loss registry."""
    names = text.split(",") if isinstance(text, str) else list(text)
    given = [name.strip() for name in names if name.strip()]
    if not given:
        raise ConfigError("--losses names no loss")
    for name in given:
        loss, colon, options = name.partition(":")
        if colon and canonical_loss_name(loss.strip()) is not None:
            flags = " ".join(f"--{o.replace('=', ' ')}" for o in options.split(":") if o)
            raise ConfigError(
                f"--losses {name!r}: loss:key=value specs are for frlr sweep --param num-classes "
                f"(one curve each); frlr compare takes loss names, and the hyper-parameters as "
                f"flags for every loss that takes them ({flags or '--r 0'})"
            )
        if canonical_loss_name(name) is None:
            raise ConfigError(f"unknown loss {name.lower()!r}; known: {', '.join(LOSS_NAMES)}")
    losses = tuple(canonical_loss_name(name) or name for name in given)
    if len(set(losses)) != len(losses):
        raise ConfigError(f"--losses names a loss twice: {','.join(losses)}")
    return losses


def parse_seeds(value: int | str | Sequence[int]) -> tuple[int, ...]:
    """``3`` or ``"3"`` -> (0, 1, 2); ``"0,4,7"`` or [0, 4, 7] -> those seeds."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if "," not in text:
                value = int(text)
            else:
                value = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(
                f"--seeds must be a count or a list like 0,1,2, got {text!r}"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEED_COUNT:
            raise ConfigError(
                f"--seeds must be a count from 1 to {MAX_SEED_COUNT} (or a list like 0,4,7), "
                f"got {value}"
            )
        return tuple(range(value))
    return check_seed_list(tuple(int(s) for s in value))


MAX_SEED_COUNT = 10_000
"""The most seeds ``--seeds N`` asks for (a list names any seeds in 0..MAX_SEED)."""


def check_seed_list(seeds: tuple[int, ...]) -> tuple[int, ...]:
    """``seeds`` if each can seed a run and no two give the same random streams: a seed named
    twice, or one that repeats another's streams (0 and 2**32), is refused as a duplicate."""
    if not seeds:
        raise ConfigError("--seeds names no seed")
    first: dict[int, int] = {}
    for seed in seeds:
        state = seed % 2**32  # what numpy's and torch's CPU generators keep of it
        if state in first:
            same = (
                "is named twice"
                if first[state] == seed
                else (
                    f"and {first[state]} give the same generator state ({seed} = "
                    f"{first[state]} mod 2**32)"
                )
            )
            raise ConfigError(f"--seeds: seed {seed} {same}: duplicates, one run counted twice")
        first[state] = seed
    for seed in seeds:
        problem = seed_problem(seed, "--seeds: each seed")
        if problem is not None:
            raise ConfigError(problem)
    return seeds


def run_dir_name(loss: str, seed: int) -> str:
    return f"{loss}-seed{seed}"


def _run_config(base: TrainConfig, loss: str, seed: int, out: Path) -> TrainConfig:
    """``base`` for one run: hyper-parameters the loss does not take are dropped."""
    keep = LOSS_HYPERPARAMETERS[loss]
    hyper = {name: getattr(base, name) if name in keep else None for name in ("beta", "m", "r")}
    return validate(
        replace(base, loss=loss, seed=seed, out=str(out / run_dir_name(loss, seed)), **hyper)
    )


@dataclass(frozen=True)
class RunOptions:
    """How an experiment trains its runs and says what it does, apart from what it measures:
    the options [`compare`][], ``sweep``, ``sweep_losses``, ``sweep_field`` and ``tune`` share.

    Attributes:
        preset: the preset the recipe came from: saved in the results, and part of the default
            output directory ([`experiment_dir`][]).
        progress: a bar over the runs and per-run bars (None: when stderr is a terminal).
        log: where the progress lines go, on the main process only; None says nothing.
        train_fn: the function that trains one run (``frlr.train.train``; a stand-in for
            tests).
        command: the command line that asked for this, saved in the results for the report.
        reuse_from: folders of earlier experiments whose finished runs are copied in for runs
            with the same result-affecting config instead of being trained again
            (``frlr.experiments.reuse``).
    """

    preset: str | None = None
    progress: bool | None = None
    log: Callable[[str], None] | None = print
    train_fn: Callable[..., dict[str, Any]] = train
    command: str | None = None
    reuse_from: tuple[str | Path, ...] = ()

    def say(self, message: str) -> None:
        """``log(message)`` on the main process; the other ranks say nothing."""
        if self.log is not None and is_main_process():
            self.log(message)

    def out_dir(self, base: TrainConfig, out: str | Path | None, *suffix: str) -> Path:
        """``out``, else the experiment's default directory, [`experiment_dir`][]."""
        return Path(out) if out is not None else experiment_dir(base, self.preset, *suffix)


DEFAULT_RUN = RunOptions()
"""The run options of a call that names none: ``frlr.train.train`` trains, ``print`` logs."""


def run_or_reuse(
    config: TrainConfig, run: RunOptions = DEFAULT_RUN, *, wait: bool = True
) -> tuple[str, dict[str, Any]]:
    """Train one run of a comparison or sweep unless ``config.out`` already holds it finished.

    Returns (status, result), status "reused" (its ``result.json`` was there), "copied" (from a
    finished run of the same config under ``run.reuse_from``), "resumed" (from its checkpoint)
    or "trained". A finished run whose config differs in a result-affecting
    field is a :class:`ConfigError`, never silently reused. The run directory is locked
    (:func:`frlr.io.run_lock`) from the check to the end of training, so two processes never
    train one run: with ``wait=False`` a run another process holds returns ("busy", {}) at
    once; with ``wait=True`` this waits for it, then reuses what it finished (or, if it
    crashed, resumes from its checkpoint).
    """
    with run_lock(config.out, wait=wait) as held:
        if not held:
            return "busy", {}
        return _run_or_reuse_locked(config, run)


def finished_result(config: TrainConfig) -> dict[str, Any] | None:
    """The result of ``config.out``'s finished run, None while it has none. A finished run whose
    config differs in a result-affecting field is a :class:`ConfigError`, never silently taken
    for this one; a damaged ``result.json`` is a ``RunFileError`` naming it."""
    run_dir = Path(config.out)
    result_path = run_dir / "result.json"
    if not result_path.exists():
        return None
    result = read_result(result_path)
    differences = config_differences(result["config"], asdict(config))
    if differences:
        raise ConfigError(
            f"{run_dir} holds a finished run with another config "
            f"({'; '.join(differences)}); choose another --out or delete it"
        )
    return result


def _run_or_reuse_locked(config: TrainConfig, run: RunOptions) -> tuple[str, dict[str, Any]]:
    run_dir = Path(config.out)
    result = finished_result(config)
    if result is not None:
        return "reused", result
    resuming = (run_dir / "checkpoint.pt").exists()
    source = None if resuming or not run.reuse_from else find_finished(config, run.reuse_from)
    if source is not None:
        return "copied", copy_run(source, config)
    status = "resumed" if resuming else "trained"
    return status, run.train_fn(config, resume=True, progress=run.progress, log=None)


def run_each(
    configs: Sequence[TrainConfig],
    run: RunOptions,
    done: Callable[[int, str, dict[str, Any]], None],
    say: Callable[[str], None] | None = None,
) -> None:
    """:func:`run_or_reuse` every config; ``done(index, status, result)`` after each.

    Runs that another process (a second ``compare`` or ``sweep`` on the same ``--out``) is
    training are skipped on the first pass and waited for after the others, so two processes
    share the work instead of both doing all of it, and each ends with every run finished:
    each one's ``results.json`` lists them all. ``say`` (default ``run.say``) is told which
    runs are waited for.
    """
    say = run.say if say is None else say
    busy = []
    for index, config in enumerate(configs):
        status, result = run_or_reuse(config, run, wait=False)
        if status == "busy":
            say(f"{config.out}: {lock_holder(config.out)} is training it; waiting for it last")
            busy.append(index)
        else:
            done(index, status, result)
    for index in busy:
        status, result = run_or_reuse(configs[index], run, wait=True)
        done(index, status, result)


def experiment_dir(base: TrainConfig, preset: str | None, *suffix: str) -> Path:
    """Where an experiment goes when no ``--out`` is given:
    ``runs/<dataset>-<arch>[-<preset>][-<suffix>...]`` (a sweep adds ``sweep``, the param)."""
    parts = [base.dataset, base.arch, *([Path(preset).stem] if preset else []), *suffix]
    return Path("runs") / "-".join(parts)


def compare(
    base: TrainConfig,
    losses: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    baseline: str | None = None,
    run: RunOptions = DEFAULT_RUN,
) -> dict[str, Any]:
    """Train ``base`` with every loss and seed (skipping finished runs) and tabulate.

    base: the recipe (loss, seed and out are set per run; beta/m/r reach only the losses that
        take them). out: the comparison directory, default :func:`experiment_dir`.
    losses: default :func:`default_losses` of the task (sr, lr, hs-lr, ss-lr; no sr for
        multilabel, where naming it is a ConfigError).
    baseline: the loss the others are tested against, one of ``losses``; default the task's
        (SR; LR for multilabel), or the first loss when that is not among ``losses``.
    run: how the runs are trained and reported ([`RunOptions`][]: preset, progress bars,
        log, the training function, the command line saved in ``results.json``).
    Every run's config is checked before the first run starts. The report of the directory is
    the caller's next step (``frlr compare`` makes it unless ``--no-report``).
    Returns the content of ``results.json``.
    """
    if base.task == "auto":
        base = replace(base, task=dataset_info(base.dataset).task)
    task = get_task(base.task)
    losses = parse_losses(default_losses(task) if losses is None else losses)
    seeds = parse_seeds(seeds)
    baseline = _check_baseline(baseline, losses)
    for name in ("beta", "m", "r"):
        if getattr(base, name) is not None and not any(
            name in LOSS_HYPERPARAMETERS[loss] for loss in losses
        ):
            raise ConfigError(f"--{name} applies to none of the losses {','.join(losses)}")
    out = run.out_dir(base, out)
    configs = [
        (loss, seed, _run_config(base, loss, seed, out)) for seed in seeds for loss in losses
    ]
    rows: dict[int, dict[str, Any]] = {}

    def done(index: int, status: str, result: dict[str, Any]) -> None:
        loss, seed, config = configs[index]
        row = rows[index] = run_row(loss, seed, Path(config.out), status, result, task.metric_names)
        scores = "  ".join(f"{metric_label(m)} {percent(row.get(m))}" for m in task.tested_metrics)
        run.say(
            f"[{index + 1}/{len(configs)}] {loss:<6} seed {seed}: {scores}  "
            f"{row['wall_time_s']:.1f}s" + finished_note(status, result)
        )

    run_each([config for _, _, config in configs], run, done)
    runs = [rows[index] for index in range(len(configs))]
    results = _results(base, task, losses, seeds, runs, baseline, run)
    if is_main_process():
        _write_tables(out, results, run.say)
    return results


def _check_baseline(baseline: str | None, losses: Sequence[str]) -> str | None:
    """The registry name of a given baseline, which must be one of ``losses``."""
    if baseline is None:
        return None
    name = canonical_loss_name(baseline.strip()) if isinstance(baseline, str) else None
    if name not in losses:
        raise ConfigError(
            f"--baseline {baseline!r} is not one of the losses compared ({','.join(losses)})"
        )
    return name


def _results(
    base: TrainConfig,
    task: Task,
    losses: Sequence[str],
    seeds: Sequence[int],
    runs: list[dict[str, Any]],
    baseline: str | None,
    run: RunOptions,
) -> dict[str, Any]:
    """The content of ``results.json``: the runs, their summary per loss and the recipe."""
    metric_names = [m for m in task.metric_names if any(r[m] is not None for r in runs)]
    tested = [m for m in task.tested_metrics if m in metric_names] or [task.primary_metric]
    summary = summarize(
        runs,
        losses,
        seeds,
        baseline or task.baseline,
        task.primary_metric,
        metric_names,
        tested=tested,
    )
    return {
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "preset": run.preset,
        "losses": list(losses),
        "seeds": list(seeds),
        "primary_metric": task.primary_metric,
        "tested_metrics": tested,
        "evaluation": task.evaluation,
        "baseline": summary["baseline"],
        "summary": summary["losses"],
        "footnote": summary["footnote"],
        "runs": runs,
        "config": {k: v for k, v in asdict(base).items() if k not in ("loss", "seed", "out")},
        "command": run.command,
    }


def _write_tables(out: Path, results: dict[str, Any], say: Callable[[str], None]) -> None:
    """``results.{json,csv,md}`` in ``out``, and the Markdown table printed."""
    task = get_task(results["task"])
    runs = results["runs"]
    metric_names = [m for m in task.metric_names if any(r[m] is not None for r in runs)]
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.csv", _csv(runs, metric_names))
    markdown = _markdown(results, metric_names)
    write_text_atomic(out / "results.md", markdown)
    say("")
    say(markdown)
    say(f"results: {out / 'results.md'} (also results.json, results.csv); runs in {out}/")


def _csv(runs: list[dict[str, Any]], metric_names: Sequence[str]) -> str:
    columns = ["loss", "seed", *metric_names, "train_loss", "epochs", "wall_time_s", "status"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*columns, "run_dir"], lineterminator="\n")
    writer.writeheader()
    for row in runs:
        writer.writerow({k: row.get(k) for k in [*columns, "run_dir"]})
    return buffer.getvalue()


def _markdown(results: dict[str, Any], metric_names: Sequence[str]) -> str:
    baseline = results["baseline"]
    primary = results["primary_metric"]
    config = results["config"]
    recipe = (
        f"{config['optimizer']} lr {config['lr']:g}, {config['schedule']} schedule, "
        f"batch {config['batch_size']}, {config['epochs']} epochs"
        + (", bf16" if config["bf16"] else "")
    )
    tested = results.get("tested_metrics") or [primary]
    lines = [
        f"## {results['dataset']}, {results['arch']}: {metric_label(primary)} over "
        f"{len(results['seeds'])} seeds",
        "",
        (f"Preset `{results['preset']}`: " if results["preset"] else "Recipe: ")
        + f"{recipe}; seeds {', '.join(map(str, results['seeds']))}.",
        "",
    ]
    if results.get("evaluation"):
        lines += [
            f"Evaluation ({results.get('task', 'classification')}): {results['evaluation']}.",
            "",
        ]
    header = ["loss", *[f"{metric_label(m)} (%)" for m in metric_names]]
    if len(tested) == 1:
        header.append(f"p vs {baseline.upper()}")
    else:
        header += [f"p {metric_label(m)} vs {baseline.upper()}" for m in tested]
    header += ["runs", "wall time / run (s)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for loss, entry in results["summary"].items():
        cells = [loss.upper()]
        for name in metric_names:
            if f"{name}_mean" in entry:
                cells.append(
                    f"{100 * entry[f'{name}_mean']:.2f} ± {100 * entry[f'{name}_std']:.2f}"
                )
            else:
                cells.append("n/a")
        for metric in tested:
            test = entry.get("tests", {}).get(metric, entry if metric == primary else {})
            if loss == baseline:
                cells.append("—")
            elif test.get("p_value") is None:
                cells.append(f"n/a ({test.get('p_note', '')})")
            else:
                note = f" ({test['p_note']})" if test.get("p_note") else ""
                cells.append(f"{test['p_value']:.3g}{note}")
        cells += [str(entry["n"]), f"{entry['wall_time_s_mean']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"mean ± sample standard deviation over seeds. {results['footnote']}",
        "",
        "### Runs",
        "",
        "| loss | seed | "
        + " | ".join(f"{metric_label(m)} (%)" for m in metric_names)
        + " | wall time (s) |",
        "|" + "---|" * (len(metric_names) + 3),
    ]
    for row in results["runs"]:
        values = " | ".join(
            "n/a" if row[m] is None else f"{100 * row[m]:.2f}" for m in metric_names
        )
        lines.append(
            f"| {row['loss'].upper()} | {row['seed']} | {values} | {row['wall_time_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"
