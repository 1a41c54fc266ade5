"""Smoke tests of the benchmark scripts: they run end to end on tiny shapes (timings unchecked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

TRAIN_SPEED_SMOKE = (
    "--arch",
    "resnet20",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--rounds",
    "1",
    "--images",
    "512",
    "--batch-size",
    "32",
    "--workers",
    "0",
    "--no-bf16",
)
"""The train_speed.py arguments of the smoke test below; ``reproduce.sh --quick`` runs the same."""

QUICK_COMMANDS = (
    ("benchmarks/loss_speed.py", "--quick"),
    ("benchmarks/selection_speed.py", "--quick"),
    ("benchmarks/train_speed.py", *TRAIN_SPEED_SMOKE),
)
"""What these smoke tests run, as ``reproduce.sh --quick speed`` runs it (checked there)."""


def _run(*argv: str, timeout: float = 180) -> str:
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_loss_speed_quick_prints_every_peer_and_frlr_loss():
    text = _run(str(BENCHMARKS / "loss_speed.py"), "--quick")
    for name in (
        "F.cross_entropy",
        "authors HS-LR",
        "authors SS-LR",
        "frlr hs-lr",
        "sigmoid_focal",
    ):
        assert name in text
    assert "N = 32" in text


def test_selection_speed_quick_prints_every_candidate_and_the_search():
    text = _run(str(BENCHMARKS / "selection_speed.py"), "--quick")
    for name in ("topk(n, sorted=False)", "np.partition", "one count pass", "F.softplus"):
        assert name in text
    assert "log-normal logits, 16x100:" in text
    assert "wrote" not in text


def test_loss_speed_memory_child_reports_megabytes():
    text = _run(str(BENCHMARKS / "loss_speed.py"), "--memory-child", "frlr ss-lr", "64", "1000")
    assert float(text.strip().splitlines()[-1]) >= 0


def test_loss_speed_target_lines_judge_the_worst_case():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import loss_speed
    finally:
        sys.path.remove(str(BENCHMARKS))
    names = ["F.cross_entropy", "frlr ss-lr", "authors SS-LR"]
    ms = {128: {n: [1.0, 1.0] for n in names}, 1024: {n: [1.0, 1.0] for n in names}}
    ms[1024]["frlr ss-lr"] = [1.0, 2.6]  # K=1000 column misses the 2.5x bound
    ms[128]["authors SS-LR"] = [1.0, 10.0]
    lines = loss_speed.target_lines(ms, (10, 1000))
    (line,) = [line for line in lines if line.startswith("- frlr ss-lr")]
    assert "2.60x F.cross_entropy (target 2.5x): MISSED" in line
    assert "at least 0.38x faster than authors SS-LR (target 2.5x): MISSED" in line


@pytest.mark.slow
def test_train_speed_runs_a_few_steps():
    text = _run(str(BENCHMARKS / "train_speed.py"), *TRAIN_SPEED_SMOKE)
    assert "images/s" in text or "img/s" in text


@pytest.mark.slow  # a dozen fresh processes and two gloo groups
def test_huge_k_quick_prints_every_method_the_targets_and_class_parallel():
    text = _run(str(BENCHMARKS / "huge_k.py"), "--quick", timeout=600)
    for name in (
        "F.cross_entropy(x @ W.T)",
        "F.linear_cross_entropy (batch_chunk_size=128)",
        "frlr ss-lr (materialised)",
        "frlr linear_hs_lr",
        "frlr linear_ss_lr (compiled=True)",
        "frlr linear_sr",
        "hs-lr time",
        "interleaved round",
        "## The largest K",
        "linear_ss_lr_loss | 3 |",
    ):
        assert name in text
    assert "wrote" not in text


def test_linear_cpu_time_prints_every_loss_and_its_ratios():
    text = _run(
        str(BENCHMARKS / "linear_cpu_time.py"),
        "--n",
        "16",
        "--d",
        "8",
        "--k",
        "3000",
        "--calls",
        "1",
    )
    for name in ("linear_lr_loss", "linear_ss_lr_loss", "linear_hs_lr_loss", "linear_sr_loss"):
        assert name in text
    assert "x ss-lr" in text and "x CE" in text


def test_hs_lr_floor_prints_every_part_and_the_floors(tmp_path):
    out = tmp_path / "floor.md"
    args = ("--n", "16", "--d", "8", "--k", "3000", "--rounds", "1", "--out", str(out))
    text = _run(str(BENCHMARKS / "hs_lr_floor.py"), *args, timeout=300)
    for name in (
        "linear_hs_lr_loss",
        "linear_ss_lr_loss (compiled=True)",
        "count pass, fused by torch.compile",
        "eager: LR + one logits pass",
        "compiled: compiled SS-LR",
    ):
        assert name in text
    assert out.read_text().startswith("# HS-LR against SS-LR")
