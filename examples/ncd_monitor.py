"""Watch negative class distraction with ``frlr.torch.NCDMonitor`` in a custom training loop.

NCD (the paper's Section 3): with many classes, plain LR's K - 1 negative terms swamp the one
positive term, so the gradient on the positive logit is a tiny share of the gradient on the
negatives early in training. The monitor records that ratio (and the loss's positive and
negative parts) from the logits the loss saw, analytically, without touching the graph. This
trains the same linear classifier on 200 synthetic classes with LR and with SS-LR, monitoring
each, and prints the verdict: LR is distracted, SS-LR is not.

    python examples/ncd_monitor.py                      # 60 steps per loss
    python examples/ncd_monitor.py --plot ncd.png       # also draw the paper's Fig. 2 panels
    python examples/ncd_monitor.py --tiny               # 12 steps, as CI runs it
"""

import argparse

import torch

import frlr.torch as frlr

NUM_CLASSES, DIM = 200, 64


def run(loss_name: str, steps: int) -> frlr.NCDMonitor:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(NUM_CLASSES, DIM, generator=generator)
    model = torch.nn.Linear(DIM, NUM_CLASSES)
    criterion = frlr.get_loss(loss_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = frlr.NCDMonitor(criterion, every=1)  # path="ncd.jsonl" also writes JSON lines
    for step in range(steps):
        y = torch.randint(0, NUM_CLASSES, (128,), generator=generator)
        x = centres[y] + 0.5 * torch.randn(128, DIM, generator=generator)
        logits = model(x)
        loss = criterion(logits, y)
        monitor.update(logits, y, step)  # before optimizer.step(): the logits the loss saw
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return monitor


def main() -> None:
    parser = argparse.ArgumentParser(description="NCDMonitor on LR and SS-LR.")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--plot", help="save the NCD panels to this image file")
    parser.add_argument("--tiny", action="store_true", help="12 steps (CI)")
    args = parser.parse_args()
    steps = 12 if args.tiny else args.steps
    monitors = {name: run(name, steps) for name in ("lr", "ss-lr")}
    for name, monitor in monitors.items():
        ratio = monitor.last.gradient_ratio
        print(f"{name}: positive/negative gradient ratio {ratio:.3f} at the last step")
    print(frlr.ncd_verdict(monitors).summary)  # also: monitors["lr"].verdict()
    if args.plot:
        frlr.plot_ncd(monitors, args.plot)


if __name__ == "__main__":
    main()
