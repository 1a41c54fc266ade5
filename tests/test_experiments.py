"""Tests for frlr.experiments: compare (runs, skipping, tables), the paired Wilcoxon test, the
task interface and the tiny models.

Real training runs on a fabricated 10-class 8x8 task (60 training images, ~0.1 s a run); the
table arithmetic is checked with a stand-in trainer whose accuracies are known.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import frlr.train as train_module
from frlr.data import ImageArrays
from frlr.experiments import mean_std, min_two_sided_p, paired_wilcoxon
from frlr.experiments.compare import RunOptions, compare, parse_losses, parse_seeds
from frlr.experiments.stats import seeds_needed, significance_footnote
from frlr.io import write_json_atomic
from frlr.models import build_model
from frlr.tasks import (
    KNOWN_TASKS,
    TASKS,
    ClassificationTask,
    EvalData,
    Task,
    UnsupportedTaskError,
    get_task,
)
from frlr.train import ConfigError, resolve_config


@pytest.fixture
def fabricated_digits(monkeypatch):
    def load(name, split, *args, **kwargs):
        n = 60 if split == "train" else 40
        rng = np.random.default_rng(0 if split == "train" else 1)
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 8, 8, 1), dtype=np.uint8)
        images[np.arange(n), labels // 4 * 3, labels % 4 * 2, 0] = 255
        return ImageArrays(images, labels.astype(np.int64), list("0123456789"))

    monkeypatch.setattr(train_module, "load_dataset", load)


def base_config(**overrides):
    values = {"dataset": "digits", "arch": "mlp", "epochs": 2, "threads": 1}
    values.update(overrides)
    return resolve_config("cpu", **values)


class FakeTrainer:
    """Stands in for frlr.train.train: writes a result.json with the given top-1 per run."""

    def __init__(self, top1):
        self.top1 = top1  # (loss, seed) -> accuracy
        self.calls = []

    def __call__(self, config, resume=False, progress=None, log=None):
        self.calls.append((config.loss, config.seed))
        result = {
            "metrics": {"top1": self.top1[config.loss, config.seed], "top5": 1.0},
            "train_loss": 0.1,
            "epochs": config.epochs,
            "wall_time_s": 1.5,
            "config": vars(config),
        }
        write_json_atomic(Path(config.out) / "result.json", result)
        return result


# --------------------------------------------------------------------------- compare


def test_compare_trains_every_pair_and_writes_the_tables(tmp_path, fabricated_digits, capsys):
    results = compare(
        base_config(),
        ["sr", "ss-lr"],
        2,
        tmp_path / "cmp",
        run=RunOptions(preset="cpu", progress=False),
    )
    out = tmp_path / "cmp"
    assert sorted(p.name for p in out.iterdir()) == [
        "results.csv",
        "results.json",
        "results.md",
        "sr-seed0",
        "sr-seed1",
        "ss-lr-seed0",
        "ss-lr-seed1",
    ]
    for run in ("sr-seed0", "ss-lr-seed1"):
        assert (out / run / "result.json").exists()
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert [(r["loss"], r["seed"]) for r in on_disk["runs"]] == [
        ("sr", 0),
        ("ss-lr", 0),
        ("sr", 1),
        ("ss-lr", 1),
    ]
    sr_top1 = [r["top1"] for r in on_disk["runs"] if r["loss"] == "sr"]
    summary = on_disk["summary"]
    assert summary["sr"]["top1_mean"] == pytest.approx(np.mean(sr_top1))
    assert summary["sr"]["top1_std"] == pytest.approx(np.std(sr_top1, ddof=1))
    assert "p_value" in summary["ss-lr"] and "p_value" not in summary["sr"]
    assert summary["ss-lr"]["wall_time_s_mean"] > 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {"loss", "seed", "top1", "top5", "wall_time_s"} <= set(rows[0])
    markdown = (out / "results.md").read_text()
    assert "| SS-LR |" in markdown and "p vs SR" in markdown and "at least 6 seeds" in markdown
    printed = capsys.readouterr().out
    assert "[4/4] ss-lr  seed 1" in printed and "results.md" in printed


def test_rerunning_compare_skips_finished_runs(tmp_path, fabricated_digits, monkeypatch):
    out = tmp_path / "cmp"
    compare(base_config(), ["sr", "lr"], 2, out, run=RunOptions(log=None))
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert len(stamps) == 4

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("frlr.experiments.compare.train", must_not_train)
    results = compare(
        base_config(), ["sr", "lr"], 2, out, run=RunOptions(log=None, train_fn=must_not_train)
    )
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == stamps
    assert {r["status"] for r in results["runs"]} == {"reused"}


def test_an_interrupted_run_resumes_and_a_changed_config_is_refused(tmp_path, fabricated_digits):
    out = tmp_path / "cmp"
    config = base_config(loss="lr", seed=0, out=str(out / "lr-seed0"))
    train_module.train(config, stop_after=1, log=None)  # as if killed after epoch 1
    results = compare(base_config(), ["sr", "lr"], 1, out, run=RunOptions(log=None))
    assert [r["status"] for r in results["runs"]] == ["trained", "resumed"]
    with pytest.raises(ConfigError, match=r"another config.*epochs: 2 != 3"):
        compare(base_config(epochs=3), ["sr", "lr"], 1, out, run=RunOptions(log=None))


def test_summary_arithmetic_and_wilcoxon_with_a_stand_in_trainer(tmp_path):
    top1 = {("sr", s): 0.80 + 0.01 * s for s in range(6)}
    top1.update({("ss-lr", s): 0.85 + 0.01 * s for s in range(6)})  # better on every seed
    top1.update({("lr", s): top1["sr", s] for s in range(6)})  # identical to SR
    fake = FakeTrainer(top1)
    results = compare(
        base_config(), ["sr", "lr", "ss-lr"], 6, tmp_path, run=RunOptions(log=None, train_fn=fake)
    )
    assert len(fake.calls) == 18
    summary = results["summary"]
    assert summary["ss-lr"]["top1_mean"] == pytest.approx(0.875)
    assert summary["ss-lr"]["p_value"] == pytest.approx(0.03125)  # 2 / 2^6: exact, all positive
    assert summary["lr"]["p_value"] == 1.0
    assert summary["lr"]["p_note"] == "identical on every seed"
    assert "at least 6 seeds" not in results["footnote"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| LR | 82.50 ± 1.87 | 100.00 ± 0.00 | 1 (identical on every seed) | 6 | 1.5 |" in (
        markdown
    )


def test_compare_without_the_baseline_tests_against_the_first_loss(tmp_path):
    top1 = {(loss, s): 0.5 for loss in ("lr", "hs-lr") for s in range(2)}
    results = compare(
        base_config(),
        ["lr", "hs-lr"],
        2,
        tmp_path,
        run=RunOptions(log=None, train_fn=FakeTrainer(top1)),
    )
    assert results["baseline"] == "lr" and results["summary"]["hs-lr"]["p_value"] == 1.0


def test_loss_hyperparameters_reach_only_the_losses_that_take_them(tmp_path):
    top1 = {(loss, 0): 0.5 for loss in ("sr", "hs-lr", "ss-lr")}
    fake = FakeTrainer(top1)
    run_options = RunOptions(log=None, train_fn=fake)
    base = base_config().__class__(**{**vars(base_config()), "m": 50.0, "r": 3.0})
    compare(base, ["sr", "hs-lr", "ss-lr"], 1, tmp_path, run=run_options)
    configs = {
        p.parent.name: json.loads(p.read_text())["config"] for p in tmp_path.glob("*/result.json")
    }
    assert (configs["sr-seed0"]["m"], configs["sr-seed0"]["r"]) == (None, None)
    assert (configs["hs-lr-seed0"]["m"], configs["hs-lr-seed0"]["r"]) == (50.0, None)
    assert (configs["ss-lr-seed0"]["m"], configs["ss-lr-seed0"]["r"]) == (None, 3.0)
    only_sr = base_config().__class__(**{**vars(base_config()), "m": 50.0})
    with pytest.raises(ConfigError, match="--m applies to none of the losses sr,lr"):
        compare(only_sr, ["sr", "lr"], 1, tmp_path / "x", run=run_options)


def test_parse_losses_and_seeds():
    assert parse_losses("SR, hs_lr,ss-lr") == ("sr", "hs-lr", "ss-lr")
    assert parse_seeds(3) == (0, 1, 2) and parse_seeds("2") == (0, 1)
    assert parse_seeds("0,4,7") == (0, 4, 7)
    for bad, message in [
        ("sr,focal", "unknown loss 'focal'"),
        ("sr,sr", "twice"),
        (",", "no loss"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_losses(bad)
    for bad in ("0", "a", "1,1", "-1,2"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


# --------------------------------------------------------------------------- statistics


def test_wilcoxon_of_identical_values_is_one_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        test = paired_wilcoxon([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert test.p_value == 1.0 and test.n == 3


def test_wilcoxon_exact_values_and_ties():
    assert paired_wilcoxon([1, 2, 3], [0, 0, 0]).p_value == pytest.approx(0.25)
    tied = paired_wilcoxon([1, 2, 3, 5], [1, 0, 0, 0])
    assert tied.p_value == pytest.approx(0.25) and "1 tied pair" in tied.note
    assert paired_wilcoxon([], []).p_value is None
    with pytest.raises(ValueError, match="paired"):
        paired_wilcoxon([1, 2], [1])


def test_attainable_p_and_the_footnote():
    assert min_two_sided_p(3) == 0.25 and min_two_sided_p(6) == 0.03125
    assert seeds_needed() == 6
    assert "smallest attainable p is 0.25" in significance_footnote(3, "top-1", "SR")
    assert "attainable" not in significance_footnote(6, "top-1", "SR")
    assert mean_std([1.0]) == (1.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


# --------------------------------------------------------------------------- tasks and models


def test_classification_task_follows_the_protocol_and_scores_a_model():
    task = get_task("classification")
    assert isinstance(task, Task) and isinstance(task, ClassificationTask)
    assert task.primary_metric == "top1"

    class Constant(torch.nn.Module):  # scores class k as k: ranks 9, 8, 7, ... for any image
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(4, 10)
            with torch.no_grad():
                self.classifier.weight.zero_()
                self.classifier.bias.copy_(torch.arange(10.0))

        def forward(self, x):
            return self.classifier(x.flatten(1))

    model = Constant()
    images = torch.zeros(20, 1, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([9] * 5 + [5] * 5 + [0] * 10)
    data = EvalData({"test": (images, labels)}, transform=lambda x: x.float(), batch_size=7)
    assert task.metrics(model, data) == {"top1": 0.25, "top5": 0.5}
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert int(task.batch_correct(logits, torch.tensor([1, 1]))) == 1


def test_every_task_of_the_paper_is_implemented():
    assert {get_task(name).name for name in KNOWN_TASKS} == set(KNOWN_TASKS) == set(TASKS)
    assert issubclass(UnsupportedTaskError, NotImplementedError)
    with pytest.raises(ValueError, match="unknown task 'x'"):
        get_task("x")


@pytest.mark.parametrize("name", ["small-cnn", "mlp"])
def test_small_models_follow_the_zoo_interface(name):
    model = build_model(name, 10, in_channels=1, head_bias_init="prior", image_size=8)
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 10)
    assert model.features(x).shape == (3, model.feature_dim)
    assert torch.allclose(model.classifier.bias, torch.full((10,), -math.log(9)))
    assert build_model("resnet20", 10).classifier.out_features == 10
    with pytest.raises(ValueError, match="unknown arch 'vgg'"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="needs image_size"):
        build_model("mlp", 10)
