"""The ``frlr`` command: thin, it parses and calls ``frlr.train`` and ``frlr.experiments``.

    frlr                       the main job: compare sr, lr, hs-lr, ss-lr on the bundled digits
                               (preset cpu, 3 seeds) and write the table under runs/
    frlr train   --dataset D --arch A --loss L [--beta --m --r] --seed S --out DIR [--preset P]
                 [--epochs N] [--data-dir DIR] [--download] [--resume] [any config field]
    frlr compare --dataset D --arch A --losses sr,lr,hs-lr,ss-lr --seeds N [--out DIR]
                 [--preset P] [--task auto|classification|reid|multilabel] [any config field]
    frlr presets [NAME] [--dataset D]   list the presets, or show one resolved for a dataset
    frlr demo    [compare options]      the main job, with options
    frlr sweep   --param m --values 5,10,25,50,75,100 [--loss hs-lr] [--seeds N] [--out DIR]
                 [--baseline V] [--preset P] [any config field]   one hyper-parameter, Fig. 6/7
    frlr sweep   --param lr --values 0.1,0.03 --losses sr,ss-lr [--val-fraction 0.2]
                 any training field (lr, weight-decay, epochs, head-bias-init, ...), many losses
    frlr tune    --grid lr=0.1,0.03,0.01 --grid head-bias-init=zero,prior --losses sr,lr,ss-lr
                 --val-fraction 0.2 --seeds 10   choose on validation, train, test
    frlr report  RUN_DIR [--no-tsne]     RUN_DIR/report/report.{md,html} and the paper's figures

``compare``, ``demo`` and ``sweep`` end with ``frlr report`` of their directory (``--no-report``
skips it): this module is the one place that chains an experiment and its report. Every field
is checked before anything runs: a bad one exits with status 2 and one ``error:`` line naming
the flag and what it allows; so does a dataset that is not where it is looked for. A dataset or
checkpoint that is there but unusable (a damaged archive member, a truncated image, a checkpoint
that does not load) and a full disk exit with status 1 and one ``error:`` line naming the file
(the archive and its member), what is wrong and what to do. No traceback is shown unless
``--debug`` or ``FRLR_DEBUG=1`` is given.

Every field of :class:`frlr.train.TrainConfig` is an option (``--weight-decay``,
``--no-augment``, ``--bf16``, ...). Values come from the dataclass defaults, then the preset
(default ``paper``), then its ``[dataset.NAME]`` table, then the command line.
Under ``torchrun``: ``torchrun --standalone --nproc_per_node 2 -m frlr.cli train ...``; add
``--classifier chunked --class-parallel`` to shard the classifier by class over the processes.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import typing
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from frlr import __version__
from frlr.catalogue import HYPERPARAMETERS, TABLE_1_LOSSES
from frlr.config import FIELD_NAMES, FIELD_TYPES, ConfigError, TrainConfig, resolve_config
from frlr.data import DATASETS, DataError, dataset_info
from frlr.experiments import compare, field_sweep, grid, sweep, tune
from frlr.experiments.grid import SWEEP_FIELDS
from frlr.io import NoSpaceError, is_main_process
from frlr.presets import available_presets, load_preset
from frlr.report import build_report
from frlr.rundir import NUMERICS_FIELDS, check_out_dir
from frlr.tasks import UnsupportedTaskError
from frlr.train import train

COMMANDS = ("train", "compare", "presets", "demo", "sweep", "tune", "report")
MAIN_JOB = {
    "dataset": "digits",
    "preset": "cpu",  # whose [dataset.digits] table picks the small-cnn and 15 epochs
    "losses": ",".join(TABLE_1_LOSSES),
    "seeds": "3",
}
"""What ``frlr`` with no arguments runs (``frlr demo``): about a minute on 2 CPU cores."""

_NOT_OPTIONS = {"compare": ("loss", "seed", "out"), "train": ()}


def _parse_float_tuple(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5,0.75, got {text!r}") from None


def _add_config_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...]) -> None:
    """One option per TrainConfig field, default None ("not given": the preset decides)."""
    group = parser.add_argument_group("training configuration (default: the preset's value)")
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = FIELD_TYPES[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if args and typing.get_origin(hint) is not tuple else hint
        help_text = f.metadata.get("help", "")
        if base is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(base) is tuple:
            group.add_argument(
                flag, type=_parse_float_tuple, default=None, metavar="F,F", help=help_text
            )
        else:
            metavar = {int: "N", float: "X"}.get(base, f.name.upper().replace("_", "-"))
            kind = _integer if base is int else base
            group.add_argument(flag, type=kind, default=None, metavar=metavar, help=help_text)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frlr",
        description=(
            "Focus-rectified logistic regression (Dong, Zhu and Gong, AAAI 2019): train networks "
            "with SR, LR, HS-LR, SS-LR or HS-SR and compare the losses. With no arguments, runs "
            "the main job: a comparison on the bundled 8x8 digits (about a minute on 2 CPU cores)."
        ),
        epilog="Run 'frlr COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"frlr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train one network with one loss",
        description="Train one network with one loss; writes config.json, metrics.jsonl, "
        "checkpoint.pt and result.json to --out.",
    )
    train.add_argument(
        "--preset", default="paper", help="recipe name or .toml path (default paper)"
    )
    _add_resume_options(train)
    train.add_argument(
        "--stop-after", type=int, default=None, metavar="N", help="train at most N epochs now"
    )
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    train.add_argument("--dry-run", action="store_true", help="print the resolved config, exit")
    _add_config_options(train, ())

    for name, help_text in (
        ("compare", "train every loss x seed and test the differences"),
        ("demo", "the main job (frlr with no arguments), with options"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        defaults = MAIN_JOB if name == "demo" else {"losses": None, "seeds": "3"}
        sub.add_argument(
            "--preset", default=defaults.get("preset", "paper"), help="recipe name or .toml path"
        )
        sub.add_argument(
            "--losses",
            default=defaults["losses"],
            help=f"comma-separated losses (default {','.join(TABLE_1_LOSSES)}; multilabel: no sr)",
        )
        sub.add_argument(
            "--seeds", default=defaults["seeds"], help="how many seeds (0..N-1), or a list 0,3,5"
        )
        sub.add_argument("--out", default=None, help="comparison dir (default runs/D-A-PRESET)")
        sub.add_argument(
            "--baseline",
            default=None,
            help="loss the others are tested against (default sr; multilabel: lr)",
        )
        sub.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="per-run progress bars (default: when stderr is a terminal)",
        )
        _add_report_option(sub)
        _add_reuse_option(sub)
        _add_config_options(sub, _NOT_OPTIONS["compare"])
        if name == "demo":  # the arch comes from the preset's [dataset.digits] table
            sub.set_defaults(dataset=MAIN_JOB["dataset"])

    _add_sweep_parser(commands)
    _add_tune_parser(commands)
    _add_report_parser(commands)

    _add_presets_parser(commands)
    for sub in commands.choices.values():
        sub.add_argument(
            "--debug", action="store_true", help="show the traceback of an error (or FRLR_DEBUG=1)"
        )
    return parser


def _add_resume_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument(
        "--allow-change",
        action="append",
        choices=NUMERICS_FIELDS,
        default=[],
        metavar="FIELD",
        help="with --resume: go on although FIELD (one of "
        + ", ".join(NUMERICS_FIELDS)
        + ") differs from the run's last segment; the run is then no longer bitwise "
        "reproducible (repeat the flag for several fields)",
    )


def _add_presets_parser(commands: Any) -> None:
    presets = commands.add_parser("presets", help="list the presets or show one")
    presets.add_argument("name", nargs="?", help="show this preset resolved")
    presets.add_argument("--dataset", default=None, help="apply its [dataset.NAME] table")


def _add_report_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end with frlr report of the output dir (default: yes)",
    )


def _add_sweep_parser(commands: Any) -> None:
    help_text = (
        "train one loss at every value of one hyper-parameter x seed (Fig. 6, 7), several "
        "losses at every number of classes x seed (--param num-classes --losses ...), or "
        "several losses at every value of any training field (--param lr --losses ...)"
    )
    sweep = commands.add_parser(
        "sweep",
        help=help_text,
        description=f"{help_text}; runs go to OUT/<loss>-<param><value>-seed<k>/, the table to "
        "OUT/sweep.{json,csv,md}, the plot to OUT/sweep_<param>.png. Rerun to resume. "
        "A num-classes sweep keeps the first K classes of the dataset per value, writes one row "
        "per (K, loss) and plots each loss's top-1 minus the first loss's (SR) against K, with "
        "the NCD gradient ratio at initialisation; its tables are rebuilt after every run from "
        "every finished run in OUT, so processes over disjoint --seeds can share OUT.",
    )
    swept = [name for name, spec in HYPERPARAMETERS.items() if spec.figure_loss]
    sweep.add_argument(
        "--param",
        required=True,
        help=f"what to vary: a hyper-parameter of --loss ({', '.join(swept[:-1])} or "
        f"{swept[-1]}), num-classes (with --losses), or any of "
        f"{', '.join(f.replace('_', '-') for f in SWEEP_FIELDS)} (with --loss or --losses)",
    )
    sweep.add_argument(
        "--values", required=True, help="comma-separated values, e.g. 5,10,25,50,75,100"
    )
    sweep.add_argument(
        "--loss",
        default=None,
        help="the loss (default: "
        + ", ".join(f"{s.figure_loss} for {n}" for n, s in HYPERPARAMETERS.items() if s.figure_loss)
        + ")",
    )
    sweep.add_argument(
        "--losses",
        default=None,
        metavar="SPEC,SPEC",
        help="the curves, comma-separated (num-classes: the first the baseline, default "
        "sr,lr,hs-lr,ss-lr); a variant sets options after colons: ss-lr:r=0, "
        "hs-lr:m=100:beta=5, lr:head-bias-init=prior (each variant is its own curve)",
    )
    sweep.add_argument(
        "--no-train",
        dest="train_runs",
        action="store_false",
        help="rebuild the tables and figures from the runs in OUT that have finished, train "
        "nothing (num-classes sweeps: any seed; these are their report, --report does not "
        "apply); for a sweep that is still running or was interrupted",
    )
    sweep.add_argument("--preset", default="paper", help="recipe name or .toml path")
    sweep.add_argument("--seeds", default="3", help="how many seeds (0..N-1), or a list 0,3,5")
    sweep.add_argument(
        "--out", default=None, help="sweep dir (default runs/D-A-PRESET-sweep-PARAM)"
    )
    sweep.add_argument(
        "--baseline",
        default=None,
        metavar="V",
        help="value the others are tested against (default: the loss's default or the "
        "recipe's value, else the first)",
    )
    sweep.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    _add_report_option(sweep)
    _add_reuse_option(sweep)
    _add_config_options(sweep, ("loss", "seed", "out"))


def _add_tune_parser(commands: Any) -> None:
    help_text = "choose each loss's settings on a validation split, then train and test them"
    tune = commands.add_parser(
        "tune",
        help=help_text,
        description=f"{help_text}: every loss at every point of --grid on --val-fraction of the "
        "training split (runs in OUT/tune/), the best mean validation score per loss, then that "
        "setting over --seeds on the whole training split (OUT/final/); the table OUT/tune.md, "
        "the validation curves OUT/tune_val.png. A field a loss ignores is not tuned for it "
        "(head-bias-init for softmax). Rerun to resume; processes may share OUT.",
    )
    tune.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="FIELD=V,V",
        help="a field and its values, repeatable: --grid lr=0.1,0.03,0.01 --grid "
        "head-bias-init=zero,prior (fields: "
        + ", ".join(f.replace("_", "-") for f in SWEEP_FIELDS)
        + ")",
    )
    tune.add_argument(
        "--losses",
        required=True,
        metavar="SPEC,SPEC",
        help="the losses, comma-separated, options after colons: sr,lr,ss-lr:r=0,"
        "lr:head-bias-init=prior; the first is the baseline of the tests",
    )
    tune.add_argument(
        "--baseline", default=None, help="the loss spec the others are tested against"
    )
    tune.add_argument("--preset", default="paper", help="recipe name or .toml path")
    tune.add_argument("--seeds", default="3", help="seeds of the final runs: a count or 0,3,5")
    tune.add_argument(
        "--widen",
        type=int,
        default=0,
        metavar="N",
        help="where a loss's best number is at its grid's edge, tune one grid step past it, up "
        "to N times (default 0: the grid as given)",
    )
    tune.add_argument(
        "--tune-seeds", default="1", help="seeds each grid point is tuned over (default 1: seed 0)"
    )
    tune.add_argument("--out", default=None, help="tune dir (default runs/D-A-PRESET-tune)")
    tune.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    _add_reuse_option(tune)
    _add_config_options(tune, ("loss", "seed", "out"))


def _add_reuse_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reuse-runs",
        action="append",
        default=None,
        metavar="DIR",
        help="copy finished runs under DIR (an earlier compare, sweep or tune) in for runs with "
        "the same config instead of training them again; repeatable",
    )


def _add_report_parser(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="write RUN_DIR/report/ for a compare or sweep dir",
        description="Turn a frlr compare or frlr sweep directory (finished or still running) "
        "into RUN_DIR/report/report.md and report.html (offline) with the paper's figures: "
        "results with significance, test metric and training loss per epoch, NCD panels (runs "
        "trained with --ncd-every), t-SNE of test features (classification), and the "
        "commands, versions and hardware.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="the compare or sweep directory")
    report.add_argument(
        "--tsne", action=argparse.BooleanOptionalAction, default=True, help="t-SNE figure"
    )
    report.add_argument(
        "--tsne-classes", type=_positive_int, default=5, metavar="N", help="the first N class ids"
    )
    report.add_argument(
        "--tsne-points", type=_positive_int, default=200, metavar="N", help="images per class"
    )


def _integer(text: str) -> int:
    """An integer flag's value; "inf" and "nan" are told to be finite, as a float flag's are."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _overrides(args: argparse.Namespace, exclude: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in FIELD_NAMES if name not in exclude}


