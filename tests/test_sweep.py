"""Tests for ``frlr sweep``: every (value, seed) run, the table and plot, resumption through
compare's machinery, and clear errors for a bad --param or --values.

One real sweep on the bundled digits (mlp, 1 epoch, 2 values x 2 seeds: a few seconds) is
shared by the module; errors and config checks use a stand-in trainer.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frlr.cli import main
from frlr.experiments.compare import RunOptions
from frlr.experiments.sweep import (
    default_value,
    parse_param,
    parse_values,
    run_dir_name,
    sweep,
)
from frlr.io import write_json_atomic
from frlr.train import ConfigError, resolve_config

TINY = ["--dataset", "digits", "--arch", "mlp", "--preset", "cpu", "--epochs", "1"]


def base_config(**overrides):
    values = {"dataset": "digits", "arch": "mlp", "epochs": 1, "threads": 1}
    values.update(overrides)
    return resolve_config("cpu", **values)


class FakeTrainer:
    """Stands in for frlr.train.train: a result.json whose top-1 is the value / 100."""

    def __init__(self):
        self.calls = []

    def call(self, config):
        """What ``calls`` records of a run."""
        return (config.m, config.r, config.seed)

    def top1(self, config):
        value = config.m if config.m is not None else config.r
        return value / 100 + config.seed / 1000

    def __call__(self, config, resume=False, progress=None, log=None):
        self.calls.append(self.call(config))
        result = {
            "metrics": {"top1": self.top1(config), "top5": 1.0},
            "train_loss": 0.1,
            "epochs": config.epochs,
            "wall_time_s": 1.0,
            "config": vars(config),
        }
        write_json_atomic(Path(config.out) / "result.json", result)
        return result


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A real sweep of HS-LR's m over 10,100 with 2 seeds, run through the CLI."""
    out = tmp_path_factory.mktemp("sweep") / "m"
    argv = ["sweep", "--param", "m", "--values", "10,100", "--seeds", "2", *TINY]
    assert main([*argv, "--threads", "1", "--out", str(out), "--no-report"]) == 0
    return out


def test_sweep_trains_every_value_and_seed_and_writes_the_tables(swept):
    names = sorted(p.name for p in swept.iterdir())
    runs = [run_dir_name("hs-lr", "m", v, s) for v in (10.0, 100.0) for s in (0, 1)]
    assert names == sorted([*runs, "sweep.csv", "sweep.json", "sweep.md", "sweep_m.png"])
    assert runs[0] == "hs-lr-m10-seed0"
    saved = json.loads((swept / "sweep.json").read_text())
    assert (saved["kind"], saved["loss"], saved["param"]) == ("sweep", "hs-lr", "m")
    assert saved["values"] == [10.0, 100.0] and saved["seeds"] == [0, 1]
    assert saved["command"].startswith("frlr sweep --param m --values 10,100")
    for run in saved["runs"]:
        result = json.loads((Path(run["run_dir"]) / "result.json").read_text())
        assert result["loss_options"]["m"] == run["value"] and result["seed"] == run["seed"]
    top1 = [r["top1"] for r in saved["runs"] if r["value"] == 100.0]
    assert saved["summary"]["100"]["top1_mean"] == pytest.approx(np.mean(top1))
    assert saved["summary"]["100"]["top1_std"] == pytest.approx(np.std(top1, ddof=1))
    assert saved["baseline"] == "10"  # the default m = 25 is not swept: the first value
    assert "p_value" in saved["summary"]["100"] and "p_value" not in saved["summary"]["10"]
    rows = list(csv.DictReader((swept / "sweep.csv").open()))
    assert len(rows) == 4 and {"param", "value", "seed", "top1", "wall_time_s"} <= set(rows[0])
    markdown = (swept / "sweep.md").read_text()
    assert "| m | top-1 (%) | top-5 (%) | p vs m = 10 |" in markdown and "| 100 |" in markdown
    with Image.open(swept / "sweep_m.png") as image:
        image.verify()


def test_rerunning_a_sweep_skips_finished_runs(swept):
    stamps = {p: p.stat().st_mtime_ns for p in swept.glob("*/result.json")}

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    results = sweep(
        base_config(),
        "m",
        "10,100",
        2,
        swept,
        run=RunOptions(preset="cpu", log=None, train_fn=must_not_train),
    )
    assert {r["status"] for r in results["runs"]} == {"reused"}
    assert {p: p.stat().st_mtime_ns for p in swept.glob("*/result.json")} == stamps


