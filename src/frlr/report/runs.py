"""What a comparison or sweep directory holds: its runs, grouped the way the report draws them.

The run directories are the source of truth, not ``results.json``: a report is also asked of a
comparison still running (unfinished runs are drawn, not tabulated), and of a directory that
two ``frlr compare`` commands with different ``--losses`` filled side by side (each wrote its
own ``results.json``). A *group* is what one table row, one curve and one t-SNE panel stand
for: a loss in a comparison, a value of the swept parameter in a sweep.

Every file is read with its schema checked (:mod:`frlr.rundir`). A run whose ``result.json`` is
damaged (or whose files say it is another run) is *damaged*: listed with what is wrong, left out
of every mean, test and figure. A run that ``results.json``/``sweep.json`` asked for and that is
not on disk is *missing*, listed the same way. A damaged ``config.json`` or ``metrics.jsonl``
beside a sound ``result.json`` costs only what it held (the curves), and is listed too.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frlr.catalogue import LOSS_NAMES
from frlr.experiments import compare, sweep
from frlr.experiments.sweep import value_text
from frlr.rundir import RunFileError, read_config, read_metrics, read_result
from frlr.style import loss_color, loss_label
from frlr.tasks import get_task

__all__ = ["Experiment", "Group", "Run", "load_experiment"]


@dataclass
class Run:
    """One run directory: its config, its per-epoch records and, once finished, its result."""

    name: str
    path: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    result: dict[str, Any] | None
    damaged: str | None = None  # why the run cannot count (its result unreadable), if so
    problems: list[str] = field(default_factory=list)  # every damaged file, one line each

    @property
    def loss(self) -> str:
        if "loss" in self.config:
            return str(self.config["loss"])
        return self.path.name.rsplit("-seed", 1)[0] if "-seed" in self.path.name else "?"

    @property
    def seed(self) -> int:
        if isinstance(self.config.get("seed"), int):
            return int(self.config["seed"])
        found = re.search(r"-seed(\d+)$", self.path.name)  # a damaged run: its directory's
        return int(found.group(1)) if found else -1

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def ncd_path(self) -> Path | None:
        path = self.path / "ncd.jsonl"
        return path if path.exists() and path.stat().st_size > 0 else None

    @property
    def checkpoint(self) -> Path | None:
        path = self.path / "checkpoint.pt"
        return path if path.exists() else None


@dataclass
class Group:
    """The runs of one loss (compare) or one swept value (sweep), sorted by seed."""

    key: str
    label: str
    loss: str
    color: str
    runs: list[Run] = field(default_factory=list)
    value: float | None = None
    missing: list[int] = field(default_factory=list)  # seeds asked for, not on disk

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.runs if run.finished]

    @property
    def damaged(self) -> list[Run]:
        return [run for run in self.runs if run.damaged]


@dataclass
class Experiment:
    """A comparison (groups are losses), a sweep (groups are values of ``param``) or one run
    (``kind`` "compare", "sweep", "run")."""

    kind: str
    path: Path
    saved: dict[str, Any] | None  # results.json or sweep.json as written, if any
    task: str
    primary_metric: str
    metric_names: list[str]
    groups: list[Group]
    baseline: str
    param: str | None = None
    loss: str | None = None
    tested_metrics: list[str] = field(default_factory=list)  # each gets a p column

    @property
    def runs(self) -> list[Run]:
        return [run for group in self.groups for run in group.runs]

    @property
    def seeds(self) -> list[int]:
        return sorted({run.seed for run in self.runs if run.finished})

    @property
    def problems(self) -> list[str]:
        """One line per damaged file and per missing run, for the report to list."""
        lines = [problem for run in self.runs for problem in run.problems]
        for group in self.groups:
            lines += [
                f"{self.path / self.run_name(group, seed)}: missing (asked for by "
                f"{'sweep' if self.kind == 'sweep' else 'results'}.json, not on disk); rerun "
                "the command to train it"
                for seed in group.missing
            ]
        return lines

    def run_name(self, group: Group, seed: int) -> str:
        """The directory name of ``group``'s run of ``seed``, as compare or sweep names it."""
        if self.kind == "sweep" and group.value is not None:
            return sweep.run_dir_name(group.loss, str(self.param), group.value, seed)
        return compare.run_dir_name(group.loss, seed)


