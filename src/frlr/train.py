"""Train one network with one loss, as in the experiments of Dong, Zhu and Gong (AAAI 2019).

    frlr train --dataset digits --loss ss-lr --preset cpu --out runs/digits-sslr
    frlr train --dataset tiny-imagenet --data-dir /data --arch resnet20 --loss hs-lr --m 50 \
        --preset cpu --out runs/tiny-hslr
    frlr train ... --resume                   # continue an interrupted run from its checkpoint
    torchrun --standalone --nproc_per_node 2 -m frlr.cli train ...   # DDP: gloo CPU, NCCL GPU
    torchrun ... train ... --classifier chunked --class-parallel     # + classifier sharded by class

From Python: ``train(resolve_config("cpu", dataset="digits", loss="lr", out="runs/x"))``.

This module is the training layer's loop; it imports the config (:mod:`frlr.config`), the tasks
(:mod:`frlr.tasks`), the networks (:mod:`frlr.models`), the data, the losses and the file
helpers below it, and nothing above it (experiments, report, the ``frlr`` command).

The loop, top to bottom: the config is the dataclass defaults, under a preset (``--preset``,
default ``paper``) and its ``[dataset.NAME]`` table, under the command line. The splits are
loaded once with :func:`frlr.data.load_dataset` and moved to the device as uint8 tensors. Each
step takes this rank's shard of a shuffled global batch (:func:`frlr.data.augment.iterate_batches`),
translates and flips it on the device, normalises it with the training split's channel
statistics, with ``mixup``, ``cutmix`` or ``label_smoothing`` on turns its labels into soft
targets and mixes it (:mod:`frlr.data.mixing`), and takes an optimiser step under optional
bfloat16 autocast; the learning rate follows the schedule step by step. Each epoch ends with the
task's test metrics, a line of ``metrics.jsonl`` and a checkpoint; ``result.json`` is written
last. Every file is written atomically (a temporary file, then ``os.replace``), so a killed run
leaves the last complete one.

Determinism: shuffling and augmentation (mixup and CutMix included) draw from two
``torch.Generator``s seeded from ``seed`` (augmentation also from the rank), whose states are
checkpointed with the model, optimiser, scheduler and the global torch, numpy and python RNG
states; ``--resume`` therefore ends with the same weights as an uninterrupted run (bitwise on
CPU in float32).

Distributed data parallel: under ``torchrun`` the process group is set up from its environment
variables. ``batch_size`` is the global batch: each rank takes its contiguous shard of every
global batch and scales its mean loss by its share of the batch, so the averaged gradient is the
gradient of the global batch mean even when the shards differ by one sample. Batch norm then
still normalises per rank (like any DDP run); ``--sync-bn`` makes it normalise over the global
batch. Only rank 0 writes files and shows the progress bar; test metrics are computed on
1/world of the test set per rank and combined (counts summed, or outputs gathered), so every
rank gets the same numbers.

The classifier head ([`frlr.heads`][frlr.heads]), chosen once from ``--classifier`` and
``--class-parallel``, owns the forward and loss call, the top-1 class, the loss's options, how
DDP reduces the gradients, its checkpoint state and its evaluation-time gather; the loop calls it
without asking which head it is. Class-parallel (``--classifier chunked --class-parallel``,
torchrun with 2 or more processes, at most one per class): rank r trains the contiguous rows of
the classifier that [`class_shard_sizes`][frlr.torch.class_sharding.class_shard_sizes] gives
it, outside DDP; the linear loss gathers the global batch, so each rank's loss is the global
batch's mean (not scaled by the rank's share) and the backbone's DDP sums its gradients
(``sum_allreduce_hook``). The run starts from the same whole model as without the flag and
trains the same weights to round-off. After each epoch's training the shards are gathered into
the network's whole (frozen) classifier on every rank, which evaluation and ``checkpoint.pt``
use; each rank also writes its shard and its optimiser state, and ``--resume`` with the same
process count restores them bitwise ([`frlr.heads.class_parallel`][frlr.heads.class_parallel]:
the files, and the memory this costs).

The task (``--task``, default: the dataset's own) decides the targets and the metrics
(:mod:`frlr.tasks`): class indices and top-k accuracy; training identities, then
Rank-k/mAP of the query and gallery features with their camera ids; or multi-hot rows and mAP
and balanced accuracy (``train_acc`` is then the share of samples whose top label is a
positive).

Run directory: ``config.json``; ``metrics.jsonl``, one JSON object per epoch (``epoch``,
``train_loss`` and ``train_acc`` over the epoch's augmented batches (with mixing,
``train_acc`` counts the labels of each pair's larger-weight sample), ``test_<metric>`` of the task
(with ``--val-fraction``, ``val_<metric>`` too, of the held-out part of the training split),
``lr`` at the epoch's start and ``lr_end`` after its last step, ``train_time_s``,
``epoch_time_s`` with the evaluation, ``images_per_s``, ``elapsed_s``); with ``ncd_every`` N,
``ncd.jsonl``: the NCD statistics of every N-th training batch (:class:`frlr.torch.NCDMonitor`,
rank 0's shard); ``checkpoint.pt``
(model, optimiser, scheduler, generator and RNG states of every rank, epoch, history; with
``--class-parallel`` the manifest of ``classifier-shard-{rank}-of-{world}-epoch-{E}.pt``, one per
rank);
``result.json`` (final metrics, wall time, config, versions, hardware; with ``--val-fraction``
``val_metrics`` and ``split``, the record of the held-out images).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from frlr.config import (
    LOSS_HYPERPARAMETERS,
    ConfigError,
    TrainConfig,
    config_differences,
    resolve_config,
    validate,
)
from frlr.data import (
    DataError,
    ImageArrays,
    MissingDataError,
    dataset_info,
    keep_first_classes,
    load_dataset,
)
from frlr.data.augment import (
    augment_batch,
    channel_stats,
    images_to_tensor,
    iterate_batches,
    normalize,
    num_batches,
)
from frlr.data.validation import carve_validation
from frlr.heads import ClassifierHead, choose_head, loss_options
from frlr.io import load_checkpoint, save_torch_atomic, write_json_atomic, write_text_atomic
from frlr.models import build_model
from frlr.ncd import truncate_history
from frlr.provenance import hardware, versions
from frlr.rundir import NUMERICS_FIELDS, check_checkpoint, numerics, read_result
from frlr.tasks import EvalData, Task, get_task
from frlr.torch.diagnostics import NCDMonitor

__all__ = [
    "LOSS_HYPERPARAMETERS",
    "ConfigError",
    "TrainConfig",
    "config_differences",
    "load_split",
    "loss_options",
    "lr_factor",
    "resolve_config",
    "train",
    "validate",
]
"""The loop's own names (``train``, ``lr_factor``, ``load_split``), and the config's (with
``loss_options``, now [`frlr.heads.loss_options`][frlr.heads.loss_options]), which
``from frlr.train import resolve_config, train`` has always reached."""


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


def _restore_generator(generator: torch.Generator, saved: torch.Tensor, seed: int) -> bool:
    """Set ``generator`` to a saved state; False when the state is another device type's.

    A CUDA generator's state (Philox seed and offset, 16 bytes) and a CPU one's (Mersenne
    Twister, 5,056 bytes) do not convert: a checkpoint resumed on the other kind of device
    reseeds the stream from ``seed`` instead, so the run goes on, though no longer bit for bit.
    """
    if saved.numel() == generator.get_state().numel():
        generator.set_state(saved)
        return True
    generator.manual_seed(seed)
    return False


CHECKPOINT_KEYS = (
    "epoch",
    "config",
    "model",
    "optimizer",
    "scheduler",
    "shuffle_generator",
    "rng",
    "world_size",
    "history",
    "elapsed_s",
)
"""What ``checkpoint.pt`` holds; a file without one of them is not a training checkpoint."""


def _set_rng_state(state: dict[str, Any], augment_generator: torch.Generator, reseed: int) -> bool:
    """Every random state of one rank; False when the augmentation stream had to be reseeded."""
    same_device = _restore_generator(augment_generator, state["augment"], reseed)
    torch.set_rng_state(state["torch"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    return same_device


# --------------------------------------------------------------------------- the loop


def load_split(config: TrainConfig, split: str) -> ImageArrays:
    """One split of ``config``'s dataset at its image size, cut to its first ``num_classes``
    classes when set; a missing dataset's error names the flags that fetch it or point at it."""
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
    except MissingDataError as error:
        flags = "on the command line, --download fetches it and --data-dir DIR points at it"
        raise MissingDataError(
            error.path, error.problem, f"{error.remedy}; {flags}", member=error.member
        ) from None
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
    allow_change: Collection[str] | bool = True,
) -> dict[str, Any]:
    """Train as ``config`` says and return the result (also written to ``out/result.json``).

    resume: continue from ``out/checkpoint.pt`` when there is one (else start afresh); a run
        that already has a ``result.json`` returns it. Without it, an existing run is an error.
    stop_after: train at most this many epochs in this call, then return
        ``{"status": "stopped", ...}`` (the checkpoint lets a later ``resume=True`` finish).
    progress: show a tqdm bar (default: when stderr is a terminal); ``log``: where the
        per-epoch lines go (None: nowhere). Only rank 0 shows or logs anything.
    allow_change: on a resume, which of :data:`frlr.rundir.NUMERICS_FIELDS` (threads, device,
        dtype, torch and frlr versions) may differ from the checkpoint's last segment: True,
        any (with a warning: the run is no longer bitwise reproducible), or those named; any
        other change is a ConfigError naming the field. Every segment's values go to the
        checkpoint and ``result.json`` (``segments``); ``frlr train --resume`` allows only its
        ``--allow-change`` fields, while compare and sweep resume their runs with a warning.

    The steps, in order: check the config, join the processes, open the run directory
    (:func:`_open_run_dir`), set up seeds, data, network and optimiser (:func:`_set_up`), resume
    from the checkpoint (:func:`_resume`), then per epoch train (:func:`_train_epoch`), test
    (:func:`_evaluate`) and checkpoint (:func:`_checkpoint`), and write the result last
    (:func:`_result`).
    """
    started = time.perf_counter()
    config = validate(config)
    if stop_after is not None and stop_after < 1:
        raise ConfigError(
            f"--stop-after must be a positive number of epochs, got {stop_after} (leave it out "
            "to train to the end)"
        )
    task = get_task(config.task)
    head = choose_head(config)
    process = _setup_process(config)
    head.check_processes(process.world)  # before the run directory is touched
    say = log if (log is not None and process.rank == 0) else (lambda _: None)
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.out)
    finished = _open_run_dir(config, run_dir, resume, process.rank == 0)
    if finished is not None:
        say(f"{run_dir}: already finished")
        return finished
    session = _set_up(config, task, process, head)
    if resume and (run_dir / "checkpoint.pt").exists():
        _resume(session, run_dir / "checkpoint.pt")
        say(f"{run_dir}: resuming after epoch {session.start_epoch}/{config.epochs}")
    _start_segment(session, run_dir / "checkpoint.pt", allow_change)
    show_bar = process.rank == 0 and (progress if progress is not None else sys.stderr.isatty())
    first_step = session.start_epoch * session.steps_per_epoch
    ncd = _ncd_monitor(config, run_dir, first_step) if process.rank == 0 else None
    try:
        for epoch in range(session.start_epoch, config.epochs):
            if stop_after is not None and epoch - session.start_epoch >= stop_after:
                return {
                    "status": "stopped",
                    "epoch": epoch,
                    "epochs": config.epochs,
                    "out": str(run_dir),
                }
            record = _train_epoch(session, epoch, ncd, show_bar)
            session.history.append(record)
            record["elapsed_s"] = session.elapsed_before + time.perf_counter() - started
            _checkpoint(session, run_dir, epoch)
            say(_epoch_line(record, config.epochs))
    finally:
        if ncd is not None:
            ncd.close()
    return _result(session, run_dir, started)


