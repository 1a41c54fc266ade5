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
    frlr report  RUN_DIR [--no-tsne]     RUN_DIR/report/report.{md,html} and the paper's figures

``compare``, ``demo`` and ``sweep`` end with ``frlr report`` of their directory (``--no-report``
skips it).

Every field of :class:`frlr.train.TrainConfig` is an option (``--weight-decay``,
``--no-augment``, ``--bf16``, ...). Values come from the dataclass defaults, then the preset
(default ``paper``), then its ``[dataset.NAME]`` table, then the command line.
Under ``torchrun``: ``torchrun --standalone --nproc_per_node 2 -m frlr.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

COMMANDS = ("train", "compare", "presets", "demo", "sweep", "report")
MAIN_JOB = {
    "dataset": "digits",
    "preset": "cpu",  # whose [dataset.digits] table picks the small-cnn and 15 epochs
    "losses": "sr,lr,hs-lr,ss-lr",
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
    from frlr.train import FIELD_TYPES, TrainConfig

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
            group.add_argument(flag, type=base, default=None, metavar=metavar, help=help_text)


def _build_parser() -> argparse.ArgumentParser:
    from frlr import __version__

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
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
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
            help="comma-separated losses (default sr,lr,hs-lr,ss-lr; multilabel: no sr)",
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
        _add_config_options(sub, _NOT_OPTIONS["compare"])
        if name == "demo":  # the arch comes from the preset's [dataset.digits] table
            sub.set_defaults(dataset=MAIN_JOB["dataset"])

    _add_sweep_parser(commands)
    _add_report_parser(commands)

    presets = commands.add_parser("presets", help="list the presets or show one")
    presets.add_argument("name", nargs="?", help="show this preset resolved")
    presets.add_argument("--dataset", default=None, help="apply its [dataset.NAME] table")
    return parser


def _add_report_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end with frlr report of the output dir (default: yes)",
    )


