"""CIFAR ResNets: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2.

Depth 6n + 2: a 3x3 stem of 16 channels, then three stages of n basic blocks with 16, 32 and 64
channels at 32x32, 16x16 and 8x8 (for a 32x32 input), global average pooling and a linear head.
ResNet-20/32/44/56/110 are n = 3/5/7/9/18.

Shortcuts where the shape changes: option ``"A"`` (the paper's choice for CIFAR, the default)
subsamples by striding and zero-pads the new channels, adding no parameters; ResNet-32 then has
0.46M parameters, as in the paper's Table 6. Option ``"B"`` uses a 1x1 convolution + batch norm
projection (+2.7K parameters for ResNet-32), which some re-implementations use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import check_model_args, init_classifier_bias, init_conv_and_norm

SHORTCUTS = ("A", "B")

CIFAR_RESNET_DEPTHS = {
    "resnet20": 20,
    "resnet32": 32,
    "resnet44": 44,
    "resnet56": 56,
    "resnet110": 110,
}


class PadChannelsShortcut(nn.Module):
    """Option A: identity on the kept pixels, zeros for the extra channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the addition."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadChannelsShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small inputs (He et al. 2016, Sec. 4.2); any input size >= 8x8 works.

    ``features(x)`` is the 64-d pooled embedding, ``classifier`` the linear head.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        shortcut: str = "A",
        head_bias_init: str = "zero",
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, head_bias_init)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, ...), got {depth!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(16, 16, blocks_per_stage, 1, shortcut)
        self.layer2 = self._make_stage(16, 32, blocks_per_stage, 2, shortcut)
        self.layer3 = self._make_stage(32, 64, blocks_per_stage, 2, shortcut)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 64
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        init_conv_and_norm(self)
        init_classifier_bias(self.classifier, head_bias_init)

    @staticmethod
    def _make_stage(
        in_channels: int, out_channels: int, blocks: int, stride: int, shortcut: str
    ) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride, shortcut)]
        layers += [BasicBlock(out_channels, out_channels, 1, shortcut) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 64) embedding before the classifier."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def cifar_resnet(
    depth: int,
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    shortcut: str = "A",
) -> CifarResNet:
    """ResNet-``depth`` for 32x32 inputs (depth = 6n + 2; He et al. 2016)."""
    return CifarResNet(depth, num_classes, in_channels, shortcut, head_bias_init)