def _open_run_dir(
    config: TrainConfig, run_dir: Path, resume: bool, main_process: bool
) -> dict[str, Any] | None:
    """Refuse to overwrite a run, or pick up where it stopped: the saved result of a finished
    run when resuming (None otherwise); a fresh or resumed run gets its ``config.json``."""
    result_path = run_dir / "result.json"
    if result_path.exists():
        if not resume:
            raise ConfigError(
                f"{run_dir} holds a finished run (result.json); pass --resume to reuse it or "
                "choose another --out"
            )
        result = read_result(result_path)  # a damaged one: RunFileError naming it
        _check_same_run(result["config"], config, result_path)
        return result
    if (run_dir / "checkpoint.pt").exists() and not resume:
        raise ConfigError(
            f"{run_dir} holds an unfinished run (checkpoint.pt); pass --resume to continue it "
            "or choose another --out"
        )
    resuming = resume and (run_dir / "checkpoint.pt").exists()
    if main_process and not (resuming and (run_dir / "config.json").exists()):
        # the run's first config stays: a resume's own values are its segment's (result.json)
        write_json_atomic(run_dir / "config.json", asdict(config))
    return None


@dataclass
class _Data:
    """The splits on the device as uint8 tensors, and what the network's shape follows from."""

    train_images: torch.Tensor
    train_targets: torch.Tensor
    eval_data: EvalData
    val_data: EvalData | None
    split: dict[str, Any] | None  # --val-fraction's record of what it held out
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    in_channels: int
    height: int
    width: int


