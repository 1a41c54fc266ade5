"""Paired difference of one metric between two sets of finished runs, matched by seed.

RESULTS compares runs that no single table holds side by side, e.g. a loss at its tuned settings
(a ``tune``'s final runs) against the same loss at the recipe (a ``sweep``'s runs):

    python -m benchmarks.paired_runs "OUT/final/lr-head_bias_initprior-lr0.1-seed*" \\
        "OUT/recipe/lr-lr0.1-seed*" --metric top1

Each argument is a glob of run directories; the runs are paired by their config's seed (seeds
only one side has are left out and named). Prints both means ± SD, the paired difference A − B
(mean ± SD, in points), on how many seeds A is higher, and the two-sided Wilcoxon p of
``frlr.experiments.stats.paired_wilcoxon`` (what the toolkit's tables print).
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

from frlr.experiments.stats import mean_std, paired_wilcoxon
from frlr.rundir import read_result


def scores(pattern: str, metric: str) -> dict[int, float]:
    """seed -> metric of every finished run matching ``pattern`` (unfinished ones skipped)."""
    found: dict[int, float] = {}
    for folder in sorted(glob.glob(pattern)):
        path = Path(folder) / "result.json"
        if not path.is_file():
            continue
        result = read_result(path)
        value = result.get("metrics", {}).get(metric)
        if value is None:
            raise SystemExit(f"{path} has no test metric {metric!r}")
        seed = int(result["config"]["seed"])
        if seed in found:
            raise SystemExit(f"{pattern!r} matches two finished runs of seed {seed}")
        found[seed] = float(value)
    return found


def compare(a: dict[int, float], b: dict[int, float]) -> list[str]:
    """The report's lines (values in points, the test on the metric as stored)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise SystemExit("no seed has a finished run on both sides")
    lines = []
    alone = sorted(set(a) ^ set(b))
    if alone:
        lines.append(f"left out (one side only): seeds {', '.join(map(str, alone))}")
    x, y = [a[s] for s in seeds], [b[s] for s in seeds]
    for name, values in (("A", x), ("B", y)):
        mean, sd = mean_std([100 * v for v in values])
        lines.append(f"{name}: {mean:.2f} ± {sd:.2f}")
    differences = 100 * (np.asarray(x) - np.asarray(y))
    mean, sd = mean_std(differences.tolist())
    test = paired_wilcoxon(x, y)
    p = "n/a" if test.p_value is None else f"{test.p_value:.3g}"
    lines.append(
        f"A - B: {mean:+.2f} ± {sd:.2f} points; A higher on {int((differences > 0).sum())} of "
        f"{len(seeds)} seeds; Wilcoxon p = {p}" + (f" ({test.note})" if test.note else "")
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="glob of run directories (side A)")
    parser.add_argument("b", help="glob of run directories (side B)")
    parser.add_argument("--metric", default="top1", help="a test metric of result.json")
    args = parser.parse_args(argv)
    print("\n".join(compare(scores(args.a, args.metric), scores(args.b, args.metric))))


if __name__ == "__main__":
    main(sys.argv[1:])
