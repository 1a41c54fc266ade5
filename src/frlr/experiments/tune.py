"""``frlr tune``: each loss at its own best settings, chosen on a validation split, then tested.

Why: comparing losses at one recipe measures the recipe as much as the loss (the authors'
README: logistic regression "prefers a smaller learning rate"). The protocol, in three steps:

1. **Choose.** Every loss spec is trained at every point of the grid (``--grid lr=0.1,0.03
   --grid head-bias-init=zero,prior``) on the training split less a held-out part
   (``--val-fraction``), over ``--tune-seeds``; each loss takes the point with the best mean
   validation metric (ties: the first in grid order). The choice is made by
   :func:`select_best`, which is handed validation scores only, never a test metric. A best
   value at the edge of a number field's grid is not tuned yet: with ``--widen N`` the grid
   grows past that edge, one step of the grid's own spacing at a time (snapped to 1-2-3-5
   values on a log field), up to N times per loss, and the choice is made again.
2. **Train.** The chosen setting of each loss, on the full training split, over ``--seeds``.
3. **Report.** Test metrics per loss with the value each one got, the paired Wilcoxon test
   against the baseline loss, and the validation curves as a figure.

A grid field a loss ignores is not tuned for it (the head's bias for softmax, beta/m/r for a
loss without them); a field a loss spec fixes (``lr:head-bias-init=prior``) is not tuned for
that spec. Tuning runs go to ``OUT/tune/``, final runs to ``OUT/final/``, both named by what
they train, so specs that share a setting share its runs; the tables are ``OUT/tune.{json,md}``
and the figure ``OUT/tune_val.png``, rewritten after every run trained and marked in progress
until the last (a tune spans sessions). Rerunning continues; several processes may share OUT.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from frlr.config import ConfigError, TrainConfig, validate
from frlr.experiments.compare import DEFAULT_RUN, RunOptions, parse_seeds
from frlr.experiments.field_sweep import column_label, curve_points
from frlr.experiments.figures import METRIC_AXIS, value_curves_figure
from frlr.experiments.grid import (
    LOG_FIELDS,
    GridRun,
    applies,
    field_name,
    finished_grid_rows,
    grid_runs,
    parse_field_values,
    run_grid,
    setting_text,
)
from frlr.experiments.results import metric_label, summarize
from frlr.experiments.sweep import LossSpec, parse_loss_specs
from frlr.io import is_main_process, run_lock, write_json_atomic, write_text_atomic
from frlr.tasks import get_task

__all__ = ["next_value", "parse_grid", "select_best", "tune", "tuned_fields"]

Point = tuple[tuple[str, Any], ...]


def parse_grid(items: Sequence[str] | Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """``["lr=0.1,0.03", "head-bias-init=zero,prior"]`` -> {field: values}, in the order given."""
    pairs = items.items() if isinstance(items, Mapping) else [_split(i) for i in items]
    grid: dict[str, tuple[Any, ...]] = {}
    for name, values in pairs:
        field = field_name(name)
        if field == "num_classes":
            raise ConfigError(
                "--grid num-classes: the number of classes is the data, not a setting"
            )
        if field in grid:
            raise ConfigError(f"--grid names {name} twice")
        grid[field] = parse_field_values(field, values)
    if not grid:
        raise ConfigError("--grid names no field to tune (e.g. --grid lr=0.1,0.03,0.01)")
    return grid


def _split(item: str) -> tuple[str, str]:
    name, equals, values = item.partition("=")
    if not equals:
        raise ConfigError(f"--grid {item!r} is not FIELD=V1,V2 (e.g. lr=0.1,0.03,0.01)")
    return name, values


def tuned_fields(spec: LossSpec, grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """The grid fields tuned for ``spec``: not fixed by it, and able to change its loss."""
    fixed = dict(spec.options)
    return [f for f in grid if f not in fixed and applies(f, spec.name)]


def _points(spec: LossSpec, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    fields = tuned_fields(spec, grid)
    return [
        dict(zip(fields, combo, strict=True))
        for combo in itertools.product(*(grid[f] for f in fields))
    ]


def select_best(scores: Mapping[Point, Sequence[float]]) -> Point:
    """The point with the highest mean validation score (NaN, a diverged run, counts as the
    worst); ties go to the first point in the mapping's order. ``scores`` holds validation
    scores only: the test split plays no part in the choice."""
    if not scores:
        raise ValueError("no tuning run has a validation score")

    def mean(values: Sequence[float]) -> float:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return sum(finite) / len(finite) if finite and len(finite) == len(values) else -math.inf

    best = max(scores, key=lambda p: (mean(scores[p]), -list(scores).index(p)))
    return best


def _check(base: TrainConfig, specs: Sequence[LossSpec], grid: Mapping[str, Sequence[Any]]) -> None:
    if not base.val_fraction:
        raise ConfigError("frlr tune chooses on a validation split: pass --val-fraction (e.g. 0.2)")
    for spec in specs:
        for name, value in spec.options:
            if name in grid and setting_text(value) not in {setting_text(v) for v in grid[name]}:
                raise ConfigError(
                    f"--losses {spec.key!r} fixes {name.replace('_', '-')} "
                    f"{setting_text(value)}, outside the tuned grid "
                    f"{','.join(map(setting_text, grid[name]))}: add it to the grid or drop it"
                )


def tune(
    base: TrainConfig,
    grid: Mapping[str, Sequence[Any]] | Sequence[str],
    losses: str | Sequence[str],
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    tune_seeds: int | Sequence[int] = 1,
    widen: int = 0,
    baseline: str | None = None,
    run: RunOptions = DEFAULT_RUN,
) -> dict[str, Any]:
    """Choose each loss's settings on ``base.val_fraction`` of the training split, train them
    over ``seeds`` on all of it, and tabulate (see the module docstring). ``baseline``: the
    loss spec the others are tested against (default the first). ``run``: as for
    :func:`frlr.experiments.compare.compare`. Returns ``tune.json``."""
    grid = parse_grid(grid) if not isinstance(grid, Mapping) else parse_grid(dict(grid))
    specs = parse_loss_specs(losses)
    _check(base, specs, grid)
    seeds, tune_seeds = parse_seeds(seeds), parse_seeds(tune_seeds)
    keys = [spec.key for spec in specs]
    baseline_key = keys[0] if baseline is None else parse_loss_specs(baseline)[0].key
    if baseline_key not in keys:
        raise ConfigError(f"--baseline {baseline!r} is not one of --losses {','.join(keys)}")
    task = get_task(validate(base).task)
    out = run.out_dir(base, out, "tune")
    say = run.say
    tuned = _Tuning(base, task, grid, specs, seeds, tune_seeds, baseline_key, out, run)
    by_loss, chosen = tuned.by_loss, tuned.chosen
    train_all = functools.partial(
        run_grid, metric_names=task.metric_names, run=run, after_trained=tuned.so_far
    )
    tuning = tuned.tuning
    say(f"step 1 of 3: {len(tuning)} tuning runs of {base.epochs} epochs in {out / 'tune'}")
    tuning_rows = train_all(tuning)
    chosen.update(_choose(specs, by_loss, tuning_rows, task.primary_metric))
    for _ in range(widen):
        extra = {
            spec.key: points
            for spec in specs
            if (points := _widened(spec, grid, by_loss[spec.key], chosen[spec.key]))
        }
        if not extra:
            break
        for key, points in extra.items():
            by_loss[key] += points
            tuned.widened.setdefault(key, []).extend(points)
        more = _runs(base, [s for s in specs if s.key in extra], extra, tune_seeds, out / "tune")
        tuning += more
        say(f"step 1: best at the grid's edge; {len(more)} more tuning runs past it")
        tuning_rows += train_all(more)
        chosen.update(_choose(specs, by_loss, tuning_rows, task.primary_metric))
    for spec in specs:
        say(f"{spec.label}: chose {point_text(chosen[spec.key]) or 'the recipe (nothing to tune)'}")
    full = replace(base, val_fraction=0.0)
    finals = tuned.finals
    finals += _runs(full, specs, {k: [v] for k, v in chosen.items()}, seeds, out / "final")
    say(f"step 2 of 3: {len(finals)} runs at the chosen settings in {out / 'final'}")
    tuned.so_far()
    return tuned.tables(tuning_rows, train_all(finals))


class _Tuning:
    """One tune's state (its runs, the choice so far) and its tables, which are rewritten after
    every run trained, marked in progress until the last: a tune that spans sessions shows what
    it has (the choice only once every tuning run has a score)."""

    def __init__(
        self,
        base: TrainConfig,
        task: Any,
        grid: Mapping[str, Sequence[Any]],
        specs: Sequence[LossSpec],
        seeds: Sequence[int],
        tune_seeds: Sequence[int],
        baseline: str,
        out: Path,
        run: RunOptions,
    ) -> None:
        self.base, self.task, self.grid, self.specs = base, task, grid, specs
        self.seeds, self.tune_seeds, self.baseline = seeds, tune_seeds, baseline
        self.out, self.run = out, run
        self.by_loss = {spec.key: _points(spec, grid) for spec in specs}
        self.tuning = _runs(base, specs, self.by_loss, tune_seeds, out / "tune")
        self.widened: dict[str, list[dict[str, Any]]] = {}
        self.chosen: dict[str, dict[str, Any]] = {}
        self.finals: list[GridRun] = []

    def tables(
        self,
        tuning_rows: list[dict[str, Any]],
        final_rows: list[dict[str, Any]],
        *,
        in_progress: str | None = None,
    ) -> dict[str, Any]:
        """tune.json, tune.md and the figure from these rows; returns tune.json's content."""
        specs, grid, by_loss, chosen = self.specs, self.grid, self.by_loss, self.chosen
        results = _results(self, tuning_rows, final_rows)
        results["validation"] = _validation(specs, by_loss, tuning_rows, self.task.primary_metric)
        results.update(
            preset=self.run.preset,
            command=self.run.command,
            widened={k: [dict(p) for p in v] for k, v in self.widened.items()},
            at_edge={
                s.key: _edges(s, grid, by_loss[s.key], chosen[s.key])
                for s in specs
                if s.key in chosen
            },
        )
        if in_progress:
            results["in_progress"] = in_progress
        if is_main_process():
            with run_lock(self.out, wait=True):  # another process may share OUT
                _write(self.out, results, specs, None if in_progress else self.run.say)
        return results

    def so_far(self) -> None:
        """The tables of the runs finished so far, marked in progress with the step."""
        if not is_main_process():  # only the main process writes them: no reads elsewhere
            return
        metrics = self.task.metric_names
        tuning_rows = finished_grid_rows(self.tuning, metrics)
        final_rows = finished_grid_rows(self.finals, metrics)
        stage = (
            f"step 2 of 3, {len(final_rows)} of {len(self.finals)} final runs finished"
            if self.finals
            else f"step 1 of 3, {len(tuning_rows)} of {len(self.tuning)} tuning runs finished"
        )
        self.tables(tuning_rows, final_rows, in_progress=stage)