@dataclass
class _Session:
    """Everything the epochs share: built by :func:`_set_up`, restored by :func:`_resume`."""

    config: TrainConfig
    task: Task
    process: _Process
    data: _Data
    shuffle_generator: torch.Generator
    augment_generator: torch.Generator
    drop_last: bool
    steps_per_epoch: int
    model: nn.Module  # the network whose weights are saved
    net: nn.Module  # the one that runs: the head's part of the model, under DDP and compiled
    head: ClassifierHead  # the classifier and the loss: --classifier, --class-parallel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0
    segments: list[dict[str, Any]] = field(default_factory=list)  # numerics per stretch of epochs


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); torch's own probes,
    which older builds lack (then: assume it does, and stay quiet)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if not all(found):
        return True
    return any(probe() for probe in found)


def _set_up(config: TrainConfig, task: Task, process: _Process, head: ClassifierHead) -> _Session:
    """Seeds, data, network, loss, optimiser and schedule, in the order that makes a run's
    random draws the same every time. Shuffling draws the same permutation on every rank;
    augmentation (and dropout) differ by rank."""
    rank, world, device = process.rank, process.world, process.device
    if config.bf16 and device.type == "cpu" and not cpu_has_bf16() and rank == 0:
        warnings.warn(
            "--bf16 on a CPU without AVX-512 BF16 or AMX: bfloat16 is emulated there, and a "
            "ResNet-20 step cost 11x the CPU time of float32 (docs/benchmarks/recipe_speed.md); "
            "--no-bf16 trains faster on this machine",
            stacklevel=3,
        )
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    generator_device = device if device.type == "cuda" else torch.device("cpu")
    shuffle_generator = torch.Generator(generator_device).manual_seed(config.seed)
    augment_generator = torch.Generator(generator_device).manual_seed(
        config.seed + 1_000_003 * (rank + 1)
    )
    data = _load_data(config, task, process)
    num_train = len(data.train_images)
    # Under DDP a last batch smaller than the world would leave a rank with nothing: drop it.
    drop_last = world > 1 and 0 < num_train % config.batch_size < world
    if config.batch_size < world:
        raise ConfigError(f"batch_size {config.batch_size} is smaller than the {world} processes")
    steps_per_epoch = num_batches(num_train, config.batch_size, drop_last)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    model, net = _build_network(config, data, process, head)
    head.attach(model, rank, world, device)
    optimizer = _optimizer(config, head.trained_parameters(model))
    return _Session(
        config=config,
        task=task,
        process=process,
        data=data,
        shuffle_generator=shuffle_generator,
        augment_generator=augment_generator,
        drop_last=drop_last,
        steps_per_epoch=steps_per_epoch,
        model=model,
        net=net,
        head=head,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(lr_factor, config=config, steps_per_epoch=steps_per_epoch)
        ),
    )


