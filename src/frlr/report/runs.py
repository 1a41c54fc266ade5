"""What a comparison or sweep directory holds: its runs, grouped the way the report draws them.

The run directories are the source of truth, not ``results.json``: a report is also asked of a
comparison still running (unfinished runs are drawn, not tabulated), and of a directory that
two ``frlr compare`` commands with different ``--losses`` filled side by side (each wrote its
own ``results.json``). A *group* is what one table row, one curve and one t-SNE panel stand
for: a loss in a comparison, a value of the swept parameter in a sweep.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frlr.catalogue import LOSS_NAMES
from frlr.experiments.sweep import value_text
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

    @property
    def loss(self) -> str:
        return str(self.config.get("loss", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

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

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.runs if run.finished]


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


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        warnings.warn(f"{path}: not JSON ({error}); ignored", stacklevel=3)
        return None


def _read_history(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl; a truncated last line (a run killed mid-write) is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _load_run(path: Path) -> Run:
    config = _read_json(path / "config.json") or {}
    result = _read_json(path / "result.json")
    if result is not None and not config:
        config = result.get("config", {})
    return Run(path.name, path, config, _read_history(path / "metrics.jsonl"), result)


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
        groups, baseline, param, loss = _sweep_groups(runs, sweep)
        kind = "sweep"
    else:
        groups, baseline = _compare_groups(runs, saved, task)
        kind, param, loss = ("run" if run_dirs == [path] else "compare"), None, None
    return Experiment(
        kind, path, saved, task, primary, metric_names, groups, baseline, param, loss, tested
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
    listed = [str(loss) for loss in (saved or {}).get("losses", [])]
    present = {run.loss for run in runs}
    order = [loss for loss in listed if loss in present]
    order += [loss for loss in LOSS_NAMES if loss in present and loss not in order]
    order += sorted(present - set(order))
    groups = []
    for index, loss in enumerate(order):
        group = Group(loss, loss_label(loss), loss, loss_color(loss, index))
        group.runs = [run for run in runs if run.loss == loss]
        _dedupe(group)
        groups.append(group)
    baseline = (saved or {}).get("baseline") or _task_default(task, "baseline", "sr")
    if baseline not in order:
        baseline = order[0]
    return groups, baseline


def _sweep_groups(runs: list[Run], sweep: dict[str, Any]) -> tuple[list[Group], str, str, str]:
    param, loss = str(sweep["param"]), str(sweep["loss"])
    by_value: dict[str, list[Run]] = {}
    values: dict[str, float] = {}
    for run in runs:
        value = run.config.get(param)
        if run.loss != loss or value is None or not math.isfinite(float(value)):
            warnings.warn(
                f"{run.path}: not a run of this sweep ({loss} over {param}); left out",
                stacklevel=3,
            )
            continue
        key = value_text(float(value))
        by_value.setdefault(key, []).append(run)
        values[key] = float(value)
    keys = sorted(by_value, key=values.__getitem__)
    colors = _value_colors(loss_color(loss), len(keys)) if keys else []
    groups = []
    for key, color in zip(keys, colors, strict=True):
        group = Group(key, f"{param} = {key}", loss, color, by_value[key], values[key])
        _dedupe(group)
        groups.append(group)
    if not groups:
        raise FileNotFoundError(f"{sweep.get('param')} sweep: no run of {loss} on disk")
    baseline = str(sweep.get("baseline", keys[0]))
    if baseline not in keys:
        baseline = keys[0]
    return groups, baseline, param, loss