def _add_sweep_parser(commands: Any) -> None:
    help_text = (
        "train one loss at every value of one hyper-parameter x seed (Fig. 6, 7), or several "
        "losses at every number of classes x seed (--param num-classes --losses ...)"
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
    sweep.add_argument(
        "--param",
        required=True,
        help="what to vary: a hyper-parameter of --loss (m, r or beta), or num-classes "
        "(with --losses)",
    )
    sweep.add_argument(
        "--values", required=True, help="comma-separated values, e.g. 5,10,25,50,75,100"
    )
    sweep.add_argument(
        "--loss", default=None, help="the loss (default: hs-lr for m, ss-lr for r and beta)"
    )
    sweep.add_argument(
        "--losses",
        default=None,
        metavar="SPEC,SPEC",
        help="num-classes sweeps: the curves, comma-separated, the first the baseline (default "
        "sr,lr,hs-lr,ss-lr); a variant sets options after colons: ss-lr:r=0, "
        "hs-lr:m=100:beta=5 (each variant is its own curve)",
    )
    sweep.add_argument(
        "--no-train",
        dest="train_runs",
        action="store_false",
        help="num-classes sweeps: rebuild the table and figure from the finished runs in OUT "
        "(any seed), train nothing (these two are their report: --report does not apply)",
    )
    sweep.add_argument("--preset", default="paper", help="recipe name or .toml path")
    sweep.add_argument("--seeds", default="3", help="how many seeds (0..N-1), or a list 0,3,5")
    sweep.add_argument(
        "--out", default=None, help="sweep dir (default runs/D-A-PRESET-sweep-PARAM)"
    )
    sweep.add_argument(
        "--baseline",
        type=float,
        default=None,
        metavar="V",
        help="value the others are tested against (default: the loss's default, else the first)",
    )
    sweep.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    _add_report_option(sweep)
    _add_config_options(sweep, ("loss", "seed", "out"))


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _overrides(args: argparse.Namespace, exclude: tuple[str, ...]) -> dict[str, Any]:
    from frlr.train import FIELD_NAMES

    return {name: getattr(args, name) for name in FIELD_NAMES if name not in exclude}


def _say(text: str) -> None:
    """Print on the first process only (under torchrun every rank runs this code)."""
    if os.environ.get("RANK", "0") == "0":
        print(text)


def _train(args: argparse.Namespace) -> int:
    from frlr.train import resolve_config, train

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
    result = train(config, resume=args.resume, stop_after=args.stop_after, progress=args.progress)
    if result.get("status") == "stopped":
        _say(f"stopped after epoch {result['epoch']}/{result['epochs']}; continue with --resume")
        return 0
    metrics = "  ".join(f"{k} {100 * v:.2f}%" for k, v in result["metrics"].items())
    _say(f"done in {result['wall_time_s']:.1f}s: {metrics}; result in {config.out}/result.json")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from frlr.experiments.compare import compare, default_losses, parse_losses, parse_seeds
    from frlr.train import resolve_config

    losses = parse_losses(args.losses) if args.losses else None
    seeds = parse_seeds(args.seeds)
    # beta, m and r reach only the losses that take them: compare filters them per run.
    hyper = ("beta", "m", "r")
    overrides = _overrides(args, (*_NOT_OPTIONS["compare"], *hyper))
    # lr trains every task: the defaults then follow the task the dataset resolved to.
    base = resolve_config(args.preset, loss=losses[0] if losses else "lr", **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    losses = losses or default_losses(base.task)
    _say(
        f"frlr {args.command}: {base.dataset}, {base.arch}, losses {','.join(losses)}, "
        f"{len(seeds)} seeds, preset {args.preset}, {base.epochs} epochs"
    )
    compare(
        base,
        losses,
        seeds,
        args.out,
        baseline=args.baseline,
        preset=args.preset,
        progress=args.progress,
        command=_command(args),
        report=args.report,
    )
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line as typed (for the report), ``frlr`` first."""
    import shlex

    return shlex.join(["frlr", *getattr(args, "argv", [])])


def _sweep(args: argparse.Namespace) -> int:
    from frlr.experiments.compare import parse_seeds
    from frlr.experiments.sweep import DATA_PARAMS, parse_param, parse_values, sweep
    from frlr.train import ConfigError, resolve_config

    if args.param.strip().lower().replace("-", "_") in DATA_PARAMS:
        return _sweep_losses(args)
    for given, flag in ((args.losses, "--losses"), (not args.train_runs, "--no-train")):
        if given:
            raise ConfigError(
                f"{flag} is for num-classes sweeps; a sweep over {args.param} trains one --loss"
            )
    param, loss = parse_param(args.param, args.loss)
    values = parse_values(args.values, param, loss)
    seeds = parse_seeds(args.seeds)
    hyper = ("beta", "m", "r")  # checked against the loss by sweep(), named in its errors
    overrides = _overrides(args, ("loss", "seed", "out", *hyper))
    base = resolve_config(args.preset, loss=loss, **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    _say(
        f"frlr sweep: {base.dataset}, {base.arch}, {loss} {param} in "
        f"{','.join(f'{v:g}' for v in values)}, {len(seeds)} seeds, preset {args.preset}, "
        f"{base.epochs} epochs"
    )
    sweep(
        base,
        param,
        values,
        seeds,
        args.out,
        loss=loss,
        baseline=args.baseline,
        preset=args.preset,
        progress=args.progress,
        command=_command(args),
        report=args.report,
    )
    return 0


def _sweep_losses(args: argparse.Namespace) -> int:
    from frlr.experiments.compare import DEFAULT_LOSSES, parse_seeds
    from frlr.experiments.sweep import parse_data_param, parse_loss_specs, sweep_losses
    from frlr.train import ConfigError, resolve_config

    param = parse_data_param(args.param)
    if args.loss is not None:
        raise ConfigError(
            f"--loss is for hyper-parameter sweeps; a sweep over {args.param} "
            "takes --losses (e.g. sr,lr,ss-lr:r=0)"
        )
    specs = parse_loss_specs(args.losses or ",".join(DEFAULT_LOSSES))
    seeds = parse_seeds(args.seeds)
    hyper = ("beta", "m", "r")  # reach the losses that take them, as in frlr compare
    overrides = _overrides(args, ("loss", "seed", "out", *hyper))
    base = resolve_config(args.preset, loss="lr", **overrides)
    base = replace(base, **{name: getattr(args, name) for name in hyper})
    _say(
        f"frlr sweep: {base.dataset}, {base.arch}, {param} in {args.values}, losses "
        f"{','.join(spec.key for spec in specs)}, seeds {','.join(map(str, seeds))}, preset "
        f"{args.preset}, {base.epochs} epochs"
    )
    sweep_losses(
        base,
        param,
        args.values,
        [spec.key for spec in specs],
        seeds,
        args.out,
        preset=args.preset,
        progress=args.progress,
        command=_command(args),
        train_runs=args.train_runs,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from frlr.report import build_report

    build_report(
        args.run_dir,
        tsne=args.tsne,
        tsne_classes=args.tsne_classes,
        tsne_points=args.tsne_points,
    )
    return 0


def _presets(args: argparse.Namespace) -> int:
    from frlr.data import DATASETS, dataset_info
    from frlr.presets import available_presets, load_preset
    from frlr.train import resolve_config

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


def main(argv: list[str] | None = None) -> int:
    """Run the ``frlr`` command; returns the exit status (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo", *argv]
    parser = _build_parser()
    args = parser.parse_args(argv)
    args.argv = argv

    from frlr.experiments.tasks import UnsupportedTaskError
    from frlr.train import ConfigError

    handlers = {
        "train": _train,
        "compare": _compare,
        "demo": _compare,
        "presets": _presets,
        "sweep": _sweep,
        "report": _report,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, UnsupportedTaskError, FileNotFoundError) as error:
        print(f"frlr {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "add --resume to continue" if args.command == "train" else "run it again to resume"
        print(f"\nfrlr {args.command}: interrupted; {again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
