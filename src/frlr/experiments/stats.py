"""Summaries over seeds and the paired significance test of ``frlr compare``.

Runs of two losses with the same seed share the initial weights, the batch order and the
augmentation draws, so their accuracies are paired; the test is the two-sided Wilcoxon
signed-rank test on the per-seed differences (``scipy.stats.wilcoxon``), which assumes no
normality. Its exact null distribution puts probability 2 / 2^n on the most extreme outcome,
so with n pairs no p-value can be below 2 / 2^n: 0.25 with 3 seeds, 0.0625 with 5, 0.03125
with 6. Fewer than 6 seeds can never show p < 0.05, whatever the accuracies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class PairedTest:
    """A paired Wilcoxon signed-rank test: p_value None when it could not be computed."""

    p_value: float | None
    n: int
    statistic: float | None
    note: str = ""


def min_two_sided_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with n non-zero pairs."""
    return 1.0 if n < 1 else min(1.0, 2.0 / 2.0**n)


def seeds_needed(level: float = SIGNIFICANCE_LEVEL) -> int:
    """Fewest pairs for which the exact two-sided test can reach p < ``level``."""
    n = 1
    while min_two_sided_p(n) >= level:
        n += 1
    return n


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value; NaN for none)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def paired_wilcoxon(values: Sequence[float], baseline: Sequence[float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``values`` against ``baseline``, paired by index.

    Pairs with equal values carry no sign and are dropped (``zero_method="wilcox"``); when every
    pair is equal the two are indistinguishable and p = 1 (scipy would divide by zero).
    """
    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(baseline, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"values and baseline must be paired 1-d sequences, got {x.shape}, {y.shape}"
        )
    n = int(x.size)
    if n == 0:
        return PairedTest(None, 0, None, "no paired seeds")
    differences = x - y
    nonzero = int(np.count_nonzero(differences))
    if nonzero == 0:
        return PairedTest(1.0, n, 0.0, "identical on every seed")
    from scipy.stats import wilcoxon  # scipy.stats is slow to import: only for a test

    note = f"{n - nonzero} tied pair(s) dropped" if nonzero < n else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    except ValueError as error:
        return PairedTest(None, n, None, f"test failed: {error}")
    p = float(result.pvalue)
    return PairedTest(p if math.isfinite(p) else None, n, float(result.statistic), note)


def significance_footnote(n: int, metric: str, baseline: str) -> str:
    """The table footnote: which test, and what it can show with ``n`` seeds."""
    text = (
        f"p: two-sided paired Wilcoxon signed-rank test of {metric} against {baseline} over "
        f"{n} seed{'s' if n != 1 else ''} (scipy.stats.wilcoxon; pairs with equal values are "
        "dropped, p = 1 when all are equal)."
    )
    needed = seeds_needed()
    if n < needed:
        text += (
            f" With {n} seed{'s' if n != 1 else ''} the smallest attainable p is "
            f"{min_two_sided_p(n):.3g}, so no difference can reach p < {SIGNIFICANCE_LEVEL}: "
            f"that needs at least {needed} seeds (--seeds {needed})."
        )
    return text