def _say(text: str) -> None:
    """Print on the first process only (under torchrun every rank runs this code)."""
    if is_main_process():
        print(text)


def _train(args: argparse.Namespace) -> int:
    overrides = _overrides(args, ())
    config = resolve_config(args.preset, **overrides)
    if args.out is None:
        config.out = str(
            Path("runs") / f"{config.dataset}-{config.arch}-{config.loss}-seed{config.seed}"
        )
    if args.dry_run:
        print(json.dumps(asdict(config), indent=2))
        return 0
    what = f"{config.dataset} {config.arch} {config.loss} seed {config.seed}"
    _say(f"frlr train: {what} -> {config.out}")
    result = train(
        config,
        resume=args.resume,
        stop_after=args.stop_after,
        progress=args.progress,
        allow_change=tuple(args.allow_change),
    )
    if result.get("status") == "stopped":
        _say(f"stopped after epoch {result['epoch']}/{result['epochs']}; continue with --resume")
        return 0
    metrics = "  ".join(f"{k} {100 * v:.2f}%" for k, v in result["metrics"].items())
    _say(f"done in {result['wall_time_s']:.1f}s: {metrics}; result in {config.out}/result.json")
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Every field is checked by resolve_config and by compare before its first run; then
    the report of the directory, unless --no-report."""
    losses = compare.parse_losses(args.losses) if args.losses else None
    seeds = compare.parse_seeds(args.seeds)
    # beta, m and r reach only the losses that take them: compare filters them per run.
    hyper = ("beta", "m", "r")
    overrides = _overrides(args, (*_NOT_OPTIONS["compare"], *hyper))
    # lr trains every task: the defaults then follow the task the dataset resolved to.
    base = resolve_config(args.preset, loss=losses[0] if losses else "lr", **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    losses = losses or compare.default_losses(base.task)
    _say(
        f"frlr {args.command}: {base.dataset}, {base.arch}, losses {','.join(losses)}, "
        f"{len(seeds)} seeds, preset {args.preset}, {base.epochs} epochs"
    )
    run = _run_options(args)
    results = compare.compare(base, losses, seeds, args.out, baseline=args.baseline, run=run)
    out = run.out_dir(base, args.out)
    if args.report and results.get("runs"):
        _report_experiment(out)
    return 0


def _report_experiment(out: Path) -> None:
    """Write ``out/report/`` after a comparison or sweep; its tables are written already, so a
    report that fails is a warning, never a lost experiment."""
    if not is_main_process():
        return
    try:
        build_report(out, log=print)
    except Exception as error:  # the tables are written: the report must not lose them
        warnings.warn(f"report of {out} failed: {error!r}", stacklevel=2)


def _command(args: argparse.Namespace) -> str:
    """The command line as typed (for the report), ``frlr`` first."""
    return shlex.join(["frlr", *getattr(args, "argv", [])])


def _run_options(args: argparse.Namespace) -> compare.RunOptions:
    """How an experiment command trains and reports its runs: its preset, its progress bars
    and the command line as typed."""
    for folder in args.reuse_runs or ():
        if not Path(folder).is_dir():
            raise ConfigError(f"--reuse-runs {folder}: no such folder")
    return compare.RunOptions(
        preset=args.preset,
        progress=args.progress,
        command=_command(args),
        reuse_from=tuple(args.reuse_runs or ()),
    )


def _sweep(args: argparse.Namespace) -> int:
    """As :func:`_compare`, over the values of one hyper-parameter; a num-classes sweep is
    :func:`_sweep_losses`."""
    name = args.param.strip().lower().replace("-", "_")
    if name in sweep.DATA_PARAMS:
        return _sweep_losses(args)
    if args.losses or name not in sweep.SWEEPABLE:
        return _sweep_field(args)
    if not args.train_runs:
        raise ConfigError(
            "--no-train reads the runs of a sweep over --losses or over num-classes; a sweep of "
            f"one --loss over {args.param} trains its runs (give --losses to tabulate them)"
        )
    param, loss = sweep.parse_param(args.param, args.loss)
    values = sweep.parse_values(args.values, param, loss)
    seeds = compare.parse_seeds(args.seeds)
    hyper = ("beta", "m", "r")  # checked against the loss by sweep(), named in its errors
    overrides = _overrides(args, ("loss", "seed", "out", *hyper))
    base = resolve_config(args.preset, loss=loss, **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    _say(
        f"frlr sweep: {base.dataset}, {base.arch}, {loss} {param} in "
        f"{','.join(f'{v:g}' for v in values)}, {len(seeds)} seeds, preset {args.preset}, "
        f"{base.epochs} epochs"
    )
    baseline = None
    if args.baseline is not None:
        try:
            baseline = float(args.baseline)
        except ValueError:
            raise ConfigError(f"--baseline must be a number, got {args.baseline!r}") from None
    run = _run_options(args)
    results = sweep.sweep(
        base, param, values, seeds, args.out, loss=loss, baseline=baseline, run=run
    )
    out = run.out_dir(base, args.out, "sweep", param)
    if args.report and results.get("runs"):
        _report_experiment(out)
    return 0


def _recipe_hyper(args: argparse.Namespace) -> dict[str, float | None]:
    """The command line's beta, m and r: what a loss spec without them trains with."""
    return {name: getattr(args, name, None) for name in ("beta", "m", "r")}


