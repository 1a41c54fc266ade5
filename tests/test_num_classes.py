"""``num_classes``: keep the first K classes of a classification dataset in every split.

Checked on the fabricated 3-class Tiny ImageNet of ``test_data_tiny_imagenet`` (official
layout, JPEGs): labels stay 0..K-1, the validation (test) split is cut alike, a run trains a
K-way head, and K < 2, K above the class count, and re-id or multi-label data are refused with
the value and the valid range named.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from frlr.cli import main
from frlr.config import ConfigError, config_differences, resolve_config
from frlr.data import ImageArrays, keep_first_classes
from frlr.train import load_split, train
from test_data_tiny_imagenet import make_tiny_imagenet


def arrays(labels, classes=("a", "b", "c", "d"), cams=None) -> ImageArrays:
    labels = np.asarray(labels)
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1)
    return ImageArrays(images, labels, list(classes), cams=cams)


def test_keeps_the_first_classes_in_order_with_their_labels():
    split = arrays([3, 0, 2, 1, 0, 1])
    kept = keep_first_classes(split, 2)
    assert kept.classes == ["a", "b"]
    assert kept.labels.tolist() == [0, 1, 0, 1]
    assert kept.images[:, 0, 0, 0].tolist() == [1, 3, 4, 5]  # the split's order is kept
    assert kept.meta["kept_classes"] == "the first 2 of 4"
    assert keep_first_classes(split, 4).labels.tolist() == split.labels.tolist()


@pytest.mark.parametrize(
    ("split", "k", "error", "message"),
    [
        (
            arrays([0, 1]),
            1,
            ValueError,
            "k must be between 2 and the 4 classes of the split, got 1",
        ),
        (
            arrays([0, 1]),
            5,
            ValueError,
            "k must be between 2 and the 4 classes of the split, got 5",
        ),
        (arrays([0, 1]), 2.0, TypeError, "k must be an integer number of classes, got 2.0"),
        (arrays([0, 1]), True, TypeError, "k must be an integer"),
        (arrays([[1, 0, 0, 1]]), 2, ValueError, "needs single-label data"),
        (arrays([0, 1], cams=np.array([0, 1])), 2, ValueError, "does not apply to re-id"),
    ],
)
def test_bad_k_or_data_is_refused(split, k, error, message):
    with pytest.raises(error, match=message):
        keep_first_classes(split, k)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_imagenet(tmp_path_factory.mktemp("data")).parent


def tiny_config(tiny, tmp_path, **overrides):
    values = {
        "dataset": "tiny-imagenet",
        "data_dir": str(tiny),
        "cache_dir": str(tmp_path / "cache"),
        "arch": "mlp",
        "image_size": 8,
        "epochs": 1,
        "batch_size": 2,
        "threads": 1,
        "loss": "lr",
        "out": str(tmp_path / "run"),
    }
    values.update(overrides)
    return resolve_config("cpu", **values)


def test_every_split_is_cut_to_the_first_classes(tiny, tmp_path):
    config = tiny_config(tiny, tmp_path, num_classes=2)
    full = {split: load_split(tiny_config(tiny, tmp_path), split) for split in ("train", "val")}
    for split in ("train", "val"):
        kept = load_split(config, split)
        assert kept.classes == full[split].classes[:2]
        assert set(kept.labels.tolist()) == {0, 1}
        mask = full[split].labels < 2
        np.testing.assert_array_equal(kept.images, full[split].images[mask])
        np.testing.assert_array_equal(kept.labels, full[split].labels[mask])
    # the fabricated val split: val_0 and val_10 of class 0, val_2 of class 1, val_11 of class 2
    assert load_split(config, "val").labels.tolist() == [0, 1, 0]
    assert len(full["val"]) == 4


def test_a_run_trains_a_k_way_head_on_the_kept_classes(tiny, tmp_path):
    result = train(tiny_config(tiny, tmp_path, num_classes=2), log=None)
    assert result["num_train"] == 4  # 2 classes x 2 training images
    assert result["config"]["num_classes"] == 2
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["num_classes"] == 2
    model = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    head = [name for name in model if name.endswith(".weight")][-1]
    assert model[head].shape[0] == 2  # the classifier has one output per kept class


def test_k_above_the_classes_on_disk_is_a_config_error(tiny, tmp_path):
    # tiny-imagenet declares 200 classes; the fabricated copy has 3, found when loading
    with pytest.raises(
        ConfigError,
        match=r"num_classes, tiny-imagenet train: k must be between "
        r"2 and the 3 classes of the split, got 4",
    ):
        train(tiny_config(tiny, tmp_path, num_classes=4), log=None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_classes": 1}, "num_classes must be at least 2 (one class has no negatives), got 1"),
        ({"num_classes": 0}, "num_classes must be at least 2"),
        (
            {"num_classes": 11},
            "num_classes 11 is more than the 10 classes of 'digits'; choose 2..10",
        ),
        (
            {"num_classes": 5, "dataset": "omniglot-retrieval"},
            "'omniglot-retrieval' is a reid dataset; keeping the first K classes applies to "
            "classification datasets only",
        ),
        ({"num_classes": 5, "dataset": "mosaic-tiny-imagenet"}, "is a multilabel dataset"),
    ],
)
def test_validation_names_the_bad_value(overrides, message):
    values = {"dataset": "digits", **overrides}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config("cpu", **values)


def test_runs_saved_before_the_field_existed_mean_all_classes():
    saved = asdict(resolve_config("cpu", dataset="digits"))
    del saved["num_classes"]
    assert config_differences(saved, asdict(resolve_config("cpu", dataset="digits"))) == []
    assert config_differences(saved, asdict(resolve_config("cpu", dataset="digits", num_classes=5)))


def test_cli_takes_num_classes(capsys):
    assert (
        main(["train", "--dataset", "digits", "--preset", "cpu", "--num-classes", "5", "--dry-run"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["num_classes"] == 5
    assert main(["train", "--dataset", "digits", "--preset", "cpu", "--num-classes", "1"]) == 2
    assert "num_classes must be at least 2" in capsys.readouterr().err
