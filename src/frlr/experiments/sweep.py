"""``frlr sweep``: one loss, one hyper-parameter over a list of values (the paper's Fig. 6 and 7).

    frlr sweep --param m --values 5,10,25,50,75,100 --dataset cifar100 --seeds 3   # HS-LR, Fig. 6
    frlr sweep --param r --values 0,0.5,1,2,3,5 --dataset cifar100                 # SS-LR, Fig. 7
    frlr sweep --param beta --values 1,5,10,20 --loss hs-lr

Every (value, seed) run lives in ``OUT/<loss>-<param><value>-seed<k>/`` and is trained,
resumed, reused or refused exactly as a run of ``frlr compare`` (the same
:func:`frlr.experiments.compare.run_or_reuse`), so rerunning a sweep continues it. The loss
defaults to HS-LR for m and SS-LR for r and beta; a parameter the loss does not take is an error
that names the ones it does.

The table (``OUT/sweep.{json,csv,md}``) gives per value the mean and sample standard deviation
over seeds of the task's metrics and the paired Wilcoxon p-value of the primary metric against
the baseline value: the loss's own default (m = 25, r = 2, beta = 10) when it is swept, else the
first value. ``OUT/sweep_<param>.png`` plots the primary metric against the value with error
bars (one standard deviation) and every seed as a dot.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from frlr.catalogue import (
    HYPERPARAMETERS,
    LOSS_HYPERPARAMETERS,
    LOSS_NAMES,
    canonical_loss_name,
    default_hyperparameter,
    hyperparameter_problem,
)
from frlr.config import ConfigError, TrainConfig, config_differences, validate
from frlr.experiments.compare import DEFAULT_RUN, RunOptions, parse_seeds, run_each, run_or_reuse
from frlr.experiments.figures import loss_curves_figure, sweep_figure
from frlr.experiments.grid import SWEEP_FIELDS, parse_field_values, setting_text
from frlr.experiments.results import (
    finished_note,
    mean_cell,
    metric_label,
    p_cell,
    percent,
    run_row,
    summarize,
    trained_now,
)
from frlr.experiments.stats import mean_std
from frlr.heads import loss_options
from frlr.io import is_main_process, run_lock, write_json_atomic, write_text_atomic
from frlr.rundir import read_result
from frlr.tasks import Task, get_task

__all__ = [
    "DATA_PARAMS",
    "DEFAULT_LOSS",
    "SWEEPABLE",
    "LossSpec",
    "default_value",
    "ncd_ratio_at_init",
    "parse_data_param",
    "parse_data_values",
    "parse_loss_specs",
    "parse_param",
    "parse_values",
    "run_dir_name",
    "sweep",
    "sweep_losses",
    "value_text",
]

SWEEPABLE: tuple[str, ...] = tuple(sorted({p for ps in LOSS_HYPERPARAMETERS.values() for p in ps}))
"""Every loss hyper-parameter a sweep can vary."""

DEFAULT_LOSS = {
    name: spec.figure_loss for name, spec in HYPERPARAMETERS.items() if spec.figure_loss
}
"""The loss swept when ``--loss`` is not given: the one the parameter belongs to in the paper."""


def value_text(value: float) -> str:
    """A value as it appears in run directories and tables: 25.0 -> "25", 0.5 -> "0.5"."""
    return f"{value:g}"


def run_dir_name(loss: str, param: str, value: float, seed: int) -> str:
    return f"{loss}-{param}{value_text(value)}-seed{seed}"


def default_value(loss: str, param: str) -> float | None:
    """The loss's own default for ``param`` (hs-lr m: 25), from the loss catalogue."""
    return default_hyperparameter(loss, param)


def parse_param(param: str, loss: str | None = None) -> tuple[str, str]:
    """(param, loss), checked: the parameter must be one the loss takes."""
    name = param.strip().lower() if isinstance(param, str) else param
    if name not in SWEEPABLE:
        raise ConfigError(
            f"unknown --param {param!r}; a sweep varies one of: {', '.join(SWEEPABLE)} (one "
            "--loss), or num-classes (several --losses)"
        )
    if loss is not None and canonical_loss_name(loss.strip()) is None:
        known = ", ".join(LOSS_NAMES)
        raise ConfigError(f"unknown --loss {loss.strip().lower()!r}; known: {known}")
    loss = DEFAULT_LOSS[name] if loss is None else canonical_loss_name(loss.strip()) or loss
    takes = LOSS_HYPERPARAMETERS[loss]
    if name not in takes:
        accepted = ", ".join(takes) if takes else "none"
        raise ConfigError(
            f"--param {name} does not apply to loss {loss!r} (its hyper-parameters: {accepted})"
        )
    return name, loss


