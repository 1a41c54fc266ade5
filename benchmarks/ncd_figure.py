"""The paper's Fig. 2, measured: negative class distraction of LR on Tiny ImageNet (K = 200).

    python -m benchmarks.ncd_figure                 # 2 epochs, 4 losses: 7-9 min on 2 CPU cores
    python -m benchmarks.ncd_figure --steps 50      # 50 steps per epoch: a ~1.5 min smoke run
    python -m benchmarks.ncd_figure --plot-only     # redraw figures and report from --out
    python -m benchmarks.ncd_figure --losses sr,lr,lr:paper,hs-lr,ss-lr   # both LR forms

Trains the same ResNet-20 (same initialisation, same batches, same augmentation) on the
Tiny ImageNet training subset (200 classes, 32x32) with SR, LR, HS-LR and SS-LR, SGD at the
paper's settings (lr 0.1, momentum 0.9, weight decay 1e-4, batch 64), and records every step
with ``frlr.torch.NCDMonitor``: JSON lines in ``--out``, the four panels of Fig. 2 in
``docs/figures/ncd_tiny_imagenet.png`` (and ``..._logx.png``, the same on a log step
axis that spreads out the first steps, where NCD lives). It then prints LR's starting positive
and negative loss (paper: about 0.4 and 140), the gradient ratio of LR and SS-LR after epoch 1
(on a fixed probe of 1,000 validation images, model in eval mode, and as the mean of the
epoch's last training steps), and the verdict of ``ncd_verdict``.

Which LR. Eq. (3) sums 200 binary cross-entropies per sample; trained that way at lr 0.1, the
first step (gradient 100x that of one class) throws every logit far negative, and the ratio
jumps from 1/199 to above 1 after one step. The paper's curves (total loss "drops dramatically
until near 0", a ratio "nearly zero" for many iterations) are those of the conventional
multi-label implementation, the mean binary cross-entropy over all N*K entries
(``normalization="reference"`` in ``frlr.torch``), which is what LR is trained with here by
default (``--lr-normalization``; write ``lr:paper`` in ``--losses`` to add the Eq. 3 form).
Whatever the optimiser sees, the monitor reports every loss per sample by its own equation
(Eq. 3-6), so the panels compare like with like; for LR the two forms differ by the constant
factor K, which leaves the gradient ratio unchanged.

Measured with the defaults (2 shared CPU cores, torch 2.13 CPU, bf16 autocast, 1 thread; 8.6
min wall, about 5 steps/s; the run is deterministic, two runs printed the same numbers):

* LR at step 0: positive loss 0.806, negative loss 150.3 (paper: about 0.4 and 140), gradient
  ratio 0.0052 = 1/(K - 1) to 4%;
* LR's ratio stays below 0.05 for steps 0-18, passes 0.5 at step 51; meanwhile its positive
  loss rises from 0.81 to 4.6 (step 50) and 5.2 (end of epoch 1; log 200 = 5.3): the positive class
  is pushed to chance while the negative loss falls from 150 to 1.1, as in the paper;
* after epoch 1 (312 steps) the ratios have all drifted to about 1 (LR 0.76 on the probe, 0.91
  over the last training steps; SS-LR 0.96 and 0.99; SR exactly 1), as any loss with a
  classifier bias must (see ``ncd_verdict``); what lasts is the damage: probe top-1 after 2
  epochs LR 0.4% (chance 0.5%), HS-LR 2.1%, SR 2.9%, SS-LR 4.0%;
* verdict: NCD present in LR, absent in SR, HS-LR and SS-LR; removed by HS-LR and SS-LR.

With ``lr:paper`` (Eq. 3 summed) the ratio is 0.0052 at step 0 and 0.40 at step 1, and the
positive loss jumps from 0.81 to 5.0 in that one step and to 12.9 by step 3.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import frlr.torch as frlr
from frlr.data import load_dataset
from frlr.data.augment import (
    augment_batch,
    channel_stats,
    images_to_tensor,
    iterate_batches,
    normalize,
    num_batches,
)
from frlr.models import create_model

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data-dir",
        default=os.environ.get("FRLR_DATA", str(REPO.parent / "shared" / "data")),
        help="folder holding tiny-imagenet-200 (default $FRLR_DATA, else ../shared/data)",
    )
    p.add_argument("--out", default="runs/ncd_figure", help="JSON lines and summary go here")
    p.add_argument("--figure", default=str(REPO / "docs/figures/ncd_tiny_imagenet.png"))
    p.add_argument(
        "--losses",
        default="sr,lr,hs-lr,ss-lr",
        help="comma-separated; NAME or NAME:NORMALIZATION (paper|reference) for the LR family",
    )
    p.add_argument("--lr-normalization", default="reference", choices=("reference", "paper"))
    p.add_argument("--model", default="resnet20")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="steps per epoch; 0 = the full epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--probe", type=int, default=1000, help="validation images in the probe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest when shared)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-bf16", action="store_true", help="train in float32 (no autocast)")
    p.add_argument("--smooth", type=int, default=9, help="plot smoothing window (records)")
    p.add_argument("--xscale", default="linear", choices=("linear", "symlog"))
    p.add_argument(
        "--plot-only", action="store_true", help="redo figure and report from --out/summary.json"
    )
    args = p.parse_args(argv)
    if args.epochs < 1 or args.steps < 0 or args.batch_size < 1:
        p.error("--epochs must be >= 1, --steps >= 0, --batch-size >= 1")
    return args


def parse_losses(spec: str, lr_normalization: str) -> list[tuple[str, str, dict]]:
    """'sr,lr,lr:paper' -> [(label, loss name, options)]."""
    runs = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        name, _, normalization = entry.partition(":")
        name = name.lower()
        if name not in frlr.LOSSES:
            raise SystemExit(f"--losses: unknown loss {name!r}; known: {', '.join(frlr.LOSSES)}")
        options: dict = {}
        if name in ("lr", "hs-lr", "ss-lr"):
            if normalization:
                options["normalization"] = normalization
            elif name == "lr":
                options["normalization"] = lr_normalization
        elif normalization:
            raise SystemExit(f"--losses: {name} has no normalization option")
        runs.append((entry, name, options))
    return runs


def probe_stats(model, images, labels, name, mean, std, device, autocast) -> tuple[dict, float]:
    """NCD statistics (per-sample form of the loss) and top-1 accuracy on the probe batch."""
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
        x = normalize(images, mean, std).contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
    model.train()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return frlr.ncd_stats(logits, labels, name).as_dict(), accuracy


def train_one(label, name, options, data, args, device) -> dict:
    train_x, train_y, probe_x, probe_y, mean, std = data
    autocast = not args.no_bf16
    torch.manual_seed(args.seed)  # same initialisation for every loss
    model = create_model(args.model, num_classes=200).to(device, memory_format=torch.channels_last)
    criterion = frlr.get_loss(name, **options)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    out = Path(args.out)
    monitor = frlr.NCDMonitor(name, path=out / f"{label.replace(':', '-')}.jsonl", label=label)
    generator = torch.Generator().manual_seed(args.seed)  # same batches and crops for every loss
    per_epoch = num_batches(len(train_x), args.batch_size, drop_last=True)
    steps_per_epoch = min(per_epoch, args.steps) if args.steps else per_epoch
    epochs = []
    step = 0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        batches = iterate_batches(train_x, train_y, args.batch_size, True, generator, True)
        for index, (xb, yb) in enumerate(batches):
            if index == steps_per_epoch:
                break
            x = normalize(augment_batch(xb, generator), mean, std)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                logits = model(x)
            loss = criterion(logits, yb)
            monitor.update(logits, yb, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 25 == 0 or index == steps_per_epoch - 1:
                rate = step / (time.perf_counter() - start)
                print(
                    f"\r  {label:>14s} epoch {epoch + 1} step {index + 1:4d}/{steps_per_epoch} "
                    f"loss {loss.item():8.4f} ratio {monitor.last.gradient_ratio:8.4f} "
                    f"({rate:.1f} steps/s)",
                    end="",
                    flush=True,
                )
        stats, accuracy = probe_stats(model, probe_x, probe_y, name, mean, std, device, autocast)
        tail = [r for r in monitor.history if r["step"] >= step - max(steps_per_epoch // 10, 1)]
        tail_logs = [
            math.log(r["gradient_ratio"]) for r in tail if 0 < r["gradient_ratio"] < math.inf
        ]
        tail_ratio = math.exp(statistics.fmean(tail_logs)) if tail_logs else math.nan
        epochs.append(
            {
                "epoch": epoch + 1,
                "step": step,
                "probe": stats,
                "probe_accuracy": accuracy,
                "train_tail_ratio": tail_ratio,
            }
        )
        print(
            f"\n  {label:>14s} end of epoch {epoch + 1}: probe ratio "
            f"{stats['gradient_ratio']:.4f}, last-10% training ratio {tail_ratio:.4f}, probe "
            f"top-1 {accuracy:.1%}",
            flush=True,
        )
    monitor.close()
    return {
        "label": label,
        "loss": name,
        "options": options,
        "steps": step,
        "seconds": time.perf_counter() - start,
        "first": monitor.history[0],
        "epochs": epochs,
        "jsonl": str(monitor.path),
    }


def report(results: list[dict], args: argparse.Namespace) -> str:
    """Draw the figure, judge the histories and print the numbers; returns the verdict."""
    monitors = {r["label"]: r["jsonl"] for r in results}
    verdict = frlr.ncd_verdict(monitors)
    lr_form = "mean BCE over classes" if args.lr_normalization == "reference" else "Eq. 3"
    title = (
        f"Tiny ImageNet (K = 200), {args.model}, batch {args.batch_size}, lr {args.lr}; "
        f"LR trained as {lr_form}"
    )
    frlr.plot_ncd(monitors, args.figure, smooth=args.smooth, title=title, xscale=args.xscale)
    figure = Path(args.figure)
    early = figure.with_name(f"{figure.stem}_logx{figure.suffix}")  # the first steps spread out
    frlr.plot_ncd(monitors, early, smooth=3, title=title, xscale="symlog")
    by_label = {r["label"]: r for r in results}
    print(f"\nfigures: {args.figure}, {early}\njson lines and summary: {args.out}")
    if "lr" in by_label:
        first = by_label["lr"]["first"]
        print(
            f"LR at step 0: positive loss {first['positive']:.3f}, negative loss "
            f"{first['negative']:.1f}, gradient ratio {first['gradient_ratio']:.4f} "
            "(paper: about 0.4 and 140)"
        )
    for label in ("lr", "lr:paper", "hs-lr", "ss-lr", "sr"):
        if label in by_label:
            e1 = by_label[label]["epochs"][0]
            print(
                f"after epoch 1 ({e1['step']} steps): {label:>8s} gradient ratio "
                f"{e1['probe']['gradient_ratio']:.4f} on the probe, "
                f"{e1['train_tail_ratio']:.4f} over the epoch's last training steps; probe "
                f"positive loss {e1['probe']['positive']:.3f}, top-1 {e1['probe_accuracy']:.1%}"
            )
    print(f"verdict: {verdict.summary}")
    return verdict.summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = Path(args.out) / "summary.json"
    if args.plot_only:
        saved = json.loads(summary.read_text())
        report(saved["runs"], args)
        return 0
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runs = parse_losses(args.losses, args.lr_normalization)
    wall = time.perf_counter()
    print(f"loading Tiny ImageNet from {args.data_dir} at {args.image_size}x{args.image_size}")
    size = args.image_size
    train = load_dataset("tiny-imagenet", "train", data_dir=args.data_dir, image_size=size)
    val = load_dataset("tiny-imagenet", "val", data_dir=args.data_dir, image_size=size)
    if train.num_classes != 200:
        raise SystemExit(f"expected 200 classes, found {train.num_classes}")
    mean, std = channel_stats(train)
    data = (
        images_to_tensor(train, device),
        torch.from_numpy(train.labels).to(device),
        images_to_tensor(val.images[: args.probe], device),
        torch.from_numpy(val.labels[: args.probe]).to(device),
        mean,
        std,
    )
    print(f"{len(train)} training images, probe of {len(data[2])} validation images")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = [train_one(label, name, options, data, args, device) for label, name, options in runs]
    verdict = report(results, args)
    saved = {"args": vars(args), "runs": results, "verdict": verdict}
    saved["wall_seconds"] = time.perf_counter() - wall
    partial = summary.with_suffix(".json.partial")
    partial.write_text(json.dumps(saved, indent=2))
    os.replace(partial, summary)
    print(f"wall time {saved['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
