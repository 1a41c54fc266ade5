"""Multi-label training and comparison: MultilabelTask, and ``frlr compare`` on a Tiny ImageNet
mosaic built from a fabricated ``tiny-imagenet-200`` folder (official layout, 8 classes).

No real-data test here: decoding the 30,000 shared Tiny ImageNet JPEGs alone takes 15-25 s on a
busy 2-core machine (tests/test_data_multilabel.py checks the real mosaics).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import frlr.heads.materialised as materialised_head
import frlr.train as train_module
from frlr.cli import main
from frlr.data import ImageArrays, dataset_info
from frlr.eval import multilabel_metrics
from frlr.experiments.compare import RunOptions, compare, default_losses
from frlr.models import build_model
from frlr.tasks import EvalData, MultilabelTask, Task, get_task
from frlr.train import ConfigError, resolve_config

WNIDS = [f"n0{i:07d}" for i in range(1, 9)]
TRAIN_PER_CLASS = 8  # 64 images -> 16 mosaics
VAL_PER_CLASS = 4  # 32 images -> 8 mosaics
TILE = 8


def _tile(label: int, seed: int) -> bytes:
    """A class-coloured tile with noise: the classes are learnable, the images distinct."""
    colour = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 31 + 160) % 256])
    noise = np.random.default_rng(seed).integers(-25, 26, size=(TILE, TILE, 3))
    pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """``data_dir`` holding a ``tiny-imagenet-200`` folder in the official layout."""
    root = tmp_path / "data" / "tiny-imagenet-200"
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w[-2:]}\n" for w in WNIDS))
    for c, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(TRAIN_PER_CLASS):
            (folder / f"{wnid}_{i}.JPEG").write_bytes(_tile(c, 100 * c + i))
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for k in range(len(WNIDS) * VAL_PER_CLASS):
        (root / "val" / "images" / f"val_{k}.JPEG").write_bytes(_tile(k % len(WNIDS), 10_000 + k))
        lines.append(f"val_{k}.JPEG\t{WNIDS[k % len(WNIDS)]}\t0\t0\t{TILE}\t{TILE}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root.parent


def mosaic_config(data_dir: Path, tmp_path: Path, **overrides):
    values = {
        "dataset": "mosaic-tiny-imagenet",
        "data_dir": str(data_dir),
        "cache_dir": str(tmp_path / "cache"),
        "arch": "small-cnn",
        "image_size": 16,
        "epochs": 2,
        "batch_size": 8,
        "threads": 1,
        "bf16": False,
        "channels_last": False,
    }
    values.update(overrides)
    return resolve_config("cpu", **values)


class FakeTrainer:
    """Stands in for frlr.train.train: a result.json with fixed multi-label metrics per run."""

    def __init__(self, scores):
        self.scores = scores  # loss -> mAP
        self.calls = []

    def __call__(self, config, resume=False, progress=None, log=None):
        self.calls.append((config.loss, config.seed))
        base = self.scores[config.loss] + 0.01 * config.seed
        result = {
            "metrics": {"mAP": base, "balanced_acc_image": 0.7, "balanced_acc_class": base},
            "train_loss": 0.1,
            "epochs": config.epochs,
            "wall_time_s": 2.0,
            "config": vars(config),
        }
        path = Path(config.out) / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        return result


# --------------------------------------------------------------------------- the task


def test_multilabel_task_follows_the_protocol():
    task = get_task("multilabel")
    assert isinstance(task, Task) and isinstance(task, MultilabelTask)
    assert task.primary_metric == "mAP" and task.baseline == "lr"
    assert task.metric_names == ("mAP", "balanced_acc_image", "balanced_acc_class")
    assert task.tested_metrics == task.metric_names
    assert set(task.unsupported_losses) == {"sr", "hs-sr"}
    assert task.eval_splits(dataset_info("deepfashion-attributes")) == ("test",)
    labels = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.uint8)
    arrays = ImageArrays(np.zeros((2, 4, 4, 3), np.uint8), labels, ["a", "b", "c"])
    targets = task.targets(arrays)
    assert targets.dtype == torch.float32 and targets.tolist() == [[1, 0, 1], [0, 1, 0]]
    single = ImageArrays(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="multi-hot label rows"):
        task.targets(single)


def test_training_accuracy_is_precision_at_one():
    """A sample counts when its top-1 label is one of its positives."""
    logits = torch.tensor([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    assert float(MultilabelTask().batch_correct(logits, targets)) == 2.0


def test_multilabel_task_metrics_equal_a_direct_multilabel_metrics_call():
    torch.manual_seed(0)
    model = build_model("small-cnn", 12, in_channels=3)
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    targets = (torch.rand(30, 12) < 0.25).float()
    targets[0, :] = 1.0  # an all-positive image: excluded from the per-image balanced accuracy
    transform = lambda x: x.float().div(255)  # noqa: E731
    data = EvalData({"test": (images, targets)}, transform=transform, batch_size=7)
    scores = MultilabelTask().metrics(model, data)
    model.eval()
    with torch.no_grad():
        logits = model(transform(images))
    direct = multilabel_metrics(logits.numpy(), targets.numpy(), k=5)
    assert set(scores) == {"mAP", "balanced_acc_image", "balanced_acc_class"}
    for name, value in scores.items():
        assert value == pytest.approx(direct[name], abs=1e-6)


def test_a_diverged_model_scores_instead_of_raising():
    class Diverged(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 6), float("nan"))

    targets = torch.eye(6)[[0, 1, 2, 3]]
    data = EvalData({"test": (torch.zeros(4, 1, 2, 2), targets)}, transform=lambda x: x)
    scores = MultilabelTask().metrics(Diverged(), data)
    assert all(0.0 <= v <= 1.0 for v in scores.values())


# --------------------------------------------------------------------------- configuration


def test_soft_target_flags_mix_multi_hot_rows(tiny, tmp_path, monkeypatch):
    """Mixup/CutMix mix whole multi-hot rows (each smoothed per label: (1 - eps) t + eps / 2);
    the loss trains on them and the accuracy counts the dominant rows' positives."""
    seen = []
    base = materialised_head.LOSSES["ss-lr"]

    class Recording(base):
        def forward(self, logits, target):
            seen.append(target)
            return super().forward(logits, target)

    monkeypatch.setitem(materialised_head.LOSSES, "ss-lr", Recording)
    config = mosaic_config(
        tiny,
        tmp_path,
        loss="ss-lr",
        mixup=0.2,
        cutmix=1.0,
        label_smoothing=0.1,
        epochs=1,
        out=str(tmp_path / "run"),
    )
    result = train_module.train(config, log=None)
    assert np.isfinite(result["train_loss"]) and 0.0 <= result["train_acc"] <= 1.0
    assert 0.0 <= result["metrics"]["mAP"] <= 1.0
    assert seen and all(t.shape == (8, len(WNIDS)) for t in seen)
    # 4 positives of mass 0.95 and K - 4 negatives of 0.05 per row, whatever the mixing
    expected = 4 * 0.95 + (len(WNIDS) - 4) * 0.05
    for target in seen:
        torch.testing.assert_close(target.sum(1), torch.full((8,), expected))
        assert float(target.min()) >= 0.05 - 1e-6 and float(target.max()) <= 0.95 + 1e-6


