"""The ``frlr`` command. With no arguments it runs the main job on embedded data."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="frlr", description="Focus-rectified logistic regression: losses and experiments."
    )
    parser.add_argument("command", nargs="?", default="demo", choices=["demo"])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    from frlr.demo import main as demo

    demo(seeds=args.seeds)


if __name__ == "__main__":
    main()