def _load_data(config: TrainConfig, task: Task, process: _Process) -> _Data:
    """The splits, decoded once (rank 0 first, filling the cache), moved to the device as uint8
    and normalised per batch with the training split's channel statistics."""
    device = process.device
    info = dataset_info(config.dataset)
    with _rank_zero_first(process):
        train_arrays = load_split(config, info.train_split)
        eval_arrays = {split: load_split(config, split) for split in task.eval_splits(info)}
    val_arrays, split_record = None, None
    if config.val_fraction:
        try:
            train_arrays, val_arrays, split_record = carve_validation(
                train_arrays, config.val_fraction, by=task.hold_out, split_seed=config.val_seed
            )
        except ValueError as error:
            raise ConfigError(f"--val-fraction, {config.dataset}: {error}") from None
    mean, std = channel_stats(train_arrays)
    std = tuple(s if s > 0 else 1.0 for s in std)
    num_classes = config.num_classes or info.num_classes or len(train_arrays.classes)
    if info.task != "classification":  # the head must fit the label rows / identities on disk
        num_classes = len(train_arrays.classes)
    if num_classes < 2:  # e.g. an image folder of one class, decoded before this was checked
        raise DataError(
            config.data_dir or config.dataset,
            f"{config.dataset}'s {info.train_split} split holds {num_classes} class",
            "a classifier needs at least 2: add images of another class",
        )
    _, height, width, in_channels = train_arrays.images.shape
    eval_data = _eval_data(config, task, eval_arrays, device, mean, std)
    val_data = None
    if val_arrays is not None:  # held-out identities are retrieved among themselves
        names = task.eval_splits(info) if task.hold_out == "identity" else ("val",)
        val_data = _eval_data(
            config, task, {f"val_{name}": val_arrays for name in names}, device, mean, std
        )
    return _Data(
        train_images=images_to_tensor(train_arrays, device),
        train_targets=task.targets(train_arrays).to(device),
        eval_data=eval_data,
        val_data=val_data,
        split=split_record,
        mean=mean,
        std=std,
        num_classes=num_classes,
        in_channels=in_channels,
        height=height,
        width=width,
    )


