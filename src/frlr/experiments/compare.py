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
tested ones and the baseline (:mod:`frlr.experiments.tasks`): top-1 against SR for
classification; Rank-1 and mAP against SR for re-id; mAP and both balanced accuracies against
LR for multi-label, where SR does not apply (and is left out of the default losses).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from frlr.catalogue import (
    LOSS_HYPERPARAMETERS,
    LOSS_NAMES,
    TABLE_1_LOSSES,
    canonical_loss_name,
)
from frlr.data import dataset_info
from frlr.experiments.stats import mean_std, paired_wilcoxon, significance_footnote
from frlr.experiments.tasks import Task, get_task
from frlr.train import (
    ConfigError,
    TrainConfig,
    config_differences,
    train,
    validate,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "compare",
    "default_losses",
    "parse_losses",
    "parse_seeds",
    "run_dir_name",
    "run_or_reuse",
]

DEFAULT_LOSSES = TABLE_1_LOSSES
"""The losses of the paper's Table 1 (less those a task cannot train: see default_losses)."""

METRIC_LABELS = {
    "top1": "top-1",
    "top5": "top-5",
    "rank1": "Rank-1",
    "rank5": "Rank-5",
    "rank10": "Rank-10",
    "mAP": "mAP",
    "balanced_acc_image": "bal. acc. per image",
    "balanced_acc_class": "bal. acc. per class",
}


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
        if value < 1:
            raise ConfigError(f"--seeds must be at least 1, got {value}")
        return tuple(range(value))
    seeds = tuple(int(s) for s in value)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"seeds must be distinct non-negative integers, got {seeds}")
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


def run_or_reuse(
    config: TrainConfig,
    train_fn: Callable[..., dict[str, Any]] = train,
    progress: bool | None = None,
) -> tuple[str, dict[str, Any]]:
    """Train one run of a comparison or sweep unless ``config.out`` already holds it finished.

    Returns (status, result), status "reused" (its ``result.json`` was there), "resumed" (from
    its checkpoint) or "trained". A finished run whose config differs in a result-affecting
    field is a :class:`ConfigError`, never silently reused.
    """
    run_dir = Path(config.out)
    result_path = run_dir / "result.json"
    if result_path.exists():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        differences = config_differences(result["config"], asdict(config))
        if differences:
            raise ConfigError(
                f"{run_dir} holds a finished run with another config "
                f"({'; '.join(differences)}); choose another --out or delete it"
            )
        return "reused", result
    status = "resumed" if (run_dir / "checkpoint.pt").exists() else "trained"
    return status, train_fn(config, resume=True, progress=progress, log=None)


def compare(
    base: TrainConfig,
    losses: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    baseline: str | None = None,
    preset: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    train_fn: Callable[..., dict[str, Any]] = train,
    command: str | None = None,
    report: bool = False,
) -> dict[str, Any]:
    """Train ``base`` with every loss and seed (skipping finished runs) and tabulate.

    base: the recipe (loss, seed and out are set per run; beta/m/r reach only the losses that
        take them). out: the comparison directory, default ``runs/<dataset>-<arch>-<preset>``.
    losses: default :func:`default_losses` of the task (sr, lr, hs-lr, ss-lr; no sr for
        multilabel, where naming it is a ConfigError).
    baseline: the loss the others are tested against; default the task's (SR; LR for
        multilabel); the first loss when it is not among ``losses``.
    train_fn: the function that trains one run (``frlr.train.train``; a stand-in for tests).
    command: the command line that asked for this, saved in ``results.json`` for the report.
    report: then write ``OUT/report/`` (:func:`frlr.report.build_report`); a report that fails
        is a warning, never a lost comparison. ``frlr compare`` does this unless ``--no-report``.
    Returns the content of ``results.json``.
    """
    if base.task == "auto":
        base = replace(base, task=dataset_info(base.dataset).task)
    task = get_task(base.task)
    losses = parse_losses(default_losses(task) if losses is None else losses)
    seeds = parse_seeds(seeds)
    for name in ("beta", "m", "r"):
        if getattr(base, name) is not None and not any(
            name in LOSS_HYPERPARAMETERS[loss] for loss in losses
        ):
            raise ConfigError(f"--{name} applies to none of the losses {','.join(losses)}")
    if out is None:
        parts = [base.dataset, base.arch, *([Path(preset).stem] if preset else [])]
        out = Path("runs") / "-".join(parts)
    out = Path(out)
    say = log if (log is not None and _is_main_process()) else (lambda _: None)
    configs = [
        (loss, seed, _run_config(base, loss, seed, out)) for seed in seeds for loss in losses
    ]

    runs = []
    for index, (loss, seed, config) in enumerate(configs, start=1):
        status, result = run_or_reuse(config, train_fn, progress)
        runs.append(_run_row(loss, seed, Path(config.out), status, result, task.metric_names))
        scores = "  ".join(f"{_label(m)} {_percent(runs[-1].get(m))}" for m in task.tested_metrics)
        say(
            f"[{index}/{len(configs)}] {loss:<6} seed {seed}: {scores}  "
            f"{runs[-1]['wall_time_s']:.1f}s"
            + ("  (finished before)" if status == "reused" else "")
        )

    metric_names = [m for m in task.metric_names if any(r[m] is not None for r in runs)]
    tested = [m for m in task.tested_metrics if m in metric_names] or [task.primary_metric]
    summary = _summarize(
        runs,
        losses,
        seeds,
        baseline or task.baseline,
        task.primary_metric,
        metric_names,
        tested=tested,
    )
    results = {
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "preset": preset,
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
        "command": command,
    }
    if _is_main_process():
        write_json_atomic(out / "results.json", results)
        write_text_atomic(out / "results.csv", _csv(runs, metric_names))
        markdown = _markdown(results, metric_names)
        write_text_atomic(out / "results.md", markdown)
        say("")
        say(markdown)
        say(f"results: {out / 'results.md'} (also results.json, results.csv); runs in {out}/")
        if report:
            make_report(out, say)
    return results