def parse_values(values: str | Sequence[float], param: str, loss: str) -> tuple[float, ...]:
    """``"5,10,25"`` -> (5.0, 10.0, 25.0), each checked by the loss's own validation."""
    if isinstance(values, str):
        try:
            parsed = [float(part) for part in values.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--values must be numbers like 5,10,25, got {values!r}") from None
    else:
        parsed = [float(v) for v in values]
    if not parsed:
        raise ConfigError(f"--values names no value (got {values!r})")
    texts = [value_text(v) for v in parsed]
    if len(set(texts)) != len(texts):
        raise ConfigError(f"--values names a value twice: {','.join(texts)}")
    for value in parsed:
        if not math.isfinite(value):
            raise ConfigError(f"--values: {param} must be finite, got {value}")
        problem = hyperparameter_problem(param, value)
        if problem is not None:
            raise ConfigError(f"--values: {param} = {value_text(value)} for {loss}: {problem}")
    return tuple(parsed)


def _run_config(
    base: TrainConfig, loss: str, param: str, value: float, seed: int, out: Path
) -> TrainConfig:
    name = run_dir_name(loss, param, value, seed)
    return validate(replace(base, loss=loss, seed=seed, out=str(out / name), **{param: value}))


def sweep(
    base: TrainConfig,
    param: str,
    values: str | Sequence[float],
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    loss: str | None = None,
    baseline: float | None = None,
    run: RunOptions = DEFAULT_RUN,
) -> dict[str, Any]:
    """Train ``base`` with ``loss`` at every value of ``param`` and every seed, and tabulate.

    base: the recipe (loss, seed, out and ``param`` are set per run; the loss's other
        hyper-parameters come from it, and one it does not take is an error).
    loss: default :data:`DEFAULT_LOSS` of ``param``. baseline: the value the others are tested
        against (default: the loss's default value when swept, else the first value).
    out: default ``runs/<dataset>-<arch>[-<preset>]-sweep-<param>``.
    run: as for :func:`frlr.experiments.compare.compare` (a bar over the runs and per-run
    bars by default when stderr is a terminal); every run's config is checked before the
    first run starts, and the report is the caller's next step.
    Returns the content of ``sweep.json``.
    """
    param, loss = parse_param(param, loss)
    values = parse_values(values, param, loss)
    seeds = parse_seeds(seeds)
    baseline = _check_request(base, param, loss, values, baseline)
    task = get_task(validate(replace(base, loss=loss)).task)
    out = run.out_dir(base, out, "sweep", param)
    configs = [
        (value, seed, _run_config(base, loss, param, value, seed, out))
        for seed in seeds
        for value in values
    ]
    runs = _run_all(configs, loss, param, task, run)
    metric_names = [m for m in task.metric_names if any(r[m] is not None for r in runs)]
    keys = [value_text(v) for v in values]
    summary = summarize(
        runs,
        keys,
        seeds,
        value_text(baseline),
        task.primary_metric,
        metric_names,
        group_of=lambda row: value_text(row["value"]),
        label=lambda key: f"{param} = {key}",
    )
    for key, value in zip(keys, values, strict=True):
        summary["losses"][key] = {"value": value, **summary["losses"][key]}
    config = {k: v for k, v in asdict(base).items() if k not in ("loss", "seed", "out", param)}
    results = {
        "kind": "sweep",
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "preset": run.preset,
        "loss": loss,
        "param": param,
        "values": list(values),
        "seeds": list(seeds),
        "primary_metric": task.primary_metric,
        "baseline": summary["baseline"],
        "summary": summary["losses"],
        "footnote": summary["footnote"],
        "runs": runs,
        "config": config,
        "command": run.command,
    }
    if is_main_process():
        _write_tables(out, results, metric_names, run.say)
    return results


def _check_request(
    base: TrainConfig, param: str, loss: str, values: Sequence[float], baseline: float | None
) -> float:
    """The recipe gives no value of ``param`` and no hyper-parameter the loss does not take;
    returns the baseline value, one of ``values``."""
    if getattr(base, param) is not None:
        raise ConfigError(
            f"--{param} {getattr(base, param):g} conflicts with the sweep over {param}: the "
            "values come from --values; drop it"
        )
    takes = LOSS_HYPERPARAMETERS[loss]
    for name in ("beta", "m", "r"):
        if getattr(base, name) is not None and name not in takes:
            raise ConfigError(
                f"--{name} does not apply to loss {loss!r} (its hyper-parameters: "
                f"{', '.join(takes)})"
            )
    if baseline is None:
        default = default_value(loss, param)
        return default if default in values else values[0]
    if value_text(baseline) not in {value_text(v) for v in values}:
        raise ConfigError(
            f"--baseline {value_text(baseline)} is not one of --values "
            f"{','.join(map(value_text, values))}"
        )
    return baseline


def _run_all(
    configs: list[tuple[float, int, TrainConfig]],
    loss: str,
    param: str,
    task: Task,
    run: RunOptions,
) -> list[dict[str, Any]]:
    """Train, resume or reuse every (value, seed) run in turn, with a bar over the runs: their
    rows, each with the value."""
    progress = run.progress
    show = is_main_process() and (progress if progress is not None else sys.stderr.isatty())
    bar = (  # made only when shown: tqdm draws its 0% line when made
        tqdm(total=len(configs), desc=f"sweep {loss} {param}", unit="run", dynamic_ncols=True)
        if show
        else None
    )
    write = bar.write if bar is not None else run.say
    rows: dict[int, dict[str, Any]] = {}

    def done(index: int, status: str, result: dict[str, Any]) -> None:
        value, seed, config = configs[index]
        row = rows[index] = {
            "param": param,
            "value": value,
            **run_row(loss, seed, Path(config.out), status, result, task.metric_names),
        }
        write(
            f"[{index + 1}/{len(configs)}] {loss} {param}={value_text(value):<5} seed {seed}: "
            f"{metric_label(task.primary_metric)} {percent(row.get(task.primary_metric))}  "
            f"{row['wall_time_s']:.1f}s" + finished_note(status, result)
        )
        if bar is not None:
            bar.update()

    try:
        run_each([config for _, _, config in configs], run, done, write)
    finally:
        if bar is not None:
            bar.close()
    return [rows[index] for index in range(len(configs))]


def _write_tables(
    out: Path, results: dict[str, Any], metric_names: list[str], say: Callable[[str], None]
) -> None:
    """``sweep.{json,csv,md}`` and ``sweep_<param>.png`` in ``out``; the table printed. A
    figure that fails is a warning: the tables are written first and kept."""
    write_json_atomic(out / "sweep.json", results)
    write_text_atomic(out / "sweep.csv", _csv(results["runs"], metric_names))
    markdown = _markdown(results, metric_names)
    write_text_atomic(out / "sweep.md", markdown)
    figure = out / f"sweep_{results['param']}.png"
    try:
        sweep_figure(results, figure)
    except Exception as error:  # the table is written; a figure must not lose it
        warnings.warn(f"sweep figure {figure} failed: {error!r}", stacklevel=3)
    say("")
    say(markdown)
    say(f"results: {out / 'sweep.md'} (also sweep.json, sweep.csv, {figure.name})")


def _csv(runs: list[dict[str, Any]], metric_names: Sequence[str]) -> str:
    columns = ["loss", "param", "value", "seed", *metric_names, "train_loss", "epochs"]
    columns += ["wall_time_s", "status", "run_dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in runs:
        writer.writerow({k: row.get(k) for k in columns})
    return buffer.getvalue()


def _markdown(results: dict[str, Any], metric_names: Sequence[str]) -> str:
    param, baseline, config = results["param"], results["baseline"], results["config"]
    loss = results["loss"].upper()
    recipe = (
        f"{config['optimizer']} lr {config['lr']:g}, {config['schedule']} schedule, "
        f"batch {config['batch_size']}, {config['epochs']} epochs"
        + (", bf16" if config["bf16"] else "")
    )
    others = ", ".join(
        f"{name} {config[name]:g}"
        for name in LOSS_HYPERPARAMETERS[results["loss"]]
        if name != param and config.get(name) is not None
    )
    lines = [
        f"## {results['dataset']}, {results['arch']}, {loss}: "
        f"{metric_label(results['primary_metric'])} against {param} over "
        f"{len(results['seeds'])} seeds",
        "",
        (f"Preset `{results['preset']}`: " if results["preset"] else "Recipe: ")
        + f"{recipe}; {loss} {others + ', ' if others else ''}{param} in "
        f"{', '.join(map(value_text, results['values']))}; "
        f"seeds {', '.join(map(str, results['seeds']))}.",
        "",
    ]
    header = [param, *[f"{metric_label(m)} (%)" for m in metric_names]]
    header += [f"p vs {param} = {baseline}", "runs", "wall time / run (s)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, entry in results["summary"].items():
        cells = [key, *[mean_cell(entry, m) for m in metric_names]]
        cells += [p_cell(entry, key == baseline), str(entry["n"])]
        cells.append(f"{entry['wall_time_s_mean']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"mean ± sample standard deviation over seeds. {results['footnote']}",
        "",
        "### Runs",
        "",
        f"| {param} | seed | "
        + " | ".join(f"{metric_label(m)} (%)" for m in metric_names)
        + " | wall time (s) |",
        "|" + "---|" * (len(metric_names) + 3),
    ]
    for row in results["runs"]:
        cells = " | ".join("n/a" if row[m] is None else f"{100 * row[m]:.2f}" for m in metric_names)
        lines.append(
            f"| {value_text(row['value'])} | {row['seed']} | {cells} | {row['wall_time_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- data sweeps

DATA_PARAMS: tuple[str, ...] = ("num_classes",)
"""Config fields a sweep varies for several losses at once (``--param num-classes --losses``):
every loss, and every loss variant, is then one curve over the values."""


@dataclass(frozen=True)
class LossSpec:
    """One curve: a loss and the settings that make it a variant.

    Spelled ``name`` or ``name:key=value[:key=value]`` (``ss-lr:r=0``, ``hs-lr:m=100:beta=5``,
    ``lr:head-bias-init=prior``): colons, not commas, separate the options, so a spec fits in
    the comma list of ``--losses``. A key is a hyper-parameter of the loss or any sweepable
    training field (:data:`frlr.experiments.grid.SWEEP_FIELDS`), in its flag or field spelling.
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The spec as written, canonical: ``ss-lr:r=0``, ``lr:head-bias-init=prior``."""
        return ":".join(
            [self.name, *(f"{k.replace('_', '-')}={setting_text(v)}" for k, v in self.options)]
        )

    @property
    def slug(self) -> str:
        """A run-directory-safe form: ``ss-lr_r0``."""
        return "_".join([self.name, *(f"{k}{setting_text(v)}" for k, v in self.options)])

    @property
    def label(self) -> str:
        """For legends and tables: ``SS-LR (r = 0)``, ``LR (head bias init = prior)``."""
        from frlr.style import loss_label

        extra = ", ".join(f"{k.replace('_', ' ')} = {setting_text(v)}" for k, v in self.options)
        return loss_label(self.name) + (f" ({extra})" if extra else "")


def _spec_option(item: str, name: str, option: str) -> tuple[str, Any]:
    key, equals, value = option.partition("=")
    key = key.strip().lower().replace("-", "_")
    takes = LOSS_HYPERPARAMETERS[name]
    recipe = [f for f in SWEEP_FIELDS if f not in ("beta", "m", "r", "num_classes")]
    if not equals or (key not in takes and key not in recipe):
        accepted = ", ".join(takes) if takes else "none"
        raise ConfigError(
            f"--losses: {option!r} in {item!r} is not key=value for a hyper-parameter of {name} "
            f"(its hyper-parameters: {accepted}) or a training field "
            f"({', '.join(f.replace('_', '-') for f in recipe)})"
        )
    if key not in takes:
        try:
            return key, parse_field_values(key, [value.strip()])[0]
        except ConfigError as error:
            raise ConfigError(f"--losses: {item!r}: {error}") from None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--losses: {key} in {item!r} must be a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"--losses: {key} in {item!r} must be finite")
    problem = hyperparameter_problem(key, number)
    if problem is not None:
        raise ConfigError(f"--losses: {item!r}: {problem}")
    return key, number


def _resolved(
    spec: LossSpec, recipe: Mapping[str, float | None]
) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """The spec with every hyper-parameter it takes filled in, from the recipe (``--r 3``) or
    the loss's default: ``ss-lr`` and ``ss-lr:r=2`` are one loss, and so are ``ss-lr`` and
    ``ss-lr:r=3`` under ``--r 3``."""
    options = dict(spec.options)
    for name in LOSS_HYPERPARAMETERS[spec.name]:
        given = recipe.get(name)
        options.setdefault(
            name, default_hyperparameter(spec.name, name) if given is None else given
        )
    return spec.name, tuple(sorted(options.items()))


def parse_loss_specs(
    text: str | Sequence[str], recipe: Mapping[str, float | None] | None = None
) -> tuple[LossSpec, ...]:
    """``"sr,lr,ss-lr:r=0"`` -> the curves, each checked: a known loss, options it takes, values
    its constructor accepts, no curve named twice (``ss-lr`` and ``ss-lr:r=2`` are one; so are
    ``ss-lr`` and ``ss-lr:r=3`` when ``recipe``, the command line's beta, m, r, sets r = 3)."""
    recipe = recipe or {}
    items = text.split(",") if isinstance(text, str) else list(text)
    specs: list[LossSpec] = []
    for item in (part.strip() for part in items):
        if not item:
            continue
        name, *options = item.split(":")
        canonical = canonical_loss_name(name.strip())
        if canonical is None:
            raise ConfigError(
                f"--losses: unknown loss {name.strip().lower()!r} in {item!r}; known: "
                f"{', '.join(LOSS_NAMES)}"
            )
        parsed: dict[str, Any] = {}
        for option in options:
            key, value = _spec_option(item, canonical, option)
            if key in parsed:
                raise ConfigError(f"--losses: {item!r} sets {key.replace('_', '-')} twice")
            parsed[key] = value
        spec = LossSpec(canonical, tuple(sorted(parsed.items())))
        twin = next((s for s in specs if _resolved(s, recipe) == _resolved(spec, recipe)), None)
        if twin is not None:
            raise ConfigError(
                f"--losses names one curve twice: {twin.key!r} and {item!r} train the same "
                "loss with the same options; drop one"
            )
        specs.append(spec)
    if not specs:
        raise ConfigError(f"--losses names no loss (got {text!r})")
    return tuple(specs)


def parse_data_param(param: str) -> str:
    """``num-classes`` or ``num_classes`` -> ``num_classes``; anything else is an error."""
    name = param.strip().lower().replace("-", "_")
    if name not in DATA_PARAMS:
        raise ConfigError(
            f"unknown --param {param!r} for a sweep over --losses; it varies one of: "
            f"{', '.join(p.replace('_', '-') for p in DATA_PARAMS)}"
        )
    return name


def parse_data_values(
    values: str | Sequence[int], param: str, base: TrainConfig
) -> tuple[int, ...]:
    """``"10,25,50"`` -> (10, 25, 50), each checked by the config's own validation."""
    flag = param.replace("_", "-")
    if isinstance(values, str):
        try:
            parsed = [int(part) for part in values.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--values must be integers like 10,25,50, got {values!r}") from None
    else:
        parsed = [int(v) for v in values]
    if not parsed:
        raise ConfigError(f"--values names no value (got {values!r})")
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"--values names a value twice: {','.join(map(str, parsed))}")
    for value in parsed:
        try:
            # beta, m, r reach only the losses that take them (checked per run)
            validate(replace(base, **{param: value}, beta=None, m=None, r=None))
        except ConfigError as error:
            raise ConfigError(f"--values: {flag} = {value}: {error}") from None
    return tuple(parsed)


def _spec_config(
    base: TrainConfig, spec: LossSpec, param: str, value: int, seed: int, out: Path
) -> TrainConfig:
    """One run of a data sweep: ``base``'s hyper-parameters reach the losses that take them
    (as in ``frlr compare``), the spec's own options override them."""
    keep = LOSS_HYPERPARAMETERS[spec.name]
    hyper = {name: getattr(base, name) if name in keep else None for name in ("beta", "m", "r")}
    hyper.update(dict(spec.options))
    name = run_dir_name(spec.slug, param, value, seed)
    return validate(
        replace(base, loss=spec.name, seed=seed, out=str(out / name), **{param: value}, **hyper)
    )


def ncd_ratio_at_init(config: TrainConfig) -> float:
    """The NCD gradient ratio (summed |dL/dz| over positive logits / over negative ones) of
    ``config``'s loss at initialisation, when the head outputs equal scores for all K classes.

    Computed with :func:`frlr.torch.diagnostics.ncd_stats` on all-zero logits, one sample per
    class: an untrained network with a zero-initialised head bias outputs nearly equal scores,
    so this is the step-0 balance of the loss without running anything. LR gives 1/(K-1) (every
    logit has |sigma(0) - t| = 1/2, one positive against K-1 negatives), SR 1.
    """
    import torch

    from frlr.torch.diagnostics import ncd_stats

    k = config.num_classes
    if k is None:
        raise ValueError("ncd_ratio_at_init needs config.num_classes")
    logits = torch.zeros(k, k, dtype=torch.float64)
    stats = ncd_stats(logits, torch.arange(k), config.loss, **loss_options(config))
    return stats.gradient_ratio


def sweep_losses(
    base: TrainConfig,
    param: str,
    values: str | Sequence[int],
    losses: str | Sequence[str],
    seeds: int | Sequence[int] = 3,
    out: str | Path | None = None,
    *,
    run: RunOptions = DEFAULT_RUN,
    train_runs: bool = True,
) -> dict[str, Any]:
    """Train every loss curve of ``losses`` at every value of the data field ``param`` and every
    seed, and tabulate each loss's primary metric against the first loss (SR when given).

    Runs live in ``OUT/<slug>-<param><value>-seed<k>/`` (slug: ``ss-lr_r0`` for ``ss-lr:r=0``)
    and are trained, resumed or reused as in ``frlr compare``, seed by seed, value by value in
    the order listed (the table sorts them). After every run the tables and figure are rebuilt
    from every finished run in OUT, of any seed (so two processes over disjoint ``seeds`` can
    share OUT: the tables are written under a lock and each includes the other's runs). Each
    run is trained under its own lock (:func:`frlr.io.run_lock`, ``RUN_DIR/.lock``): a run
    another process is training is skipped, so processes may even go over the same seeds in
    opposite orders of ``values``, and together finish every value of a seed as early as
    possible. ``train_runs=False`` only rebuilds them. ``run``: as for
    :func:`frlr.experiments.compare.compare`. Returns the content of ``sweep.json``.
    """
    param = parse_data_param(param)
    flag = param.replace("_", "-")
    if getattr(base, param) is not None:
        raise ConfigError(
            f"--{flag} {getattr(base, param)} conflicts with the sweep over {flag}: the values "
            "come from --values; drop it"
        )
    values = parse_data_values(values, param, base)
    specs = parse_loss_specs(losses)
    seeds = parse_seeds(seeds)
    task = get_task(validate(replace(base, loss=specs[0].name)).task)
    out = run.out_dir(base, out, "sweep", param)
    main_process = is_main_process()
    say = run.say
    plan = [
        (value, spec, _spec_config(base, spec, param, value, seed, out))
        for seed in seeds
        for value in values
        for spec in specs
    ]
    meta = _curves_meta(base, task, run, param, values, specs)

    def tables() -> dict[str, Any]:
        results = _collect_curves(base, specs, param, values, out, meta)
        if main_process:
            with run_lock(out, wait=True):
                _write_curves(results, out)
        return results

    if not train_runs:
        results = tables()
        say(_curves_markdown(results))
        return results
    for index, (value, spec, config) in enumerate(plan, start=1):
        where = f"[{index}/{len(plan)}] {spec.key} {flag}={value} seed {config.seed}"
        status, result = run_or_reuse(config, run, wait=False)
        if status == "busy":
            say(f"{where}: being trained by another process, skipped")
            continue
        top = percent(result.get("metrics", {}).get(task.primary_metric))
        wall = float(result.get("wall_time_s", 0))
        say(
            f"{where}: {metric_label(task.primary_metric)} {top}  {wall:.1f}s"
            + finished_note(status, result)
        )
        if trained_now(status):
            tables()
    results = tables()
    say("")
    say(_curves_markdown(results))
    say(f"results: {out / 'sweep.md'} (also sweep.json, sweep.csv, sweep_{param}.png)")
    return results


def _curves_meta(
    base: TrainConfig,
    task: Task,
    run: RunOptions,
    param: str,
    values: Sequence[int],
    specs: Sequence[LossSpec],
) -> dict[str, Any]:
    """What a data sweep's ``sweep.json`` says of itself besides its runs and summary."""
    return {
        "task": task.name,
        "dataset": base.dataset,
        "arch": base.arch,
        "preset": run.preset,
        "param": param,
        "values": list(values),
        "losses": [spec.key for spec in specs],
        "primary_metric": task.primary_metric,
        "metric_names": list(task.metric_names),
        "config": {
            k: v for k, v in asdict(base).items() if k not in ("loss", "seed", "out", param)
        },
        "command": run.command,
    }


def _finished_seeds(out: Path, spec: LossSpec, param: str, value: int) -> list[int]:
    prefix = run_dir_name(spec.slug, param, value, 0).removesuffix("0")
    seeds = []
    for path in out.glob(f"{prefix}*/result.json"):
        tail = path.parent.name.removeprefix(prefix)
        if tail.isdigit():
            seeds.append(int(tail))
    return sorted(seeds)


def _collect_curves(
    base: TrainConfig,
    specs: Sequence[LossSpec],
    param: str,
    values: Sequence[int],
    out: Path,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Every finished run in ``out`` of the sweep's curves and values (any seed), checked to be
    of the same recipe, summarised per (value, curve) against the first curve."""
    primary, metric_names = meta["primary_metric"], meta["metric_names"]
    values = sorted(values)  # the table's order, whatever order the runs are trained in
    runs = []
    for value in values:
        for spec in specs:
            for seed in _finished_seeds(out, spec, param, value):
                config = _spec_config(base, spec, param, value, seed, out)
                result = read_result(Path(config.out) / "result.json")
                differences = config_differences(result["config"], asdict(config))
                if differences:
                    raise ConfigError(
                        f"{config.out} holds a finished run with another config "
                        f"({'; '.join(differences)}); choose another --out or delete it"
                    )
                row = run_row(spec.key, seed, Path(config.out), "finished", result, metric_names)
                runs.append({"param": param, "value": value, **row})
    metric_names = [m for m in metric_names if any(r[m] is not None for r in runs)]
    baseline = specs[0].key
    seeds = sorted({row["seed"] for row in runs})
    summary = []
    footnote = ""
    for value in values:
        rows = [row for row in runs if row["value"] == value]
        keys = [spec.key for spec in specs]
        part = summarize(rows, keys, seeds, baseline, primary, metric_names, label=str)
        footnote = part["footnote"]
        base_rows = {r["seed"]: r[primary] for r in rows if r["loss"] == baseline}
        for spec in specs:
            entry = part["losses"][spec.key]
            if not entry["n"]:  # no finished run yet: no time either (not NaN in the JSON)
                entry["wall_time_s_mean"] = None
            mine = {r["seed"]: r[primary] for r in rows if r["loss"] == spec.key}
            paired = [
                mine[s] - base_rows[s]
                for s in sorted(mine)
                if s in base_rows and mine[s] is not None and base_rows[s] is not None
            ]
            if not paired or spec.key == baseline:
                delta_mean, delta_std = None, None
            else:
                delta_mean, delta_std = mean_std(paired)
            config = _spec_config(base, spec, param, value, 0, out)
            summary.append(
                {
                    "value": value,
                    "loss": spec.key,
                    "loss_name": spec.name,
                    "label": spec.label,
                    **entry,
                    "delta_mean": delta_mean,
                    "delta_std": delta_std,
                    "delta_n": 0 if spec.key == baseline else len(paired),
                    "ncd_ratio_init": ncd_ratio_at_init(config),
                }
            )
    return {
        "kind": "sweep-losses",
        **meta,
        "metric_names": metric_names,
        "baseline": baseline,
        "seeds": seeds,
        "summary": summary,
        "footnote": footnote,
        "runs": runs,
    }


def _write_curves(results: dict[str, Any], out: Path) -> None:
    """``sweep.{json,csv,md}`` and ``sweep_<param>.png`` of a data sweep, each atomically; a
    figure that fails only warns (the tables are written first)."""
    write_json_atomic(out / "sweep.json", results)
    write_text_atomic(out / "sweep.csv", _curves_csv(results))
    write_text_atomic(out / "sweep.md", _curves_markdown(results))
    figure = out / f"sweep_{results['param']}.png"
    if not any(
        row.get(f"{results['primary_metric']}_mean") is not None for row in results["summary"]
    ):
        return
    try:
        loss_curves_figure(results, figure)
    except Exception as error:  # the table is written; a figure must not lose it
        warnings.warn(f"sweep figure {figure} failed: {error!r}", stacklevel=2)


def _curves_csv(results: dict[str, Any]) -> str:
    metrics = results["metric_names"]
    columns = [results["param"], "loss", "n"]
    columns += [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    columns += ["delta_mean", "delta_std", "delta_n", "p_value", "ncd_ratio_init"]
    columns += ["wall_time_s_mean"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in results["summary"]:
        writer.writerow({results["param"]: row["value"], **{k: row.get(k) for k in columns[1:]}})
    return buffer.getvalue()


def _curves_markdown(results: dict[str, Any]) -> str:
    param, primary, config = results["param"], results["primary_metric"], results["config"]
    metrics, baseline = results["metric_names"], results["baseline"]
    recipe = (
        f"{config['optimizer']} lr {config['lr']:g}, {config['schedule']} schedule, "
        f"batch {config['batch_size']}, {config['epochs']} epochs"
        + (", bf16" if config["bf16"] else "")
    )
    name = "K" if param == "num_classes" else param
    seeds = ", ".join(map(str, results["seeds"])) or "none finished yet"
    lines = [
        f"## {results['dataset']}, {results['arch']}: {metric_label(primary)} against {name}, "
        "per loss",
        "",
        (f"Preset `{results['preset']}`: " if results["preset"] else "Recipe: ")
        + f"{recipe}; {name} in {', '.join(map(str, results['values']))}; losses "
        f"{', '.join(results['losses'])}; seeds found: {seeds}.",
        "",
    ]
    header = [name, "loss", *[f"{metric_label(m)} (%)" for m in metrics]]
    header += [f"Δ {metric_label(primary)} vs {baseline} (pp, paired)", f"p vs {baseline}"]
    header += ["NCD ratio at init", "n", "wall time / run (s)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["summary"]:
        cells = [str(row["value"]), row["loss"], *[_seeds_cell(row, m) for m in metrics]]
        if row["loss"] == baseline:
            cells += ["—", "—"]
        else:
            cells += [_delta_cell(row), p_cell(row, False)]
        wall = row.get("wall_time_s_mean")
        cells += [f"{row['ncd_ratio_init']:.3g}", str(row["n"])]
        cells.append("n/a" if wall is None or not math.isfinite(wall) else f"{wall:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "mean ± sample standard deviation over the seeds finished (n); Δ: the loss's "
        f"{metric_label(primary)} minus {baseline}'s on the same seed, averaged over the seeds "
        "both finished. NCD ratio at init: summed |dL/dz| over positive logits / over negative "
        "ones with equal logits (an untrained head), from frlr.torch.diagnostics.ncd_stats. "
        + results["footnote"],
        "",
        *_gap_table(results, name),
    ]
    return "\n".join(lines) + "\n"


def _seeds_cell(row: dict[str, Any], name: str) -> str:
    """A metric's mean ± std over seeds in per cent; no ± from one seed."""
    if row.get(f"{name}_mean") is None or row["n"] > 1:
        return mean_cell(row, name)
    return f"{100 * row[f'{name}_mean']:.2f}"


def _delta_cell(row: dict[str, Any]) -> str:
    if row["delta_mean"] is None:
        return "n/a"
    spread = f" ± {100 * row['delta_std']:.2f}" if row["delta_n"] > 1 else ""  # none from one
    return f"{100 * row['delta_mean']:+.2f}{spread} (n = {row['delta_n']})"


def _gap_table(results: dict[str, Any], name: str) -> list[str]:
    """The same numbers, one row per value: the baseline's primary metric, then each other
    loss's paired gap to it, each with its n (the compact form of the figure's left panel)."""
    primary, baseline = results["primary_metric"], results["baseline"]
    keys = results["losses"]
    header = [
        name,
        f"{baseline} {metric_label(primary)} (%)",
        *[f"{key} − {baseline}" for key in keys[1:]],
    ]
    lines = [
        f"### {metric_label(primary)} gap to {baseline} per {name} (pp, paired by seed; n seeds)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    by = {(row["value"], row["loss"]): row for row in results["summary"]}
    for value in sorted({row["value"] for row in results["summary"]}):
        base = by[value, baseline]
        cells = [str(value), f"{_seeds_cell(base, primary)} (n = {base['n']})"]
        for key in keys[1:]:
            cells.append(_delta_cell(by[value, key]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines
