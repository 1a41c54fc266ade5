"""``frlr compare``: train every (loss, seed) pair with one recipe and test the differences.

    frlr compare --dataset cifar10 --arch resnet32 --losses sr,lr,hs-lr,ss-lr --seeds 6
    frlr compare --dataset tiny-imagenet --data-dir /data --preset cpu --seeds 3 --out runs/t

Every run lives in ``OUT/<loss>-seed<k>/`` (see :mod:`frlr.train`). A run with a
``result.json`` is finished and skipped; one with only a checkpoint resumes from it; so an
interrupted comparison continues where it stopped when the same command is run again. A
finished run whose config differs from the requested one (other than where or how fast it
runs) is an error rather than silently reused.

The table, printed and written to ``OUT/results.{json,csv,md}``, gives per loss the mean and
sample standard deviation over seeds of the task's metrics, and the p-value of the paired
Wilcoxon signed-rank test of the task's primary metric against the baseline loss (SR), with the
wall time of every run. The task (``--task``) decides the metrics: see
:mod:`frlr.experiments.tasks`.
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

from frlr.experiments.stats import mean_std, paired_wilcoxon, significance_footnote
from frlr.experiments.tasks import get_task
from frlr.torch.losses import LOSSES
from frlr.train import (
    LOSS_HYPERPARAMETERS,
    ConfigError,
    TrainConfig,
    config_differences,
    train,
    validate,
    write_json_atomic,
    write_text_atomic,
)

__all__ = ["compare", "parse_losses", "parse_seeds", "run_dir_name"]

DEFAULT_LOSSES = ("sr", "lr", "hs-lr", "ss-lr")
"""The losses of the paper's Table 1."""

METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "rank1": "Rank-1", "mAP": "mAP"}


def parse_losses(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"sr,lr,hs-lr"`` -> ("sr", "lr", "hs-lr"), checked against the loss registry."""
    names = text.split(",") if isinstance(text, str) else list(text)
    losses = tuple(name.strip().lower().replace("_", "-") for name in names if name.strip())
    if not losses:
        raise ConfigError("--losses names no loss")
    for name in losses:
        if name not in LOSSES:
            raise ConfigError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
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


def compare(
    base: TrainConfig,
    losses: Sequence[str] = DEFAULT_LOSSES,
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    baseline: str = "sr",
    preset: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    train_fn: Callable[..., dict[str, Any]] = train,
) -> dict[str, Any]:
    """Train ``base`` with every loss and seed (skipping finished runs) and tabulate.

    base: the recipe (loss, seed and out are set per run; beta/m/r reach only the losses that
        take them). out: the comparison directory, default ``runs/<dataset>-<arch>-<preset>``.
    baseline: the loss the others are tested against (the first loss when it is absent).
    train_fn: the function that trains one run (``frlr.train.train``; a stand-in for tests).
    Returns the content of ``results.json``.
    """
    losses = parse_losses(losses)
    seeds = parse_seeds(seeds)
    task = get_task(base.task)
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
            status = "reused"
        else:
            status = "resumed" if (run_dir / "checkpoint.pt").exists() else "trained"
            result = train_fn(config, resume=True, progress=progress, log=None)
        runs.append(_run_row(loss, seed, run_dir, status, result, task.metric_names))
        say(
            f"[{index}/{len(configs)}] {loss:<6} seed {seed}: "
            f"{_label(task.primary_metric)} {_percent(runs[-1].get(task.primary_metric))}  "
            f"{runs[-1]['wall_time_s']:.1f}s"
            + ("  (finished before)" if status == "reused" else "")
        )

    metric_names = [m for m in task.metric_names if any(r[m] is not None for r in runs)]
    summary = _summarize(runs, losses, seeds, baseline, task.primary_metric, metric_names)
    results = {
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "preset": preset,
        "losses": list(losses),
        "seeds": list(seeds),
        "primary_metric": task.primary_metric,
        "baseline": summary["baseline"],
        "summary": summary["losses"],
        "footnote": summary["footnote"],
        "runs": runs,
        "config": {k: v for k, v in asdict(base).items() if k not in ("loss", "seed", "out")},
    }
    if _is_main_process():
        write_json_atomic(out / "results.json", results)
        write_text_atomic(out / "results.csv", _csv(runs, metric_names))
        markdown = _markdown(results, metric_names)
        write_text_atomic(out / "results.md", markdown)
        say("")
        say(markdown)
        say(f"results: {out / 'results.md'} (also results.json, results.csv); runs in {out}/")
    return results


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
) -> dict[str, Any]:
    if baseline not in losses:
        baseline = losses[0]
    by_loss = {loss: {row["seed"]: row for row in runs if row["loss"] == loss} for loss in losses}
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
            paired = [
                s
                for s in seeds
                if s in by_loss[loss]
                and s in by_loss[baseline]
                and by_loss[loss][s][primary] is not None
                and by_loss[baseline][s][primary] is not None
            ]
            test = paired_wilcoxon(
                [by_loss[loss][s][primary] for s in paired],
                [by_loss[baseline][s][primary] for s in paired],
            )
            entry.update(p_value=test.p_value, p_note=test.note, p_statistic=test.statistic)
        summary[loss] = entry
    footnote = significance_footnote(len(seeds), _label(primary), baseline.upper())
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
    lines = [
        f"## {results['dataset']}, {results['arch']}: {_label(primary)} over "
        f"{len(results['seeds'])} seeds",
        "",
        (f"Preset `{results['preset']}`: " if results["preset"] else "Recipe: ")
        + f"{recipe}; seeds {', '.join(map(str, results['seeds']))}.",
        "",
    ]
    header = ["loss", *[f"{_label(m)} (%)" for m in metric_names]]
    header += [f"p vs {baseline.upper()}", "runs", "wall time / run (s)"]
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
        if loss == baseline:
            cells.append("—")
        elif entry.get("p_value") is None:
            cells.append(f"n/a ({entry.get('p_note', '')})")
        else:
            note = f" ({entry['p_note']})" if entry.get("p_note") else ""
            cells.append(f"{entry['p_value']:.3g}{note}")
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
