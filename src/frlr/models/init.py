"""Weight initialisation and argument checks shared by every model in the zoo.

The backbone initialisation follows torchvision (He et al., "Delving Deep into Rectifiers",
ICCV 2015: Kaiming-normal convolutions; batch-norm weight 1, bias 0). The classifier bias has
its own switch, ``head_bias_init``, because with logistic-regression losses the bias decides how
much every negative class pushes at the start of training (the "negative-class distraction" the
paper's hard selection removes): ``"prior"`` starts each sigmoid at the class prior instead of
at 1/2 (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, Sec. 4.1), so the
toolkit can measure how much of the distraction that alone removes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HEAD_BIAS_INITS = ("zero", "prior")
"""The accepted values of ``head_bias_init``."""

STEMS = ("small", "imagenet")
"""The accepted values of ``stem`` for the models that offer both input resolutions."""


def prior_logit(num_classes: int) -> float:
    """Log-odds of the uniform class prior 1/K: log(p / (1 - p)) with p = 1/K, i.e. -log(K - 1).

    A sigmoid of this logit is exactly 1/K, the expected frequency of any one class among K
    balanced classes. For K = 2 it is 0.
    """
    check_num_classes(num_classes)
    return -math.log(num_classes - 1)


def init_classifier_bias(linear: nn.Linear, mode: str) -> None:
    """Set the classifier bias for ``mode`` in ``HEAD_BIAS_INITS``.

    ``"zero"``: b_k = 0, every sigmoid starts at 1/2.
    ``"prior"``: b_k = -log(K - 1), every sigmoid starts at the prior 1/K (Lin et al. 2017).
    Softmax is invariant to adding one constant to every logit, so the choice only matters for
    the logistic-regression family of losses (LR, HS-LR, SS-LR), not for softmax (SR, HS-SR).
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    if linear.bias is None:
        raise ValueError("linear has no bias to initialise (built with bias=False)")
    check_head_bias_init(mode)
    value = 0.0 if mode == "zero" else prior_logit(linear.out_features)
    with torch.no_grad():
        linear.bias.fill_(value)


def init_conv_and_norm(module: nn.Module, conv_mode: str = "fan_out") -> None:
    """Kaiming-normal convolutions (ReLU gain), batch-norm weight 1 and bias 0, conv bias 0.

    ``conv_mode`` is torchvision's choice per family: ``"fan_out"`` for ResNet and MobileNet,
    ``"fan_in"`` for DenseNet. Linear layers are left to the caller (torchvision keeps
    PyTorch's default weight init for ResNet and DenseNet heads).
    """
    if conv_mode not in ("fan_in", "fan_out"):
        raise ValueError(f"conv_mode must be 'fan_in' or 'fan_out', got {conv_mode!r}")
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 (a single-label classifier needs two classes), "
            f"got {num_classes}"
        )


def check_head_bias_init(head_bias_init: str) -> None:
    if head_bias_init not in HEAD_BIAS_INITS:
        raise ValueError(f"head_bias_init must be one of {HEAD_BIAS_INITS}, got {head_bias_init!r}")


def check_stem(stem: str) -> None:
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")


def check_model_args(num_classes: int, in_channels: int, head_bias_init: str) -> None:
    """Validate the three arguments every zoo model takes."""
    check_num_classes(num_classes)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int):
        raise TypeError(f"in_channels must be an int, got {type(in_channels).__name__}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    check_head_bias_init(head_bias_init)
