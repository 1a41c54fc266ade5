"""Train one network with one loss, as in the experiments of Dong, Zhu and Gong (AAAI 2019).

    frlr train --dataset digits --loss ss-lr --preset cpu --out runs/digits-sslr
    frlr train --dataset tiny-imagenet --data-dir /data --arch resnet20 --loss hs-lr --m 50 \
        --preset cpu --out runs/tiny-hslr
    frlr train ... --resume                   # continue an interrupted run from its checkpoint
    torchrun --standalone --nproc_per_node 2 -m frlr.cli train ...   # DDP: gloo CPU, NCCL GPU

From Python: ``train(resolve_config("cpu", dataset="digits", loss="lr", out="runs/x"))``.

The loop, top to bottom: the config is the dataclass defaults, under a preset (``--preset``,
default ``paper``) and its ``[dataset.NAME]`` table, under the command line. The splits are
loaded once with :func:`frlr.data.load_dataset` and moved to the device as uint8 tensors. Each
step takes this rank's shard of a shuffled global batch (:func:`frlr.data.augment.iterate_batches`),
translates and flips it on the device, normalises it with the training split's channel
statistics, and takes an optimiser step under optional bfloat16 autocast; the learning rate
follows the schedule step by step. Each epoch ends with the task's test metrics, a line of
``metrics.jsonl`` and a checkpoint; ``result.json`` is written last. Every file is written
atomically (a temporary file, then ``os.replace``), so a killed run leaves the last complete one.

Determinism: shuffling and augmentation draw from two ``torch.Generator``s seeded from
``seed`` (augmentation also from the rank), whose states are checkpointed with the model,
optimiser, scheduler and the global torch, numpy and python RNG states; ``--resume`` therefore
ends with the same weights as an uninterrupted run (bitwise on CPU in float32).

Distributed data parallel: under ``torchrun`` the process group is set up from its environment
variables. ``batch_size`` is the global batch: each rank takes its contiguous shard of every
global batch and scales its mean loss by its share of the batch, so the averaged gradient is the
gradient of the global batch mean even when the shards differ by one sample. Batch norm then
still normalises per rank (like any DDP run); ``--sync-bn`` makes it normalise over the global
batch. Only rank 0 writes files and shows the progress bar; test metrics are computed on
1/world of the test set per rank and combined (counts summed, or outputs gathered), so every
rank gets the same numbers.

The task (``--task``, default: the dataset's own) decides the targets and the metrics
(:mod:`frlr.experiments.tasks`): class indices and top-k accuracy; training identities, then
Rank-k/mAP of the query and gallery features with their camera ids; or multi-hot rows and mAP
and balanced accuracy (``train_acc`` is then the share of samples whose top label is a
positive).

Run directory: ``config.json``; ``metrics.jsonl``, one JSON object per epoch (``epoch``,
``train_loss`` and ``train_acc`` over the epoch's augmented batches, ``test_<metric>`` of the task,
``lr`` at the epoch's start, ``train_time_s``, ``epoch_time_s`` with the evaluation,
``images_per_s``, ``elapsed_s``); with ``ncd_every`` N, ``ncd.jsonl``: the NCD statistics of
every N-th training batch (:class:`frlr.torch.NCDMonitor`, rank 0's shard); ``checkpoint.pt``
(model, optimiser, scheduler, generator and RNG states of every rank, epoch, history);
``result.json`` (final metrics, wall time, config, versions, hardware).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import random
import sys
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import frlr
from frlr.data import DATASETS, dataset_info, keep_first_classes, load_dataset
from frlr.data.augment import (
    augment_batch,
    channel_stats,
    images_to_tensor,
    iterate_batches,
    normalize,
    num_batches,
)
from frlr.experiments.small_models import ARCHS, build_model
from frlr.experiments.tasks import EvalData, Task, UnsupportedTaskError, get_task
from frlr.models import HEAD_BIAS_INITS
from frlr.presets import load_preset
from frlr.torch.losses import LOSSES

__all__ = [
    "LOSS_HYPERPARAMETERS",
    "ConfigError",
    "TrainConfig",
    "config_differences",
    "lr_factor",
    "resolve_config",
    "train",
    "write_json_atomic",
    "write_text_atomic",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "constant")
LOSS_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "sr": (),
    "lr": (),
    "hs-lr": ("beta", "m"),
    "ss-lr": ("beta", "r"),
    "hs-sr": ("beta", "m"),
}
"""The hyper-parameters each loss takes (Eq. 5: beta, m; Eq. 6: beta, r)."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and the valid values."""


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that decides a run. The defaults are the paper's recipe (preset ``paper``)."""

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
    arch: str = _option("resnet32", "network (small-cnn, mlp, or a frlr.models name)")
    head_bias_init: str = _option("zero", "classifier bias init: zero or prior (-log(K-1))")
    loss: str = _option("sr", "sr, lr, hs-lr, ss-lr or hs-sr (default sr; multilabel: lr)")
    beta: float | None = _option(None, "loss beta (hs-lr, ss-lr, hs-sr; default 10)")
    m: float | None = _option(None, "hard-selection percentage m (hs-lr, hs-sr; default 25)")
    r: float | None = _option(None, "soft-selection exponent r (ss-lr; default 2)")
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
    augment: bool = _option(True, "augment training batches (translation, flip)")
    flip: bool = _option(True, "random horizontal flips")
    crop_padding: int = _option(4, "translation: zero-pad this many pixels, crop back")
    bf16: bool = _option(False, "bfloat16 autocast")
    channels_last: bool = _option(False, "channels-last memory format")
    compile: bool = _option(False, "torch.compile the model")
    sync_bn: bool = _option(False, "SyncBatchNorm under DDP (batch statistics over all ranks)")
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