def make_report(out: Path, say: Callable[[str], None]) -> None:
    """Write ``out/report/`` at the end of a comparison or sweep; a failure only warns."""
    import warnings

    try:
        from frlr.report import build_report

        build_report(out, log=say)
    except Exception as error:  # the tables are written: the report must not lose them
        warnings.warn(f"report of {out} failed: {error!r}", stacklevel=2)


def _is_main_process() -> bool:
    """Rank 0 under torchrun (each run sets up and tears down its own process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def _run_row(
    loss: str,
    seed: int,
    run_dir: Path,
    status: str,
    result: dict[str, Any],
    metric_names: Sequence[str],
) -> dict[str, Any]:
    metrics = result.get("metrics", {})
    row: dict[str, Any] = {"loss": loss, "seed": seed}
    row.update({name: metrics.get(name) for name in metric_names})
    row.update(
        train_loss=result.get("train_loss"),
        epochs=result.get("epochs"),
        wall_time_s=float(result.get("wall_time_s", math.nan)),
        status=status,
        run_dir=str(run_dir),
    )
    return row


def _summarize(
    runs: list[dict[str, Any]],
    losses: Sequence[str],
    seeds: Sequence[int],
    baseline: str,
    primary: str,
    metric_names: Sequence[str],
    group_of: Callable[[dict[str, Any]], str] = lambda row: row["loss"],
    label: Callable[[str], str] = str.upper,
    tested: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per group (a loss; a swept value for ``frlr sweep``): metric mean/std, wall time and the
    paired test against ``baseline``. ``group_of`` names a row's group, ``label`` a group.

    ``tested`` metrics (default: the primary one) are each tested, in ``entry["tests"]``;
    the primary metric's test is also ``p_value``, ``p_note`` and ``p_statistic``.
    """
    tested = list(tested) if tested else [primary]
    if baseline not in losses:
        baseline = losses[0]
    by_loss = {loss: {row["seed"]: row for row in runs if group_of(row) == loss} for loss in losses}
    summary = {}
    for loss in losses:
        rows = [by_loss[loss][s] for s in seeds if s in by_loss[loss]]
        entry: dict[str, Any] = {"n": len(rows)}
        for name in metric_names:
            values = [r[name] for r in rows if r[name] is not None]
            if values:
                entry[f"{name}_mean"], entry[f"{name}_std"] = mean_std(values)
        times = [r["wall_time_s"] for r in rows]
        entry["wall_time_s_mean"], _ = mean_std(times)
        entry["wall_time_s_total"] = float(sum(times))
        if loss != baseline:
            entry["tests"] = {}
            for metric in tested:
                paired = [
                    s
                    for s in seeds
                    if s in by_loss[loss]
                    and s in by_loss[baseline]
                    and by_loss[loss][s][metric] is not None
                    and by_loss[baseline][s][metric] is not None
                ]
                test = paired_wilcoxon(
                    [by_loss[loss][s][metric] for s in paired],
                    [by_loss[baseline][s][metric] for s in paired],
                )
                entry["tests"][metric] = {
                    "p_value": test.p_value,
                    "p_note": test.note,
                    "p_statistic": test.statistic,
                }
                if metric == primary:
                    entry.update(p_value=test.p_value, p_note=test.note, p_statistic=test.statistic)
        summary[loss] = entry
    names = [_label(m) for m in tested]
    tested_label = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    footnote = significance_footnote(len(seeds), tested_label, label(baseline))
    return {"baseline": baseline, "losses": summary, "footnote": footnote}


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


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
        f"## {results['dataset']}, {results['arch']}: {_label(primary)} over "
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
    header = ["loss", *[f"{_label(m)} (%)" for m in metric_names]]
    if len(tested) == 1:
        header.append(f"p vs {baseline.upper()}")
    else:
        header += [f"p {_label(m)} vs {baseline.upper()}" for m in tested]
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
        + " | ".join(f"{_label(m)} (%)" for m in metric_names)
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
