"""What decides a training run: :class:`TrainConfig`, where its values come from, and the checks
that every value passes before anything runs.

A config is plain data: the dataclass defaults (the paper's recipe), under a preset
(``frlr.presets``, default ``paper``) and its ``[dataset.NAME]`` table, under the command line or
the keyword arguments of :func:`resolve_config`. :func:`validate` checks every field (names
against the catalogues of datasets, tasks, architectures and losses; each loss hyper-parameter
finite and in its range, :mod:`frlr.catalogue`; numbers in their ranges) and raises
:class:`ConfigError` naming the field, so a bad value stops a run, a comparison or a sweep
before any data is loaded. ``config.json`` and checkpoints store ``asdict(config)``: one flat
object, its keys the field names, which are also the ``frlr`` command's flags.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from frlr.catalogue import (
    HYPERPARAMETERS,
    LOSS_HYPERPARAMETERS,
    LOSS_NAMES,
    hyperparameter_problem,
)
from frlr.data import DATASETS, dataset_info
from frlr.models import ARCHS, HEAD_BIAS_INITS
from frlr.presets import load_preset
from frlr.tasks import Task, UnsupportedTaskError, get_task

__all__ = [
    "CHUNKED_LOSSES",
    "CLASSIFIERS",
    "FIELD_NAMES",
    "FIELD_TYPES",
    "LOSS_HYPERPARAMETERS",
    "MAX_SEED",
    "NON_RESULT_FIELDS",
    "OPTIMIZERS",
    "SCHEDULES",
    "ConfigError",
    "TrainConfig",
    "config_differences",
    "resolve_config",
    "seed_problem",
    "validate",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "constant")
CLASSIFIERS = ("materialised", "chunked")
CHUNKED_LOSSES = ("sr", "lr", "hs-lr", "ss-lr")
"""The losses with a logits-free form (:func:`frlr.torch.get_linear_loss`)."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and the valid values."""


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _hyperparameter_help(name: str) -> str:
    """A loss hyper-parameter's help, from the catalogue: "weight of the negative term (hs-lr,
    ss-lr, hs-sr; >= 0; default 10)"."""
    spec = HYPERPARAMETERS[name]
    losses = ", ".join(loss for loss, takes in LOSS_HYPERPARAMETERS.items() if name in takes)
    return f"{spec.meaning} ({losses}; {spec.range_text}; default {spec.default:g})"


