"""Tests for frlr.train: the loop learns, its files are complete and atomic, resume is exact,
presets resolve in the documented order, and bad configurations fail with clear messages.

Kept fast for a 2-core CPU: the bundled 8x8 digits (1,437 training images) or fabricated arrays,
the tiny ``mlp`` / ``small-cnn`` networks, one to three epochs, one thread.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import frlr.heads.materialised as materialised_head
import frlr.io as io_module
import frlr.torch as frlr_torch
import frlr.train as train_module
from frlr.data import ImageArrays
from frlr.heads.class_parallel import ClassifierShard
from frlr.io import write_text_atomic
from frlr.presets import available_presets, load_preset
from frlr.torch.class_sharding import class_shard_sizes
from frlr.train import (
    ConfigError,
    TrainConfig,
    config_differences,
    lr_factor,
    resolve_config,
    train,
    validate,
)


def digits_config(tmp_path: Path, **overrides) -> TrainConfig:
    values = {
        "dataset": "digits",
        "arch": "mlp",
        "loss": "sr",
        "epochs": 2,
        "out": str(tmp_path / "run"),
        "threads": 1,
    }
    values.update(overrides)
    return resolve_config("cpu", **values)


def fabricated_split(split: str, n: int) -> ImageArrays:
    """10 classes of 8x8 grey images, each class a bright pixel at its own place plus noise."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 8, 8, 1), dtype=np.uint8)
    images[np.arange(n), labels // 4 * 3, labels % 4 * 2, 0] = 255
    return ImageArrays(images=images, labels=labels.astype(np.int64), classes=list("0123456789"))


@pytest.fixture
def fabricated_digits(monkeypatch):
    """'digits' served from 60 fabricated training and 40 test images (a run takes ~0.1 s)."""

    def load(name, split, *args, **kwargs):
        return fabricated_split(split, 60 if split == "train" else 40)

    monkeypatch.setattr(train_module, "load_dataset", load)


# --------------------------------------------------------------------------- the loop


def test_a_few_epochs_on_digits_reduce_the_loss(tmp_path):
    result = train(digits_config(tmp_path, loss="ss-lr", epochs=3), log=None)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    losses = [h["train_loss"] for h in history]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0]
    assert result["test_top1"] > 0.5  # chance is 0.1
    assert result["loss_options"] == {"beta": 10.0, "r": 2.0}


def test_max_steps_per_epoch_cuts_every_epoch_short(tmp_path, fabricated_digits):
    config = digits_config(tmp_path, epochs=2, batch_size=8, max_steps_per_epoch=3, ncd_every=1)
    train(config, log=None)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "ncd.jsonl").open()]
    assert steps == [0, 1, 2, 3, 4, 5]  # 60 images would be 8 batches an epoch
    with pytest.raises(ConfigError, match="max_steps_per_epoch"):
        digits_config(tmp_path, max_steps_per_epoch=-1)


