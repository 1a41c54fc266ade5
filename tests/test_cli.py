"""Tests for the ``frlr`` command, called in-process as ``main([...])``: every command parses
and runs on the bundled digits with tiny budgets, bad input exits with status 2 and a message
that says what to do, and ``frlr`` with no arguments runs the main job."""

from __future__ import annotations

import json

import pytest

from frlr.cli import MAIN_JOB, main

TINY = ["--dataset", "digits", "--arch", "mlp", "--preset", "cpu", "--epochs", "1"]


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "compare", "presets", "demo"):
        assert command in text


def test_train_help_shows_every_config_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--weight-decay", "--no-augment", "--bf16", "--milestones", "--resume", "--m"):
        assert option in text


def test_train_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--loss", "hs-lr", "--m", "50", "--seed", "1", "--out", str(out)]
    assert main([*args, "--epochs", "2", "--stop-after", "1"]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["loss_options"] == {"beta": 10.0, "m": 50.0} and result["seed"] == 1
    assert result["epochs"] == 2
    assert "done in" in capsys.readouterr().out


def test_train_dry_run_prints_the_resolved_config(capsys):
    argv = ["train", "--preset", "paper", "--dataset", "tiny-imagenet", "--lr", "0.05"]
    assert main([*argv, "--no-flip", "--milestones", "0.3,0.6", "--dry-run"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["batch_size"] == 64 and config["lr"] == 0.05 and config["flip"] is False
    assert config["milestones"] == [0.3, 0.6]
    assert config["out"] == "runs/tiny-imagenet-resnet32-sr-seed0"


def test_compare_runs_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--losses", "sr,ss-lr", "--seeds", "2", "--out", str(out)]
    assert main(argv) == 0
    for name in ("results.json", "results.csv", "results.md"):
        assert (out / name).exists()
    printed = capsys.readouterr().out
    assert "| SS-LR |" in printed and str(out / "results.md") in printed
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


def test_no_arguments_runs_the_main_job(monkeypatch, capsys):
    calls = []

    def spy(base, losses, seeds, out, **kwargs):
        calls.append((base, losses, seeds, out, kwargs))
        return {}

    monkeypatch.setattr("frlr.experiments.compare.compare", spy)
    assert main([]) == 0
    (base, losses, seeds, out, kwargs), *_ = calls
    assert (base.dataset, base.arch, kwargs["run"].preset) == ("digits", "small-cnn", "cpu")
    assert losses == ("sr", "lr", "hs-lr", "ss-lr") and seeds == (0, 1, 2) and out is None
    assert base.epochs == 15 and base.threads == 1
    assert MAIN_JOB["preset"] == "cpu"
    assert main(["--seeds", "5"]) == 0  # options without a command go to the main job
    assert calls[-1][2] == (0, 1, 2, 3, 4)


def test_demo_runs_for_real_with_a_tiny_budget(tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--arch", "mlp", "--losses", "sr", "--seeds", "1", "--epochs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "results.md").exists() and (out / "sr-seed0" / "result.json").exists()


def test_presets_lists_and_shows(capsys):
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert "paper" in listing and "cpu" in listing and "reid-paper" in listing
    assert main(["presets", "paper", "--dataset", "tiny-imagenet"]) == 0
    assert json.loads(capsys.readouterr().out)["batch_size"] == 64


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "nope"], "unknown dataset 'nope'; known:"),
        (["train", "--arch", "vgg16"], "unknown arch 'vgg16'; known:"),
        (["train", "--loss", "focal"], "unknown loss 'focal'; known: sr, lr"),
        (["train", "--loss", "sr", "--m", "30"], "--m does not apply to loss 'sr'"),
        (["train", "--preset", "fastest"], "unknown preset 'fastest'"),
        (["train", "--preset", "missing/file.toml"], "preset file missing/file.toml"),
        (["compare", "--losses", "sr,focal"], "unknown loss 'focal'"),
        (["compare", "--seeds", "x"], "--seeds must be a count"),
        (["compare", "--dataset", "mosaic-tiny-imagenet", "--losses", "sr,lr"], "'sr' does not"),
        (["compare", "--task", "classification", "--dataset", "market1501"], "is a reid dataset"),
        (["train", "--mixup", "-1"], "mixup must be non-negative, got -1.0"),
        (["train", "--cutmix", "inf"], "cutmix must be finite, got inf"),
        (["train", "--label-smoothing", "1"], "label_smoothing must be in [0, 1), got 1.0"),
        (["compare", "--losses", "sr,hs-sr", "--label-smoothing", "0.1"], "loss 'hs-sr'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"frlr {argv[0]}: error: ") and message in error


def test_missing_data_says_how_to_get_it(tmp_path, capsys):
    argv = ["train", "--dataset", "tiny-imagenet", "--preset", "cpu", "--out", str(tmp_path / "r")]
    assert main([*argv, "--data-dir", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert "tiny-imagenet not found" in error and "--download" in error and "--data-dir" in error


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "expected a finite integer, got 'many'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--beta", "-1"], "--beta must be >= 0, got -1.0"),
        (["compare", "--baseline", "nosuchloss"], "--baseline 'nosuchloss' is not one of"),
        (["compare", "--losses", "sr,lr", "--baseline", "hs-lr"], "losses compared (sr,lr)"),
        (["compare", "--m", "150"], "--m is a percentage of the negative classes in (0, 100]"),
        (["train", "--loss", "ss-lr", "--r", "inf"], "--r must be finite and >= 0, got inf"),
        (["train", "--loss", "ss-lr", "--beta", "nan"], "--beta must be finite and >= 0"),
        (["train", "--loss", "hs-lr", "--m", "nan"], "--m must be finite and in (0, 100]"),
        (["train", "--lr", "inf"], "lr must be finite, got inf"),
        (["sweep", "--param", "r", "--values", "0,2", "--beta", "inf"], "--beta must be finite"),
        (["sweep", "--param", "r", "--values", "0,inf"], "r must be finite"),
    ],
)
def test_a_bad_field_exits_2_before_anything_runs(argv, message, tmp_path, monkeypatch, capsys):
    """Every field is checked before data is loaded or a run starts: one error line naming
    the flag and its range, no traceback, nothing written."""

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the bad field was found")

    monkeypatch.setattr("frlr.train.load_dataset", no_data)
    out = tmp_path / "out"
    argv = [*argv, "--dataset", "digits", "--preset", "cpu", "--out", str(out)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"frlr {argv[0]}: error: ") and message in error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not out.exists()
