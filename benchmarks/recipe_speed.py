"""What makes the ``cpu`` preset's training step fastest on this machine: bf16 autocast,
channels-last, ``torch.compile``, the batch size and the threads per process.

    python -m benchmarks.recipe_speed --write docs/benchmarks/recipe_speed.md

Why CPU time: the experiments run one single-thread process per core, on a host other jobs
share, so what decides their throughput is the CPU seconds an image costs one thread, which a
busy neighbour barely changes (wall time would count the waits for a core). Each setting trains
ResNet-20 on 32x32x3 uint8 batches through the toolkit's own pipeline (on-device batches,
``augment_batch``, ``normalize``), SR loss, SGD Nesterov as the preset; settings take turns in
``--rounds`` interleaved rounds, and the best round counts. The 2-thread row is one process with
2 threads: its CPU seconds per image against the 1-thread row say whether a second thread
pays for itself (it must halve the wall time at no more CPU to match two 1-thread processes).
The record names the CPU's bf16 support (AVX-512 BF16, AMX), which decides the bf16 rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks._invocation import command_line
from frlr.data.augment import augment_batch, images_to_tensor, iterate_batches, normalize
from frlr.models import build_model
from frlr.provenance import cpu_model
from frlr.torch import get_loss

MEAN, STD = (0.48, 0.45, 0.40), (0.27, 0.26, 0.28)


@dataclass(frozen=True)
class Setting:
    name: str
    bf16: bool = False
    channels_last: bool = True
    compile: bool = False
    batch: int = 128
    threads: int = 1


SETTINGS = (
    Setting("fp32, NCHW", channels_last=False),
    Setting("fp32, channels-last (chosen)"),
    Setting("bf16 autocast, channels-last (preset before)", bf16=True),
    Setting("fp32, channels-last, batch 64", batch=64),
    Setting("fp32, channels-last, batch 256", batch=256),
    Setting("fp32, channels-last, torch.compile", compile=True),
    Setting("fp32, channels-last, 2 threads", threads=2),
)


@dataclass
class Measured:
    cpu_per_image: list[float] = field(default_factory=list)
    wall_per_image: list[float] = field(default_factory=list)


def bf16_support() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return "unknown"
    have = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return ", ".join(have) if have else "none of avx512f, avx512_bf16, amx_bf16 (AVX2 at most)"


def trainer(setting: Setting):
    """One training step of ``setting``, and the batches it takes."""
    torch.manual_seed(0)
    model = build_model("resnet20", 200, 3, image_size=32)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if setting.compile else model
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    criterion = get_loss("sr")
    images = np.random.default_rng(0).integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8)
    x_all = images_to_tensor(images, torch.device("cpu"))
    y_all = torch.from_numpy(np.arange(4096) % 200)
    generator = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield from iterate_batches(x_all, y_all, setting.batch, True, generator, True)

    stream = batches()

    def step() -> int:
        x, y = next(stream)
        x = normalize(augment_batch(x, generator, flip=True, padding=4), MEAN, STD)
        if setting.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", torch.bfloat16, enabled=setting.bf16):
            loss = criterion(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(y)

    return step


def measure(step, images: int, threads: int) -> tuple[float, float]:
    """(CPU s, wall s) per image over at least ``images`` images."""
    torch.set_num_threads(threads)
    cpu, wall, seen = time.process_time(), time.perf_counter(), 0
    while seen < images:
        seen += step()
    return (time.process_time() - cpu) / seen, (time.perf_counter() - wall) / seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=768, help="timed images per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 settings, 1 round (smoke test)")
    parser.add_argument("--write", type=Path, default=None, help="write a Markdown record here")
    args = parser.parse_args(argv)
    settings = SETTINGS[:2] if args.quick else SETTINGS
    rounds, images = (1, 128) if args.quick else (args.rounds, args.images)
    steps = {}
    for setting in settings:  # build and warm up every setting first (compilation included)
        torch.set_num_threads(setting.threads)
        steps[setting] = trainer(setting)
        for _ in range(2):
            steps[setting]()
    results = {setting: Measured() for setting in settings}
    load = os.getloadavg()[0]
    for round_ in range(rounds):
        for setting in settings:
            cpu, wall = measure(steps[setting], images, setting.threads)
            results[setting].cpu_per_image.append(cpu)
            results[setting].wall_per_image.append(wall)
            print(f"round {round_ + 1}: {setting.name}: {1 / cpu:.0f} img per CPU-s", flush=True)
    text = record(results, settings, load, os.getloadavg()[0], argv)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    return 0


def record(results, settings, load_before: float, load_after: float, argv) -> str:
    chosen = results[settings[1]]
    base = min(chosen.cpu_per_image)
    command = command_line("benchmarks.recipe_speed", argv or None)
    lines = [
        "# The cpu preset's training step: which settings are fastest here",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; bf16 support: {bf16_support()}",
        f"- torch {torch.__version__}; load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other jobs shared the cores)",
        f"- command: `{command}`",
        "- setting: ResNet-20, 32x32x3, 200 classes, SR, SGD Nesterov, the toolkit's pipeline; "
        "best of the interleaved rounds",
        "",
        "| setting | images per CPU-second | CPU time vs chosen | wall images/s |",
        "|---|---|---|---|",
    ]
    for setting in settings:
        cpu = min(results[setting].cpu_per_image)
        wall = min(results[setting].wall_per_image)
        lines.append(f"| {setting.name} | {1 / cpu:.0f} | {cpu / base:.2f}x | {1 / wall:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
