"""Distributed data parallel: two CPU processes (gloo, launched by torchrun) train the same
weights as one process with the same global batch.

Why this can hold to float rounding: every rank draws the same permutation, takes its
contiguous shard of each global batch, and scales its mean loss by its share of the batch, so
the gradient DDP averages is the gradient of the global batch mean; the optimiser steps are
then the same. Two things would break the equality, and the test removes both on purpose:

* batch norm normalises with per-rank batch statistics (and ``--sync-bn`` needs CUDA in torch),
  so the model is the ``mlp``, which has no batch norm;
* augmentation draws differ by rank (each rank augments its own shard), so it is off.

The global batch of 64 does not divide the 1,437 digits: the last batch of 29 splits 15/14,
which checks the loss weighting of unequal shards.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from frlr.train import resolve_config, train

pytestmark = pytest.mark.slow

SETTINGS = {
    "dataset": "digits",
    "arch": "mlp",
    "loss": "ss-lr",
    "epochs": 1,
    "batch_size": 64,
    "augment": False,
    "threads": 1,
}


def torchrun_train(
    out, processes: int, settings: dict | None = None, *extra: str
) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    argv += ["--nproc_per_node", str(processes), "-m", "frlr.cli", "train", "--preset", "cpu"]
    for name, value in (settings or SETTINGS).items():
        flag = "--" + name.replace("_", "-")
        argv += (
            [flag if value else "--no-" + name] if isinstance(value, bool) else [flag, str(value)]
        )
    argv += ["--out", str(out), "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)


def test_two_processes_train_the_same_weights_as_one(tmp_path):
    single = train(resolve_config("cpu", **SETTINGS, out=str(tmp_path / "one")), log=None)
    process = torchrun_train(tmp_path / "two", 2)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.count("done in") == 1  # only rank 0 prints

    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=0, atol=1e-5, msg=name)
    history = two["history"][-1]
    assert history["train_loss"] == pytest.approx(single["train_loss"], abs=1e-6)
    assert history["train_acc"] == single["train_acc"]
    assert history["test_top1"] == pytest.approx(single["test_top1"], abs=1 / 360 + 1e-9)


def test_a_resumed_two_process_run_ends_with_the_same_weights(tmp_path):
    """With augmentation on, each rank's generator state must be saved and restored."""
    settings = {**SETTINGS, "augment": True, "epochs": 2, "batch_size": 128}
    straight = torchrun_train(tmp_path / "straight", 2, settings)
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = torchrun_train(tmp_path / "split", 2, settings, "--stop-after", "1")
    assert stopped.returncode == 0 and "continue with --resume" in stopped.stdout
    resumed = torchrun_train(tmp_path / "split", 2, settings, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    for name, weight in a["model"].items():
        assert torch.equal(b["model"][name], weight), name


def test_two_processes_with_a_chunked_classifier_train_the_same_weights_as_one(tmp_path):
    """--classifier chunked under DDP: the classifier's gradient reaches it through the loss,
    and DDP still averages it with the backbone's."""
    settings = {**SETTINGS, "classifier": "chunked"}
    single = train(resolve_config("cpu", **settings, out=str(tmp_path / "one")), log=None)
    process = torchrun_train(tmp_path / "two", 2, settings)
    assert process.returncode == 0, process.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=0, atol=1e-5, msg=name)
    assert two["history"][-1]["train_loss"] == pytest.approx(single["train_loss"], abs=1e-6)


# --------------------------------------------------------------------------- --class-parallel

CLASS_PARALLEL = {
    **SETTINGS,
    "classifier": "chunked",
    "loss": "hs-lr",
    "num_classes": 9,  # split 5 / 4 over the two ranks
    "augment": True,  # per-rank augmentation: the resume must restore each rank's stream
    "epochs": 2,
}
"""Unequal shards of the classes and, in the last batch of 1,293 digits, of the batch (7 / 6)."""


def shard_names(epoch: int) -> list[str]:
    return [f"classifier-shard-{rank}-of-2-epoch-{epoch}.pt" for rank in range(2)]


def shard_files(run_dir) -> list[str]:
    return sorted(path.name for path in run_dir.glob("classifier-shard-*"))


@pytest.fixture(scope="module")
def class_parallel_run(tmp_path_factory):
    """A finished two-process --class-parallel run, shared by the tests below."""
    out = tmp_path_factory.mktemp("class-parallel") / "straight"
    process = torchrun_train(out, 2, CLASS_PARALLEL, "--class-parallel")
    assert process.returncode == 0, process.stderr[-3000:]
    return out


def test_a_class_parallel_classifier_trains_the_same_weights_as_a_whole_one(
    tmp_path, class_parallel_run
):
    """Each rank trains its rows of the classifier, and the backbone's DDP sums: the same
    weights and metrics as the same two processes without --class-parallel (same global
    batch); the saved model holds the whole classifier, gathered."""
    whole = torchrun_train(tmp_path / "whole", 2, CLASS_PARALLEL)
    assert whole.returncode == 0, whole.stderr[-3000:]
    one = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    two = torch.load(class_parallel_run / "checkpoint.pt", weights_only=True)
    assert two["model"]["classifier.weight"].shape == (9, 256)
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=0, atol=1e-5, msg=name)
    for mine, theirs in zip(two["history"], one["history"], strict=True):
        for key in ("train_loss", "train_acc", "test_top1", "test_top5"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-6), key
    manifest = two["class_shards"]
    assert manifest["sizes"] == [5, 4] and manifest["files"] == shard_names(2)
    assert shard_files(class_parallel_run) == manifest["files"]  # the epoch-1 files are gone
    for rank, (offset, size) in enumerate([(0, 5), (5, 4)]):
        shard = torch.load(class_parallel_run / manifest["files"][rank], weights_only=True)
        rows = slice(offset, offset + size)
        assert torch.equal(shard["weight"], two["model"]["classifier.weight"][rows])
        assert torch.equal(shard["bias"], two["model"]["classifier.bias"][rows])
        assert set(shard["optimizer"]) == {"weight", "bias"}
    assert len(two["optimizer"]["state"]) == len(one["optimizer"]["state"]) - 2  # backbone only


def test_a_resumed_class_parallel_run_ends_with_the_same_shards(tmp_path, class_parallel_run):
    """Each rank's shard, its optimiser state and its random streams come back bitwise. (Another
    number of processes is refused, naming both, as for any DDP run: ``_resume``.)"""
    split = tmp_path / "split"
    stopped = torchrun_train(split, 2, CLASS_PARALLEL, "--class-parallel", "--stop-after", "1")
    assert stopped.returncode == 0 and "continue with --resume" in stopped.stdout
    assert shard_files(split) == shard_names(1)
    resumed = torchrun_train(split, 2, CLASS_PARALLEL, "--class-parallel", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(class_parallel_run / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    for name, weight in a["model"].items():
        assert torch.equal(b["model"][name], weight), name
    for name in shard_names(2):
        want = torch.load(class_parallel_run / name, weights_only=True)
        got = torch.load(split / name, weights_only=True)
        assert torch.equal(got["weight"], want["weight"]) and torch.equal(got["bias"], want["bias"])
        for param, state in want["optimizer"].items():
            assert torch.equal(got["optimizer"][param]["momentum_buffer"], state["momentum_buffer"])
    assert shard_files(split) == shard_names(2)