def test_sr_does_not_apply_to_multilabel(tiny, tmp_path, capsys):
    with pytest.raises(ConfigError) as error:
        mosaic_config(tiny, tmp_path, loss="sr")
    message = str(error.value)
    assert "loss 'sr' does not apply to task 'multilabel'" in message
    assert "several" in message and "baseline: lr" in message
    with pytest.raises(ConfigError, match="loss 'hs-sr' does not apply"):
        mosaic_config(tiny, tmp_path, loss="hs-sr")
    base = mosaic_config(tiny, tmp_path)
    with pytest.raises(ConfigError, match="loss 'sr' does not apply to task 'multilabel'"):
        compare(
            base,
            ["lr", "sr"],
            1,
            tmp_path / "cmp",
            run=RunOptions(log=None, train_fn=FakeTrainer({})),
        )
    assert not (tmp_path / "cmp").exists()  # refused before any run
    argv = ["compare", "--dataset", "mosaic-tiny-imagenet", "--losses", "sr,lr"]
    assert main(argv) == 2
    assert "loss 'sr' does not apply to task 'multilabel'" in capsys.readouterr().err


def test_task_dataset_mismatch_is_refused(tiny, tmp_path):
    assert mosaic_config(tiny, tmp_path).task == "multilabel"
    with pytest.raises(ConfigError, match="task 'reid' does not match dataset 'mosaic-tiny"):
        mosaic_config(tiny, tmp_path, task="reid")
    with pytest.raises(ConfigError, match="task 'multilabel' does not match dataset 'cifar10'"):
        resolve_config("multilabel-paper", dataset="cifar10")


