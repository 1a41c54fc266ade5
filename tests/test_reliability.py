"""Faults a user meets on the command line, each ending in one line that names the file, what
is wrong and what to do: a damaged dataset archive, a checkpoint that does not load, a full
disk; and concurrent runs on one ``--out``, which share the work under a per-run lock that a
crashed holder cannot leave behind (docs/RELIABILITY.md lists every such fault).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import frlr.io as io_module
from frlr.cli import main
from frlr.data import CorruptImageError, DataError
from frlr.experiments.compare import RunOptions, _run_config, compare
from frlr.io import CheckpointError, NoSpaceError, lock_holder, run_lock, save_torch_atomic
from frlr.rundir import RunFileError, read_result
from frlr.train import _restore_generator
from test_data_errors import MEMBER, damage_member, tiny_zip
from test_experiments import FakeTrainer, base_config

REPO = Path(__file__).resolve().parents[1]


def digits_train(out: Path, *extra: str) -> list[str]:
    """``frlr train`` on the bundled digits: the mlp, 2 epochs, a few seconds."""
    return [
        "train", "--dataset", "digits", "--preset", "cpu", "--arch", "mlp", "--epochs", "2",
        "--threads", "1", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    error = capsys.readouterr().err
    assert error.startswith(f"frlr {command}: error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    return error


# --------------------------------------------------------------------------- data errors


def damaged_tiny_imagenet(tmp_path: Path) -> tuple[list[str], Path]:
    archive = tiny_zip(tmp_path)
    damage_member(archive, MEMBER)
    argv = [
        "train", "--dataset", "tiny-imagenet", "--preset", "cpu", "--arch", "mlp",
        "--image-size", "8", "--epochs", "1", "--data-dir", str(tmp_path / "data"),
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    return argv, archive


def test_a_damaged_archive_member_exits_1_naming_archive_and_member(tmp_path, capsys):
    argv, archive = damaged_tiny_imagenet(tmp_path)
    assert main(argv) == 1
    error = one_error_line(capsys, "train")
    assert f"{MEMBER} in {archive}" in error and "does not decompress" in error
    assert "delete it and download it again" in error


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(tmp_path, monkeypatch, how):
    argv, _ = damaged_tiny_imagenet(tmp_path)
    if how == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("FRLR_DEBUG", "1")
    with pytest.raises(DataError, match="does not decompress"):
        main(argv)


def test_a_truncated_image_exits_1_naming_it(tmp_path, capsys):
    root = tmp_path / "images"
    for split, name in (("train", "a"), ("train", "b"), ("val", "a")):
        folder = root / split / name
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "0.png")
    bad = root / "train" / "b" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])
    argv = ["train", "--dataset", "imagefolder", "--preset", "cpu", "--arch", "mlp"]
    argv += ["--data-dir", str(root), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 1
    error = one_error_line(capsys, "train")
    assert str(bad) in error and "replace it" in error
    assert issubclass(CorruptImageError, DataError)


# --------------------------------------------------------------------------- checkpoints


def stopped_run(tmp_path: Path) -> tuple[list[str], Path]:
    argv = digits_train(tmp_path / "run")
    assert main([*argv, "--stop-after", "1"]) == 0
    return argv, tmp_path / "run" / "checkpoint.pt"


class RunsCode:
    """Pickles to a call of ``os.system``: what weights_only loading must refuse."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:1000]), "cannot be loaded"),
        (lambda path: torch.save({"weights": torch.zeros(2)}, path), "not a frlr training"),
        (lambda path: torch.save({"epoch": RunsCode()}, path), "cannot be loaded (Unpickling"),
        (lambda path: path.write_bytes(pickle.dumps([1, 2], protocol=2)), "cannot be loaded"),
    ],
    ids=["cut-short", "foreign", "runs-code", "plain-pickle"],
)
def test_a_checkpoint_that_does_not_load_exits_1_naming_it(tmp_path, capsys, spoil, words):
    argv, checkpoint = stopped_run(tmp_path)
    capsys.readouterr()
    spoil(checkpoint)
    assert main([*argv, "--resume"]) == 1
    error = one_error_line(capsys, "train")
    assert str(checkpoint) in error and words in error
    assert "delete it to start the run afresh" in error and "weights_only" not in error


