"""Tests for ``frlr sweep --param num-classes --losses ...``: one curve per loss or loss variant
over the number of classes, its table and figure, resumption, shared sweep dirs, partial runs.

One real sweep on the bundled digits (mlp, 1 epoch, K = 2 and 10, three curves, 2 seeds: a few
seconds) is shared by the module; the rest use a stand-in trainer.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from typing import ClassVar

import pytest
import torch

from frlr.cli import main
from frlr.config import ConfigError, resolve_config
from frlr.experiments.compare import RunOptions
from frlr.experiments.sweep import (
    LossSpec,
    ncd_ratio_at_init,
    parse_data_param,
    parse_data_values,
    parse_loss_specs,
    run_dir_name,
    sweep_losses,
)
from loss_reference import reference_loss
from test_sweep import FakeTrainer as SweepFakeTrainer

TINY = ["--dataset", "digits", "--arch", "mlp", "--preset", "cpu", "--epochs", "1"]
CURVES = "sr,lr,ss-lr:r=0"


def base_config(**overrides):
    values = {"dataset": "digits", "arch": "mlp", "epochs": 1, "threads": 1}
    values.update(overrides)
    return resolve_config("cpu", **values)


class FakeTrainer(SweepFakeTrainer):
    """Stands in for frlr.train.train: top-1 = K / 100 + a per-loss offset + seed / 1000."""

    OFFSET: ClassVar[dict[str, float]] = {"sr": 0.0, "lr": -0.05, "hs-lr": -0.02, "ss-lr": 0.01}

    def call(self, config):
        return (config.loss, config.r, config.num_classes, config.seed)

    def top1(self, config):
        top1 = config.num_classes / 100 + self.OFFSET[config.loss] + config.seed / 1000
        return top1 + (0.005 if config.r == 0 else 0.0)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "k"
    argv = ["sweep", "--param", "num-classes", "--values", "2,10", "--losses", CURVES]
    assert main([*argv, "--seeds", "2", *TINY, "--threads", "1", "--out", str(out)]) == 0
    return out


def test_a_real_sweep_trains_every_curve_value_and_seed_and_writes_the_files(swept):
    slugs = ("sr", "lr", "ss-lr_r0")
    runs = [
        run_dir_name(s, "num_classes", k, seed) for s in slugs for k in (2, 10) for seed in (0, 1)
    ]
    tables = ["sweep.csv", "sweep.json", "sweep.md", "sweep_num_classes.png"]
    names = sorted(p.name for p in swept.iterdir() if not p.name.startswith("."))
    assert names == sorted([*runs, *tables])
    assert (swept / "sweep_num_classes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for k in (2, 10):
        config = json.loads((swept / f"ss-lr_r0-num_classes{k}-seed1" / "config.json").read_text())
        assert (config["loss"], config["r"], config["num_classes"]) == ("ss-lr", 0.0, k)
    results = json.loads((swept / "sweep.json").read_text())
    assert results["kind"] == "sweep-losses" and results["baseline"] == "sr"
    assert results["losses"] == ["sr", "lr", "ss-lr:r=0"] and results["seeds"] == [0, 1]
    assert [(row["value"], row["loss"]) for row in results["summary"]] == [
        (k, loss) for k in (2, 10) for loss in ("sr", "lr", "ss-lr:r=0")
    ]
    rows = list(csv.DictReader((swept / "sweep.csv").read_text().splitlines()))
    assert len(rows) == 6 and rows[0]["num_classes"] == "2" and rows[2]["loss"] == "ss-lr:r=0"
    assert "| 10 | ss-lr:r=0 |" in (swept / "sweep.md").read_text()


def test_frlr_report_points_a_loss_sweep_to_its_own_tables(swept, capsys):
    assert main(["report", str(swept), "--no-tsne"]) == 2
    assert "its report is sweep.md and sweep_num_classes.png" in capsys.readouterr().err


def test_the_gap_is_paired_by_seed(swept):
    results = json.loads((swept / "sweep.json").read_text())
    top1 = {(r["loss"], r["value"], r["seed"]): r["top1"] for r in results["runs"]}
    for row in results["summary"]:
        assert row["n"] == 2
        if row["loss"] == "sr":
            assert row["delta_mean"] is None
            continue
        gaps = [top1[row["loss"], row["value"], s] - top1["sr", row["value"], s] for s in (0, 1)]
        assert row["delta_mean"] == pytest.approx(sum(gaps) / 2)
        assert row["delta_std"] == pytest.approx(abs(gaps[0] - gaps[1]) / 2**0.5)
        assert row["delta_n"] == 2


def test_rerunning_reuses_and_no_train_rebuilds_from_partial_runs(swept, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    argv = ["sweep", "--param", "num-classes", "--values", "2,10", "--losses", CURVES, *TINY]
    assert main([*argv, "--seeds", "2", "--threads", "1", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == stamps
    # one run lost (a process still at it): the rebuild skips it and says n = 1 there
    shutil.rmtree(out / "lr-num_classes10-seed1")
    (out / "sweep_num_classes.png").unlink()
    assert main([*argv, "--seeds", "2", "--out", str(out), "--no-train"]) == 0
    assert not (out / "lr-num_classes10-seed1").exists()
    summary = json.loads((out / "sweep.json").read_text())["summary"]
    lr10 = next(row for row in summary if (row["loss"], row["value"]) == ("lr", 10))
    assert (lr10["n"], lr10["delta_n"]) == (1, 1)
    assert (out / "sweep_num_classes.png").exists()


def test_processes_over_disjoint_seeds_share_the_sweep_dir(tmp_path):
    fake = FakeTrainer()
    run_options = RunOptions(log=None, train_fn=fake)
    base = base_config()
    sweep_losses(base, "num_classes", "3,10", "sr,lr", [1], tmp_path, run=run_options)
    results = sweep_losses(base, "num_classes", "3,10", "sr,lr", [0], tmp_path, run=run_options)
    assert fake.calls == [
        ("sr", None, 3, 1),
        ("lr", None, 3, 1),
        ("sr", None, 10, 1),
        ("lr", None, 10, 1),
        ("sr", None, 3, 0),
        ("lr", None, 3, 0),
        ("sr", None, 10, 0),
        ("lr", None, 10, 0),
    ]  # seed by seed, the smallest K first; the second process found the first's runs
    assert results["seeds"] == [0, 1] and {row["n"] for row in results["summary"]} == {2}
    lr3 = results["summary"][1]
    assert lr3["delta_mean"] == pytest.approx(-0.05)
    assert lr3["top1_mean"] == pytest.approx(0.03 - 0.05 + 0.0005)
    with pytest.raises(ConfigError, match=r"another config \(lr: 0.05 != 0.5"):
        sweep_losses(base_config(lr=0.5), "num_classes", "3", "sr", [0], tmp_path, run=run_options)


def test_a_figure_draws_from_a_sweep_with_missing_points(tmp_path):
    fake = FakeTrainer()
    run_options = RunOptions(log=None, train_fn=fake)
    base = base_config()
    sweep_losses(base, "num_classes", "2,5", "sr,ss-lr,ss-lr:r=0", [0], tmp_path, run=run_options)
    shutil.rmtree(tmp_path / "sr-num_classes5-seed0")  # no baseline at K = 5
    shutil.rmtree(tmp_path / "ss-lr-num_classes2-seed0")
    (tmp_path / "sweep_num_classes.png").unlink()
    results = sweep_losses(
        base,
        "num_classes",
        "2,5",
        "sr,ss-lr,ss-lr:r=0",
        [0],
        tmp_path,
        run=run_options,
        train_runs=False,
    )
    by = {(row["loss"], row["value"]): row for row in results["summary"]}
    assert by["sr", 5]["n"] == 0 and by["sr", 5]["wall_time_s_mean"] is None
    assert by["ss-lr:r=0", 5]["delta_mean"] is None  # nothing to pair with
    assert by["ss-lr:r=0", 2]["delta_mean"] == pytest.approx(0.01 + 0.005)
    assert (tmp_path / "sweep_num_classes.png").exists()
    assert "| 5 | sr | n/a | n/a | — | — | 1 | 0 | n/a |" in (tmp_path / "sweep.md").read_text()


def test_loss_specs_are_parsed_and_named():
    specs = parse_loss_specs("sr, LR ,ss-lr:r=0,hs-lr:m=100:beta=5")
    assert [s.key for s in specs] == ["sr", "lr", "ss-lr:r=0", "hs-lr:beta=5:m=100"]
    assert [s.slug for s in specs] == ["sr", "lr", "ss-lr_r0", "hs-lr_beta5_m100"]
    assert specs[2] == LossSpec("ss-lr", (("r", 0.0),))
    assert [s.label for s in specs[2:]] == ["SS-LR (r = 0)", "HS-LR (beta = 5, m = 100)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sr,softmax", "unknown loss 'softmax'"),
        (
            "lr:r=0",
            "'r=0' in 'lr:r=0' is not key=value for a hyper-parameter of lr (its "
            "hyper-parameters: none)",
        ),
        ("hs-lr:r=1", "of hs-lr (its hyper-parameters: beta, m)"),
        ("ss-lr:r", "'r' in 'ss-lr:r' is not key=value"),
        ("ss-lr:r=x", "r in 'ss-lr:r=x' must be a number"),
        ("ss-lr:r=inf", "r in 'ss-lr:r=inf' must be finite"),
        ("ss-lr:r=1:r=2", "'ss-lr:r=1:r=2' sets r twice"),
        ("ss-lr:r=-1", "'ss-lr:r=-1': r must be >= 0"),
        ("sr,ss-lr:r=0,ss-lr:r=0.0", "names one curve twice: 'ss-lr:r=0' and 'ss-lr:r=0.0'"),
        (" , ", "--losses names no loss"),
    ],
)
def test_bad_loss_specs_say_which_and_why(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_loss_specs(text)


def test_data_param_and_values_are_checked():
    assert parse_data_param("num-classes") == parse_data_param("num_classes") == "num_classes"
    with pytest.raises(ConfigError, match="it varies one of: num-classes"):
        parse_data_param("k")
    base = base_config()
    assert parse_data_values("2, 5,10", "num_classes", base) == (2, 5, 10)
    for values, message in [
        ("2,x", "--values must be integers like 10,25,50, got '2,x'"),
        ("", "--values names no value"),
        ("5,5", "--values names a value twice: 5,5"),
        ("1,5", "--values: num-classes = 1: num_classes must be at least 2"),
        ("11", "num-classes = 11: num_classes 11 is more than the 10 classes of 'digits'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_data_values(values, "num_classes", base)
    with pytest.raises(ConfigError, match="--num-classes 5 conflicts with the sweep"):
        sweep_losses(base_config(num_classes=5), "num_classes", "3", "sr", 1, "unused")


def reference_ratio(name: str, k: int, **hyper) -> float:
    """Positive over negative |dL/dz| of the float64 reference loss at equal (zero) logits,
    by autograd: an independent route to the step-0 NCD ratio. At equal logits every row has
    the same gradient magnitudes, so two rows give the ratio of K rows (the plain-loop reference
    takes 25 s for 200 rows of 200 classes)."""
    logits = torch.zeros(2, k, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, k - 1])
    if name == "sr":
        torch.nn.functional.cross_entropy(logits, targets).backward()
    else:
        reference_loss(name, logits, targets, **hyper).backward()
    grad = logits.grad.abs()
    positive = grad[0, 0] + grad[1, k - 1]
    return float(positive / (grad.sum() - positive))


@pytest.mark.parametrize("k", [2, 10, 200])
@pytest.mark.parametrize(
    "spec", ["sr", "lr", "hs-lr", "ss-lr", "ss-lr:r=0", "hs-lr:m=100", "ss-lr:beta=5"]
)
def test_the_ncd_ratio_at_init_matches_the_reference(spec, k):
    (parsed,) = parse_loss_specs(spec)
    # tiny-imagenet's 200 classes allow every K; validation loads no data
    config = base_config(dataset="tiny-imagenet", loss=parsed.name, num_classes=k)
    config = replace(config, **dict(parsed.options))
    ratio = ncd_ratio_at_init(config)
    assert ratio == pytest.approx(reference_ratio(parsed.name, k, **dict(parsed.options)))
    if spec == "lr":
        assert ratio == pytest.approx(1 / (k - 1))
    if spec in ("ss-lr:r=0", "hs-lr:m=100"):
        assert ratio == pytest.approx(1 / 10)  # every negative weighted beta/(K-1): 1/beta


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    for option in ("--losses", "ss-lr:r=0", "--no-train", "num-classes"):
        assert option in text
    argv = ["sweep", "--values", "2", *TINY]
    assert main([*argv, "--param", "m", "--losses", "sr"]) == 2
    assert "--param m does not apply to loss 'sr'" in capsys.readouterr().err
    assert main([*argv, "--param", "m", "--no-train"]) == 2
    assert "--no-train reads the runs of a sweep over --losses" in capsys.readouterr().err
    assert main([*argv, "--param", "num-classes", "--loss", "lr"]) == 2
    assert "--loss is for hyper-parameter sweeps" in capsys.readouterr().err
    assert main([*argv, "--param", "num-classes", "--losses", "sr:m=5"]) == 2
    assert "not key=value for a hyper-parameter of sr" in capsys.readouterr().err


def test_a_run_another_process_is_training_is_skipped(tmp_path):
    import fcntl

    fake = FakeTrainer()
    messages = []
    lock = tmp_path / run_dir_name("lr", "num_classes", 3, 0) / ".lock"  # frlr.io.run_lock
    lock.parent.mkdir()
    with open(lock, "w") as held:  # another process training lr at K = 3, seed 0
        fcntl.flock(held, fcntl.LOCK_EX)
        results = sweep_losses(
            base_config(),
            "num_classes",
            "3",
            "sr,lr",
            [0],
            tmp_path,
            run=RunOptions(log=messages.append, train_fn=fake),
        )
    assert fake.calls == [("sr", None, 3, 0)]
    assert "[2/2] lr num-classes=3 seed 0: being trained by another process, skipped" in messages
    assert [row["n"] for row in results["summary"]] == [1, 0]
    quiet = RunOptions(log=None, train_fn=fake)
    sweep_losses(base_config(), "num_classes", "3", "sr,lr", [0], tmp_path, run=quiet)
    assert fake.calls == [("sr", None, 3, 0), ("lr", None, 3, 0)]  # released: trained now