def _read_json(path: Path) -> dict[str, Any] | None:
    """``results.json`` or ``sweep.json``: an object, or None (with a warning naming the file
    when it is there but unreadable: the runs on disk are then all the report knows)."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        warnings.warn(
            f"{path}: not JSON ({error}); ignored: runs it asked for and never wrote cannot be "
            "listed as missing (rerun the command to write it again)",
            stacklevel=3,
        )
        return None
    if not isinstance(saved, dict):
        warnings.warn(f"{path}: not a JSON object; ignored", stacklevel=3)
        return None
    return saved


def _saved_list(saved: dict[str, Any] | None, key: str, kind: type) -> list[Any]:
    """``saved[key]`` when it is a list of ``kind`` (numbers for float), else empty."""
    values = (saved or {}).get(key)
    if not isinstance(values, list):
        return []
    if kind is float:
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    else:
        ok = all(isinstance(v, kind) and not isinstance(v, bool) for v in values)
    return values if ok else []


def _load_run(path: Path) -> Run:
    """One run directory, each file checked: a damaged result.json (or one that belongs to
    another run) makes the run damaged; a damaged config.json or metrics.jsonl is listed and
    the run goes on from what is sound."""
    problems: list[str] = []
    damaged: str | None = None
    config: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    readers = (("config.json", read_config), ("result.json", read_result))
    for name, read in readers:
        if (path / name).exists():
            try:
                value = read(path / name)
            except RunFileError as error:
                problems.append(str(error))
                damaged = str(error) if name == "result.json" else damaged
                continue
            config, result = (value, result) if name == "config.json" else (config, value)
    if result is not None and config is not None:
        other = [k for k in ("loss", "seed") if result["config"].get(k) != config.get(k)]
        if other:
            damaged = (
                f"{path / 'result.json'}: its {' and '.join(other)} differ from config.json's: "
                "the result of another run; delete it and rerun the command"
            )
            problems.append(damaged)
    if damaged is not None:
        result = None
    elif config is None and result is None:
        damaged = problems[0] if problems else f"{path}: no readable config.json or result.json"
    config = config if config is not None else (result or {}).get("config", {})
    if damaged is None and (path / "metrics.jsonl").exists():
        try:
            history = read_metrics(path / "metrics.jsonl")
        except RunFileError as error:
            problems.append(str(error))
    for problem in problems:
        warnings.warn(problem, stacklevel=3)
    return Run(path.name, path, config, history, result, damaged, problems)


def _value_colors(color: str, n: int) -> list[str]:
    """``n`` shades of one loss colour, light to dark, for the values of a sweep."""
    from matplotlib.colors import to_hex, to_rgb  # plotting is optional: only for shades

    base = to_rgb(color)
    if n == 1:
        return [to_hex(base)]
    shades = []
    for i in range(n):
        t = -0.3 + 0.85 * i / (n - 1)  # -0.3: 30% towards white, +0.55: towards black
        mix = (1.0, 1.0, 1.0) if t < 0 else (0.0, 0.0, 0.0)  # white, then black
        shades.append(to_hex(tuple(c + (w - c) * abs(t) for c, w in zip(base, mix, strict=True))))
    return shades


def _metric_order(task: str, seen: list[str]) -> list[str]:
    try:
        known = list(get_task(task).metric_names)
    except Exception:  # a task this version does not know: keep the order the runs give
        known = []
    return [m for m in known if m in seen] + [m for m in seen if m not in known]


def _task_default(task: str, attribute: str, fallback: str) -> str:
    try:
        return str(getattr(get_task(task), attribute, fallback))
    except Exception:
        return fallback


def load_experiment(path: str | Path) -> Experiment:
    """Read a ``frlr compare`` or ``frlr sweep`` directory (``sweep.json`` marks a sweep), or
    one run's directory (``frlr train --out``)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"RUN_DIR {str(path)!r} is not a directory")
    sweep = _read_json(path / "sweep.json")
    if sweep is None and (path / "tune.json").exists():
        from frlr.config import ConfigError

        raise ConfigError(
            f"RUN_DIR {str(path)!r} is a frlr tune directory: its report is tune.md and "
            "tune_val.png there (rerun the same frlr tune to rebuild them)"
        )
    if sweep is not None and sweep.get("kind") == "sweep-grid":
        from frlr.config import ConfigError

        raise ConfigError(
            f"RUN_DIR {str(path)!r} is a sweep over {sweep.get('param')} for several losses: "
            f"its report is sweep.md and sweep_{sweep.get('param')}.png there (rerun the same "
            "frlr sweep to rebuild them)"
        )
    if sweep is not None and sweep.get("kind") == "sweep-losses":
        from frlr.config import ConfigError

        raise ConfigError(
            f"RUN_DIR {str(path)!r} is a sweep over {sweep.get('param')} for several losses: "
            f"its report is sweep.md and sweep_{sweep.get('param')}.png there (rebuild them "
            "with frlr sweep ... --no-train); frlr report draws comparisons and one-loss sweeps"
        )
    saved = sweep if sweep is not None else _read_json(path / "results.json")
    run_dirs = sorted(
        p for p in path.iterdir() if p.is_dir() and p.name != "report" and _is_run_dir(p)
    )
    if not run_dirs and _is_run_dir(path) and sweep is None:
        run_dirs = [path]  # one run's own directory: a comparison of one
    if not run_dirs:
        raise FileNotFoundError(
            f"RUN_DIR {str(path)!r} holds no runs (no subdirectory with config.json or "
            "result.json): give the directory of a frlr compare or frlr sweep"
        )
    runs = [_load_run(p) for p in run_dirs]
    task = str((saved or {}).get("task") or runs[0].config.get("task") or "classification")

    seen: list[str] = []
    for run in runs:
        names = list((run.result or {}).get("metrics") or {})
        names += [k.removeprefix("test_") for r in run.history for k in r if k.startswith("test_")]
        seen += [name for name in dict.fromkeys(names) if name not in seen]
    metric_names = _metric_order(task, seen)
    primary = (saved or {}).get("primary_metric") or next(
        (r.result["primary_metric"] for r in runs if r.result and "primary_metric" in r.result),
        None,
    )
    if primary is None:
        primary = _task_default(task, "primary_metric", metric_names[0] if metric_names else "top1")

    tested = (saved or {}).get("tested_metrics")
    if tested is None and sweep is None:
        try:
            tested = list(getattr(get_task(task), "tested_metrics", ()))
        except Exception:
            tested = None
    tested = [m for m in tested or () if m in metric_names] or [primary]

    if sweep is not None:
        _check_sweep_file(path / "sweep.json", sweep)
        groups, baseline, param, loss = _sweep_groups(runs, sweep)
        kind = "sweep"
    else:
        groups, baseline = _compare_groups(runs, saved, task)
        kind, param, loss = ("run" if run_dirs == [path] else "compare"), None, None
    return Experiment(
        kind, path, saved, task, primary, metric_names, groups, baseline, param, loss, tested
    )