def test_checkpoint_error_is_a_data_error_with_its_parts(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError) as caught:
        io_module.load_checkpoint(path)
    assert isinstance(caught.value, DataError) and caught.value.path == str(path)


def test_a_run_resumed_on_another_kind_of_device_warns_and_finishes(tmp_path, capsys):
    """A CUDA generator's state cannot enter a CPU generator: the streams are reseeded, with a
    warning, and the run finishes (checked here by giving a CPU run CUDA-sized states)."""
    argv, checkpoint = stopped_run(tmp_path)
    state = torch.load(checkpoint, weights_only=True)
    cuda_like = torch.zeros(16, dtype=torch.uint8)  # Philox: seed and offset
    state["shuffle_generator"] = cuda_like
    for rank_state in state["rng"]:
        rank_state["augment"] = cuda_like
    save_torch_atomic(state, checkpoint)
    with pytest.warns(UserWarning, match="another kind of device.*reseeded"):
        assert main([*argv, "--resume"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs"] == 2 and result["test_top1"] > 0.3


def test_restore_generator_sets_a_same_kind_state_and_reseeds_another():
    source = torch.Generator().manual_seed(5)
    target = torch.Generator()
    assert _restore_generator(target, source.get_state(), seed=9)
    assert torch.equal(torch.rand(3, generator=target), torch.rand(3, generator=source))
    assert not _restore_generator(target, torch.zeros(16, dtype=torch.uint8), seed=9)
    reseeded = torch.Generator().manual_seed(9)
    assert torch.equal(torch.rand(3, generator=target), torch.rand(3, generator=reseeded))


# --------------------------------------------------------------------------- full disk


class FullDisk:
    """``open`` for frlr.io whose files refuse every write with ENOSPC, for chosen names."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def __call__(self, path, mode="r", **kwargs):
        handle = open(path, mode, **kwargs)  # noqa: SIM115 (closed by the context manager)
        if any(name in str(path) for name in self.names):
            handle.write = self.refuse  # type: ignore[method-assign]
        return handle

    @staticmethod
    def refuse(data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("name", ["config.json", "checkpoint.pt"])
def test_a_full_disk_exits_1_saying_so_and_naming_the_file(tmp_path, monkeypatch, capsys, name):
    monkeypatch.setattr(io_module, "open", FullDisk((name,)), raising=False)
    assert main(digits_train(tmp_path / "run")) == 1
    error = one_error_line(capsys, "train")
    assert f"no space left on device writing {tmp_path / 'run' / name}" in error
    assert [p for p in (tmp_path / "run").glob(".*tmp*")] == []  # no temporary file left


def test_save_torch_atomic_on_a_full_disk_raises_no_space_error(tmp_path, monkeypatch):
    """torch's own writer would say ``inline_container.cc: unexpected pos``."""
    monkeypatch.setattr(io_module, "open", FullDisk(("ckpt",)), raising=False)
    with pytest.raises(NoSpaceError) as caught:
        save_torch_atomic({"model": torch.zeros(1000)}, tmp_path / "ckpt.pt")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "ckpt.pt")
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_keep_their_traceback(tmp_path, monkeypatch):
    def broken(path, mode="r", **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(io_module, "open", broken, raising=False)
    with pytest.raises(OSError, match="Input/output error"):
        main(digits_train(tmp_path / "run"))


# --------------------------------------------------------------------------- run locks


def test_run_lock_is_exclusive_and_names_its_holder(tmp_path):
    with run_lock(tmp_path / "run", wait=False) as held:
        assert held
        with run_lock(tmp_path / "run", wait=False) as second:
            assert not second
        assert lock_holder(tmp_path / "run") == f"pid {os.getpid()} on {os.uname().nodename}"
    with run_lock(tmp_path / "run", wait=False) as again:
        assert again


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    """flock is released by the kernel when the holder dies, kill -9 included."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from frlr.io import run_lock\n"
            f"with run_lock({str(tmp_path / 'run')!r}, wait=True):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with run_lock(tmp_path / "run", wait=False) as held:
            assert not held
        assert lock_holder(tmp_path / "run").startswith(f"pid {holder.pid} ")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with run_lock(tmp_path / "run", wait=False) as held:
            assert held
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_compare_skips_a_run_another_process_trains_then_reuses_it(tmp_path, capsys):
    """The run held elsewhere is left to its holder and waited for after the others: trained
    once, and results.json lists every run."""
    base, out = base_config(), tmp_path / "cmp"
    top1 = {("sr", 0): 0.5, ("lr", 0): 0.6}
    other, ours = FakeTrainer(top1), FakeTrainer(top1)
    holding, ours_done = threading.Event(), threading.Event()

    def other_process() -> None:
        config = _run_config(base, "sr", 0, out)
        with run_lock(config.out, wait=True):
            holding.set()
            ours_done.wait(timeout=60)
            other(config)

    def train_fn(config, **kwargs):
        result = ours(config, **kwargs)
        ours_done.set()
        return result

    thread = threading.Thread(target=other_process)
    thread.start()
    assert holding.wait(timeout=30)
    try:
        results = compare(
            base, ["sr", "lr"], 1, out, run=RunOptions(train_fn=train_fn, progress=False)
        )
    finally:
        ours_done.set()
        thread.join(timeout=60)
    assert ours.calls == [("lr", 0)] and other.calls == [("sr", 0)]
    statuses = {(run["loss"], run["status"]) for run in results["runs"]}
    assert statuses == {("sr", "reused"), ("lr", "trained")}
    on_disk = json.loads((out / "results.json").read_text())
    assert sorted(run["loss"] for run in on_disk["runs"]) == ["lr", "sr"]
    assert "is training it; waiting for it last" in capsys.readouterr().out


@pytest.mark.slow
def test_two_compare_processes_on_one_out_train_each_run_once(tmp_path):
    out = tmp_path / "cmp"
    argv = [
        sys.executable, "-m", "frlr.cli", "compare", "--dataset", "digits", "--preset", "cpu",
        "--arch", "mlp", "--losses", "sr,lr,hs-lr,ss-lr", "--seeds", "1", "--epochs", "1",
        "--threads", "1", "--no-progress", "--no-report", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    first = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    second = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    lines = [line for stdout, _ in outputs for line in stdout.splitlines() if "seed 0:" in line]
    trained = [line for line in lines if "(finished before)" not in line]
    assert len(lines) == 8 and len(trained) == 4, lines  # each run trained by one process
    for run in ("sr", "lr", "hs-lr", "ss-lr"):
        history = (out / f"{run}-seed0" / "metrics.jsonl").read_text().splitlines()
        assert len(history) == 1, run
    listed = json.loads((out / "results.json").read_text())["runs"]
    assert sorted(run["loss"] for run in listed) == ["hs-lr", "lr", "sr", "ss-lr"]


# --------------------------------------------------------------------------- runs on disk (R rows)

TINY = [
    "--dataset", "digits", "--preset", "cpu", "--arch", "mlp", "--threads", "1", "--epochs", "1",
    "--max-steps-per-epoch", "2", "--no-progress",
]  # fmt: skip
EXPERIMENTS = {
    # command line; runs in training order: (directory, results-table row label, seed)
    "compare": (
        ["compare", *TINY, "--losses", "sr,lr", "--seeds", "2", "--no-report"],
        [
            ("sr-seed0", "SR", 0),
            ("lr-seed0", "LR", 0),
            ("sr-seed1", "SR", 1),
            ("lr-seed1", "LR", 1),
        ],
    ),
    "sweep": (
        ["sweep", *TINY, "--param", "r", "--values", "1,2", "--seeds", "2", "--no-report"],
        [
            ("ss-lr-r1-seed0", "1", 0),
            ("ss-lr-r2-seed0", "2", 0),
            ("ss-lr-r1-seed1", "1", 1),
            ("ss-lr-r2-seed1", "2", 1),
        ],
    ),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """A finished comparison and a finished one-loss sweep, each 2 groups x 2 seeds."""
    made = {}
    for command, (argv, _) in EXPERIMENTS.items():
        out = tmp_path_factory.mktemp(command) / "exp"
        assert main([*argv, "--out", str(out)]) == 0
        made[command] = out
    return made


def damage(run: Path, kind: str) -> None:
    """Spoil ``run``'s result.json as ``kind`` says, or delete the run."""
    path = run / "result.json"
    if kind == "deleted":
        shutil.rmtree(run)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00\x8f garbage \xff")
    elif kind == "wrong-type":
        path.write_text("[1, 2]")
    elif kind == "missing-key":
        path.write_text('{"status": "finished"}')  # the issue's: no config, no metrics


def table_row(markdown: str, label: str) -> str:
    """The results table's row of group ``label`` (the first table of the report)."""
    return next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))


