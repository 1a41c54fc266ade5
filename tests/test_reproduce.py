"""CI smoke test of benchmarks/reproduce.sh: every RESULTS.md step on 2 batches an epoch.

The ``speed`` step's quick commands are exactly the benchmark smoke tests of
``test_benchmarks.py``, so they are not run a second time here: the full smoke test runs the
other steps, and a cheap test checks that ``--quick speed`` would run those same commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_benchmarks import QUICK_COMMANDS

REPO = Path(__file__).resolve().parents[1]
REPRODUCE = REPO / "benchmarks" / "reproduce.sh"
STEPS_BUT_SPEED = ("main", "ncd", "tiny", "sweep", "kcurve", "recipes", "omniglot", "mosaic")


@pytest.mark.slow
@pytest.mark.shared_data
def test_reproduce_quick_runs_every_step(tmp_path, shared_data, data_cache_dir):
    """Decoded arrays go to the session's cache folder, never the user's ~/.cache/frlr."""
    if not (shared_data / "tiny-imagenet-200").is_dir() or not (shared_data / "omniglot").is_dir():
        pytest.skip(
            f"reproduce.sh needs the Tiny ImageNet subset and Omniglot zips in {shared_data}"
        )
    env = dict(
        os.environ,
        OUT=str(tmp_path / "runs"),
        FRLR_DATA=str(shared_data),
        FRLR_CACHE=str(data_cache_dir),
        PYTHON=sys.executable,
        MPLBACKEND="Agg",
    )
    out = subprocess.run(
        ["bash", str(REPRODUCE), "--quick", *STEPS_BUT_SPEED],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,  # 527 s on a loaded AVX2-only host (2026-12-04), 254 s with AMX
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    runs = tmp_path / "runs"
    for name, losses in {
        "digits-small-cnn-cpu": 4,
        "tiny-resnet20-cpu": 4,
        "omniglot-retrieval-cpu": 4,
        "mosaic-cpu": 3,
    }.items():
        results = json.loads((runs / name / "results.json").read_text())
        assert len(results["losses"]) == losses, name
        assert (runs / name / "report" / "report.html").is_file(), name
    for mixing, mixup in (("plain", 0.0), ("mixup-ls", 0.2)):
        name = f"recipes-tiny-cpu-{mixing}"
        assert len(json.loads((runs / name / "results.json").read_text())["losses"]) == 2
        run = json.loads((runs / name / "ss-lr-seed0" / "result.json").read_text())
        assert run["config"]["mixup"] == mixup, name
    for param in ("m", "r"):
        assert (runs / f"tiny-sweep-{param}" / f"sweep_{param}.png").is_file()
    assert (runs / "ncd_figure" / "ncd.png").is_file()
    curves = json.loads((runs / "k-curve" / "sweep.json").read_text())
    assert len(curves["summary"]) == 2 * 5  # K = 2 and 10, five curves
    assert (runs / "k-curve" / "sweep_num_classes.png").is_file()
    assert "reproduce: done" in out.stdout


def test_reproduce_quick_speed_runs_the_benchmark_smoke_tests(tmp_path):
    """``--quick speed`` runs what test_benchmarks.py runs, so the smoke test above skips it."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON="echo")  # print each command, run none
    out = subprocess.run(
        ["bash", str(REPRODUCE), "--quick", "speed"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    ran = [
        tuple(line.split()) for line in out.stdout.splitlines() if line.startswith("-m benchmarks.")
    ]
    assert ran == list(QUICK_COMMANDS)
    assert "reproduce: done" in out.stdout
