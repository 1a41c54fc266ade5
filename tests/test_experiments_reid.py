"""Re-id training and comparison: ReidTask, ``frlr compare`` on a fabricated Market-1501, DDP.

The fabricated Market-1501 has the official folder layout and file names, with junk (-1),
distractor (0000) and same-camera gallery images, so the whole protocol (training identities,
camera filtering, official AP) runs end to end in about a second per run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import frlr.train as train_module
from frlr.cli import main
from frlr.data import dataset_info
from frlr.eval import reid_metrics
from frlr.experiments.compare import RunOptions, compare, default_losses
from frlr.models import build_model
from frlr.tasks import EvalData, ReidTask, Task, get_task
from frlr.train import ConfigError, resolve_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_IDS = (2, 7, 10, 11, 15, 20)
TEST_IDS = (1, 3, 4, 5, 6, 8, 9)


def _pattern(pid: int, cam: int) -> np.ndarray:
    """A person: a colour and a stripe set by the identity, a little camera noise."""
    rng = np.random.default_rng(pid)
    image = np.empty((32, 16, 3), dtype=np.uint8)
    image[:] = rng.integers(30, 226, size=3)
    stripe = 4 + pid % 6 * 4
    image[stripe : stripe + 4] = 255 - image[0, 0]
    noise = np.random.default_rng(1000 * pid + cam).integers(-20, 21, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def _jpeg(pid: int, cam: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pattern(max(pid, 0) + 500 * (pid < 0), cam)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _name(pid: int, cam: int, frame: int) -> str:
    person = "-1" if pid < 0 else f"{pid:04d}"
    return f"{person}_c{cam}s1_{frame:06d}_01.jpg"


@pytest.fixture
def market(tmp_path: Path) -> Path:
    """``data_dir`` holding a Market-1501-v15.09.15 folder in the official layout."""
    root = tmp_path / "data" / "Market-1501-v15.09.15"
    files: dict[str, list[tuple[int, int]]] = {
        "bounding_box_train": [(p, c) for p in TRAIN_IDS for c in (1, 2, 3, 4)],
        "query": [(p, 1) for p in TEST_IDS],
        # two cross-camera matches, one same-camera image (junk for its query), junk, distractor
        "bounding_box_test": [(p, c) for p in TEST_IDS for c in (1, 2, 3)] + [(-1, 2), (0, 3)],
    }
    for folder, people in files.items():
        (root / folder).mkdir(parents=True)
        for frame, (pid, cam) in enumerate(people):
            (root / folder / _name(pid, cam, frame)).write_bytes(_jpeg(pid, cam))
    return root.parent


def reid_config(data_dir: Path, tmp_path: Path, **overrides):
    values = {
        "dataset": "market1501",
        "data_dir": str(data_dir),
        "cache_dir": str(tmp_path / "cache"),
        "arch": "small-cnn",
        "image_size": 16,
        "image_width": 8,
        "epochs": 2,
        "batch_size": 8,
        "threads": 1,
        "bf16": False,
        "channels_last": False,
        "crop_padding": 1,
    }
    values.update(overrides)
    return resolve_config("cpu", **values)


# --------------------------------------------------------------------------- the task


def test_reid_task_follows_the_protocol():
    task = get_task("reid")
    assert isinstance(task, Task) and isinstance(task, ReidTask)
    assert task.primary_metric == "rank1" and task.baseline == "sr"
    assert task.metric_names == ("rank1", "rank5", "rank10", "mAP")
    assert task.tested_metrics == ("rank1", "mAP")
    assert task.eval_splits(dataset_info("market1501")) == ("query", "gallery")
    assert "ap='official'" in task.evaluation and "cosine" in task.evaluation
    assert not task.unsupported_losses
    logits = torch.tensor([[0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    assert int(task.batch_correct(logits, torch.tensor([1, 1, 1]))) == 2
    with pytest.raises(ValueError, match="task reid needs a query and a gallery"):
        task.eval_splits(dataset_info("cifar10"))


def _random_eval_data(seed: int = 0) -> tuple[EvalData, dict]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randint(0, 256, (9, 3, 12, 6), dtype=torch.uint8, generator=generator)
    gallery = torch.randint(0, 256, (23, 3, 12, 6), dtype=torch.uint8, generator=generator)
    raw = {
        "query_ids": torch.tensor([1, 1, 2, 3, 3, 4, 5, 5, 6]),
        "gallery_ids": torch.tensor([1, 2, 3, 4, 5, 6] * 3 + [-1, 0, 0, 1, 2]),
        "query_cams": torch.tensor([1, 2, 1, 2, 1, 2, 1, 2, 1]),
        "gallery_cams": torch.tensor([1, 2, 3] * 7 + [1, 2]),
    }
    data = EvalData(
        splits={
            "query": (query, raw["query_ids"]),
            "gallery": (gallery, raw["gallery_ids"]),
        },
        transform=lambda x: x.float().div(255).sub(0.5),
        batch_size=4,
        cams={"query": raw["query_cams"], "gallery": raw["gallery_cams"]},
    )
    return data, raw


def test_reid_task_metrics_equal_a_direct_reid_metrics_call():
    torch.manual_seed(0)
    model = build_model("small-cnn", 5, in_channels=3)
    model.train()
    data, raw = _random_eval_data()
    scores = ReidTask().metrics(model, data)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        features = {
            split: torch.nn.functional.normalize(model.features(data.transform(images)), dim=1)
            for split, (images, _) in data.splits.items()
        }
    direct = reid_metrics(
        features["query"],
        features["gallery"],
        raw["query_ids"],
        raw["gallery_ids"],
        raw["query_cams"],
        raw["gallery_cams"],
        metric="cosine",
        ap="official",
    )
    assert set(scores) == {"rank1", "rank5", "rank10", "mAP"}
    for name, value in scores.items():
        assert value == pytest.approx(direct[name], abs=1e-6)
        assert 0.0 <= value <= 1.0


def test_reid_task_shares_features_when_query_is_the_gallery():
    """Omniglot retrieval: one set is both; the features are computed once."""
    model = build_model("small-cnn", 5, in_channels=3)
    data, raw = _random_eval_data()
    images, _ = data.splits["query"]
    data.splits["gallery"] = (images.clone(), raw["query_ids"])
    data.cams["gallery"] = raw["query_cams"]
    calls = []
    original = model.features
    model.features = lambda x: calls.append(len(x)) or original(x)
    scores = ReidTask().metrics(model, data)
    assert sum(calls) == len(images)
    assert 0.0 <= scores["mAP"] <= 1.0


def test_reid_task_needs_cameras():
    data, _ = _random_eval_data()
    data.cams = {}
    with pytest.raises(ValueError, match="camera ids"):
        ReidTask().metrics(build_model("small-cnn", 5, in_channels=3), data)


def _ddp_worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = build_model("small-cnn", 5, in_channels=3)
        data, _ = _random_eval_data()
        results[rank] = ReidTask().metrics(model, data)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_reid_metrics_are_the_same_on_every_ddp_rank():
    """Two gloo ranks (9 queries: shares of 5 and 4) agree with each other and with one."""
    torch.manual_seed(0)
    single = ReidTask().metrics(build_model("small-cnn", 5, in_channels=3), _random_eval_data()[0])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manager = torch.multiprocessing.Manager()
    results = manager.dict()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, results), nprocs=2)
    assert results[0] == results[1]
    for name, value in single.items():
        assert results[0][name] == pytest.approx(value, abs=1e-6)


# --------------------------------------------------------------------------- configuration


def test_the_task_comes_from_the_dataset_and_a_mismatch_is_refused(market, tmp_path):
    assert reid_config(market, tmp_path).task == "reid"
    assert resolve_config("paper", dataset="cifar10").task == "classification"
    with pytest.raises(ConfigError) as error:
        reid_config(market, tmp_path, task="classification")
    message = str(error.value)
    assert "task 'classification' does not match dataset 'market1501'" in message
    assert "pass --task reid or leave --task out" in message
    with pytest.raises(ConfigError, match="task 'reid' does not match dataset 'cifar10'"):
        resolve_config("reid-paper", dataset="cifar10")
    with pytest.raises(ConfigError, match="unknown task 'detection'"):
        reid_config(market, tmp_path, task="detection")


def test_cli_reports_the_mismatch(capsys):
    assert main(["compare", "--task", "classification", "--dataset", "market1501"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("frlr compare: error: ")
    assert "which is a reid dataset; pass --task reid" in error


def test_reid_paper_preset_resizes_people_to_256x128(market, tmp_path):
    config = resolve_config("reid-paper", dataset="market1501")
    assert (config.optimizer, config.lr, config.weight_decay, config.batch_size) == (
        "adam",
        3e-4,
        1e-4,
        32,
    )
    assert (config.image_size, config.image_width, config.task) == (256, 128, "reid")
    assert resolve_config("reid-paper", dataset="omniglot-retrieval").image_width == 0
    small = reid_config(market, tmp_path)
    arrays = train_module.load_split(small, "gallery")
    assert arrays.images.shape == (len(TEST_IDS) * 3 + 2, 16, 8, 3)
    with pytest.raises(ConfigError, match="image_width 8: 'cifar10' takes a square"):
        resolve_config("cpu", dataset="cifar10", image_size=16, image_width=8)
    with pytest.raises(ConfigError, match="image_width 8 needs image_size"):
        reid_config(market, tmp_path, image_size=0, image_width=8)


def test_presets_shows_a_task_preset_for_a_dataset_of_its_task(capsys):
    assert main(["presets", "reid-paper"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["dataset"], shown["image_size"], shown["image_width"]) == ("market1501", 256, 128)


# --------------------------------------------------------------------------- compare


def test_compare_reid_end_to_end(market, tmp_path, capsys):
    out = tmp_path / "cmp"
    results = compare(
        reid_config(market, tmp_path), ["sr", "hs-lr"], 2, out, run=RunOptions(progress=False)
    )
    assert results["task"] == "reid" and results["baseline"] == "sr"
    assert results["primary_metric"] == "rank1"
    assert results["tested_metrics"] == ["rank1", "mAP"]
    assert "ap='official'" in results["evaluation"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))

    runs = on_disk["runs"]
    assert [(r["loss"], r["seed"]) for r in runs] == [
        ("sr", 0),
        ("hs-lr", 0),
        ("sr", 1),
        ("hs-lr", 1),
    ]
    for row in runs:
        assert all(0.0 <= row[m] <= 1.0 for m in ("rank1", "rank5", "rank10", "mAP"))
        assert row["rank1"] <= row["rank5"] <= row["rank10"]
    summary = on_disk["summary"]
    sr_map = [r["mAP"] for r in runs if r["loss"] == "sr"]
    assert summary["sr"]["mAP_mean"] == pytest.approx(np.mean(sr_map))
    assert summary["sr"]["mAP_std"] == pytest.approx(np.std(sr_map, ddof=1))
    assert "tests" not in summary["sr"] and "p_value" not in summary["sr"]
    assert set(summary["hs-lr"]["tests"]) == {"rank1", "mAP"}
    assert summary["hs-lr"]["p_value"] == summary["hs-lr"]["tests"]["rank1"]["p_value"]

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4
    assert {"loss", "seed", "rank1", "rank5", "rank10", "mAP", "wall_time_s"} <= set(rows[0])
    markdown = (out / "results.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| loss |"))
    for column in ("Rank-1 (%)", "Rank-10 (%)", "mAP (%)", "p Rank-1 vs SR", "p mAP vs SR"):
        assert column in header
    assert "Evaluation (reid):" in markdown and "Rank-1 and mAP against SR" in markdown

    run = json.loads((out / "hs-lr-seed1" / "result.json").read_text())
    assert run["task"] == "reid" and run["evaluation"] == results["evaluation"]
    assert run["config"]["task"] == "reid" and run["config"]["image_width"] == 8
    epochs = [json.loads(line) for line in (out / "sr-seed0" / "metrics.jsonl").open()]
    assert len(epochs) == 2 and {"test_rank1", "test_mAP", "train_acc"} <= set(epochs[-1])
    printed = capsys.readouterr().out
    assert "[4/4] hs-lr  seed 1: Rank-1" in printed and "mAP" in printed


def test_soft_target_flags_mix_the_training_identities(market, tmp_path):
    """Re-id trains an identity classifier, so mixing identities is mixing its classes; the
    retrieval metrics are computed as always."""
    config = reid_config(
        market, tmp_path, loss="ss-lr", mixup=0.2, label_smoothing=0.1, out=str(tmp_path / "r")
    )
    result = train_module.train(config, log=None)
    assert np.isfinite(result["train_loss"]) and 0.0 <= result["train_acc"] <= 1.0
    assert all(0.0 <= result["metrics"][m] <= 1.0 for m in ("rank1", "mAP"))


def test_reid_default_losses_are_the_papers():
    assert default_losses("reid") == ("sr", "lr", "hs-lr", "ss-lr")


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(
    not (SHARED_DATA / "omniglot").is_dir(),
    reason=f"shared data folder {SHARED_DATA / 'omniglot'} is absent",
)
def test_real_omniglot_retrieval_trains_above_chance(tmp_path):
    """One epoch at 16x16 already retrieves unseen characters above chance (mAP about 0.01)."""
    config = resolve_config(
        "cpu",
        dataset="omniglot-retrieval",
        data_dir=str(SHARED_DATA / "omniglot"),
        cache_dir=str(tmp_path / "cache"),
        arch="small-cnn",
        image_size=16,
        epochs=1,
        threads=1,
        out=str(tmp_path / "run"),
    )
    result = train_module.train(config, log=None)
    assert result["task"] == "reid" and result["num_train"] == 2720
    assert result["metrics"]["mAP"] > 0.03 and result["metrics"]["rank1"] > 0.1, result["metrics"]