@dataclass
class TrainConfig:
    """Everything that decides a run. The defaults are the paper's recipe (preset ``paper``).

    One flat dataclass (its fields are the ``frlr`` flags and the keys of ``config.json``, which
    old runs must keep loading), read in groups: the data, the network, the loss, the
    optimiser and its schedule, the augmentation, the speed switches, and the run itself.
    """

    # the data
    task: str = _option("auto", "classification, reid or multilabel; auto: the dataset's task")
    dataset: str = _option("digits", "dataset name (see frlr.data.DATASETS)")
    data_dir: str | None = _option(None, "where datasets live (default $FRLR_DATA)")
    download: bool = _option(False, "fetch the official archive when the dataset is missing")
    cache_dir: str | None = _option(None, "decoded-array cache (default $FRLR_CACHE)")
    num_classes: int | None = _option(
        None,
        "keep only the first K classes of a classification dataset, in its class order, in "
        "every split (K from 2 to the dataset's class count); default: all",
    )
    image_size: int = _option(
        0, "resize to this side (with image_width: height) at decode time; 0: loader default"
    )
    image_width: int = _option(0, "resize width, re-id/multi-label only; 0: = image_size")
    val_fraction: float = _option(
        0.0,
        "hold out this fraction of the training split for validation (classification: per "
        "class; re-id: whole identities; multi-label: images), the same images for every loss "
        "and seed; train on the rest and report val metrics beside the test ones; 0: off",
    )
    val_seed: int = _option(0, "which images --val-fraction holds out (not the run's --seed)")
    # the network
    arch: str = _option("resnet32", "network (small-cnn, mlp, or a frlr.models name)")
    head_bias_init: str = _option("zero", "classifier bias init: zero or prior (-log(K-1))")
    classifier: str = _option(
        "materialised",
        "materialised (logits, then the loss) or chunked: the network's last Linear fused with "
        "the loss in class chunks, never holding the N x K logits (frlr.torch.linear); its "
        "soft targets (--mixup, --cutmix, --label-smoothing) stay sparse: two labels a row",
    )
    class_parallel: bool = _option(
        False,
        "under torchrun with --classifier chunked: shard the classifier by class over the "
        "processes, each training its own contiguous rows (frlr.heads.class_parallel)",
    )
    # the loss (hyper-parameters: None is the loss's default)
    loss: str = _option(
        "sr", f"{', '.join(LOSS_NAMES[:-1])} or {LOSS_NAMES[-1]} (default sr; multilabel: lr)"
    )
    beta: float | None = _option(None, _hyperparameter_help("beta"))
    m: float | None = _option(None, _hyperparameter_help("m"))
    r: float | None = _option(None, _hyperparameter_help("r"))
    # the optimiser and its schedule
    optimizer: str = _option("sgd", "sgd, adam or adamw")
    lr: float = _option(0.1, "initial learning rate")
    momentum: float = _option(0.9, "SGD momentum (Adam: beta1)")
    nesterov: bool = _option(False, "Nesterov momentum (SGD)")
    weight_decay: float = _option(1e-4, "L2 weight decay (AdamW: decoupled)")
    batch_size: int = _option(128, "global batch size (split across DDP ranks)")
    epochs: int = _option(300, "training epochs")
    schedule: str = _option("step", "step (x gamma at milestones), cosine or constant")
    milestones: tuple[float, ...] = _option((0.5, 0.75), "step decay points, fractions of epochs")
    gamma: float = _option(0.1, "step decay factor")
    warmup_epochs: float = _option(0.0, "linear learning-rate warm-up, in epochs")
    # the augmentation
    augment: bool = _option(True, "augment training batches (translation, flip)")
    flip: bool = _option(True, "random horizontal flips")
    crop_padding: int = _option(4, "translation: zero-pad this many pixels, crop back")
    # soft targets (frlr.data.mixing, timm's conventions): on the device, after the augmentation
    mixup: float = _option(0.0, "mixup Beta(alpha, alpha) concentration alpha; 0: off")
    cutmix: float = _option(
        0.0, "CutMix Beta(alpha, alpha) concentration; 0: off (both on: one per batch, p 1/2)"
    )
    label_smoothing: float = _option(
        0.0, "eps in [0, 1): targets (1-eps) onehot + eps/K (multi-hot: (1-eps) t + eps/2)"
    )
    # how fast (bf16 changes the numbers a little; the rest only the speed)
    bf16: bool = _option(False, "bfloat16 autocast")
    channels_last: bool = _option(False, "channels-last memory format")
    compile: bool = _option(False, "torch.compile the model")
    sync_bn: bool = _option(False, "SyncBatchNorm under DDP (batch statistics over all ranks)")
    # the run
    seed: int = _option(0, "seed of the weights, the shuffling and the augmentation")
    device: str = _option("auto", "auto, cpu, cuda or cuda:N")
    threads: int = _option(0, "torch CPU threads; 0: torch's default")
    eval_batch_size: int = _option(512, "images per forward pass at test time")
    eval_every: int = _option(1, "test every this many epochs (and after the last)")
    max_steps_per_epoch: int = _option(
        0, "train at most this many batches an epoch (smoke tests); 0: the whole split"
    )
    ncd_every: int = _option(0, "record NCD statistics (Fig. 2) every N steps in ncd.jsonl; 0: off")
    out: str = _option("runs/train", "run directory")


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))

