"""Two tiny networks for tiny images, for smoke tests and CPU comparisons on 8x8 digits.

The rest of the zoo in :mod:`frlr.models` is built for 32x32 and larger inputs; a CIFAR ResNet
on the 8x8 digits spends most of its time on Python overhead. These follow the zoo's interface
(``num_classes``, ``in_channels``, ``head_bias_init``; ``features(x)`` and ``classifier``) so the
training loop treats every model the same way.

==========  ==============================================================  ===========
name        architecture                                                    feature_dim
==========  ==============================================================  ===========
small-cnn   3 conv-BN-ReLU layers (32, 64, 128 channels, strides 1, 2, 2),  128
            global average pooling
mlp         flatten, Linear(C*H*W, 256), ReLU, Linear(256, 256), ReLU;      256
            no batch norm, so data-parallel training equals one process
==========  ==============================================================  ===========
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from frlr.models.init import init_classifier_bias, init_conv_and_norm


class SmallConvNet(nn.Module):
    """Three 3x3 conv-BN-ReLU layers and global average pooling; any input of at least 4x4."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        head_bias_init: str = "zero",
        width: int = 32,
    ) -> None:
        super().__init__()
        _check_args(num_classes, in_channels, width, "width")
        self.body = nn.Sequential(
            _conv_bn_relu(in_channels, width, stride=1),
            _conv_bn_relu(width, 2 * width, stride=2),
            _conv_bn_relu(2 * width, 4 * width, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 4 * width
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        init_conv_and_norm(self)
        init_classifier_bias(self.classifier, head_bias_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 4 * width) embedding before the classifier."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Flatten, then two ReLU hidden layers; needs the input size, ``image_size``, up front."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        head_bias_init: str = "zero",
        image_size: int = 8,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        _check_args(num_classes, in_channels, hidden, "hidden")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = hidden
        self.classifier = nn.Linear(hidden, num_classes)
        init_classifier_bias(self.classifier, head_bias_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, hidden) embedding before the classifier."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _check_args(num_classes: int, in_channels: int, width: int, width_name: str) -> None:
    for name, value, low in (
        ("num_classes", num_classes, 2),
        ("in_channels", in_channels, 1),
        (width_name, width, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


SMALL_MODELS: dict[str, Callable[..., nn.Module]] = {"small-cnn": SmallConvNet, "mlp": MLP}
"""The tiny networks, by name; :func:`frlr.models.build_model` also knows the zoo's names."""