# --------------------------------------------------------------------------- configuration


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

    Returns ``config``, with task ``"auto"`` replaced by the dataset's task.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for f in fields(config):
        _coerce(f.name, getattr(config, f.name), "config")
    _choice("dataset", config.dataset, tuple(DATASETS))
    info = dataset_info(config.dataset)
    if config.task == "auto":
        config = replace(config, task=info.task)
    try:
        task = get_task(config.task)
    except (UnsupportedTaskError, ValueError) as error:
        raise ConfigError(f"{error} (or auto: the dataset's task)") from None
    _choice("arch", config.arch.lower(), ARCHS)
    _choice("loss", config.loss, tuple(LOSSES))
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("schedule", config.schedule, SCHEDULES)
    _choice("head_bias_init", config.head_bias_init, HEAD_BIAS_INITS)
    if info.task != config.task:
        raise ConfigError(
            f"task {config.task!r} does not match dataset {config.dataset!r}, which is a "
            f"{info.task} dataset; pass --task {info.task} or leave --task out (the dataset "
            f"decides), or choose a {config.task} dataset"
        )
    if config.loss in task.unsupported_losses:
        raise ConfigError(
            f"loss {config.loss!r} does not apply to task {task.name!r}: "
            f"{task.unsupported_losses[config.loss]}; use another loss (baseline: "
            f"{task.baseline})"
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
    takes = LOSS_HYPERPARAMETERS[config.loss]
    for name in ("beta", "m", "r"):
        if getattr(config, name) is not None and name not in takes:
            accepted = ", ".join(takes) if takes else "none"
            raise ConfigError(
                f"--{name} does not apply to loss {config.loss!r} (its hyper-parameters: "
                f"{accepted})"
            )
    if config.m is not None and not 0 < config.m <= 100:
        raise ConfigError(f"m is a percentage in (0, 100], got {config.m}")
    positive = {
        "lr": config.lr,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "eval_batch_size": config.eval_batch_size,
        "eval_every": config.eval_every,
        "gamma": config.gamma,
    }
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    if config.gamma > 1:
        raise ConfigError(f"gamma must be in (0, 1], got {config.gamma}")
    non_negative = {
        "weight_decay": config.weight_decay,
        "warmup_epochs": config.warmup_epochs,
        "crop_padding": config.crop_padding,
        "image_size": config.image_size,
        "image_width": config.image_width,
        "threads": config.threads,
        "ncd_every": config.ncd_every,
        "max_steps_per_epoch": config.max_steps_per_epoch,
    }
    for name, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{name} must be non-negative, got {value}")
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
    if config.device != "auto":
        try:
            device = torch.device(config.device)
        except RuntimeError:
            raise ConfigError(f"device {config.device!r} is not a torch device") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {config.device!r} asked for, but CUDA is not available")
    return config


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


def loss_options(config: TrainConfig) -> dict[str, float]:
    """The loss hyper-parameters given in ``config`` (the others keep the loss's defaults)."""
    return {
        name: getattr(config, name)
        for name in LOSS_HYPERPARAMETERS[config.loss]
        if getattr(config, name) is not None
    }


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Learning-rate multiplier before optimiser step ``step`` (0-based).

    step: gamma ** (number of milestones reached), a milestone at epoch round(f * epochs);
    cosine: (1 + cos(pi * step / total_steps)) / 2; constant: 1. Times a linear warm-up from
    1/warmup_steps to 1 over the first ``warmup_epochs``.
    """
    total = config.epochs * steps_per_epoch
    if config.schedule == "step":
        epoch = step // steps_per_epoch
        reached = sum(epoch >= round(f * config.epochs) for f in config.milestones)
        factor = config.gamma**reached
    elif config.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    else:
        factor = 1.0
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if warmup > 0 and step < warmup:
        factor *= (step + 1) / warmup
    return factor


# --------------------------------------------------------------------------- files


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _atomic_path(path)
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    temporary = _atomic_path(path)
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def versions() -> dict[str, str]:
    import scipy

    return {
        "frlr": frlr.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def hardware(device: torch.device, world_size: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": world_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------- distributed


@dataclass
class _Process:
    rank: int
    world: int
    device: torch.device


def _setup_process(config: TrainConfig) -> _Process:
    """Rank, world size and device; joins torchrun's process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = config.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(wanted)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # Joined once per process and kept: `frlr compare` trains many runs in one process,
        # and torchrun's store does not take a second init after a destroy.
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_process_group)
    if dist.is_available() and dist.is_initialized():
        return _Process(dist.get_rank(), dist.get_world_size(), device)
    return _Process(0, 1, device)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def _rank_zero_first(process: _Process) -> Iterator[None]:
    """Rank 0 runs the block first (filling the dataset cache), the other ranks after it."""
    if process.world > 1 and process.rank != 0:
        dist.barrier()
    yield
    if process.world > 1 and process.rank == 0:
        dist.barrier()