def _eval_data(
    config: TrainConfig,
    task: Task,
    splits: dict[str, ImageArrays],
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> EvalData:
    """Evaluation splits on the device, normalised with the training split's statistics; one
    array named twice (a retrieval split queried against itself) is moved once."""
    moved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for arrays in splits.values():
        if id(arrays) not in moved:
            moved[id(arrays)] = (images_to_tensor(arrays, device), task.targets(arrays).to(device))
    return EvalData(
        splits={split: moved[id(arrays)] for split, arrays in splits.items()},
        transform=partial(_model_input, mean=mean, std=std, channels_last=config.channels_last),
        batch_size=config.eval_batch_size,
        autocast=partial(torch.autocast, device.type, torch.bfloat16, config.bf16),
        cams={
            split: torch.from_numpy(arrays.cams).to(device)
            for split, arrays in splits.items()
            if arrays.cams is not None
        },
    )


def _build_network(
    config: TrainConfig, data: _Data, process: _Process, head: ClassifierHead
) -> tuple[nn.Module, nn.Module]:
    """(the model, the module that runs it: the head's part of it, under DDP with the head's
    reduction, and compiled when asked)."""
    rank, world, device = process.rank, process.world, process.device
    if data.height != data.width and config.arch == "mlp":
        raise ConfigError(f"arch mlp needs square images, got {data.height}x{data.width}")
    model = build_model(
        config.arch,
        data.num_classes,
        data.in_channels,
        config.head_bias_init,
        image_size=data.height,
    )
    torch.manual_seed(config.seed + 1_000_003 * rank)  # dropout etc. differ by rank
    if world > 1 and config.sync_bn:
        if device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA devices (a limit of torch's SyncBatchNorm)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = head.network(model)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
        head.configure_ddp(net)
    if config.compile:
        net = torch.compile(net)
    return model, net


def _resume(session: _Session, checkpoint_path: Path) -> None:
    """Every state the remaining epochs depend on, from the checkpoint of the same run."""
    state = load_checkpoint(checkpoint_path, CHECKPOINT_KEYS)
    check_checkpoint(state, checkpoint_path)
    _check_same_run(state["config"], session.config, checkpoint_path)
    world = session.process.world
    if state["world_size"] != world:
        raise ConfigError(
            f"{checkpoint_path} was written by {state['world_size']} process(es); resume "
            f"it with the same number (got {world}) to continue the same run"
        )
    session.model.load_state_dict(state["model"])
    optimizer_state = session.head.restore_state(session.optimizer, state, checkpoint_path.parent)
    session.optimizer.load_state_dict(optimizer_state)
    session.scheduler.load_state_dict(state["scheduler"])
    reseed = session.config.seed + 7919 * state["epoch"]
    restored = [
        _restore_generator(session.shuffle_generator, state["shuffle_generator"], reseed),
        _set_rng_state(state["rng"][session.process.rank], session.augment_generator, reseed),
    ]
    if not all(restored):
        warnings.warn(
            f"{checkpoint_path} was written on another kind of device: the data order and "
            f"augmentation after epoch {state['epoch']} are reseeded, so this run will not "
            "match an uninterrupted one bit for bit",
            stacklevel=2,
        )
    session.start_epoch = state["epoch"]
    session.history = state["history"]
    session.elapsed_before = state["elapsed_s"]
    session.segments = [dict(s) for s in state.get("segments", []) if isinstance(s, dict)]


def _start_segment(
    session: _Session, checkpoint_path: Path, allow_change: Collection[str] | bool
) -> None:
    """Record this call's numerics (:func:`frlr.rundir.numerics`) as a new segment; on a resume,
    a field that differs from the last segment's is refused unless ``allow_change`` covers it,
    and then warned about: the run no longer matches an uninterrupted one bit for bit."""
    now = numerics(session.process.device)
    if session.segments:
        last = session.segments[-1]
        first = int(last.get("from_epoch", 0)) + 1
        span = (
            f"epoch {first}"
            if first >= session.start_epoch
            else f"epochs {first}-{session.start_epoch}"
        )
        for name in NUMERICS_FIELDS:
            if name not in last or last[name] == now[name]:
                continue
            change = f"{span} ran with {name} = {last[name]!r}, this resume has {now[name]!r}"
            if allow_change is not True and name not in allow_change:
                same = f"--threads {last[name]}" if name == "threads" else f"the same {name}"
                raise ConfigError(
                    f"{checkpoint_path}: {change}, which changes the numbers; resume with "
                    f"{same}, or pass --allow-change {name} to go on with a mixed run (each "
                    "segment's values are kept in result.json)"
                )
            warnings.warn(
                f"{checkpoint_path}: {change}: the run is no longer bitwise reproducible; "
                "each segment's values are kept in result.json 'segments'",
                stacklevel=3,
            )
    session.segments.append({"from_epoch": session.start_epoch, **now})


def _train_epoch(session: _Session, epoch: int, ncd: Any, show_bar: bool) -> dict[str, Any]:
    """One epoch of optimiser steps, then the test metrics when due: the epoch's record for
    ``metrics.jsonl``."""
    config, data = session.config, session.data
    world, device = session.process.world, session.process.device
    epoch_start = time.perf_counter()
    epoch_lr = session.optimizer.param_groups[0]["lr"]
    session.net.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n
    bar = _progress_bar(show_bar, session.steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}")
    batches = iterate_batches(
        data.train_images,
        data.train_targets,
        config.batch_size,
        shuffle=True,
        generator=session.shuffle_generator,
        drop_last=session.drop_last,
        rank=session.process.rank,
        world_size=world,
    )
    for step, (images, targets) in enumerate(batches):
        if step == session.steps_per_epoch:  # max_steps_per_epoch cut the epoch short
            break
        global_step = epoch * session.steps_per_epoch + step
        loss, correct = _step(session, images, targets, global_step, ncd)
        with torch.no_grad():
            sums[0] += loss.detach() * len(targets)
            sums[1] += correct
            sums[2] += len(targets)
        if bar is not None:
            bar.update()
            if step % 10 == 0 or step == session.steps_per_epoch - 1:
                seen, loss_sum, correct = float(sums[2]), float(sums[0]), float(sums[1])
                rate = seen * world / (time.perf_counter() - epoch_start)
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}"
                )
    if bar is not None:
        bar.close()
    session.head.gather()  # evaluation and checkpoints take the whole classifier
    if world > 1:
        dist.all_reduce(sums)
    train_time = time.perf_counter() - epoch_start
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": float(sums[0] / sums[2]),
        "train_acc": float(sums[1] / sums[2]),
    }
    if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
        record.update(_evaluate(session))
    record.update(
        lr=epoch_lr,
        lr_end=session.optimizer.param_groups[0]["lr"],
        train_time_s=train_time,
        epoch_time_s=time.perf_counter() - epoch_start,
        images_per_s=float(sums[2]) / train_time,
    )
    return record