NON_RESULT_FIELDS = frozenset(
    {
        "out",
        "device",
        "data_dir",
        "cache_dir",
        "download",
        "threads",
        "eval_batch_size",
        "compile",
        "ncd_every",
    }
)
"""Fields that change where or how fast a run goes, not its result: a run resumes or is reused
by ``frlr compare`` across changes to these only."""


def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` as the type of field ``name`` (TOML integers become floats, lists tuples)."""
    if name not in FIELD_TYPES:
        close = [f for f in FIELD_NAMES if f.startswith(name[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{source}: unknown setting {name!r}{hint}")
    hint = FIELD_TYPES[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {name} cannot be empty")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is bool and isinstance(value, bool):
        return value
    if base is int and number and float(value).is_integer():
        return int(value)
    if base is float and number:
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if (
        typing.get_origin(base) is tuple
        and isinstance(value, (list, tuple))
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    kinds = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    kind = kinds.get(base, "a list of numbers")
    raise ConfigError(f"{source}: {name} must be {kind}, got {value!r}")


def resolve_config(preset: str | None = "paper", **overrides: Any) -> TrainConfig:
    """The dataclass defaults, under ``preset`` and its ``[dataset.NAME]`` table, under
    ``overrides`` (None means "not given"). The result is validated.

    A loss given nowhere is the task's baseline: SR, or LR for multilabel (where SR does not
    apply).
    """
    values: dict[str, Any] = {}
    dataset = overrides.get("dataset") or TrainConfig.dataset
    if preset is not None:
        try:
            table = load_preset(preset, dataset=dataset)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name, value in table.items():
            values[name] = _coerce(name, value, f"preset {preset!r}")
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value, "override")
    config = TrainConfig(**values)
    if "loss" not in values:
        config.loss = _baseline_loss(config)
    return validate(config)


def _baseline_loss(config: TrainConfig) -> str:
    """The baseline loss of ``config``'s task; its loss as it is when the task is unknown."""
    try:
        name = dataset_info(config.dataset).task if config.task == "auto" else config.task
        return get_task(name).baseline
    except ValueError:  # validate names the unknown dataset or task
        return config.loss


def _choice(name: str, value: str, known: tuple[str, ...] | Any) -> None:
    if value not in known:
        raise ConfigError(f"unknown {name} {value!r}; known: {', '.join(known)}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check every field of ``config``; raise :class:`ConfigError` naming the bad one.

    Returns ``config``, with task ``"auto"`` replaced by the dataset's task. The task is
    resolved once, here, and its checks take it from here.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for f in fields(config):
        _coerce(f.name, getattr(config, f.name), "config")
    config, task = _check_names(config)
    _check_loss(config, task)
    _check_class_parallel(config)
    _check_numbers(config)
    _check_device(config.device)
    return config


def _check_names(config: TrainConfig) -> tuple[TrainConfig, Task]:
    """Every named choice is a known one, the task fits the dataset and the image size its
    shape; returns ``config`` with task ``"auto"`` resolved, and its task."""
    _choice("dataset", config.dataset, tuple(DATASETS))
    info = dataset_info(config.dataset)
    if config.task == "auto":
        config = replace(config, task=info.task)
    try:
        task = get_task(config.task)
    except (UnsupportedTaskError, ValueError) as error:
        raise ConfigError(f"{error} (or auto: the dataset's task)") from None
    _choice("arch", config.arch.lower(), ARCHS)
    _choice("loss", config.loss, LOSS_NAMES)
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("schedule", config.schedule, SCHEDULES)
    _choice("head_bias_init", config.head_bias_init, HEAD_BIAS_INITS)
    _choice("classifier", config.classifier, CLASSIFIERS)
    if info.task != config.task:
        raise ConfigError(
            f"task {config.task!r} does not match dataset {config.dataset!r}, which is a "
            f"{info.task} dataset; pass --task {info.task} or leave --task out (the dataset "
            f"decides), or choose a {config.task} dataset"
        )
    if config.num_classes is not None:
        _check_num_classes(config.num_classes, config.dataset, info.task, info.num_classes)
    if config.image_width and info.task == "classification":
        raise ConfigError(
            f"image_width {config.image_width}: {config.dataset!r} takes a square image_size "
            "only ((height, width) sizes are for re-id and multi-label datasets)"
        )
    if config.image_width and not config.image_size:
        raise ConfigError(
            f"image_width {config.image_width} needs image_size, the height, to be set too"
        )
    return config, task


def _check_num_classes(k: int, dataset: str, task: str, available: int | None) -> None:
    """``num_classes`` keeps a prefix of a single-label class list: at least 2 classes (one
    has no negatives), at most the dataset's (checked again on the loaded data when the
    dataset's count depends on the files), and never for re-id or multi-label data."""
    if task != "classification":
        raise ConfigError(
            f"num_classes {k}: {dataset!r} is a {task} dataset; keeping the first K classes "
            "applies to classification datasets only (leave --num-classes out)"
        )
    if k < 2:
        raise ConfigError(f"num_classes must be at least 2 (one class has no negatives), got {k}")
    if available is not None and k > available:
        raise ConfigError(
            f"num_classes {k} is more than the {available} classes of {dataset!r}; choose "
            f"2..{available}, or leave --num-classes out for all of them"
        )


def _check_loss(config: TrainConfig, task: Task) -> None:
    """The loss trains ``task``, and takes each hyper-parameter given, each finite and in its
    range (:mod:`frlr.catalogue`)."""
    if config.loss in task.unsupported_losses:
        raise ConfigError(
            f"loss {config.loss!r} does not apply to task {task.name!r}: "
            f"{task.unsupported_losses[config.loss]}; use another loss (baseline: "
            f"{task.baseline})"
        )
    if config.classifier == "chunked":
        if config.loss not in CHUNKED_LOSSES:
            raise ConfigError(
                f"--classifier chunked takes the losses {', '.join(CHUNKED_LOSSES)}; "
                f"got loss {config.loss!r}"
            )
        for name in ("ncd_every", "compile"):
            if getattr(config, name):
                raise ConfigError(
                    f"--classifier chunked never forms the logits, which --{name.replace('_', '-')}"
                    " needs; leave one of them out"
                )
    takes = LOSS_HYPERPARAMETERS[config.loss]
    for name in ("beta", "m", "r"):
        value = getattr(config, name)
        if value is not None and name not in takes:
            accepted = ", ".join(takes) if takes else "none"
            raise ConfigError(
                f"--{name} does not apply to loss {config.loss!r} (its hyper-parameters: "
                f"{accepted})"
            )
        problem = None if value is None else hyperparameter_problem(name, value, f"--{name}")
        if problem is not None:
            raise ConfigError(problem)
    soft = {
        "mixup": config.mixup,
        "cutmix": config.cutmix,
        "label-smoothing": config.label_smoothing,
    }
    given = [f"--{flag}" for flag, value in soft.items() if value]
    if given and config.loss == "hs-sr":
        raise ConfigError(
            f"{', '.join(given)} make soft targets, and loss 'hs-sr' (hard selection on softmax "
            "probabilities, the paper's ablation) takes class indices only; use sr, lr, hs-lr "
            "or ss-lr, or leave the soft-target flags at 0"
        )
    if given and config.classifier == "chunked" and task.name == "multilabel":
        raise ConfigError(
            f"{', '.join(given)} make soft targets, which --classifier chunked takes for class "
            "indices only (as two labels a row, their weights and eps); multi-hot rows mix and "
            "smooth densely (eps/2 per label): use --classifier materialised for --task multilabel"
        )


def _check_class_parallel(config: TrainConfig) -> None:
    """``class_parallel`` shards the chunked classifier: it needs ``--classifier chunked``. The
    process count (at least 2, at most the class count) is checked by the training loop, which
    knows both."""
    if config.class_parallel and config.classifier != "chunked":
        raise ConfigError(
            "--class-parallel shards the classifier of --classifier chunked over the processes; "
            f"got --classifier {config.classifier} (pass --classifier chunked, or leave "
            "--class-parallel out)"
        )


def _check_numbers(config: TrainConfig) -> None:
    """Every number finite and in its range, the schedule's milestones in order."""
    positive = ("lr", "batch_size", "epochs", "eval_batch_size", "eval_every", "gamma")
    non_negative = ("weight_decay", "warmup_epochs", "crop_padding", "image_size", "image_width")
    soft_targets = ("mixup", "cutmix", "label_smoothing")
    counts = ("threads", "ncd_every", "max_steps_per_epoch", "val_fraction")
    others = (*non_negative, *soft_targets, *counts)
    for name in (*positive, *others, "momentum"):  # nan and inf: "finite", not "positive"
        if not math.isfinite(getattr(config, name)):
            raise ConfigError(f"{name} must be finite, got {getattr(config, name)}")
    if not all(math.isfinite(stone) for stone in config.milestones):
        raise ConfigError(f"milestones must be finite, got {config.milestones}")
    for name in positive:
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be positive, got {value}")
    if config.gamma > 1:
        raise ConfigError(f"gamma must be in (0, 1], got {config.gamma}")
    for name in others:
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be non-negative, got {value}")
    if not 0 <= config.val_fraction < 1:
        raise ConfigError(
            f"val_fraction must be in [0, 1) (a fraction of the training split), got "
            f"{config.val_fraction}"
        )
    if config.val_seed < 0:
        raise ConfigError(f"val_seed must be non-negative, got {config.val_seed}")
    problem = seed_problem(config.seed)
    if problem is not None:
        raise ConfigError(problem)
    if not config.label_smoothing < 1:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if not 0 <= config.momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {config.momentum}")
    if config.nesterov and (config.optimizer != "sgd" or config.momentum == 0):
        raise ConfigError("nesterov needs optimizer sgd with a non-zero momentum")
    if config.schedule == "step":
        stones = config.milestones
        if any(not 0 < s <= 1 for s in stones) or list(stones) != sorted(stones):
            raise ConfigError(
                f"milestones must be increasing fractions of the epochs in (0, 1], got {stones}"
            )


def _check_device(name: str) -> None:
    """``auto``, or a torch device this machine has."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Result-affecting fields on which two config dicts differ, as "name: a != b".

    A field missing from a dict (a run saved before the field existed) counts as its default.
    """
    names = [n for n in FIELD_NAMES if n not in NON_RESULT_FIELDS]
    defaults = asdict(TrainConfig())
    out = []
    for name in names:
        va, vb = a.get(name, defaults[name]), b.get(name, defaults[name])
        if isinstance(va, list):
            va = tuple(va)
        if isinstance(vb, list):
            vb = tuple(vb)
        if va != vb:
            out.append(f"{name}: {va!r} != {vb!r}")
    return out


MAX_SEED = 2**32 - 1
"""The largest seed: numpy's ``RandomState`` takes 0..2**32-1 and torch's CPU generator keeps
the low 32 bits of its seed, so a larger seed would repeat a smaller one's random streams."""


def seed_problem(seed: object, what: str = "seed") -> str | None:
    """Why ``seed`` cannot seed a run (None when it can): not an integer, or outside
    0..:data:`MAX_SEED`, where two seeds would give the same generator states."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"{what} must be an integer, got {seed!r}"
    if not 0 <= seed <= MAX_SEED:
        alias = f"; it would repeat seed {seed % 2**32}'s random streams" if seed > 0 else ""
        return (
            f"{what} must be in 0..{MAX_SEED}, the range every random generator of a run takes "
            f"(numpy's and torch's CPU generators keep 32 bits), got {seed}{alias}"
        )
    return None
