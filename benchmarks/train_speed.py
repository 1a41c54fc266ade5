"""Training throughput: the toolkit's data pipeline against a conventional DataLoader pipeline.

    python -m benchmarks.train_speed                       # ResNet-32, 32x32, batch 128, bf16
    python -m benchmarks.train_speed --steps 40 --no-bf16 --write docs/benchmarks/train_speed.md

Both pipelines train the same network (ResNet-32 by default) with the same loss (SR), optimiser
(SGD, momentum 0.9, weight decay 5e-4), batch size and autocast setting, on the same uint8
images (random pixels of CIFAR's shape: the step time does not depend on the pixel values):

* toolkit: the whole split is one uint8 (N, C, H, W) tensor on the device;
  ``frlr.data.augment.iterate_batches`` gathers a shuffled batch, ``augment_batch`` pads by 4,
  crops and flips the whole batch with two gathers, ``normalize`` casts and scales it;
* conventional: a map-style ``torch.utils.data.Dataset`` whose ``__getitem__`` converts one
  HWC uint8 image to a CHW float tensor, flips it with probability 1/2, zero-pads it by 4 and
  crops a random 32x32 window, and normalises it (what torchvision's ToTensor,
  RandomHorizontalFlip, RandomCrop(32, padding=4) and Normalize do, written with plain torch
  ops since torchvision is not a dependency), batched by a ``DataLoader`` (default collate),
  with 0 worker processes and with ``--workers`` worker processes.

The pipelines take turns (``--rounds`` interleaved rounds of steps), so a drift in the
machine's speed affects all of them alike. Each step is timed in two parts: data (from asking
for the batch to a normalised float batch on the device) and compute (forward, loss, backward,
optimiser step); on CUDA the device is synchronised at both boundaries. Reported: images/s
over the timed steps, the fraction of step time spent on data, and the toolkit's speed-up over
the faster DataLoader. ``--write FILE`` writes a Markdown record (the table, the date, the
machine and the command); ``--append`` adds it to FILE as a section instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._invocation import command_line
from frlr.data.augment import augment_batch, images_to_tensor, iterate_batches, normalize
from frlr.models import build_model
from frlr.provenance import cpu_model
from frlr.torch import get_loss

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class PerSampleDataset(torch.utils.data.Dataset):
    """The conventional pipeline: uint8 HWC images, per-sample tensor transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, padding: int = 4) -> None:
        self.images = images
        self.labels = labels
        self.padding = padding
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div(255)  # ToTensor
        if torch.rand(()) < 0.5:  # RandomHorizontalFlip
            image = image.flip(-1)
        height, width = image.shape[1:]
        padded = F.pad(image, [self.padding] * 4)  # RandomCrop(32, padding=4)
        top, left = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
        image = padded[:, top : top + height, left : left + width]
        return (image - self.mean) / self.std, int(self.labels[index])  # Normalize


@dataclass
class Timing:
    name: str
    images: int
    data_s: float
    compute_s: float

    @property
    def images_per_s(self) -> float:
        return self.images / (self.data_s + self.compute_s)

    @property
    def data_fraction(self) -> float:
        return self.data_s / (self.data_s + self.compute_s)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    model = build_model(args.arch, 10, 3, image_size=32).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    criterion = get_loss("sr")

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _run_steps(timing: Timing, batches, step, steps: int, warmup: int, device) -> None:
    """Run warmup + steps training steps, adding the timed ones' data and compute time."""
    for index in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _sync(device)
        fetched = time.perf_counter()
        step(x, y)
        _sync(device)
        done = time.perf_counter()
        if index >= warmup:
            timing.data_s += fetched - start
            timing.compute_s += done - fetched
            timing.images += len(y)


def toolkit_batches(images: np.ndarray, labels: np.ndarray, args, device: torch.device):
    """Endless batches through frlr.data.augment, all on the device."""
    x_all = images_to_tensor(images, device)
    y_all = torch.from_numpy(labels).to(device)
    generator = torch.Generator(device if device.type == "cuda" else "cpu").manual_seed(0)
    while True:
        for x, y in iterate_batches(x_all, y_all, args.batch_size, True, generator, True):
            yield normalize(augment_batch(x, generator, flip=True, padding=4), MEAN, STD), y