@pytest.mark.parametrize("kind", ["truncated", "garbage", "wrong-type", "missing-key", "deleted"])
@pytest.mark.parametrize("position", [0, 3], ids=["first", "last"])
@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_a_damaged_or_missing_run_is_named_and_never_counted(
    finished, tmp_path, capsys, command, position, kind
):
    """R2-R6: whatever spoils a run's result, at either end of a compare or sweep, the report
    names it in the runs column ("1 of 2; seed 0 damaged"), averages the sound seed alone and
    lists the file; rerunning the command names the file and what to do (exit 1), or trains
    a deleted run again (exit 0)."""
    argv, runs = EXPERIMENTS[command]
    out = tmp_path / "exp"
    shutil.copytree(finished[command], out)
    name, label, seed = runs[position]
    other = next(r for r in runs if r[1] == label and r[2] != seed)[0]
    sound = json.loads((out / other / "result.json").read_text())["metrics"]["top1"]
    damage(out / name, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["report", "--no-tsne", str(out)]) == 0
    markdown = (out / "report" / "report.md").read_text()
    word = "missing" if kind == "deleted" else "damaged"
    row = table_row(markdown, label)
    assert f"| 1 of 2; seed {seed} {word} |" in row
    assert f"| {100 * sound:.2f} |" in row and "±" not in row  # the sound seed alone
    assert f"{out / name}" in markdown and "of 4 runs finished" in markdown
    capsys.readouterr()
    status = main([*argv, "--out", str(out)])
    if kind == "deleted":
        assert status == 0 and (out / name / "result.json").exists()
    else:
        assert status == 1
        error = one_error_line(capsys, command)
        assert f"{out / name / 'result.json'}:" in error and "delete it and rerun" in error


