"""MobileNet v1: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", arXiv:1704.04861, 2017 (Table 1).

A 3x3 stride-2 convolution of 32 channels, then 13 depthwise-separable blocks (3x3 depthwise
conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU) up to 1024 channels, global average pooling and a
linear head. The width multiplier alpha scales every layer's channel count (``int(c * alpha)``,
as in the Keras reference implementation); alpha = 1 has 3.2M parameters before the head. The
paper's Table 1 lists stride 2 for the last depthwise layer; the network it describes (7x7 before
pooling at 224x224) and every reference implementation use stride 1, as here.

torchvision has no MobileNet v1, so the names are our own: ``stem.conv``/``stem.bn``, then
``blocks.{i}.depthwise.{conv,bn}`` and ``blocks.{i}.pointwise.{conv,bn}``, and ``classifier``.

``stem="imagenet"`` (default) is the paper's network, right for 224x224 and re-id crops of
256x128 (8x4 before pooling). ``stem="small"`` makes the first convolution stride 1, for
32x32 / 64x64 inputs, which the standard network would reduce to 1x1 / 2x2.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import check_model_args, check_stem, init_classifier_bias, init_conv_and_norm

MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
"""(pointwise output channels, depthwise stride) of the 13 blocks at width multiplier 1."""


class ConvBNReLU(nn.Sequential):
    """Convolution without bias, batch norm, ReLU (``groups=in_channels`` makes it depthwise)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-ReLU (spatial filtering) then 1x1 pointwise conv-BN-ReLU (mixing)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvBNReLU(in_channels, out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    """MobileNet v1 with width multiplier; ``features(x)`` is the pooled embedding."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width_multiplier: float = 1.0,
        stem: str = "imagenet",
        head_bias_init: str = "zero",
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, head_bias_init)
        check_stem(stem)
        if (
            isinstance(width_multiplier, bool)
            or not isinstance(width_multiplier, (int, float))
            or width_multiplier <= 0
        ):
            raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}")

        def width(channels: int) -> int:
            return max(1, int(channels * width_multiplier))

        self.width_multiplier = width_multiplier
        channels = width(32)
        self.stem = ConvBNReLU(in_channels, channels, 3, 2 if stem == "imagenet" else 1)
        blocks = []
        for out_channels, stride in MOBILENET_V1_BLOCKS:
            blocks.append(DepthwiseSeparable(channels, width(out_channels), stride))
            channels = width(out_channels)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, num_classes)
        init_conv_and_norm(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        init_classifier_bias(self.classifier, head_bias_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 1024 * alpha) embedding before the classifier."""
        x = self.blocks(self.stem(x))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def mobilenet(
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    width_multiplier: float = 1.0,
    stem: str = "imagenet",
) -> MobileNetV1:
    """MobileNet v1 (Howard et al. 2017) with width multiplier ``width_multiplier`` (alpha)."""
    return MobileNetV1(num_classes, in_channels, width_multiplier, stem, head_bias_init)