def _step(
    session: _Session, images: torch.Tensor, targets: torch.Tensor, global_step: int, ncd: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on this rank's shard of a global batch: (its mean loss, its count of
    correct top-1 predictions, counted against the dominant labels when targets are mixed).

    The head ([`ClassifierHead`][frlr.heads.ClassifierHead]) mixes the normalised batch after
    the augmentation when mixup, CutMix or label smoothing is on (drawing from the augmentation
    generator; a logits-free head keeps the soft targets sparse), runs the network and its loss,
    finds each sample's top class, and weights the loss for DDP: each rank's mean by its share
    of the global batch, so DDP's gradient average is the gradient of the global batch mean even
    when the shards differ by one sample (class-parallel, the loss is the global batch's mean
    already, and DDP sums). The NCD monitor gets the logits and the loss's targets.
    """
    config, data, head = session.config, session.data, session.head
    if config.augment:
        images = augment_batch(
            images, session.augment_generator, flip=config.flip, padding=config.crop_padding
        )
    x = normalize(images, data.mean, data.std)
    batch = head.batch(x, targets, session.augment_generator, data.num_classes)
    batch = replace(batch, images=_memory_format(batch.images, config.channels_last))
    with torch.autocast(session.process.device.type, torch.bfloat16, config.bf16):
        loss, outputs = head.loss(session.net, batch)
    if ncd is not None:  # --ncd-every: the materialised head's outputs are the logits (config)
        ncd.update(outputs, batch.targets, global_step)
    with torch.no_grad():
        correct = session.task.prediction_correct(head.argmax(outputs), batch.labels)
    n = len(batch.targets)
    step = global_step % session.steps_per_epoch
    global_n = min(config.batch_size, len(data.train_images) - step * config.batch_size)
    scaled = head.ddp_loss(loss, n, global_n, session.process.world)
    session.optimizer.zero_grad(set_to_none=True)
    scaled.backward()
    session.optimizer.step()
    session.scheduler.step()
    return loss, correct


def _evaluate(session: _Session) -> dict[str, float]:
    """The task's test metrics as ``test_<metric>``, the same on every rank."""
    if session.process.world > 1:  # batch-norm running statistics are per rank: use rank 0's
        for buffer in session.model.buffers():
            dist.broadcast(buffer, 0)
    data = session.data
    record = {}
    if data.val_data is not None:
        metrics = session.task.metrics(session.model, data.val_data)
        record.update({f"val_{name}": value for name, value in metrics.items()})
    metrics = session.task.metrics(session.model, data.eval_data)
    record.update({f"test_{name}": value for name, value in metrics.items()})
    return record