def _check_sweep_file(path: Path, sweep: dict[str, Any]) -> None:
    """A one-loss sweep's ``sweep.json`` names its parameter and loss; else it is damaged."""
    for key in ("param", "loss"):
        if not isinstance(sweep.get(key), str):
            raise RunFileError(
                path,
                f"has no {key!r} (a string): not the sweep's own file, or damaged",
                "rerun the frlr sweep command to write it again (finished runs are reused)",
            )


def _is_run_dir(path: Path) -> bool:
    return (path / "config.json").exists() or (path / "result.json").exists()


def _dedupe(group: Group) -> None:
    """One run per seed: a second one (e.g. another m in a comparison dir) is left out."""
    by_seed: dict[int, Run] = {}
    for run in group.runs:
        if run.seed in by_seed:
            warnings.warn(
                f"{run.path}: a second run of {group.label} seed {run.seed} "
                f"(besides {by_seed[run.seed].name}); left out of the report",
                stacklevel=4,
            )
            continue
        by_seed[run.seed] = run
    group.runs = [by_seed[s] for s in sorted(by_seed)]


def _compare_groups(
    runs: list[Run], saved: dict[str, Any] | None, task: str
) -> tuple[list[Group], str]:
    listed = [str(loss) for loss in _saved_list(saved, "losses", str)]
    present = {run.loss for run in runs}
    order = [loss for loss in listed if loss in present]
    order += [loss for loss in LOSS_NAMES if loss in present and loss not in order]
    order += sorted(present - set(order))
    order += [loss for loss in listed if loss not in order]  # asked for, no run on disk
    asked = _saved_list(saved, "seeds", int)
    groups = []
    for index, loss in enumerate(order):
        group = Group(loss, loss_label(loss), loss, loss_color(loss, index))
        group.runs = [run for run in runs if run.loss == loss]
        _dedupe(group)
        if loss in listed:
            group.missing = sorted(set(asked) - {run.seed for run in group.runs})
        groups.append(group)
    baseline = (saved or {}).get("baseline") or _task_default(task, "baseline", "sr")
    if baseline not in order:
        baseline = order[0]
    return groups, baseline


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _sweep_groups(runs: list[Run], sweep: dict[str, Any]) -> tuple[list[Group], str, str, str]:
    param, loss = str(sweep["param"]), str(sweep["loss"])
    by_value: dict[str, list[Run]] = {}
    values: dict[str, float] = {}
    for run in runs:
        value = run.config.get(param)
        named = re.fullmatch(rf"{re.escape(loss)}-{re.escape(param)}(.+)-seed\d+", run.name)
        if value is None and run.damaged and named:  # no config to say: its directory's name
            value = _number(named.group(1))
        if run.loss != loss and not (run.damaged and named):
            value = None
        if value is None or not math.isfinite(float(value)):
            warnings.warn(
                f"{run.path}: not a run of this sweep ({loss} over {param}); left out",
                stacklevel=3,
            )
            continue
        key = value_text(float(value))
        by_value.setdefault(key, []).append(run)
        values[key] = float(value)
    asked = _saved_list(sweep, "seeds", int)
    for value in _saved_list(sweep, "values", float):  # asked for, maybe no run on disk
        if math.isfinite(value):
            by_value.setdefault(value_text(float(value)), [])
            values[value_text(float(value))] = float(value)
    keys = sorted(by_value, key=values.__getitem__)
    colors = _value_colors(loss_color(loss), len(keys)) if keys else []
    groups = []
    for key, color in zip(keys, colors, strict=True):
        group = Group(key, f"{param} = {key}", loss, color, by_value[key], values[key])
        _dedupe(group)
        group.missing = sorted(set(asked) - {run.seed for run in group.runs})
        groups.append(group)
    if not groups:
        raise FileNotFoundError(f"{sweep.get('param')} sweep: no run of {loss} on disk")
    baseline = str(sweep.get("baseline", keys[0]))
    if baseline not in keys:
        baseline = keys[0]
    return groups, baseline, param, loss
