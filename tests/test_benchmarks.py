"""Smoke tests of the benchmarks: each runs end to end on tiny shapes as ``python -m
benchmarks.<name>`` from the repository root (timings unchecked)."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"

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
"""The train_speed arguments of the smoke test below; ``reproduce.sh --quick`` runs the same."""

QUICK_COMMANDS = (
    ("-m", "benchmarks.loss_speed", "--quick"),
    ("-m", "benchmarks.selection_speed", "--quick"),
    ("-m", "benchmarks.train_speed", *TRAIN_SPEED_SMOKE),
)
"""What these smoke tests run, as ``reproduce.sh --quick speed`` runs it (checked there)."""


def _argv(name: str, *args: str) -> list[str]:
    """``python -m benchmarks.<name> args``, as a user runs it from the repository root."""
    return [sys.executable, "-m", f"benchmarks.{name}", *args]


def _run(name: str, *args: str, timeout: float = 180) -> str:
    out = subprocess.run(
        _argv(name, *args), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _import_benchmark(name: str):
    sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module(f"benchmarks.{name}")
    finally:
        sys.path.remove(str(REPO))


def test_loss_speed_quick_prints_every_peer_and_frlr_loss():
    text = _run("loss_speed", "--quick")
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
    text = _run("selection_speed", "--quick")
    for name in ("topk(n, sorted=False)", "np.partition", "one count pass", "F.softplus"):
        assert name in text
    assert "log-normal logits, 16x100:" in text
    assert "wrote" not in text


def test_loss_speed_memory_child_reports_megabytes():
    text = _run("loss_speed", "--memory-child", "frlr ss-lr", "64", "1000")
    assert float(text.strip().splitlines()[-1]) >= 0


def test_loss_speed_target_lines_judge_the_worst_case():
    loss_speed = _import_benchmark("loss_speed")
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
    text = _run("train_speed", *TRAIN_SPEED_SMOKE)
    assert "images/s" in text or "img/s" in text


@pytest.mark.slow  # a dozen fresh processes and two gloo groups
def test_recipe_speed_quick_times_the_settings_and_names_the_cpus_bf16_support():
    text = _run("recipe_speed", "--quick")
    assert "fp32, channels-last (chosen) | " in text and "bf16 support: " in text


def test_huge_k_quick_prints_every_method_the_targets_and_class_parallel():
    text = _run("huge_k", "--quick", timeout=600)
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
        "| frlr linear_ss_lr [bf16] | ",
        "| F.linear_cross_entropy (default) [bf16] | ",
        "| matmul floor (the 3 products, chunked) [bf16] | ",
        "- bf16 ss-lr time vs PyTorch's fastest in bf16",
        "- bf16 hs-lr time vs ss-lr",
        "- frlr linear_ss_lr [bf16]: ",
        "classes fit this machine's",
    ):
        assert name in text
    assert "wrote" not in text and "failed" not in text


def test_huge_k_bf16_rows_take_fewer_rounds_and_one_call(monkeypatch):
    """--bf16-rounds: the float32 rows in every round with their calls, the bf16 rows one call
    in the first rounds only; the header says so and the bf16 targets read both."""
    huge_k = _import_benchmark("huge_k")
    runs = []

    def fake_child(name, n, d, k, calls, limit_gb, threads):
        runs.append((name, calls))
        return {"seconds": [1.0] * calls, "wall": [1.0] * calls, "growth_mb": 1.0}

    monkeypatch.setattr(huge_k, "run_child", fake_child)
    methods = huge_k.rows_of(("float32", "bfloat16"), False, ["frlr linear_ss_lr"])
    lines = huge_k.shape_table(8, 4, 100, 2, 1.0, 1, methods, 3, bf16_rounds=1)
    assert (
        runs
        == [("frlr linear_ss_lr", 2), ("frlr linear_ss_lr [bf16]", 1)]
        + [("frlr linear_ss_lr", 2)] * 2
    )
    assert (
        "best of 2 calls in each of 3 interleaved rounds; the bf16 rows one call in 1" in lines[0]
    )
    assert any(line.startswith("- bf16 ss-lr memory above the floor") for line in lines)


def test_huge_k_in_process_quick_is_the_cuda_layout_on_the_cpu(tmp_path):
    """The CUDA record's code (one process, ms tables, the first compiled call, the chunk_size
    sweep, the record file) run on the CPU: all of it but the torch.cuda readings."""
    out = tmp_path / "huge_k_cuda.md"
    args = ("--device", "cpu", "--in-process", "--quick", "--out", str(out))
    text = _run("huge_k", *args, timeout=300)
    record = out.read_text()
    assert record.startswith("# Huge K on one CPU process")
    assert "INCOMPLETE" not in record and "failed" not in record and "not run" not in record
    huge_k = _import_benchmark("huge_k")
    for name in huge_k.METHODS:
        assert f"| {name} | " in record
    for line in (
        "| method | forward+backward ms | peak growth MB | above the floor MB |",
        "- first call of frlr linear_ss_lr (compiled=True), with its compilation",
        "- hs-lr time",
        "### chunk_size: N = 32, d = 16, K = 5,000",
        "| chunk_size | (N, chunk) MB | linear_lr ms | linear_lr above the floor MB "
        "| linear_ss_lr ms | linear_ss_lr above the floor MB |",
        "| 5,000 (default) | 1 | ",
        "| 64 | 0 | ",
    ):
        assert line in record
    assert "## Class-parallel" not in record  # the CPU record's alone
    assert f"wrote {out}" in text


def test_huge_k_seconds_budget_runs_nothing_and_says_so(tmp_path):
    out = tmp_path / "huge_k.md"
    args = ("--device", "cpu", "--in-process", "--quick", "--seconds", "0", "--out", str(out))
    _run("huge_k", *args)
    record = out.read_text()
    huge_k = _import_benchmark("huge_k")
    for name in huge_k.METHODS:
        assert f"| {name} | not run: the --seconds budget was spent | | |" in record
    assert "| 64 | 0 | not run: the --seconds budget was spent |  | not run:" in record
    assert "first call" not in record and "- lr time" not in record


def test_huge_k_record_keeps_the_finished_tables_when_a_later_one_dies(tmp_path, monkeypatch):
    """A run stopped in its second table (a time limit's kill, here an error) leaves the first
    table in the record, marked incomplete."""
    huge_k = _import_benchmark("huge_k")

    def dies(*args):
        raise KeyboardInterrupt

    sweep = (huge_k.chunk_sweep, (16, 8, 500, 1, (64,)))
    monkeypatch.setattr(huge_k, "plan", lambda quick: [sweep, (dies, ())])
    out = tmp_path / "partial.md"
    args = argparse.Namespace(out=str(out), quick=True, memory_budget_gb=1.0)
    with pytest.raises(KeyboardInterrupt):
        huge_k.in_process_record(args, huge_k.CPU, math.inf)
    record = out.read_text()
    assert "(INCOMPLETE: 1 of 2 tables)." in record
    assert "| 500 (default) | 0 | " in record and "| 64 | 0 | " in record


def test_huge_k_on_cuda_without_cuda_exits_2_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA even on a GPU machine
    argv = _argv("huge_k", "--device", "cuda", "--quick")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert out.returncode == 2
    assert out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("huge_k.py: --device cuda: not available here (CUDA available: False")


def test_huge_k_step_of_gpu_check_without_cuda_is_one_line_and_exit_0():
    """gpu_check.sh's guard, and the options its huge_k step looks for and passes."""
    help_text = _run("huge_k", "--help")
    for option in ("--device", "--seconds", "--out"):
        assert option in help_text
    script = (BENCHMARKS / "gpu_check.sh").read_text()
    assert "-m benchmarks.huge_k --device cuda" in script and "--seconds" in script
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    argv = ["bash", str(BENCHMARKS / "gpu_check.sh")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"gpu_check: no CUDA device visible to {sys.executable} (torch missing or CPU-only); "
        "nothing to check"
    ]


def test_huge_k_measure_in_process_reads_time_peak_and_failures_on_the_cpu():
    """The per-device readings the CUDA record takes, with device "cpu": the peak of a method
    that holds a 64 MB tensor, a time per call, and a failing method as its row."""
    huge_k = _import_benchmark("huge_k")
    x, w, y = huge_k.shape_inputs(256, 8, 65_536, huge_k.CPU)

    def holds_logits(x, w, y):
        return (x @ w.T).exp().mean()  # (256, 65536) float32: 64 MB, twice (exp keeps both)

    row = huge_k.measure_in_process(holds_logits, x, w, y, 2, huge_k.CPU)
    assert isinstance(row, dict)
    assert len(row["seconds"]) == 2 and row["seconds"] == row["wall"] and row["first"] > 0
    assert row["growth_mb"] >= 100
    assert x.grad is None and w.grad is None

    def out_of_memory(x, w, y):
        raise torch.OutOfMemoryError("CUDA out of memory")

    def broken(x, w, y):
        raise ValueError("bad | shape\nsecond line")

    assert huge_k.measure_in_process(out_of_memory, x, w, y, 1, huge_k.CPU) == (
        "failed: out of memory"
    )
    assert huge_k.measure_in_process(broken, x, w, y, 1, huge_k.CPU) == (
        "failed: ValueError: bad / shape"
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_linear_cpu_time_prints_every_loss_and_its_ratios(dtype):
    args = ("--n", "16", "--d", "8", "--k", "3000", "--calls", "1", "--dtype", dtype)
    text = _run("linear_cpu_time", *args)
    for name in ("linear_lr_loss", "linear_ss_lr_loss", "linear_hs_lr_loss", "linear_sr_loss"):
        assert name in text
    assert "x ss-lr" in text and "x CE" in text
    assert ("F.linear_cross_entropy (default)" in text) == (dtype == "bfloat16")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hs_lr_floor_prints_every_part_and_the_floors(tmp_path, dtype):
    out = tmp_path / "floor.md"
    args = ("--n", "16", "--d", "8", "--k", "3000", "--rounds", "1", "--out", str(out))
    text = _run("hs_lr_floor", *args, "--dtype", dtype, timeout=300)
    for name in (
        "linear_hs_lr_loss",
        "linear_ss_lr_loss (compiled=True)",
        "count pass, fused by torch.compile",
        "eager: LR + one logits pass",
        "compiled: compiled SS-LR",
        f"{dtype} inputs (the products in ",
        "A count pass on bf16 logits for float32 inputs",
        "- within the bound 2u ||x|| ||w_k||: ",
    ):
        assert name in text
    assert out.read_text().startswith("# HS-LR against SS-LR")


def test_keras_speed_quick_prints_every_backend_loss_target_and_trace_count():
    """One process per Keras backend, tiny shapes; writes nothing."""
    text = _run("keras_speed", "--quick", timeout=300)
    for name in (
        "### jax",
        "### tensorflow",
        "### torch",
        "keras CE (sparse)",
        "ops.top_k(n) alone",
        "frlr hs-lr, multi-hot",
        "frlr hs-sr, index",
        "vs one top_k + 2x CE",
        "floor: softplus + sigmoid alone",
        "x its floor (",
        "frlr ss-lr, index, XLA",
        "x keras BCE",
        "| frlr ss-lr, index | 1 | 2 |",
        "Retracing: none (the torch backend runs eagerly).",
    ):
        assert name in text, name
    assert "failed" not in text and "wrote" not in text


def test_huge_k_shapes_parse_and_refuse_bad_text():
    import argparse

    from benchmarks.huge_k import parse_shapes

    assert parse_shapes("1024x256x100000,8x2x5") == [(1024, 256, 100000), (8, 2, 5)]
    for bad in ("12x3", "axbxc", "1x0x5", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shapes(bad)


def test_budget_losses_take_the_best_other_lr_family_loss_on_validation_only():
    from benchmarks.budget_losses import budget_losses

    def entry(point, score):
        return {"point": point, "scores": [score]}

    tuned = {
        "chosen": {
            "sr": {"lr": 0.1},
            "ss-lr": {"head_bias_init": "zero", "lr": 0.03},
            "lr:head-bias-init=prior": {"lr": 0.03},
            "lr": {"head_bias_init": "zero", "lr": 0.1},
            "hs-lr": {"head_bias_init": "prior", "lr": 0.03},
            "ss-lr:r=0": {"head_bias_init": "prior", "lr": 0.01},
        },
        "validation": {
            "lr": {"a": entry({"lr": 0.1, "head_bias_init": "zero"}, 0.05)},
            # a better score at a setting not chosen must not count
            "hs-lr": {
                "a": entry({"lr": 0.03, "head_bias_init": "prior"}, 0.07),
                "b": entry({"lr": 0.1, "head_bias_init": "prior"}, 0.99),
            },
            "ss-lr:r=0": {"a": entry({"lr": 0.01, "head_bias_init": "prior"}, 0.06)},
        },
        # test metrics exist in a real tune.json; the choice must not read them
        "summary": {"ss-lr:r=0": {"top1_mean": 0.99}},
    }
    specs, best = budget_losses(tuned)
    assert best == "hs-lr"
    assert specs == [
        "sr:lr=0.1",
        "ss-lr:head-bias-init=zero:lr=0.03",
        "lr:head-bias-init=prior:lr=0.03",
        "hs-lr:head-bias-init=prior:lr=0.03",
    ]
    # LR tuned to the prior bias is the prior baseline: not a candidate
    tuned["chosen"]["lr"] = {"head_bias_init": "prior", "lr": 0.1}
    tuned["validation"]["lr"]["a"]["point"] = {"head_bias_init": "prior", "lr": 0.1}
    tuned["validation"]["lr"]["a"]["scores"] = [0.5]
    assert budget_losses(tuned)[1] == "hs-lr"
    # a variant's own options stay in its spec beside the chosen settings
    tuned["validation"]["ss-lr:r=0"]["a"]["scores"] = [0.9]
    specs, best = budget_losses(tuned)
    assert (best, specs[-1]) == ("ss-lr:r=0", "ss-lr:head-bias-init=prior:lr=0.01:r=0")
    del tuned["chosen"]["sr"]
    with pytest.raises(ValueError, match="sr"):
        budget_losses(tuned)
    tuned["in_progress"] = "step 1 of 3, 2 of 7 tuning runs finished"
    with pytest.raises(ValueError, match="still in progress"):
        budget_losses(tuned)


def test_paired_runs_pairs_by_seed_and_says_what_it_left_out(tmp_path, capsys):
    paired_runs = _import_benchmark("paired_runs")
    from frlr.io import write_json_atomic

    def run(side: str, seed: int, top1: float) -> None:
        config = {"seed": seed, "loss": "lr", "dataset": "digits"}
        result = {"metrics": {"top1": top1}, "config": config, "epochs": 1}
        write_json_atomic(tmp_path / side / f"x-seed{seed}" / "result.json", result)

    for seed in range(6):
        run("a", seed, 0.30 + seed / 100)
        run("b", seed, 0.25 + seed / 100)  # A is 5 points higher on every seed
    run("a", 9, 0.5)  # only on one side
    (tmp_path / "b" / "x-seed7").mkdir()  # unfinished: skipped
    paired_runs.main([str(tmp_path / "a" / "*"), str(tmp_path / "b" / "*")])
    text = capsys.readouterr().out
    assert "left out (one side only): seeds 9" in text
    assert "A - B: +5.00 ± 0.00 points; A higher on 6 of 6 seeds; Wilcoxon p = 0.0312" in text
    with pytest.raises(SystemExit, match="no test metric 'mAP'"):
        paired_runs.main([str(tmp_path / "a" / "*"), str(tmp_path / "b" / "*"), "--metric", "mAP"])
