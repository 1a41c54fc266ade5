"""Tests for :mod:`frlr.catalogue`: the one list of losses and hyper-parameters. Every registry
and default agrees with it, its checks refuse NaN, infinity and out-of-range values with a
ValueError naming the parameter, and both frameworks' losses use those checks."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import frlr
import frlr.torch as frlr_torch
from frlr.catalogue import (
    HYPERPARAMETERS,
    LOSS_HYPERPARAMETERS,
    LOSS_LABELS,
    LOSS_NAMES,
    canonical_loss_name,
    check_hyperparameters,
    default_hyperparameter,
    hyperparameter_problem,
    num_hard_negatives,
)
from frlr.style import LOSS_COLORS, loss_color, loss_label
from frlr.train import TrainConfig


def test_every_list_of_losses_is_the_catalogue():
    assert frlr.LOSS_NAMES == LOSS_NAMES
    assert tuple(frlr_torch.LOSSES) == LOSS_NAMES == tuple(frlr_torch.FUNCTIONAL)
    assert tuple(LOSS_COLORS) == LOSS_NAMES == tuple(LOSS_LABELS)
    assert tuple(LOSS_HYPERPARAMETERS) == LOSS_NAMES


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_the_torch_defaults_are_the_catalogue_defaults(name):
    parameters = inspect.signature(frlr_torch.FUNCTIONAL[name]).parameters
    for param in LOSS_HYPERPARAMETERS[name]:
        assert parameters[param].default == default_hyperparameter(name, param)
    takes_alpha = "alpha" in parameters
    assert takes_alpha == bool(LOSS_HYPERPARAMETERS[name])


def test_the_keras_defaults_are_the_catalogue_defaults():
    keras_losses = pytest.importorskip("frlr.keras")
    assert tuple(keras_losses.LOSSES) == LOSS_NAMES
    for name, function in keras_losses.FUNCTIONAL.items():
        parameters = inspect.signature(function).parameters
        for param in LOSS_HYPERPARAMETERS[name]:
            assert parameters[param].default == default_hyperparameter(name, param)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("ss-lr", "ss-lr"), ("SS_LR", "ss-lr"), ("Hs-Sr", "hs-sr"), ("focal", None), (3, None)],
)
def test_canonical_loss_name(spelling, name):
    assert canonical_loss_name(spelling) == name


def test_styles_accept_every_spelling_of_a_name():
    assert loss_color("SS_LR") == LOSS_COLORS["ss-lr"] and loss_label("hs_lr") == "HS-LR"
    assert loss_label("focal") == "focal"


@pytest.mark.parametrize("param", ["beta", "m", "r", "alpha"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_value_errors_naming_the_parameter(param, value):
    with pytest.raises(ValueError, match=rf"^{param} must be finite and .*, got {value}"):
        check_hyperparameters(**{param: value})


@pytest.mark.parametrize(
    ("loss", "kwargs", "match"),
    [
        ("ss-lr", {"beta": math.inf}, "beta must be finite and >= 0, got inf"),
        ("ss-lr", {"r": math.inf}, "r must be finite and >= 0, got inf"),
        ("hs-lr", {"m": math.nan}, r"m must be finite and in \(0, 100\], got nan"),
        ("hs-sr", {"alpha": math.nan}, "alpha must be finite and >= 0, got nan"),
    ],
)
def test_both_frameworks_refuse_non_finite_hyperparameters(loss, kwargs, match):
    logits, target = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=match):
        frlr_torch.get_loss(loss, **kwargs)
    with pytest.raises(ValueError, match=match):
        frlr_torch.FUNCTIONAL[loss](logits, target, **kwargs)


def test_ranges_and_their_messages():
    assert HYPERPARAMETERS["m"].range_text == "in (0, 100]"
    assert HYPERPARAMETERS["beta"].range_text == ">= 0"
    assert hyperparameter_problem("m", 0.0) == (
        "m is a percentage of the negative classes in (0, 100], got 0.0"
    )
    assert hyperparameter_problem("beta", -1.0, label="--beta") == "--beta must be >= 0, got -1.0"
    assert hyperparameter_problem("m", 100.0) is None and hyperparameter_problem("r", 0.0) is None
    with pytest.raises(TypeError, match="beta must be a real number"):
        check_hyperparameters(beta="10")
    assert num_hard_negatives(100, 29) == 29 and num_hard_negatives(3, 1) == 1


def test_the_config_help_comes_from_the_catalogue():
    helps = {f: TrainConfig.__dataclass_fields__[f].metadata["help"] for f in ("beta", "m", "r")}
    assert helps["m"] == (
        "hard-selection percentage of the negative classes (hs-lr, hs-sr; in (0, 100]; default 25)"
    )
    assert "ss-lr" in helps["r"] and "default 2" in helps["r"] and "default 10" in helps["beta"]