def test_a_finished_run_with_another_config_is_refused(tmp_path):
    fake = FakeTrainer()
    run_options = RunOptions(log=None, train_fn=fake)
    sweep(base_config(), "r", [0, 2], 1, tmp_path, run=run_options)
    assert fake.calls == [(None, 0.0, 0), (None, 2.0, 0)]
    with pytest.raises(ConfigError, match=r"another config.*lr"):
        sweep(base_config(lr=0.5), "r", [0, 2], 1, tmp_path, run=run_options)


def test_the_defaults_pick_the_paper_loss_and_baseline(tmp_path):
    assert parse_param("m") == ("m", "hs-lr") and parse_param("r") == ("r", "ss-lr")
    assert parse_param("beta", "hs-sr") == ("beta", "hs-sr")
    assert default_value("hs-lr", "m") == 25.0 and default_value("ss-lr", "r") == 2.0
    results = sweep(
        base_config(), "m", "5,25,50", 2, tmp_path, run=RunOptions(log=None, train_fn=FakeTrainer())
    )
    assert results["baseline"] == "25" and list(results["summary"]) == ["5", "25", "50"]
    assert results["summary"]["50"]["top1_mean"] == pytest.approx(0.5005)
    assert results["summary"]["50"]["value"] == 50.0


@pytest.mark.parametrize(
    ("param", "loss", "message"),
    [
        ("q", None, "unknown --param 'q'; a sweep varies one of: beta, m, r"),
        ("m", "sr", "does not apply to loss 'sr' (its hyper-parameters: none)"),
        ("r", "hs-lr", "--param r does not apply to loss 'hs-lr' (its hyper-parameters: beta, m)"),
        ("m", "softmax", "unknown --loss 'softmax'"),
    ],
)
def test_a_bad_param_names_the_valid_ones(param, loss, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_param(param, loss)


@pytest.mark.parametrize(
    ("values", "param", "loss", "message"),
    [
        ("5,x", "m", "hs-lr", "--values must be numbers like 5,10,25, got '5,x'"),
        ("", "m", "hs-lr", "--values names no value"),
        ("5,5.0", "m", "hs-lr", "--values names a value twice: 5,5"),
        ("0,10", "m", "hs-lr", "m = 0 for hs-lr: m is a percentage"),
        ("101", "m", "hs-lr", "m = 101 for hs-lr"),
        ("-1", "r", "ss-lr", "r = -1 for ss-lr: r must be >= 0"),
        ("nan", "beta", "ss-lr", "beta must be finite"),
    ],
)
def test_bad_values_say_which_and_why(values, param, loss, message):
    with pytest.raises(ConfigError, match=message):
        parse_values(values, param, loss)


def test_conflicting_options_are_refused(tmp_path):
    fake = FakeTrainer()
    run_options = RunOptions(log=None, train_fn=fake)
    with pytest.raises(ConfigError, match="--m 50 conflicts with the sweep over m"):
        sweep(base_config(loss="hs-lr", m=50), "m", "10", 1, tmp_path, run=run_options)
    with pytest.raises(ConfigError, match="--r does not apply to loss 'hs-lr'"):
        sweep(base_config(loss="ss-lr", r=1), "m", "10", 1, tmp_path, run=run_options)
    with pytest.raises(ConfigError, match="--baseline 30 is not one of --values 10,20"):
        sweep(base_config(), "m", "10,20", 1, tmp_path, baseline=30, run=run_options)
    assert fake.calls == []


def test_cli_sweep_help_and_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--param", "--values", "--loss", "--seeds", "--no-report", "--weight-decay"):
        assert option in text
    assert main(["sweep", "--param", "m", "--loss", "sr", "--values", "5", *TINY]) == 2
    assert "does not apply to loss 'sr'" in capsys.readouterr().err
    assert main(["sweep", "--param", "r", "--values", "1,two", *TINY]) == 2
    assert "--values must be numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --values is required
        main(["sweep", "--param", "m"])
    assert "--values" in capsys.readouterr().err