def _checkpoint(session: _Session, run_dir: Path, epoch: int) -> None:
    """``checkpoint.pt`` after ``epoch`` (model, optimiser, schedule, generators, every rank's
    RNG states, history) and ``metrics.jsonl``, both written by rank 0 only; the head first
    saves what it keeps apart (with ``--class-parallel`` every rank writes its classifier shard,
    which ``checkpoint.pt`` names: [`save_shard`][frlr.heads.class_parallel.save_shard])."""
    process = session.process
    rng = [_rng_state(session.augment_generator)]
    if process.world > 1:
        rng = [None] * process.world
        dist.all_gather_object(rng, _rng_state(session.augment_generator))
    optimizer_state, head_state = session.head.save_state(session.optimizer, run_dir, epoch + 1)
    if process.rank != 0:
        return
    save_torch_atomic(
        {
            "format": 1,
            "epoch": epoch + 1,
            "config": asdict(session.config),
            "model": session.model.state_dict(),
            "optimizer": optimizer_state,
            "scheduler": session.scheduler.state_dict(),
            "shuffle_generator": session.shuffle_generator.get_state(),
            "rng": rng,
            "world_size": process.world,
            "history": session.history,
            "elapsed_s": session.history[-1]["elapsed_s"],
            "segments": session.segments,
            **head_state,
        },
        run_dir / "checkpoint.pt",
    )
    session.head.checkpoint_saved(run_dir, epoch + 1)
    lines = "".join(json.dumps(r) + "\n" for r in session.history)
    write_text_atomic(run_dir / "metrics.jsonl", lines)


