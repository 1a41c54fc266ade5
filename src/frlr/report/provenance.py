"""How the numbers were made: the commands, the package versions, the hardware, the wall times.

The command ``frlr compare``/``frlr sweep`` was invoked with is saved in ``results.json`` /
``sweep.json`` (``command``). Equivalent commands are also rebuilt from the saved configs: the
preset the experiment named plus one flag for every result-affecting field that differs from
it, so they reproduce the runs as long as that preset is unchanged; every ``frlr train`` line
reproduces one run on its own.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from frlr.config import FIELD_NAMES, TrainConfig, resolve_config
from frlr.report.runs import Experiment
from frlr.tasks import get_task

__all__ = ["compare_command", "config_flags", "hardware_rows", "train_commands", "version_rows"]

_NEVER = {"out", "loss", "seed"}


def _reference(preset: str | None, dataset: str) -> tuple[str, dict[str, Any]]:
    """(the preset to name, its resolved values for ``dataset``); "paper" when it is gone."""
    for name in (preset, "paper"):
        if not name:
            continue
        try:
            # loss lr trains every task (sr does not train multilabel); presets set no loss
            return name, asdict(resolve_config(name, dataset=dataset, loss="lr"))
        except Exception:  # a preset file moved or renamed since: fall back to the default
            continue
    return "paper", asdict(TrainConfig())


def _flag_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_flag_value(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def config_flags(
    config: dict[str, Any], reference: dict[str, Any], skip: Iterable[str] = ()
) -> list[str]:
    """Command-line flags that turn ``reference`` into ``config``: ``--dataset`` and one per
    field that differs (fields in ``skip``, ``out``, ``loss``, ``seed`` and values None are left
    out)."""
    skip = set(skip) | _NEVER
    flags: list[str] = []
    for name in FIELD_NAMES:
        if name in skip or name not in config:
            continue
        value, ref = config[name], reference.get(name)
        value = tuple(value) if isinstance(value, list) else value
        ref = tuple(ref) if isinstance(ref, list) else ref
        if value is None or (value == ref and name != "dataset"):  # the preset follows dataset
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags += [flag, _flag_value(value)]
    return flags


def _base_config(experiment: Experiment) -> dict[str, Any]:
    saved = (experiment.saved or {}).get("config")
    if saved:
        return dict(saved)
    first = experiment.runs[0].config
    return {k: v for k, v in first.items() if k not in ("loss", "seed", "out", "beta", "m", "r")}


def compare_command(experiment: Experiment) -> str:
    """An ``frlr compare`` or ``frlr sweep`` line equivalent to the saved experiment."""
    saved = experiment.saved or {}
    config = _base_config(experiment)
    preset, reference = _reference(saved.get("preset"), config.get("dataset", "digits"))
    seeds = sorted({run.seed for run in experiment.runs})
    seeds_arg = str(len(seeds)) if seeds == list(range(len(seeds))) else ",".join(map(str, seeds))
    if experiment.kind == "sweep":
        values = ",".join(g.key for g in experiment.groups)
        head = ["frlr", "sweep", "--param", str(experiment.param), "--values", values]
        head += ["--loss", str(experiment.loss)]
        skip = {experiment.param or ""}
    else:
        head = ["frlr", "compare", "--losses", ",".join(g.key for g in experiment.groups)]
        skip = set()
        try:
            default = get_task(experiment.task).baseline
        except Exception:
            default = "sr"
        if experiment.baseline != default:
            head += ["--baseline", experiment.baseline]
    head += ["--preset", preset, "--seeds", seeds_arg, "--out", str(experiment.path)]
    return shlex.join(head + config_flags(config, reference, skip))


def train_commands(experiment: Experiment) -> list[str]:
    """One ``frlr train`` line per run: each reproduces that run alone."""
    saved = experiment.saved or {}
    lines = []
    for run in experiment.runs:
        config = run.config
        preset, reference = _reference(saved.get("preset"), config.get("dataset", "digits"))
        head = ["frlr", "train", "--preset", preset, "--loss", run.loss, "--seed", str(run.seed)]
        head += ["--out", str(run.path)]
        lines.append(shlex.join(head + config_flags(config, reference)))
    return lines


def _distinct(values: list[Any]) -> str:
    seen: list[str] = []
    for value in values:
        text = str(value)
        if text not in seen:
            seen.append(text)
    return " / ".join(seen) if seen else "n/a"


def _result_rows(experiment: Experiment, section: str) -> list[list[str]]:
    """[name, value] of one section of the finished runs' results (several values when runs
    differ)."""
    results = [run.result for run in experiment.runs if run.result]
    names: list[str] = []
    for result in results:
        names += [n for n in result.get(section, {}) if n not in names]
    return [[n, _distinct([r.get(section, {}).get(n) for r in results])] for n in names]


def version_rows(experiment: Experiment) -> list[list[str]]:
    """[package, version] of the finished runs (several when runs differ)."""
    return _result_rows(experiment, "versions")


def hardware_rows(experiment: Experiment) -> list[list[str]]:
    """[field, value] of the finished runs' hardware (several when runs differ)."""
    return _result_rows(experiment, "hardware")