def _sweep_field(args: argparse.Namespace) -> int:
    """``frlr sweep --param FIELD --losses ...``: every loss over the values of any training
    field; its tables and figure are its report."""
    param = grid.field_name(args.param)
    if args.loss is not None and args.losses:
        raise ConfigError("give --loss or --losses, not both")
    if getattr(args, param, None) is not None:
        flag = param.replace("_", "-")
        raise ConfigError(
            f"--{flag} {getattr(args, param)} conflicts with the sweep over {flag}: the values "
            "come from --values; drop it"
        )
    specs = sweep.parse_loss_specs(args.losses or args.loss or "sr", _recipe_hyper(args))
    seeds = compare.parse_seeds(args.seeds)
    hyper = ("beta", "m", "r")  # reach the losses that take them, as in frlr compare
    overrides = _overrides(args, ("loss", "seed", "out", *hyper))
    base = resolve_config(args.preset, loss=specs[0].name, **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    _say(
        f"frlr sweep: {base.dataset}, {base.arch}, {param} in {args.values}, losses "
        f"{','.join(spec.key for spec in specs)}, seeds {','.join(map(str, seeds))}, preset "
        f"{args.preset}" + ("" if param == "epochs" else f", {base.epochs} epochs")
    )
    field_sweep.sweep_field(
        base,
        param,
        args.values,
        [spec.key for spec in specs],
        seeds,
        args.out,
        baseline=args.baseline,
        run=_run_options(args),
        train_runs=args.train_runs,
    )
    return 0


def _tune(args: argparse.Namespace) -> int:
    """``frlr tune``: choose on the validation split, train the choices, test them."""
    specs = sweep.parse_loss_specs(args.losses, _recipe_hyper(args))
    grid_values = tune.parse_grid(args.grid)
    for name in grid_values:
        if getattr(args, name, None) is not None:
            flag = name.replace("_", "-")
            raise ConfigError(f"--{flag} conflicts with --grid {flag}=...: drop one")
    hyper = ("beta", "m", "r")
    overrides = _overrides(args, ("loss", "seed", "out", *hyper))
    base = resolve_config(args.preset, loss=specs[0].name, **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    _say(
        f"frlr tune: {base.dataset}, {base.arch}, losses {','.join(s.key for s in specs)}, "
        f"grid {' '.join(args.grid)}, val fraction {base.val_fraction:g}, preset {args.preset}"
        + ("" if "epochs" in grid_values else f", {base.epochs} epochs")
    )
    tune.tune(
        base,
        grid_values,
        [spec.key for spec in specs],
        args.seeds,
        args.out,
        tune_seeds=args.tune_seeds,
        widen=args.widen,
        baseline=args.baseline,
        run=_run_options(args),
    )
    return 0


def _sweep_losses(args: argparse.Namespace) -> int:
    """``frlr sweep --param num-classes --losses ...``: every loss curve over the values; the
    sweep's own tables and figure are its report."""
    param = sweep.parse_data_param(args.param)
    if args.loss is not None:
        raise ConfigError(
            f"--loss is for hyper-parameter sweeps; a sweep over {args.param} "
            "takes --losses (e.g. sr,lr,ss-lr:r=0)"
        )
    specs = sweep.parse_loss_specs(
        args.losses or ",".join(compare.DEFAULT_LOSSES), _recipe_hyper(args)
    )
    seeds = compare.parse_seeds(args.seeds)
    hyper = ("beta", "m", "r")  # reach the losses that take them, as in frlr compare
    overrides = _overrides(args, ("loss", "seed", "out", *hyper))
    base = resolve_config(args.preset, loss="lr", **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    _say(
        f"frlr sweep: {base.dataset}, {base.arch}, {param} in {args.values}, losses "
        f"{','.join(spec.key for spec in specs)}, seeds {','.join(map(str, seeds))}, preset "
        f"{args.preset}, {base.epochs} epochs"
    )
    sweep.sweep_losses(
        base,
        param,
        args.values,
        [spec.key for spec in specs],
        seeds,
        args.out,
        run=_run_options(args),
        train_runs=args.train_runs,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    build_report(
        args.run_dir,
        tsne=args.tsne,
        tsne_classes=args.tsne_classes,
        tsne_points=args.tsne_points,
    )
    return 0


def _presets(args: argparse.Namespace) -> int:
    if args.name is None:
        for name, description in available_presets().items():
            print(f"{name:<18}{description}")
        return 0
    overrides = {"dataset": args.dataset} if args.dataset else {}
    try:
        task = load_preset(args.name).get("task", "auto") if not args.dataset else "auto"
    except ValueError:  # resolve_config below names the problem
        task = "auto"
    if task != "auto":  # a task preset (reid-paper) is shown for that task's first dataset
        overrides["dataset"] = next((d for d in DATASETS if dataset_info(d).task == task), None)
    config = resolve_config(args.name, **overrides)
    print(json.dumps({k: v for k, v in asdict(config).items() if k != "out"}, indent=2))
    return 0


_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)
"""A file the user may not read or write: said in one line, as a full disk is."""


def _user_fixable(error: BaseException) -> bool:
    """A data or checkpoint error, a full disk or a refused path: one line says it all."""
    if isinstance(error, DataError | NoSpaceError):
        return True
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, *_REFUSED)


def _one_line(error: BaseException) -> BaseException | str:
    """The line for a user-fixable error: a refused path names it and says what to do."""
    if isinstance(error, OSError) and error.errno in _REFUSED:
        return (
            f"{error.filename or 'a file'}: {error.strerror}; check its permissions, or choose "
            "a folder you can write to (--out) or read (--data-dir)"
        )
    if isinstance(error, OSError) and not isinstance(error, NoSpaceError):
        return NoSpaceError(error.filename or "a file")  # a full disk outside frlr.io
    return error


def main(argv: list[str] | None = None) -> int:
    """Run the ``frlr`` command; returns the exit status (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo", *argv]
    parser = _build_parser()
    args = parser.parse_args(argv)
    args.argv = argv

    handlers = {
        "train": _train,
        "compare": _compare,
        "demo": _compare,
        "presets": _presets,
        "sweep": _sweep,
        "tune": _tune,
        "report": _report,
    }
    debug = args.debug or os.environ.get("FRLR_DEBUG", "") not in ("", "0")
    shown = warnings.formatwarning
    if not debug:  # a warning is one line, as an error is (no source line under it)
        warnings.formatwarning = lambda message, *_, **__: (
            f"frlr {args.command}: warning: {message}\n"
        )
    try:
        if getattr(args, "out", None) and not getattr(args, "dry_run", False):
            check_out_dir(args.out)  # a file, or a folder this process cannot write: one line
        return handlers[args.command](args)
    except (ConfigError, UnsupportedTaskError, FileNotFoundError) as error:
        if debug:
            raise
        print(f"frlr {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (DataError, OSError) as error:  # a CheckpointError is a DataError
        if debug or not _user_fixable(error):
            raise
        print(f"frlr {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = "add --resume to continue" if args.command == "train" else "run it again to resume"
        print(f"\nfrlr {args.command}: interrupted; {again}", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = shown


if __name__ == "__main__":
    sys.exit(main())