def _runs(
    base: TrainConfig,
    specs: Sequence[LossSpec],
    points: Mapping[str, Sequence[Mapping[str, Any]]],
    seeds: Sequence[int],
    out: Path,
) -> list[GridRun]:
    """Every spec's runs at its own points (``points[spec.key]``), over ``seeds``, in ``out``."""
    return [
        run
        for spec in specs
        for run in grid_runs(
            base,
            [(spec.key, spec.name, dict(spec.options))],
            lambda _, k=spec.key: points[k],
            seeds,
            out,
        )
    ]


def _val_scores(
    rows: Sequence[Mapping[str, Any]], key: str, point: Mapping[str, Any], primary: str
) -> list[float]:
    """The validation scores of one loss's runs at one point (over the tuning seeds)."""
    return [r[f"val_{primary}"] for r in rows if r["curve"] == key and r["point"] == point]


def _choose(
    specs: Sequence[LossSpec],
    by_loss: Mapping[str, Sequence[Mapping[str, Any]]],
    rows: Sequence[Mapping[str, Any]],
    primary: str,
) -> dict[str, dict[str, Any]]:
    """Each loss's point with the best mean validation score (validation scores only)."""
    return {
        spec.key: dict(
            select_best(
                {
                    tuple(sorted(p.items())): _val_scores(rows, spec.key, p, primary)
                    for p in by_loss[spec.key]
                }
            )
        )
        for spec in specs
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _edges(
    spec: LossSpec,
    grid: Mapping[str, Sequence[Any]],
    points: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, Any],
) -> list[str]:
    """The number fields whose chosen value is the largest or smallest one tried."""
    edges = []
    for field in tuned_fields(spec, grid):
        tried = sorted({p[field] for p in points if _numeric(p[field])})
        if len(tried) > 1 and chosen.get(field) in (tried[0], tried[-1]):
            edges.append(field)
    return edges