def test_a_result_of_another_run_is_damaged_not_counted_twice(finished, tmp_path):
    """R7: seed 1's result.json copied over seed 0's: the summary held seed 1 twice."""
    out = tmp_path / "exp"
    shutil.copytree(finished["compare"], out)
    shutil.copy(out / "sr-seed1" / "result.json", out / "sr-seed0" / "result.json")
    with pytest.warns(UserWarning, match="differ from config.json's"):
        assert main(["report", "--no-tsne", str(out)]) == 0
    row = table_row((out / "report" / "report.md").read_text(), "SR")
    assert "| 1 of 2; seed 0 damaged |" in row and "±" not in row


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_a_damaged_config_or_history_beside_a_sound_result_is_listed(finished, tmp_path, name):
    """R8: the run still counts (its result is sound); the damaged file is named."""
    out = tmp_path / "exp"
    shutil.copytree(finished["compare"], out)
    (out / "lr-seed1" / name).write_text("[1, 2]\n")
    with pytest.warns(UserWarning, match=re.escape(str(out / "lr-seed1" / name))):
        assert main(["report", "--no-tsne", str(out)]) == 0
    markdown = (out / "report" / "report.md").read_text()
    assert "| 2 |" in table_row(markdown, "LR") and str(out / "lr-seed1" / name) in markdown


