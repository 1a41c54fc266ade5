"""DenseNet-BC: Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.

The ImageNet DenseNets (121: blocks of 6/12/24/16 layers, 201: 6/12/48/32; growth rate 32,
bottleneck width 4 x 32, compression 0.5) with torchvision's module names, so ImageNet weights
saved from torchvision load directly (``features.conv0``, ``features.denseblock1.denselayer1
.conv1``, ..., ``features.norm5``, ``classifier``).

Adaptation to small inputs (``stem="small"``, the default): the ImageNet stem (7x7 stride-2
convolution and 3x3 stride-2 max-pool) divides the resolution by 4, which would leave a 32x32
CIFAR image at 1x1 before the last dense block. The small stem is one 3x3 stride-1 convolution
without the max-pool, so the four blocks see 32/16/8/4 pixels (64/32/16/8 for Tiny ImageNet);
the dense blocks and transitions are unchanged, so their pretrained weights still fit (only
``features.conv0.weight`` changes shape). ``stem="imagenet"`` is torchvision's network exactly.

``model.features`` is an ``nn.Sequential`` that, after torchvision's layers, also applies the
final ReLU, global average pooling and flattening (modules without parameters, so the
state-dict keys are unchanged): ``model.features(x)`` is the (N, D) embedding.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .init import (
    check_model_args,
    check_stem,
    init_classifier_bias,
    init_conv_and_norm,
)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bn_size * growth channels) then BN-ReLU-conv3x3 (growth channels)."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(inputs, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        x = self.conv2(self.relu2(self.norm2(x)))
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each fed the concatenation of all earlier outputs."""

    def __init__(
        self, num_layers: int, in_channels: int, bn_size: int, growth_rate: int, drop_rate: float
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compression) then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    """DenseNet-BC with torchvision's names; ``stem="small"`` for 32x32 / 64x64 inputs."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        stem: str = "small",
        head_bias_init: str = "zero",
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, head_bias_init)
        check_stem(stem)
        if not block_config or any(n < 1 for n in block_config):
            raise ValueError(f"block_config must be positive layer counts, got {block_config!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.stem = stem
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if stem == "imagenet":
            layers["conv0"] = nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False)
        else:
            layers["conv0"] = nn.Conv2d(in_channels, num_init_features, 3, 1, 1, bias=False)
        layers["norm0"] = nn.BatchNorm2d(num_init_features)
        layers["relu0"] = nn.ReLU(inplace=True)
        if stem == "imagenet":
            layers["pool0"] = nn.MaxPool2d(3, 2, 1)
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            layers[f"denseblock{i + 1}"] = DenseBlock(
                num_layers, channels, bn_size, growth_rate, drop_rate
            )
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                layers[f"transition{i + 1}"] = Transition(channels, channels // 2)
                channels //= 2
        layers["norm5"] = nn.BatchNorm2d(channels)
        layers["relu5"] = nn.ReLU(inplace=True)
        layers["pool5"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten(1)
        self.features = nn.Sequential(layers)
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, num_classes)
        init_conv_and_norm(self, conv_mode="fan_in")
        init_classifier_bias(self.classifier, head_bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def densenet121(
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    stem: str = "small",
    drop_rate: float = 0.0,
) -> DenseNet:
    """DenseNet-121 (Huang et al. 2017): blocks 6/12/24/16, growth 32, 1024-d features."""
    return DenseNet(
        num_classes,
        in_channels,
        block_config=(6, 12, 24, 16),
        drop_rate=drop_rate,
        stem=stem,
        head_bias_init=head_bias_init,
    )


def densenet201(
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    stem: str = "small",
    drop_rate: float = 0.0,
) -> DenseNet:
    """DenseNet-201 (Huang et al. 2017): blocks 6/12/48/32, growth 32, 1920-d features."""
    return DenseNet(
        num_classes,
        in_channels,
        block_config=(6, 12, 48, 32),
        drop_rate=drop_rate,
        stem=stem,
        head_bias_init=head_bias_init,
    )