def _result(session: _Session, run_dir: Path, started: float) -> dict[str, Any]:
    """``result.json``, written last: its presence marks the run finished."""
    config, task = session.config, session.task
    final = session.history[-1]
    metrics = {k.removeprefix("test_"): v for k, v in final.items() if k.startswith("test_")}
    val = {k.removeprefix("val_"): v for k, v in final.items() if k.startswith("val_")}
    result = {
        "status": "finished",
        "task": config.task,
        "dataset": config.dataset,
        "arch": config.arch,
        "loss": config.loss,
        "loss_options": loss_options(config),
        "seed": config.seed,
        "primary_metric": task.primary_metric,
        "evaluation": task.evaluation,
        "metrics": metrics,
        **{f"test_{k}": v for k, v in metrics.items()},
        **({"val_metrics": val, "split": session.data.split} if session.data.split else {}),
        "train_loss": final["train_loss"],
        "train_acc": final["train_acc"],
        "diverged": not math.isfinite(final["train_loss"]),
        "epochs": config.epochs,
        "wall_time_s": session.elapsed_before + time.perf_counter() - started,
        "num_parameters": sum(p.numel() for p in session.model.parameters()),
        "num_train": len(session.data.train_images),
        "config": asdict(config),
        "versions": versions(),
        "hardware": hardware(session.process.device, session.process.world),
        "segments": session.segments,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if session.process.rank == 0:
        write_json_atomic(run_dir / "result.json", result)
    if session.process.world > 1:
        dist.barrier()
    return result


def _ncd_monitor(config: TrainConfig, run_dir: Path, first_step: int) -> Any:
    """An NCDMonitor writing ``ncd.jsonl`` every ``ncd_every`` steps (None when off), so reports
    can draw Fig. 2 for any run; a resumed run drops the lines after its checkpoint first."""
    if not config.ncd_every:
        return None
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
    return _memory_format(normalize(images, mean, std), channels_last)


def _memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
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
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    tests = " ".join(
        f"{k.removeprefix('test_')} {100 * v:.2f}%"
        for k, v in record.items()
        if k.startswith(("val_", "test_"))
    )
    return (
        f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
        f"acc {100 * record['train_acc']:.2f}%  {tests + '  ' if tests else ''}"
        f"lr {_lr_range(record)}  {record['epoch_time_s']:.1f}s  {record['images_per_s']:.0f} img/s"
    )


def _lr_range(record: dict[str, Any]) -> str:
    """The epoch's learning rate as a reader can use it: its range over the epoch (warm-up and
    decay move it every step), or one value when it stayed put."""
    start, end = record["lr"], record.get("lr_end", record["lr"])
    return f"{start:.3g}" if f"{start:.3g}" == f"{end:.3g}" else f"{start:.3g} -> {end:.3g}"