SOUND = '{"config": {"dataset": "d", "loss": "sr", "seed": 0}, "metrics": {}}'


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{", "is not valid JSON"),
        ("", "is empty"),
        ("[1, 2]", "the file is a list, not a JSON object"),
        ('{"status": "finished"}', "has no 'config'"),
        ('{"config": {"dataset": "digits", "loss": "sr", "seed": 0}}', "has no 'metrics'"),
        ('{"config": [], "metrics": {}}', "'config' is a list"),
        ('{"config": {"loss": "sr", "seed": 0}, "metrics": {}}', "'config' has no 'dataset'"),
        ('{"config": {"dataset": "d", "loss": "sr", "seed": "0"}, "metrics": {}}', "'seed' is a"),
        ('{"config": {"dataset": "d", "loss": "sr", "seed": 0, "lr": "x"}, "metrics": {}}', "'lr'"),
        (SOUND[:-1] + ', "metrics": {"top1": "x"}}', "metric 'top1' is a string"),
        (SOUND[:-1] + ', "epochs": "2"}', "'epochs' is '2'"),
        (SOUND[:-1] + ', "seed": 1}', "not one run's"),
        (SOUND[:-1] + ', "status": "running"}', "'status' is 'running'"),
    ],
)  # fmt: skip
def test_result_json_is_checked_against_its_schema(tmp_path, content, words):
    """R9: every way a result.json can be wrong is a RunFileError naming it and what to do;
    keys this version does not know (a newer frlr's) pass."""
    path = tmp_path / "run" / "result.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(RunFileError) as caught:
        read_result(path)
    assert str(path) in str(caught.value) and words in str(caught.value)
    assert "delete it and rerun" in str(caught.value) and isinstance(caught.value, DataError)
    sound = {"config": {"dataset": "d", "loss": "sr", "seed": 0}, "metrics": {"top1": 0.5}}
    path.write_text(json.dumps({**sound, "val_metrics": {"top1": 0.4}, "split": {"val": 0.1}}))
    assert read_result(path)["val_metrics"] == {"top1": 0.4}