def loader_batches(images: np.ndarray, labels: np.ndarray, args, workers: int):
    loader = torch.utils.data.DataLoader(
        PerSampleDataset(images, labels),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    while True:
        yield from loader


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per pipeline")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the steps")
    parser.add_argument("--images", type=int, default=10_000, help="size of the fake split")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--write", type=Path, default=None, help="write a Markdown record here")
    parser.add_argument("--append", action="store_true", help="add a section to --write's file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images).astype(np.int64)
    print(
        f"{args.arch}, batch {args.batch_size}, {'bf16' if args.bf16 else 'fp32'}"
        f"{', channels_last' if args.channels_last else ''}, {device}, "
        f"{torch.get_num_threads()} threads; {args.warmup} warm-up + {args.steps} timed steps "
        f"per pipeline in {args.rounds} interleaved rounds",
        flush=True,
    )
    pipelines = [
        ("toolkit (frlr.data.augment)", toolkit_batches(images, labels, args, device)),
        ("DataLoader, 0 workers", loader_batches(images, labels, args, 0)),
    ]
    if args.workers > 0:
        pipelines.append(
            (
                f"DataLoader, {args.workers} workers",
                loader_batches(images, labels, args, args.workers),
            )
        )
    # Interleaved rounds (A B C A B C ...), so drifts in the machine's speed hit every pipeline.
    timings = [Timing(name, 0, 0.0, 0.0) for name, _ in pipelines]
    trainers = [_trainer(args, device) for _ in pipelines]
    per_round = -(-args.steps // args.rounds)
    for round_index in range(args.rounds):
        for timing, (_, batches), step in zip(timings, pipelines, trainers, strict=True):
            warmup = args.warmup if round_index == 0 else 1
            _run_steps(timing, batches, step, per_round, warmup, device)
    for timing in timings:
        print(
            f"  {timing.name:<28} {timing.images_per_s:8.1f} img/s   "
            f"data {100 * timing.data_fraction:5.1f}% of step time",
            flush=True,
        )
    best_loader = max(timings[1:], key=lambda t: t.images_per_s)
    speedup = timings[0].images_per_s / best_loader.images_per_s
    print(f"  toolkit speed-up over the best DataLoader ({best_loader.name}): {speedup:.2f}x")
    if args.write is not None:
        _write(args, timings, speedup, best_loader, device)


def _write(args, timings: list[Timing], speedup: float, best: Timing, device) -> None:
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    command = command_line("benchmarks.train_speed")
    lines = [] if args.append else ["# Training throughput: toolkit pipeline vs DataLoader", ""]
    lines += [
        f"## {args.arch}, batch {args.batch_size}, {'bf16' if args.bf16 else 'fp32'}",
        "",
        f"- date: {date}",
        f"- machine: {machine()}; device {device}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- command: `{command}`",
        f"- setting: {args.arch} on 32x32x3 uint8 images, batch {args.batch_size}, SR loss, SGD "
        f"momentum 0.9, {'bf16 autocast' if args.bf16 else 'fp32'}"
        f"{', channels_last' if args.channels_last else ''}; {args.warmup} warm-up + "
        f"{args.steps} timed steps per pipeline, in {args.rounds} interleaved rounds",
        "",
        "| pipeline | images/s | data time / step time |",
        "|---|---|---|",
    ]
    for timing in timings:
        lines.append(
            f"| {timing.name} | {timing.images_per_s:.1f} | {100 * timing.data_fraction:.1f}% |"
        )
    lines += ["", f"Toolkit speed-up over the best DataLoader ({best.name}): {speedup:.2f}x.", ""]
    args.write.parent.mkdir(parents=True, exist_ok=True)
    with open(args.write, "a" if args.append else "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"  written to {args.write}")


if __name__ == "__main__":
    main()
