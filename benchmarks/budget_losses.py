"""The budget curve's losses, read from the Tiny ImageNet step's ``tune.json``.

    python -m benchmarks.budget_losses docs/results/verdict/tiny/tune.json

Prints the ``--losses`` of ``frlr sweep --param epochs`` for ``benchmarks/verdict.sh budget``:
SR, SS-LR, LR with the prior bias initialisation, and the best other LR-family loss, each at the
setting the tuning chose for it. "Best" is read from the validation scores at each loss's chosen
setting, never from a test metric (the choice says which on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from frlr.experiments.sweep import LossSpec, parse_loss_specs

FIXED = ("sr", "ss-lr", "lr:head-bias-init=prior")
OTHERS = ("lr", "hs-lr", "ss-lr:r=0")


def validation_score(tuned: dict[str, Any], key: str) -> float:
    """The mean validation score of ``key`` at the setting chosen for it."""
    chosen = tuned["chosen"][key]
    scores = [
        score
        for entry in tuned["validation"][key].values()
        if entry["point"] == chosen
        for score in entry["scores"]
    ]
    if not scores:
        raise ValueError(f"{key}: no validation score at its chosen setting {chosen}")
    return sum(scores) / len(scores)


def candidates(tuned: dict[str, Any]) -> list[str]:
    """The other LR-family losses in the running. Vanilla LR tuned to the prior bias is the
    prior baseline already, so it is not one then."""
    chosen = tuned["chosen"]
    return [
        key
        for key in OTHERS
        if key in chosen and not (key == "lr" and chosen[key].get("head_bias_init") == "prior")
    ]


def budget_losses(tuned: dict[str, Any]) -> tuple[list[str], str]:
    """(loss specs with their chosen settings, the best of the :func:`candidates`)."""
    if tuned.get("in_progress"):  # a tune rewrites its tables mid-way, before it has chosen
        raise ValueError(
            f"tune.json is still in progress ({tuned['in_progress']}): finish it first"
        )
    chosen = tuned["chosen"]
    missing = [key for key in FIXED if key not in chosen]
    if missing:
        raise ValueError(f"tune.json has no chosen setting for {', '.join(missing)}")
    others = candidates(tuned)
    if not others:
        raise ValueError(f"tune.json has none of {', '.join(OTHERS)} to compare")
    best = max(others, key=lambda key: validation_score(tuned, key))
    return [_with_settings(key, chosen[key]) for key in (*FIXED, best)], best


def _with_settings(key: str, settings: dict[str, Any]) -> str:
    """``ss-lr:r=0`` with ``{"lr": 0.1}`` -> ``ss-lr:lr=0.1:r=0``, spelled as ``--losses`` reads it
    (the chosen settings override any the key fixed)."""
    (spec,) = parse_loss_specs(key)
    return LossSpec(spec.name, tuple(sorted({**dict(spec.options), **settings}.items()))).key


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.budget_losses TUNE_JSON", file=sys.stderr)
        return 2
    tuned = json.loads(Path(args[0]).read_text())
    specs, best = budget_losses(tuned)
    print(
        f"budget: the best other LR-family loss on validation is {best} ("
        + ", ".join(f"{key} {validation_score(tuned, key):.4f}" for key in candidates(tuned))
        + ")",
        file=sys.stderr,
    )
    print(",".join(specs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