def _rng_state(augment_generator: torch.Generator) -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {
        "augment": augment_generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any], augment_generator: torch.Generator) -> None:
    augment_generator.set_state(state["augment"])
    torch.set_rng_state(state["torch"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --------------------------------------------------------------------------- the loop


def _load_split(config: TrainConfig, split: str):
    """One split as ``config`` asks: decoded at its image size, cut to its first
    ``num_classes`` classes when set."""
    try:
        arrays = load_dataset(
            config.dataset,
            split,
            config.data_dir,
            (config.image_size, config.image_width)
            if config.image_width
            else config.image_size or None,
            config.download,
            config.cache_dir,
        )
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}. On the command line: --download fetches it, --data-dir DIR points at "
            "the folder holding it"
        ) from None
    if config.num_classes is None:
        return arrays
    try:
        return keep_first_classes(arrays, config.num_classes)
    except ValueError as error:
        raise ConfigError(f"num_classes, {config.dataset} {split}: {error}") from None


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train as ``config`` says and return the result (also written to ``out/result.json``).

    resume: continue from ``out/checkpoint.pt`` when there is one (else start afresh); a run
        that already has a ``result.json`` returns it. Without it, an existing run is an error.
    stop_after: train at most this many epochs in this call, then return
        ``{"status": "stopped", ...}`` (the checkpoint lets a later ``resume=True`` finish).
    progress: show a tqdm bar (default: when stderr is a terminal); ``log``: where the
        per-epoch lines go (None: nowhere). Only rank 0 shows or logs anything.
    """
    started = time.perf_counter()
    config = validate(config)
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be a positive number of epochs, got {stop_after}")
    task = get_task(config.task)
    process = _setup_process(config)
    return _train(config, task, process, resume, stop_after, progress, log, started)


def _train(
    config: TrainConfig,
    task: Task,
    process: _Process,
    resume: bool,
    stop_after: int | None,
    progress: bool | None,
    log: Callable[[str], None] | None,
    started: float,
) -> dict[str, Any]:
    rank, world, device = process.rank, process.world, process.device
    main_process = rank == 0
    say = log if (log is not None and main_process) else (lambda _: None)
    if config.threads:
        torch.set_num_threads(config.threads)

    # The run directory: refuse to overwrite, or pick up where it stopped.
    run_dir = Path(config.out)
    result_path = run_dir / "result.json"
    checkpoint_path = run_dir / "checkpoint.pt"
    if result_path.exists():
        if not resume:
            raise ConfigError(
                f"{run_dir} holds a finished run (result.json); pass --resume to reuse it or "
                "choose another --out"
            )
        result = json.loads(result_path.read_text(encoding="utf-8"))
        _check_same_run(result["config"], config, result_path)
        say(f"{run_dir}: already finished")
        return result
    if checkpoint_path.exists() and not resume:
        raise ConfigError(
            f"{run_dir} holds an unfinished run (checkpoint.pt); pass --resume to continue it "
            "or choose another --out"
        )
    if main_process:
        write_json_atomic(run_dir / "config.json", asdict(config))

    # Seeds. Shuffling draws the same permutation on every rank; augmentation differs by rank.
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    generator_device = device if device.type == "cuda" else torch.device("cpu")
    shuffle_generator = torch.Generator(generator_device).manual_seed(config.seed)
    augment_generator = torch.Generator(generator_device).manual_seed(
        config.seed + 1_000_003 * (rank + 1)
    )

    # Data: decoded once, moved to the device as uint8, normalised per batch.
    info = dataset_info(config.dataset)
    eval_split_names = task.eval_splits(info)
    with _rank_zero_first(process):
        train_arrays = _load_split(config, info.train_split)
        eval_arrays = {split: _load_split(config, split) for split in eval_split_names}
    mean, std = channel_stats(train_arrays)
    std = tuple(s if s > 0 else 1.0 for s in std)
    num_classes = config.num_classes or info.num_classes or len(train_arrays.classes)
    if info.task != "classification":  # the head must fit the label rows / identities on disk
        num_classes = len(train_arrays.classes)
    _, height, width, in_channels = train_arrays.images.shape
    train_images = images_to_tensor(train_arrays, device)
    train_targets = task.targets(train_arrays).to(device)
    eval_data = EvalData(
        splits={
            split: (images_to_tensor(arrays, device), task.targets(arrays).to(device))
            for split, arrays in eval_arrays.items()
        },
        transform=partial(_model_input, mean=mean, std=std, channels_last=config.channels_last),
        batch_size=config.eval_batch_size,
        autocast=partial(torch.autocast, device.type, torch.bfloat16, config.bf16),
        cams={
            split: torch.from_numpy(arrays.cams).to(device)
            for split, arrays in eval_arrays.items()
            if arrays.cams is not None
        },
    )
    num_train = len(train_images)
    del train_arrays, eval_arrays
    # Under DDP a last batch smaller than the world would leave a rank with nothing: drop it.
    drop_last = world > 1 and 0 < num_train % config.batch_size < world
    if config.batch_size < world:
        raise ConfigError(f"batch_size {config.batch_size} is smaller than the {world} processes")
    steps_per_epoch = num_batches(num_train, config.batch_size, drop_last)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)

    # Model, loss, optimiser, schedule.
    if height != width and config.arch == "mlp":
        raise ConfigError(f"arch mlp needs square images, got {height}x{width}")
    model = build_model(
        config.arch, num_classes, in_channels, config.head_bias_init, image_size=height
    )
    torch.manual_seed(config.seed + 1_000_003 * rank)  # dropout etc. differ by rank
    if world > 1 and config.sync_bn:
        if device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA devices (a limit of torch's SyncBatchNorm)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)
    criterion = LOSSES[config.loss](**loss_options(config)).to(device)
    optimizer = _optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, config=config, steps_per_epoch=steps_per_epoch)
    )

    # Resume: every state the remaining epochs depend on.
    start_epoch, history, elapsed_before = 0, [], 0.0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        _check_same_run(state["config"], config, checkpoint_path)
        if state["world_size"] != world:
            raise ConfigError(
                f"{checkpoint_path} was written by {state['world_size']} process(es); resume "
                f"it with the same number (got {world}) to continue the same run"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        shuffle_generator.set_state(state["shuffle_generator"])
        _set_rng_state(state["rng"][rank], augment_generator)
        start_epoch, history, elapsed_before = state["epoch"], state["history"], state["elapsed_s"]
        say(f"{run_dir}: resuming after epoch {start_epoch}/{config.epochs}")
        del state
    ncd = _ncd_monitor(config, run_dir, start_epoch * steps_per_epoch) if main_process else None

    show_bar = main_process and (progress if progress is not None else sys.stderr.isatty())
    autocast = partial(torch.autocast, device.type, torch.bfloat16, config.bf16)
    epoch = start_epoch
    for epoch in range(start_epoch, config.epochs):
        if stop_after is not None and epoch - start_epoch >= stop_after:
            if ncd is not None:
                ncd.close()
            return {
                "status": "stopped",
                "epoch": epoch,
                "epochs": config.epochs,
                "out": str(run_dir),
            }
        epoch_start = time.perf_counter()
        epoch_lr = optimizer.param_groups[0]["lr"]
        net.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n
        bar = _progress_bar(show_bar, steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}")
        batches = iterate_batches(
            train_images,
            train_targets,
            config.batch_size,
            shuffle=True,
            generator=shuffle_generator,
            drop_last=drop_last,
            rank=rank,
            world_size=world,
        )
        for step, (images, targets) in enumerate(batches):
            if step == steps_per_epoch:  # max_steps_per_epoch cut the epoch short
                break
            if config.augment:
                images = augment_batch(
                    images, augment_generator, flip=config.flip, padding=config.crop_padding
                )
            x = _model_input(images, mean, std, config.channels_last)
            with autocast():
                logits = net(x)
                loss = criterion(logits, targets)
            if ncd is not None:
                ncd.update(logits, targets, epoch * steps_per_epoch + step)
            n = len(targets)
            # Each rank's mean, weighted by its share of the global batch: DDP's gradient
            # average is then the gradient of the global batch mean.
            global_n = min(config.batch_size, num_train - step * config.batch_size)
            scaled = loss * (n * world / global_n) if world > 1 else loss
            optimizer.zero_grad(set_to_none=True)
            scaled.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                sums[0] += loss.detach() * n
                sums[1] += task.batch_correct(logits.detach(), targets)
                sums[2] += n
            if bar is not None:
                bar.update()
                if step % 10 == 0 or step == steps_per_epoch - 1:
                    seen, loss_sum, correct = float(sums[2]), float(sums[0]), float(sums[1])
                    rate = seen * world / (time.perf_counter() - epoch_start)
                    bar.set_postfix(
                        loss=f"{loss_sum / seen:.3f}",
                        acc=f"{correct / seen:.3f}",
                        img_s=f"{rate:.0f}",
                    )
        if bar is not None:
            bar.close()
        if world > 1:
            dist.all_reduce(sums)
        train_time = time.perf_counter() - epoch_start

        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0] / sums[2]),
            "train_acc": float(sums[1] / sums[2]),
        }
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            if world > 1:  # batch-norm running statistics are per rank: use rank 0's
                for buffer in model.buffers():
                    dist.broadcast(buffer, 0)
            for name, value in task.metrics(model, eval_data).items():
                record[f"test_{name}"] = value
        record.update(
            lr=epoch_lr,
            train_time_s=train_time,
            epoch_time_s=time.perf_counter() - epoch_start,
            images_per_s=float(sums[2]) / train_time,
        )
        history.append(record)
        elapsed = elapsed_before + time.perf_counter() - started
        record["elapsed_s"] = elapsed
        rng = [_rng_state(augment_generator)]
        if world > 1:
            rng = [None] * world
            dist.all_gather_object(rng, _rng_state(augment_generator))
        if main_process:
            _save_atomic(
                {
                    "format": 1,
                    "epoch": epoch + 1,
                    "config": asdict(config),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "shuffle_generator": shuffle_generator.get_state(),
                    "rng": rng,
                    "world_size": world,
                    "history": history,
                    "elapsed_s": elapsed,
                },
                checkpoint_path,
            )
            write_text_atomic(
                run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history)
            )
        say(_epoch_line(record, config.epochs))

    # The result, written last: its presence marks the run finished.
    if ncd is not None:
        ncd.close()
    final = history[-1]
    metrics = {k.removeprefix("test_"): v for k, v in final.items() if k.startswith("test_")}
    elapsed = elapsed_before + time.perf_counter() - started
    result = {
        "status": "finished",
        "task": config.task,
        "dataset": config.dataset,
        "arch": config.arch,
        "loss": config.loss,
        "loss_options": {
            k: v for k, v in criterion.options.items() if k in LOSS_HYPERPARAMETERS[config.loss]
        },
        "seed": config.seed,
        "primary_metric": task.primary_metric,
        "evaluation": task.evaluation,
        "metrics": metrics,
        **{f"test_{k}": v for k, v in metrics.items()},
        "train_loss": final["train_loss"],
        "train_acc": final["train_acc"],
        "diverged": not math.isfinite(final["train_loss"]),
        "epochs": config.epochs,
        "wall_time_s": elapsed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_train": num_train,
        "config": asdict(config),
        "versions": versions(),
        "hardware": hardware(device, world),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if main_process:
        write_json_atomic(result_path, result)
    if world > 1:
        dist.barrier()
    return result


def _ncd_monitor(config: TrainConfig, run_dir: Path, first_step: int) -> Any:
    """An NCDMonitor writing ``ncd.jsonl`` every ``ncd_every`` steps (None when off), so reports
    can draw Fig. 2 for any run; a resumed run drops the lines after its checkpoint first."""
    if not config.ncd_every:
        return None
    from frlr.ncd import truncate_history
    from frlr.torch.diagnostics import NCDMonitor

    path = run_dir / "ncd.jsonl"
    if first_step:
        truncate_history(path, first_step)
    options = loss_options(config)
    return NCDMonitor(
        config.loss, every=config.ncd_every, capacity=2, path=path, append=first_step > 0, **options
    )


def _model_input(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool
) -> torch.Tensor:
    x = normalize(images, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
        )
    betas = (config.momentum, 0.999)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, betas=betas, weight_decay=config.weight_decay)


def _check_same_run(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    differences = config_differences(saved, asdict(config))
    if differences:
        raise ConfigError(
            f"{path} belongs to a run with another config ({'; '.join(differences)}); "
            "choose another --out, or delete the run to start it afresh"
        )


def _progress_bar(show: bool, total: int, desc: str):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    tests = " ".join(
        f"{k.removeprefix('test_')} {100 * v:.2f}%"
        for k, v in record.items()
        if k.startswith("test_")
    )
    return (
        f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
        f"acc {100 * record['train_acc']:.2f}%  {tests + '  ' if tests else ''}"
        f"lr {record['lr']:.3g}  {record['epoch_time_s']:.1f}s  {record['images_per_s']:.0f} img/s"
    )


if __name__ == "__main__":  # python -m frlr.train ... == frlr train ...
    from frlr.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
