"""CI smoke test of benchmarks/reproduce.sh: every RESULTS.md step on 2 batches an epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(
    not (SHARED_DATA / "tiny-imagenet-200").is_dir() or not (SHARED_DATA / "omniglot").is_dir(),
    reason=f"reproduce.sh needs the Tiny ImageNet subset and Omniglot zips in {SHARED_DATA}",
)
def test_reproduce_quick_runs_every_step(tmp_path):
    env = dict(
        os.environ,
        OUT=str(tmp_path / "runs"),
        FRLR_DATA=str(SHARED_DATA),
        PYTHON=sys.executable,
        MPLBACKEND="Agg",
    )
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "reproduce.sh"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
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
    for param in ("m", "r"):
        assert (runs / f"tiny-sweep-{param}" / f"sweep_{param}.png").is_file()
    assert (runs / "ncd_figure" / "ncd.png").is_file()
    curves = json.loads((runs / "k-curve" / "sweep.json").read_text())
    assert len(curves["summary"]) == 2 * 5  # K = 2 and 10, five curves
    assert (runs / "k-curve" / "sweep_num_classes.png").is_file()
    assert "reproduce: done" in out.stdout