def test_multilabel_paper_preset():
    config = resolve_config("multilabel-paper", dataset="mosaic-tiny-imagenet", loss="lr")
    assert (config.optimizer, config.lr, config.weight_decay, config.batch_size) == (
        "adam",
        1e-4,
        4e-5,
        32,
    )
    assert (config.schedule, config.milestones, config.gamma) == ("step", (0.9,), 0.1)
    deepfashion = resolve_config("multilabel-paper", dataset="deepfashion-attributes", loss="lr")
    assert deepfashion.image_size == 224


# --------------------------------------------------------------------------- compare


def test_multilabel_defaults_leave_sr_out_and_test_against_lr(tmp_path, tiny):
    assert default_losses("multilabel") == ("lr", "hs-lr", "ss-lr")
    fake = FakeTrainer({"lr": 0.30, "hs-lr": 0.40, "ss-lr": 0.35})
    results = compare(
        mosaic_config(tiny, tmp_path),
        seeds=6,
        out=tmp_path / "c",
        run=RunOptions(log=None, train_fn=fake),
    )
    assert results["losses"] == ["lr", "hs-lr", "ss-lr"] and results["baseline"] == "lr"
    assert {loss for loss, _ in fake.calls} == {"lr", "hs-lr", "ss-lr"}
    tests = results["summary"]["hs-lr"]["tests"]
    assert tests["mAP"]["p_value"] == pytest.approx(0.03125)  # better on all 6 seeds
    assert tests["balanced_acc_image"]["p_value"] == 1.0  # identical on every seed
    assert tests["balanced_acc_class"]["p_value"] == pytest.approx(0.03125)


def test_compare_multilabel_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "cmp"
    results = compare(
        mosaic_config(tiny, tmp_path), ["lr", "ss-lr"], 2, out, run=RunOptions(progress=False)
    )
    assert results["task"] == "multilabel" and results["baseline"] == "lr"
    assert results["tested_metrics"] == ["mAP", "balanced_acc_image", "balanced_acc_class"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    for row in on_disk["runs"]:
        for name in ("mAP", "balanced_acc_image", "balanced_acc_class"):
            assert 0.0 <= row[name] <= 1.0
    summary = on_disk["summary"]
    assert "tests" not in summary["lr"]
    assert set(summary["ss-lr"]["tests"]) == set(results["tested_metrics"])
    lr_acc = [r["balanced_acc_class"] for r in on_disk["runs"] if r["loss"] == "lr"]
    assert summary["lr"]["balanced_acc_class_mean"] == pytest.approx(np.mean(lr_acc))

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4
    assert {"mAP", "balanced_acc_image", "balanced_acc_class"} <= set(rows[0])
    markdown = (out / "results.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| loss |"))
    for column in ("mAP (%)", "bal. acc. per image (%)", "p mAP vs LR", "p bal. acc. per class"):
        assert column in header
    assert "| SS-LR |" in markdown and "Evaluation (multilabel):" in markdown
    assert "mAP, bal. acc. per image and bal. acc. per class against LR" in markdown

    run = json.loads((out / "ss-lr-seed1" / "result.json").read_text())
    assert run["task"] == "multilabel" and run["num_train"] == 16
    assert 0.0 <= run["train_acc"] <= 1.0
    epochs = [json.loads(line) for line in (out / "lr-seed0" / "metrics.jsonl").open()]
    assert {"test_mAP", "test_balanced_acc_class"} <= set(epochs[-1])
    assert "[4/4] ss-lr  seed 1: mAP" in capsys.readouterr().out


def test_cli_compare_multilabel_defaults(tiny, tmp_path, capsys):
    argv = ["compare", "--dataset", "mosaic-tiny-imagenet", "--preset", "cpu", "--seeds", "1"]
    argv += ["--data-dir", str(tiny), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--arch", "small-cnn", "--image-size", "16", "--epochs", "1", "--batch-size", "8"]
    argv += ["--threads", "1", "--out", str(tmp_path / "cmp"), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "losses lr,hs-lr,ss-lr" in printed and "p mAP vs LR" in printed