@pytest.mark.parametrize("content", ["{", "[1, 2]", '{"status": "finished"}'])
def test_resuming_a_finished_run_with_a_damaged_result_exits_1_naming_it(tmp_path, capsys, content):
    """R10: was a JSONDecodeError, TypeError or KeyError: 'config' traceback."""
    argv = digits_train(tmp_path / "run", "--epochs", "1", "--max-steps-per-epoch", "2")
    assert main(argv) == 0
    (tmp_path / "run" / "result.json").write_text(content)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 1
    error = one_error_line(capsys, "train")
    assert f"{tmp_path / 'run' / 'result.json'}:" in error and "delete it and rerun" in error


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train", "--seed", "4294967296"], "seed must be in 0..4294967295"),
        (["train", "--seed", "99999999999999999999"], "seed must be in 0..4294967295"),
        (["train", "--seed", "-1"], "seed must be in 0..4294967295"),
        (["compare", "--seeds", "0,4294967296"], "give the same generator state"),
        (["compare", "--seeds", "3,3"], "seed 3 is named twice"),
        (["compare", "--seeds", "99999999999999999999"], "a count from 1 to 10000"),
        (["sweep", "--param", "m", "--values", "5", "--seeds", "1,4294967297"], "same generator"),
    ],
    ids=["alias", "overflow", "negative", "alias-list", "twice", "huge-count", "sweep-alias"],
)
def test_seeds_outside_the_generators_range_or_aliasing_exit_2(tmp_path, capsys, argv, words):
    """R1: seed 2**32 trained seed 0's run again (numpy and torch's CPU generator keep 32 bits),
    and compare counted it as a second seed; 1e20 was an OverflowError."""
    command = argv[0]
    assert main([*argv, *TINY, "--out", str(tmp_path / "out")]) == 2
    assert words in one_error_line(capsys, command)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_resume_with_other_threads_is_refused_or_recorded(tmp_path, capsys):
    """R11: --resume --threads 2 of a run trained with 1 thread mixed the run silently and
    rewrote config.json; now it is refused naming the field, or with --allow-change warned
    about and recorded per segment, config.json keeping the first segment's value."""
    argv = [
        *digits_train(tmp_path / "run", "--epochs", "3", "--max-steps-per-epoch", "2"),
        "--threads", "1",
    ]  # fmt: skip
    assert main([*argv, "--stop-after", "1"]) == 0
    capsys.readouterr()
    again = [*argv, "--threads", "2", "--resume"]
    assert main(again) == 2
    error = one_error_line(capsys, "train")
    assert "ran with threads = 1, this resume has 2" in error and "--allow-change threads" in error
    with pytest.warns(UserWarning, match="no longer bitwise reproducible"):
        assert main([*again, "--allow-change", "threads"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [(s["from_epoch"], s["threads"]) for s in result["segments"]] == [(0, 1), (1, 2)]
    assert set(result["segments"][0]) == {
        "from_epoch",
        "threads",
        "device",
        "dtype",
        "torch",
        "frlr",
    }
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == 1


def test_a_checkpoint_of_the_wrong_shape_exits_1_naming_it(tmp_path, capsys):
    """R12: a checkpoint whose entries have the wrong types (here its config a list) was an
    AttributeError traceback."""
    argv, checkpoint = stopped_run(tmp_path)
    state = torch.load(checkpoint, weights_only=True)
    state["config"] = [1, 2]
    save_torch_atomic(state, checkpoint)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 1
    error = one_error_line(capsys, "train")
    assert str(checkpoint) in error and "'config' is a list" in error


def test_a_checkpoint_holding_a_class_torch_refuses_never_suggests_unsafe_loading(tmp_path, capsys):
    """R13: torch's advice to load with weights_only=False leaked into the message."""
    argv, checkpoint = stopped_run(tmp_path)
    torch.save({"epoch": torch.torch_version.TorchVersion("2.0")}, checkpoint)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 1
    error = one_error_line(capsys, "train")
    assert "Unsupported global" in error and "weights_only" not in error


def test_two_loss_specs_of_one_curve_are_refused_naming_both(tmp_path, capsys):
    """R14: ss-lr and ss-lr:r=2 (r = 2 is SS-LR's default) trained the same curve twice."""
    argv = ["sweep", *TINY, "--param", "num-classes", "--values", "3", "--out", str(tmp_path)]
    assert main([*argv, "--losses", "sr,ss-lr:r=2,ss-lr"]) == 2
    error = one_error_line(capsys, "sweep")
    assert "names one curve twice: 'ss-lr:r=2' and 'ss-lr'" in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--lr", "inf"], "lr must be finite, got inf"),
        (["--label-smoothing", "nan"], "label_smoothing must be finite"),
        (["--mixup", "nan"], "mixup must be finite"),
        (["--cutmix", "inf"], "cutmix must be finite"),
        (["--weight-decay", "inf"], "weight_decay must be finite"),
        (["--warmup-epochs", "nan"], "warmup_epochs must be finite"),
        (["--momentum", "nan"], "momentum must be finite"),
        (["--milestones", "nan,1"], "milestones must be finite"),
        (["--epochs", "inf"], "expected a finite integer, got 'inf'"),
        (["--batch-size", "nan"], "expected a finite integer, got 'nan'"),
        (["--stop-after", "0"], "--stop-after must be a positive number of epochs, got 0"),
    ],
)
def test_every_numeric_flag_says_finite_and_stop_after_0_is_one_line(tmp_path, capsys, argv, words):
    """R15, R16: "must be positive, got inf" (and a ValueError traceback for --stop-after 0)."""
    try:
        status = main(["train", *TINY, "--out", str(tmp_path / "run"), *argv])
    except SystemExit as stop:  # argparse's own error: the usage, then one error line
        status = stop.code
    assert status == 2
    assert words in capsys.readouterr().err.splitlines()[-1]