def next_value(field: str, tried: Sequence[float], edge: float) -> float | None:
    """The value one grid step past ``edge`` (the largest or smallest of ``tried``): the
    grid's own ratio on a log field, snapped to 1-2-3-5 x 10^k, its own difference otherwise;
    None where that step would leave the field's range."""
    values = sorted(set(tried))
    inner = values[-2] if edge == values[-1] else values[1]
    if field in LOG_FIELDS:
        if inner <= 0 or edge <= 0:
            return None
        raw = edge * edge / inner
        decade = 10 ** math.floor(math.log10(raw))
        nice = min((m * decade for m in (1, 2, 3, 5, 10)), key=lambda v: abs(math.log(v / raw)))
        value = float(f"{nice:.12g}")
        if (value - edge) * (raw - edge) <= 0:  # snapping must not step back
            value = raw
    else:
        value = edge + (edge - inner)
        if isinstance(edge, int) and isinstance(inner, int):
            value = int(value)
    if value < 0 <= values[0]:  # a field tried at non-negative values stays there
        return None
    try:
        parse_field_values(field, [value])
    except ConfigError:
        return None
    return value


def _widened(
    spec: LossSpec,
    grid: Mapping[str, Sequence[Any]],
    points: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """New points one step past each edge the choice sits on, the other fields as chosen."""
    new = []
    for field in _edges(spec, grid, points, chosen):
        tried = [p[field] for p in points if _numeric(p[field])]
        value = next_value(field, tried, chosen[field])
        point = {**chosen, field: value}
        if value is not None and point not in points and point not in new:
            new.append(point)
    return new


def _validation(
    specs: Sequence[LossSpec],
    by_loss: Mapping[str, Sequence[Mapping[str, Any]]],
    rows: Sequence[Mapping[str, Any]],
    primary: str,
) -> dict[str, dict[str, Any]]:
    """Every tried point's validation scores, per loss (the widened points included)."""
    validation: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for point in by_loss[spec.key]:
            scores = _val_scores(rows, spec.key, point, primary)
            key = ",".join(f"{k}={setting_text(v)}" for k, v in sorted(point.items()))
            validation.setdefault(spec.key, {})[key] = {"point": dict(point), "scores": scores}
    return validation


def _results(
    tuned: _Tuning, tuning_rows: list[dict[str, Any]], final_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    base, task, grid, specs = tuned.base, tuned.task, tuned.grid, tuned.specs
    seeds, tune_seeds, baseline, chosen = (
        tuned.seeds,
        tuned.tune_seeds,
        tuned.baseline,
        tuned.chosen,
    )
    keys = [spec.key for spec in specs]
    labels = {spec.key: spec.label for spec in specs}
    metrics = [m for m in task.metric_names if any(r.get(m) is not None for r in final_rows)]
    tested = [m for m in task.tested_metrics if m in metrics] or [task.primary_metric]
    summary = summarize(
        final_rows,
        keys,
        seeds,
        baseline,
        task.primary_metric,
        metrics,
        group_of=lambda r: r["curve"],
        label=labels.__getitem__,
        tested=tested,
    )
    selection = f"val_{task.primary_metric}"
    return {
        "kind": "tune",
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "grid": {k: list(v) for k, v in grid.items()},
        "losses": keys,
        "labels": labels,
        "tuned_fields": {spec.key: tuned_fields(spec, grid) for spec in specs},
        "seeds": list(seeds),
        "tune_seeds": list(tune_seeds),
        "primary_metric": task.primary_metric,
        "tested_metrics": tested,
        "selection_metric": selection,
        "baseline": summary["baseline"],
        "chosen": dict(chosen),
        "summary": summary["losses"],
        "footnote": summary["footnote"],
        "tuning_runs": tuning_rows,
        "runs": final_rows,
        "config": {k: v for k, v in asdict(base).items() if k not in ("loss", "seed", "out")},
    }


def _write(
    out: Path,
    results: dict[str, Any],
    specs: Sequence[LossSpec],
    say: Callable[[str], None] | None,
) -> None:
    """tune.json, tune.md and the figure; ``say`` (None mid-way) is told the table."""
    write_json_atomic(out / "tune.json", results)
    markdown = _markdown(results)
    write_text_atomic(out / "tune.md", markdown)
    figure = out / "tune_val.png"
    try:
        _figure(results, specs, figure)
    except Exception as error:  # the tables are written; a figure must not lose them
        warnings.warn(f"tune figure {figure} failed: {error!r}", stacklevel=3)
    if say is None:
        return
    say("")
    say(markdown)
    say(f"results: {out / 'tune.md'} (also tune.json, {figure.name})")


def _figure(results: dict[str, Any], specs: Sequence[LossSpec], path: Path) -> None:
    """Validation metric against the grid's first field, one line per loss and value of the
    other fields."""
    grid = results["grid"]
    first, metric = next(iter(grid)), results["selection_metric"]
    curves = []
    for spec in specs:
        entries = results["validation"][spec.key].values()
        others = sorted(
            {
                tuple((k, setting_text(v)) for k, v in sorted(e["point"].items()) if k != first)
                for e in entries
            }
        )
        for other in others:
            summary = {}
            for entry in entries:
                point = entry["point"]
                if (
                    tuple((k, setting_text(v)) for k, v in sorted(point.items()) if k != first)
                    != other
                ):
                    continue
                scores = [s for s in entry["scores"] if s is not None]
                mean = sum(scores) / len(scores) if scores else None
                std = (
                    (sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) ** 0.5
                    if len(scores) > 1
                    else 0.0
                )
                value = point.get(first, results["chosen"].get(spec.key, {}).get(first))
                summary[setting_text(value) if value is not None else "recipe"] = {
                    f"{metric}_mean": mean,
                    f"{metric}_std": std,
                    "n": len(scores),
                }
            label = spec.label + "".join(f", {k.replace('_', ' ')} {v}" for k, v in other)
            values = (
                _tried(grid[first], entries, first)
                if first in results["tuned_fields"][spec.key]
                else []
            )
            points = curve_points(summary, values, metric) if values else []
            curves.append({"label": label, "loss": spec.name, "points": points})
    axis = METRIC_AXIS.get(results["primary_metric"], results["primary_metric"]).replace(
        "test ", ""
    )
    value_curves_figure(
        curves,
        path,
        param=first,
        metric=metric,
        ylabel=f"validation {axis}",
        log_x=first in LOG_FIELDS,
        title="tuning on the validation split",
    )


def _tried(grid_values: Sequence[Any], entries: Any, field: str) -> list[Any]:
    """The values of ``field`` a loss was tuned at: its grid's, and any widened past it."""
    values = list(grid_values) + [
        e["point"][field] for e in entries if e["point"].get(field) not in grid_values
    ]
    values = list(dict.fromkeys(values))
    return sorted(values) if all(_numeric(v) for v in values) else values


def _markdown(results: dict[str, Any]) -> str:
    labels, grid = results["labels"], results["grid"]
    metrics = [
        m
        for m in (results["tested_metrics"] + ["top5", "rank5", "balanced_acc_class"])
        if any(r.get(m) is not None for r in results["runs"])
    ]
    metrics = list(dict.fromkeys(metrics)) or [results["primary_metric"]]  # n/a mid-way
    config = results["config"]
    grid_text = "; ".join(
        f"{k.replace('_', '-')} in {', '.join(map(setting_text, v))}" for k, v in grid.items()
    )
    lines = [
        f"## {results['dataset']}, {results['arch']}: each loss at its own tuned settings",
        "",
        f"Tuned on {100 * config['val_fraction']:g}% of the training split held out (seed "
        f"{config['val_seed']} of the split), over seeds "
        f"{', '.join(map(str, results['tune_seeds']))}: "
        f"{grid_text}. Chosen by mean {column_label(results['selection_metric'])}; then trained "
        f"on the whole training split over seeds {', '.join(map(str, results['seeds']))} and "
        f"tested. Recipe: {config['optimizer']}, {config['schedule']} schedule, batch "
        f"{config['batch_size']}, {config['epochs']} epochs.",
        "",
    ]
    if results.get("in_progress"):
        lines += [
            f"**In progress** ({results['in_progress']}): these tables hold the runs finished so "
            "far; rerun the command to continue.",
            "",
        ]
    header = ["loss", "chosen", *[f"test {metric_label(m)} (%)" for m in metrics]]
    header += [
        f"p {metric_label(m)} vs {labels[results['baseline']]}" for m in results["tested_metrics"]
    ]
    header += ["runs"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in results["losses"]:
        entry = results["summary"][key]
        chosen = (
            point_text(results["chosen"][key]) or "(recipe)"
            if key in results["chosen"]
            else "(not chosen yet)"
        )
        cells = [labels[key], chosen]
        cells += [
            f"{100 * entry[f'{m}_mean']:.2f} ± {100 * entry[f'{m}_std']:.2f}"
            if f"{m}_mean" in entry
            else "n/a"
            for m in metrics
        ]
        for m in results["tested_metrics"]:
            test = entry.get("tests", {}).get(m)
            cells.append(
                "—"
                if test is None
                else ("n/a" if test["p_value"] is None else f"{test['p_value']:.3g}")
            )
        cells.append(str(entry["n"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"mean ± sample standard deviation over seeds. {results['footnote']}", ""]
    lines += _edge_notes(results)
    lines += ["### Validation scores of the grid", ""]
    lines += [
        "| loss | setting | " + column_label(results["selection_metric"]) + " (%) | runs |",
        "|---|---|---|---|",
    ]
    for key in results["losses"]:
        for entry in results["validation"][key].values():
            scores = [s for s in entry["scores"] if s is not None]
            mean = f"{100 * sum(scores) / len(scores):.2f}" if scores else "n/a"
            mark = " (chosen)" if entry["point"] == results["chosen"].get(key) else ""
            shown = point_text(entry["point"]) or "(recipe)"
            lines.append(f"| {labels[key]} | {shown}{mark} | {mean} | {len(scores)} |")
    return "\n".join(lines) + "\n"


def point_text(point: Mapping[str, Any]) -> str:
    """``head-bias-init prior, lr 0.03``: a grid point as the tables and the log show it."""
    return ", ".join(f"{k.replace('_', '-')} {setting_text(v)}" for k, v in point.items())


def _edge_notes(results: dict[str, Any]) -> list[str]:
    """Which grids grew past their edge (``--widen``), and which choices still sit on one."""
    labels, notes = results["labels"], []
    for key, points in results.get("widened", {}).items():
        added = "; ".join(point_text(p) for p in points)
        notes.append(f"- {labels[key]}: best at the grid's edge, so also tuned at {added}.")
    for key, fields in results.get("at_edge", {}).items():
        if fields:
            named = ", ".join(f.replace("_", "-") for f in fields)
            notes.append(
                f"- {labels[key]}: the chosen {named} is still at the edge of the values tried; "
                "a wider grid may do better."
            )
    return [*notes, ""] if notes else []