def test_run_files_are_complete_and_written_atomically(tmp_path):
    result = train(digits_config(tmp_path, epochs=1), log=None)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "result.json",
    ]  # no temporary file left behind
    on_disk = json.loads((run / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for key in ("test_top1", "test_top5", "wall_time_s", "config", "versions", "hardware"):
        assert key in on_disk
    assert on_disk["status"] == "finished"
    assert on_disk["versions"]["torch"] == torch.__version__
    assert on_disk["config"]["dataset"] == "digits"
    record = json.loads((run / "metrics.jsonl").read_text())
    expected = {"train_loss", "train_acc", "test_top1", "test_top5", "lr", "epoch_time_s"}
    assert expected <= set(record)
    assert record["images_per_s"] > 0
    assert json.loads((run / "config.json").read_text())["loss"] == "sr"


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_resume_gives_the_same_weights_and_metrics(tmp_path):
    straight = digits_config(tmp_path, arch="small-cnn", out=str(tmp_path / "straight"))
    split = digits_config(tmp_path, arch="small-cnn", out=str(tmp_path / "split"))
    assert straight.augment and not straight.bf16  # augmentation draws must be restored too
    full = train(straight, log=None)
    stopped = train(split, stop_after=1, log=None)
    assert stopped["status"] == "stopped" and stopped["epoch"] == 1
    assert not (tmp_path / "split" / "result.json").exists()
    resumed = train(split, resume=True, log=None)

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["optimizer"]["state"][0]["momentum_buffer"].equal(
        b["optimizer"]["state"][0]["momentum_buffer"]
    )
    assert full["metrics"] == resumed["metrics"]
    assert full["train_loss"] == resumed["train_loss"]
    strip = ("train_time_s", "epoch_time_s", "images_per_s", "elapsed_s")
    history = [
        {k: v for k, v in json.loads(line).items() if k not in strip}
        for line in (tmp_path / "straight" / "metrics.jsonl").open()
    ]
    resumed_history = [
        {k: v for k, v in json.loads(line).items() if k not in strip}
        for line in (tmp_path / "split" / "metrics.jsonl").open()
    ]
    assert history == resumed_history


def test_resume_of_a_finished_run_returns_its_result(tmp_path, fabricated_digits):
    config = digits_config(tmp_path, epochs=1)
    first = train(config, log=None)
    again = train(config, resume=True, log=None)
    assert again["finished_at"] == first["finished_at"]


def test_an_existing_run_is_not_overwritten(tmp_path, fabricated_digits):
    config = digits_config(tmp_path, epochs=2)
    train(config, stop_after=1, log=None)
    with pytest.raises(ConfigError, match=r"unfinished run.*--resume"):
        train(config, log=None)
    train(config, resume=True, log=None)
    with pytest.raises(ConfigError, match=r"finished run.*--resume"):
        train(config, log=None)


def test_resume_with_another_config_is_refused(tmp_path, fabricated_digits):
    train(digits_config(tmp_path, epochs=2), stop_after=1, log=None)
    with pytest.raises(ConfigError, match=r"another config.*lr: 0.05 != 0.01"):
        train(digits_config(tmp_path, epochs=2, lr=0.01), resume=True, log=None)
    # where and how fast a run goes may change
    train(digits_config(tmp_path, epochs=2, eval_batch_size=7), resume=True, log=None)


def test_bf16_autocast_and_channels_last_run(tmp_path):
    """Not only runs: learns the real digits (small-cnn reaches about 0.85 in 2 epochs)."""
    config = digits_config(tmp_path, arch="small-cnn", epochs=2, bf16=True, channels_last=True)
    result = train(config, log=None)
    assert math.isfinite(result["train_loss"])
    assert 0 <= result["test_top1"] <= 1
    assert result["test_top1"] > 0.5  # chance is 0.1


def test_progress_bar_and_log_lines(tmp_path, fabricated_digits, capsys):
    lines = []
    train(digits_config(tmp_path, epochs=2), progress=True, log=lines.append)
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and "top1" in lines[0]
    assert "img_s" in capsys.readouterr().err  # tqdm writes to stderr


# --------------------------------------------------------------------------- soft targets


@pytest.mark.parametrize(
    ("loss", "flags"),
    [
        ("sr", {"mixup": 0.2}),
        ("hs-lr", {"cutmix": 1.0}),
        ("ss-lr", {"label_smoothing": 0.1}),
        ("lr", {"mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1}),
    ],
)
def test_soft_target_flags_reach_every_loss_which_then_trains(tmp_path, monkeypatch, loss, flags):
    """Every step mixes its batch, the loss gets exactly the mixed soft targets, and the run
    learns (chance is 0.1)."""
    made, seen = [], []
    mix_batch = materialised_head.mix_batch
    base = materialised_head.LOSSES[loss]

    def spy(images, targets, generator, **options):
        mixed = mix_batch(images, targets, generator, **options)
        made.append((options, mixed.targets))
        return mixed

    class Recording(base):
        def forward(self, logits, target):
            seen.append(target)
            return super().forward(logits, target)

    monkeypatch.setattr(materialised_head, "mix_batch", spy)
    monkeypatch.setitem(materialised_head.LOSSES, loss, Recording)
    config = digits_config(tmp_path, arch="small-cnn", loss=loss, **flags)
    result = train(config, log=None)
    assert math.isfinite(result["train_loss"])
    assert result["test_top1"] > 0.5 and result["train_acc"] > 0.2
    assert len(made) == len(seen) == math.ceil(1437 / config.batch_size) * config.epochs
    assert all(target is soft for (_, soft), target in zip(made, seen, strict=True))
    options, first = made[0]
    assert {k: options[k] for k in flags} == flags
    assert first.shape == (config.batch_size, 10) and first.is_floating_point()
    torch.testing.assert_close(first.sum(1), torch.ones(config.batch_size))
    assert result["config"]["mixup"] == flags.get("mixup", 0.0)


def test_resume_with_mixing_gives_the_same_weights(tmp_path, fabricated_digits):
    """The mixing draws come from the checkpointed augmentation generator; the NCD monitor
    takes the soft targets."""
    flags = {"mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1, "arch": "small-cnn"}
    flags["ncd_every"] = 2
    straight = digits_config(tmp_path, out=str(tmp_path / "straight"), **flags)
    split = digits_config(tmp_path, out=str(tmp_path / "split"), **flags)
    full = train(straight, log=None)
    train(split, stop_after=1, log=None)
    resumed = train(split, resume=True, log=None)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert full["train_loss"] == resumed["train_loss"]
    ncd = [json.loads(line) for line in (tmp_path / "split" / "ncd.jsonl").open()]
    assert ncd and all(math.isfinite(r["positive"]) for r in ncd)
    plain = train(digits_config(tmp_path, arch="small-cnn", out=str(tmp_path / "p")), log=None)
    assert plain["train_loss"] != full["train_loss"]


# --------------------------------------------------------------------------- schedule


def test_step_schedule_decays_at_half_and_three_quarters():
    config = TrainConfig(epochs=8, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    factors = [lr_factor(epoch * 10, config, 10) for epoch in range(8)]
    assert factors == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_schedule_with_warmup():
    config = TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1.0)
    assert lr_factor(0, config, 10) == pytest.approx(0.1 * (1 + math.cos(0)) / 2)
    assert lr_factor(9, config, 10) == pytest.approx((1 + math.cos(math.pi * 9 / 40)) / 2)
    assert lr_factor(20, config, 10) == pytest.approx(0.5)
    assert lr_factor(40, config, 10) == pytest.approx(0.0)


def test_multilabel_schedule_is_1e4_then_1e5_for_the_last_five_of_fifty_epochs():
    table = load_preset("multilabel-paper")
    config = TrainConfig(epochs=table["epochs"], milestones=tuple(table["milestones"]))
    lrs = [table["lr"] * lr_factor(e, config, 1) for e in range(50)]
    assert lrs[:45] == pytest.approx([1e-4] * 45) and lrs[45:] == pytest.approx([1e-5] * 5)


# --------------------------------------------------------------------------- presets


def test_paper_preset_is_the_papers_recipe():
    cifar = resolve_config("paper", dataset="cifar10")
    assert (cifar.optimizer, cifar.lr, cifar.momentum, cifar.weight_decay) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
    )
    assert (cifar.batch_size, cifar.epochs, cifar.schedule) == (128, 300, "step")
    assert cifar.milestones == (0.5, 0.75) and cifar.flip and cifar.crop_padding == 4
    assert resolve_config("paper", dataset="tiny-imagenet").batch_size == 64


def test_every_shipped_preset_parses():
    presets = available_presets()
    assert {"paper", "cpu", "reid-paper", "multilabel-paper"} <= set(presets)
    assert all(presets.values())  # each has a description
    reid = load_preset("reid-paper")
    assert (reid["optimizer"], reid["lr"], reid["weight_decay"], reid["batch_size"]) == (
        "adam",
        3e-4,
        1e-4,
        32,
    )
    multi = load_preset("multilabel-paper")
    assert (multi["lr"], multi["weight_decay"], multi["batch_size"]) == (1e-4, 4e-5, 32)


def test_overrides_beat_the_dataset_table_which_beats_the_preset():
    assert resolve_config("cpu", dataset="cifar10").arch == "resnet20"
    digits = resolve_config("cpu", dataset="digits")
    assert (digits.arch, digits.batch_size, digits.flip) == ("small-cnn", 64, False)
    assert digits.bf16 is False and resolve_config("cpu", dataset="cifar10").bf16 is True
    assert resolve_config("cpu", dataset="digits", batch_size=32, flip=True).batch_size == 32
    assert resolve_config("cpu", dataset="digits", lr=None).lr == 0.05  # None: not given
    assert resolve_config(None).lr == TrainConfig.lr  # no preset: dataclass defaults


def test_preset_from_a_file_and_its_errors(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("lr = 1\nepochs = 3\n[dataset.digits]\nepochs = 2\n")
    config = resolve_config(str(path), dataset="digits")
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.epochs == 2
    path.write_text("learning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        resolve_config(str(path))
    path.write_text('epochs = "many"\n')
    with pytest.raises(ConfigError, match="epochs must be an integer, got 'many'"):
        resolve_config(str(path))
    path.write_text("epochs = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(str(path))
    with pytest.raises(ConfigError, match=r"unknown preset 'fast'.*known: cpu"):
        resolve_config("fast")


# --------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "mnist"}, "unknown dataset 'mnist'; known: .*cifar10"),
        ({"arch": "resnet18"}, "unknown arch 'resnet18'; known: small-cnn, mlp, resnet20"),
        ({"loss": "focal"}, "unknown loss 'focal'; known: sr, lr, hs-lr"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"loss": "hs-lr", "r": 2.0}, "--r does not apply to loss 'hs-lr'.*beta, m"),
        ({"loss": "sr", "beta": 5.0}, "--beta does not apply to loss 'sr'.*none"),
        ({"loss": "hs-lr", "m": 150.0}, "m is a percentage"),
        ({"lr": -0.1}, "lr must be positive"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"momentum": 1.5}, "momentum must be in"),
        ({"milestones": (0.75, 0.5)}, "milestones must be increasing"),
        ({"head_bias_init": "ones"}, "unknown head_bias_init"),
        ({"task": "classification", "dataset": "market1501"}, "a reid dataset; pass --task reid"),
        ({"dataset": "mosaic-tiny-imagenet", "loss": "sr"}, "'sr' does not apply to task"),
        ({"task": "detection"}, "unknown task 'detection'"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"}, "device"),
        ({"mixup": -0.2}, "mixup must be non-negative, got -0.2"),
        ({"cutmix": float("nan")}, "cutmix must be finite, got nan"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ({"loss": "hs-sr", "mixup": 0.2}, "--mixup make soft targets, and loss 'hs-sr'"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("paper", **overrides)


def test_validate_checks_a_hand_built_config():
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        validate(TrainConfig(batch_size=12.5))
    config = TrainConfig()
    assert validate(config) == TrainConfig(task="classification")  # auto: the dataset's task
    assert config.task == "auto"  # the caller's config is not changed


def test_missing_dataset_names_download_and_data_dir(tmp_path):
    config = resolve_config(
        "cpu", dataset="tiny-imagenet", data_dir=str(tmp_path / "empty"), out=str(tmp_path / "r")
    )
    with pytest.raises(FileNotFoundError, match=r"--download.*--data-dir"):
        train(config, log=None)


def test_config_differences_ignores_where_and_how_fast():
    a = TrainConfig(out="x", device="cpu", threads=1)
    b = TrainConfig(out="y", device="auto", threads=2, eval_batch_size=3)
    assert config_differences(vars(a), vars(b)) == []
    c = TrainConfig(seed=1)
    assert config_differences(vars(a), vars(c)) == ["seed: 0 != 1"]


# --------------------------------------------------------------------------- chunked classifier


@pytest.mark.parametrize("soft", [{}, {"mixup": 0.2, "label_smoothing": 0.1}])
@pytest.mark.parametrize("loss", ["ss-lr", "hs-lr", "sr"])
def test_chunked_classifier_trains_the_same_weights_as_the_materialised_head(tmp_path, loss, soft):
    """--classifier chunked fuses the network's last Linear with the loss: on digits the run
    matches the materialised head's to float round-off, weights, losses and accuracies. With
    mixup and label smoothing it sees the same images and the sparse form of the same soft
    targets (two labels a row, lam and 1 - lam, eps)."""
    runs = {}
    for classifier in ("materialised", "chunked"):
        config = digits_config(
            tmp_path / classifier, loss=loss, classifier=classifier, epochs=1, batch_size=64,
            **soft,
        )  # fmt: skip
        runs[classifier] = train(config, log=None)
    one, two = (
        torch.load(tmp_path / c / "run" / "checkpoint.pt", weights_only=True)
        for c in ("materialised", "chunked")
    )
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-4, atol=1e-5, msg=name)
    for key in ("train_loss", "train_acc", "test_top1"):
        assert runs["chunked"][key] == pytest.approx(runs["materialised"][key], abs=1e-5), key
    assert runs["chunked"]["config"]["classifier"] == "chunked"


def test_chunked_classifier_takes_multilabel_targets_as_positive_lists():
    """Multi-hot rows reach the linear loss as positive lists: the same first step as the
    materialised LR loss on them."""
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert frlr_torch.positive_lists(multi_hot).tolist() == [[0, 2], [-100, -100]]
    x = torch.randn(2, 4, dtype=torch.float64)
    head = torch.nn.Linear(4, 3).double()
    got = frlr_torch.linear_lr_loss(
        x, head.weight, frlr_torch.positive_lists(multi_hot), bias=head.bias
    )
    torch.testing.assert_close(got, frlr_torch.lr_loss(head(x), multi_hot))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"classifier": "sparse"}, "unknown classifier 'sparse'"),
        ({"classifier": "chunked", "loss": "hs-sr"}, "--classifier chunked takes the losses"),
        ({"classifier": "chunked", "ncd_every": 5}, "--ncd-every"),
        (
            {
                "classifier": "chunked",
                "dataset": "mosaic-tiny-imagenet",
                "loss": "lr",
                "cutmix": 1.0,
            },
            "--cutmix make soft targets, which --classifier chunked takes for class indices",
        ),
    ],
)
def test_chunked_classifier_configs_are_checked(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        digits_config(tmp_path, **overrides)


# --------------------------------------------------------------------------- --class-parallel
# (the two-process runs are in test_ddp.py)


def test_class_parallel_needs_the_chunked_classifier(tmp_path):
    with pytest.raises(ConfigError, match="--class-parallel shards the classifier of --classifier"):
        digits_config(tmp_path, class_parallel=True)


def test_class_parallel_in_one_process_is_refused_before_the_run_starts(tmp_path):
    config = digits_config(tmp_path, classifier="chunked", class_parallel=True)
    with pytest.raises(ConfigError, match="this run has 1 process; launch it with torchrun"):
        train(config, log=None)
    assert not (tmp_path / "run").exists()


def test_resume_with_another_process_count_is_refused(tmp_path, fabricated_digits):
    """A --class-parallel run's shards are split by the process count, so a resume must keep
    it; the check is every run's (here a one-process resume of a checkpoint marked as written by
    two, which torchrun runs in test_ddp.py would make)."""
    config = digits_config(tmp_path, epochs=2)
    train(config, stop_after=1, log=None)
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "world_size": 2}, path)
    message = r"written by 2 process\(es\); resume it with the same number \(got 1\)"
    with pytest.raises(ConfigError, match=message):
        train(config, resume=True, log=None)


def test_class_parallel_splits_the_classes_contiguously_and_needs_one_per_rank():
    assert class_shard_sizes(10, 4) == [3, 3, 2, 2]
    assert class_shard_sizes(9, 2) == [5, 4]
    assert class_shard_sizes(6, 3) == [2, 2, 2]
    with pytest.raises(ValueError, match="2 classes cannot be split over 3 ranks"):
        class_shard_sizes(2, 3)
    with pytest.raises(ConfigError, match="the 2 classes cannot be split over 3 processes"):
        ClassifierShard(torch.nn.Linear(4, 2), world=3, rank=0)


def test_the_epoch_line_gives_the_learning_rate_a_reader_can_use():
    """A warm-up epoch at lr 0.03 starts near 0: the line shows where it went, not only that."""
    from frlr.train import _epoch_line

    record = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "lr": 0.000385, "lr_end": 0.03}
    record.update(epoch_time_s=1.0, images_per_s=10.0)
    assert "lr 0.000385 -> 0.03 " in _epoch_line(record, 6)
    record.update(lr=0.1, lr_end=0.1)
    assert "lr 0.1 " in _epoch_line(record, 6)


def test_bf16_on_a_cpu_that_emulates_it_says_so(tmp_path, monkeypatch):
    import frlr.train as train_module

    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    config = resolve_config(
        "cpu", dataset="digits", epochs=1, max_steps_per_epoch=1, bf16=True, out=str(tmp_path)
    )
    with pytest.warns(UserWarning, match="--no-bf16 trains faster"):
        train_module.train(config, log=None)