def test_out_problems_say_what_is_wrong_with_the_path(tmp_path, monkeypatch, capsys):
    """R17, R18: --out naming a file, or below one (NotADirectoryError), or a folder this user
    cannot write (PermissionError; simulated, since tests may run as root)."""
    (tmp_path / "afile").write_text("x")
    for out, words in (
        (tmp_path / "afile", "is not a directory"),
        (tmp_path / "afile" / "run", f"is not a directory: {tmp_path / 'afile'} is a file"),
    ):
        assert main(["train", *TINY, "--out", str(out)]) == 2
        assert f"--out {out} {words}" in one_error_line(capsys, "train")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_open = open

    def refuse(path, *args, **kwargs):
        if str(locked) in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    for command in (["train"], ["compare", "--losses", "sr", "--seeds", "1"]):
        assert main([*command, *TINY, "--out", str(locked / "run")]) == 2
        error = one_error_line(capsys, command[0])
        assert f"--out {locked / 'run'} cannot be written (Permission denied" in error


def test_compare_with_an_option_spec_says_specs_are_for_sweeps(capsys):
    """R20: was "unknown loss 'ss-lr:r=0'"."""
    assert main(["compare", *TINY, "--losses", "sr,ss-lr:r=0"]) == 2
    error = one_error_line(capsys, "compare")
    assert "specs are for frlr sweep --param num-classes" in error and "(--r 0)" in error


def image_folder(root: Path, classes: tuple[str, ...], splits: tuple[str, ...]) -> Path:
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("classes", "splits", "words"),
    [
        (("a", "b"), ("train",), "val: no class folders with images; train/ is there"),
        (("a",), ("train", "val"), "train: holds one class folder ('a')"),
    ],
    ids=["no-val", "one-class"],
)
def test_an_image_folder_without_val_or_with_one_class_says_what_to_do(
    tmp_path, capsys, classes, splits, words
):
    """R21, R22: "point at the folder that holds train/" (it did), and a traceback for one
    class (``num_classes must be >= 2``, the folder not named)."""
    root = image_folder(tmp_path / "data", classes, splits)
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(root), "--preset", "cpu"]
    argv += ["--arch", "mlp", "--epochs", "1", "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 1
    error = one_error_line(capsys, "train")
    assert f"{root}/{words}" in error and "add " in error


def test_report_of_a_num_classes_run_draws_its_tsne(tmp_path, capsys):
    """R23, R24: the t-SNE rebuilt the model with all 10 digits for a --num-classes 2 run, and the
    report exited 0 after a raw ``size mismatch for classifier.weight`` warning."""
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--losses", "sr", "--seeds", "1", "--num-classes", "2"]
    assert main([*argv, "--out", str(out), "--no-report"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["report", "--tsne-points", "10", str(out)]) == 0
    assert (out / "report" / "tsne.png").is_file()
    assert "Not made" not in (out / "report" / "report.md").read_text()
    config = json.loads((out / "sr-seed0" / "config.json").read_text())
    (out / "sr-seed0" / "config.json").write_text(json.dumps({**config, "num_classes": 3}))
    with pytest.warns(UserWarning, match="tsne.png") as caught:
        assert main(["report", "--tsne-points", "10", str(out)]) == 0
    message = next(str(w.message) for w in caught if "tsne.png" in str(w.message))
    assert "does not fit the mlp rebuilt from" in message and "\n" not in message


def test_a_refused_write_elsewhere_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """R19: a PermissionError past the --out check (here on checkpoint.pt) was a traceback."""
    real_open = io_module.open if hasattr(io_module, "open") else open

    def refuse(path, *args, **kwargs):
        if "checkpoint" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(io_module, "open", refuse, raising=False)
    assert main(digits_train(tmp_path / "run")) == 1
    error = one_error_line(capsys, "train")
    assert "checkpoint.pt.tmp" in error and "Permission denied; check its permissions" in error
