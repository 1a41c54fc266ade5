"""Tests for ``--reuse-runs``: finished runs of an earlier experiment copied in for runs with the
same result-affecting config (``frlr.experiments.reuse``), and nothing else."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from frlr.cli import main
from frlr.config import ConfigError, resolve_config
from frlr.experiments.compare import RunOptions, run_or_reuse
from frlr.experiments.field_sweep import sweep_field
from frlr.experiments.figures import value_curves_figure
from frlr.experiments.reuse import find_finished
from frlr.experiments.tune import tune
from frlr.io import write_json_atomic, write_text_atomic

QUICK = ["--dataset", "digits", "--preset", "cpu", "--threads", "1", "--epochs", "1"]
QUICK += ["--max-steps-per-epoch", "2", "--no-progress"]


def digits(**overrides):
    values = {"dataset": "digits", "epochs": 1, "threads": 1, "max_steps_per_epoch": 2}
    return resolve_config("cpu", **{**values, **overrides})


class Trainer:
    """Stands in for frlr.train.train: writes a result whose score encodes the config."""

    def __init__(self):
        self.configs = []

    def __call__(self, config, resume=False, progress=None, log=None):
        self.configs.append(config)
        score = config.lr + config.epochs / 100 + config.seed / 1000
        result = {
            "metrics": {"top1": score, "top5": 1.0},
            "train_loss": 0.1,
            "epochs": config.epochs,
            "wall_time_s": 1.0,
            "config": vars(config),
        }
        if config.val_fraction:
            result["val_metrics"] = {"top1": score, "top5": 1.0}
        write_json_atomic(Path(config.out) / "config.json", vars(config))
        write_text_atomic(Path(config.out) / "metrics.jsonl", json.dumps({"epoch": 1}) + "\n")
        write_json_atomic(Path(config.out) / "result.json", result)
        return result


def test_a_budget_sweep_copies_the_tunes_final_runs_and_trains_only_the_rest(tmp_path):
    base = digits(val_fraction=0.2)
    tuned = tune(
        base,
        ["lr=0.1,0.03"],
        "sr",
        seeds=2,
        out=tmp_path / "tune",
        run=RunOptions(train_fn=Trainer(), log=None),
    )
    assert tuned["chosen"]["sr"] == {"lr": 0.1}
    trainer = Trainer()
    said = []
    run = RunOptions(train_fn=trainer, log=said.append, reuse_from=(tmp_path / "tune",))
    results = sweep_field(
        digits(lr=0.1), "epochs", "1,2", "sr", seeds=2, out=tmp_path / "budget", run=run
    )
    assert sorted((c.epochs, c.seed) for c in trainer.configs) == [(2, 0), (2, 1)]
    assert any(line.startswith("4 runs, in ") for line in said)  # not "of 1 epochs": swept
    for seed in (0, 1):
        copied = next(Path(tmp_path / "budget").glob(f"*epochs1*seed{seed}"))
        result = json.loads((copied / "result.json").read_text())
        source = Path(result["copied_from"])
        assert source.parent.name == "final"  # the tune's full-data run, never a tuning run
        assert result["config"]["out"] == str(copied)
        assert json.loads((copied / "config.json").read_text())["out"] == str(copied)
        assert (copied / "metrics.jsonl").read_text() == (source / "metrics.jsonl").read_text()
        assert result["metrics"] == json.loads((source / "result.json").read_text())["metrics"]
        assert not (copied / "checkpoint.pt").exists()
    assert len(results["runs"]) == 4
    assert "sgd, cosine schedule, batch" in (tmp_path / "budget" / "sweep.md").read_text()
    again = Trainer()  # a second call reuses its own copies, copying and training nothing
    sweep_field(
        digits(lr=0.1),
        "epochs",
        "1,2",
        "sr",
        seeds=2,
        out=tmp_path / "budget",
        run=replace(run, train_fn=again),
    )
    assert again.configs == []


def test_only_a_finished_run_of_the_same_config_stands_in(tmp_path):
    config = digits(lr=0.1, out=str(tmp_path / "new" / "sr"))
    other = tmp_path / "old"
    Trainer()(replace(config, lr=0.03, out=str(other / "other-lr")))  # another lr
    damaged = other / "damaged"
    Trainer()(replace(config, out=str(damaged)))
    (damaged / "result.json").write_text("{not json")
    unfinished = other / "unfinished"
    write_json_atomic(unfinished / "config.json", vars(config))
    assert find_finished(config, [other]) is None
    trainer = Trainer()
    status, _ = run_or_reuse(config, RunOptions(train_fn=trainer, log=None, reuse_from=(other,)))
    assert status == "trained" and len(trainer.configs) == 1
    # the same config at another --out, or one differing only where it runs, does stand in
    Trainer()(replace(config, out=str(other / "same"), threads=2, data_dir="/elsewhere"))
    assert find_finished(replace(config, out=str(tmp_path / "x")), [other]) == other / "same"


def test_a_run_with_a_checkpoint_resumes_instead_of_being_replaced(tmp_path):
    config = digits(out=str(tmp_path / "new"))
    Trainer()(replace(config, out=str(tmp_path / "old" / "done")))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "checkpoint.pt").write_bytes(b"x")
    trainer = Trainer()
    run = RunOptions(train_fn=trainer, log=None, reuse_from=(tmp_path / "old",))
    assert run_or_reuse(config, run)[0] == "resumed" and len(trainer.configs) == 1


def test_compare_reuse_runs_copies_a_real_run_and_says_so(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    compare = ["compare", *QUICK, "--losses", "sr", "--seeds", "1", "--no-report", "--out"]
    assert main([*compare, str(first)]) == 0
    capsys.readouterr()
    assert main([*compare, str(second), "--reuse-runs", str(first)]) == 0
    assert f"copied from {first / 'sr-seed0'}" in capsys.readouterr().out
    a = json.loads((first / "sr-seed0" / "result.json").read_text())
    b = json.loads((second / "sr-seed0" / "result.json").read_text())
    assert a["metrics"] == b["metrics"] and b["copied_from"] == str(first / "sr-seed0")
    assert json.loads((second / "results.json").read_text())["runs"][0]["status"] == "copied"


def test_a_missing_reuse_folder_is_one_line_and_exit_2(tmp_path, capsys):
    argv = ["compare", *QUICK, "--losses", "sr", "--seeds", "1", "--out", str(tmp_path / "a")]
    assert main([*argv, "--reuse-runs", str(tmp_path / "nowhere")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"--reuse-runs {tmp_path / 'nowhere'}: no such folder")
    )
    assert not (tmp_path / "a").exists()


def test_a_rewritten_result_is_read_again_not_served_from_the_lookup_cache(tmp_path):
    trainer = Trainer()
    config = digits(out=str(tmp_path / "old" / "run"))
    trainer(config)
    wanted = replace(config, out=str(tmp_path / "new"))
    assert find_finished(wanted, [tmp_path / "old"]) == tmp_path / "old" / "run"
    result_path = tmp_path / "old" / "run" / "result.json"
    result = json.loads(result_path.read_text())
    result["config"]["lr"] = 0.5
    write_json_atomic(result_path, result)
    assert find_finished(wanted, [tmp_path / "old"]) is None


def test_no_train_tabulates_the_finished_runs_of_a_field_sweep_and_trains_nothing(tmp_path):
    trainer = Trainer()
    run = RunOptions(train_fn=trainer, log=None)
    full = sweep_field(digits(lr=0.1), "epochs", "1,2", "sr,lr", seeds=2, out=tmp_path, run=run)
    assert len(trainer.configs) == 8
    for name in ("lr-epochs2-seed1", "sr-epochs2-seed1"):  # an interrupted sweep
        (tmp_path / name / "result.json").unlink()
    said = []
    idle = RunOptions(train_fn=Trainer(), log=said.append)
    partial = sweep_field(
        digits(lr=0.1), "epochs", "1,2", "sr,lr", seeds=2, out=tmp_path, run=idle, train_runs=False
    )
    assert not idle.train_fn.configs
    assert "--no-train: tables from the 6 of 8 runs that have finished" in said
    assert partial["summary"]["lr"]["1"]["n"] == 2 and partial["summary"]["lr"]["2"]["n"] == 1
    assert partial["gaps"]["lr"]["2"]["n"] == 1
    assert partial["summary"]["lr"]["1"] == full["summary"]["lr"]["1"]
    assert (tmp_path / "sweep_epochs.png").exists() and (tmp_path / "sweep.md").exists()
    # a run trained with another recipe is not a point of this sweep
    with pytest.raises(ConfigError, match="another config"):
        sweep_field(
            digits(lr=0.2), "epochs", "1", "sr", seeds=1, out=tmp_path, run=idle, train_runs=False
        )


def test_a_field_sweep_rewrites_its_tables_after_every_run_it_trains(tmp_path):
    """An interrupted sweep (a budget curve that spans sessions) has tables of what it
    finished: before each run is trained, sweep.json holds every run finished before it."""
    seen = []
    trainer = Trainer()

    def watching(config, **kwargs):
        table = tmp_path / "sweep.json"
        seen.append(len(json.loads(table.read_text())["runs"]) if table.exists() else 0)
        return trainer(config, **kwargs)

    said = []
    run = RunOptions(train_fn=watching, log=said.append)
    sweep_field(digits(lr=0.1), "epochs", "1,2", "sr,lr", seeds=1, out=tmp_path, run=run)
    assert seen == [0, 1, 2, 3]
    assert (tmp_path / "sweep_epochs.png").exists() and (tmp_path / "sweep_epochs_gap.png").exists()
    assert sum("results: " in line for line in said) == 1  # the table is said once, at the end
    assert len(json.loads((tmp_path / "sweep.json").read_text())["runs"]) == 4


def test_cli_no_train_over_a_field_sweep_with_nothing_finished_says_so(tmp_path, capsys):
    argv = ["sweep", "--param", "lr", "--values", "0.1,0.03", "--losses", "sr,lr", *QUICK]
    assert main([*argv, "--seeds", "1", "--out", str(tmp_path), "--no-train"]) == 2
    assert "none of the 4 runs" in capsys.readouterr().err
    assert not (tmp_path / "sweep.md").exists()


def test_a_curve_figure_with_no_finished_point_says_so_without_a_legend_warning(tmp_path):
    curves = [{"label": "LR", "loss": "lr", "points": [(6, None, None, 0), (12, None, None, 0)]}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = value_curves_figure(
            curves, tmp_path / "gap.png", param="epochs", metric="top1", ylabel="gap"
        )
    assert path.stat().st_size > 0


class Paused(Trainer):
    """Epochs of 60 s, the first one suspended for ten minutes (a CI run on the same cores);
    ``times`` sets other epoch times."""

    times: tuple[float, ...] = ()

    def __call__(self, config, **kwargs):
        result = super().__call__(config, **kwargs)
        times = list(self.times) or [600.0] + [60.0] * (config.epochs - 1)
        lines = [json.dumps({"epoch": e + 1, "epoch_time_s": t}) for e, t in enumerate(times)]
        write_text_atomic(Path(config.out) / "metrics.jsonl", "\n".join(lines) + "\n")
        result["wall_time_s"] = sum(times)
        write_json_atomic(Path(config.out) / "result.json", result)
        return result


def test_the_time_left_comes_from_a_typical_epoch_not_one_paused_for_ten_minutes(tmp_path):
    """A run suspended for a while (a CI run on the same cores) must not make the estimate of
    the rest ten times too long: the median epoch time of the runs trained is used."""

    said = []
    run = RunOptions(train_fn=Paused(), log=said.append)
    sweep_field(digits(lr=0.1), "epochs", "3", "sr", seeds=2, out=tmp_path, run=run)
    first = next(line for line in said if line.startswith("[1/"))
    assert first.endswith("about 3 min left")  # 3 epochs left at 60 s, not at 240 s


def test_the_time_left_counts_the_evaluation_epochs(tmp_path):
    """Evaluating every third epoch makes those epochs longer: a median alone would leave them
    out and read short (~5% on Tiny ImageNet)."""

    class Evaluating(Paused):
        times = (50.0, 50.0, 80.0)

    said = []
    sweep_field(
        digits(lr=0.1),
        "epochs",
        "3",
        "sr",
        seeds=2,
        out=tmp_path,
        run=RunOptions(train_fn=Evaluating(), log=said.append),
    )
    first = next(line for line in said if line.startswith("[1/"))
    assert first.endswith("about 3 min left")  # 3 epochs at 60 s on average, not 50 s


def test_the_time_left_is_shared_with_a_process_training_another_run(tmp_path):
    """Two processes sharing OUT share what is left: where another process holds a run's lock,
    the estimate is halved (it read twice the real time before) and says so."""
    import fcntl

    held = tmp_path / "sr-epochs3-seed1"
    held.mkdir(parents=True)
    # another process: its own open file, its own lock, released when that process finishes
    with open(held / ".lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        said = []

        def log(line):
            said.append(line)
            if "waiting for it last" in line:
                handle.close()

        run = RunOptions(train_fn=Paused(), log=log)
        sweep_field(digits(lr=0.1), "epochs", "3", "sr", seeds=3, out=tmp_path, run=run)
    first = next(line for line in said if line.startswith("[1/"))
    assert first.endswith("about 3 min left (2 processes)")  # 6 epochs left, 60 s, two of us
    assert (held / "result.json").exists()
