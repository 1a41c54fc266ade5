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
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

import frlr.io as io_module
from frlr.cli import main
from frlr.data import CorruptImageError, DataError
from frlr.experiments.compare import _run_config, compare
from frlr.io import CheckpointError, NoSpaceError, lock_holder, run_lock, save_torch_atomic
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
        results = compare(base, ["sr", "lr"], 1, out, train_fn=train_fn, progress=False)
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
