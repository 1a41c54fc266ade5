"""Wide residual networks: Zagoruyko and Komodakis, "Wide Residual Networks", BMVC 2016.

WRN-d-k: a 3x3 stem of 16 channels, three stages of (d - 4) / 6 pre-activation basic blocks
(BN-ReLU-conv, He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016) with 16k,
32k and 64k channels, a final BN-ReLU, global average pooling and a linear head. Dropout
between the two convolutions of a block is optional (the paper's WRN-28-10 results use 0.3 on
CIFAR). A 1x1 convolution projects the shortcut where the shape changes, applied to the
pre-activated input as in the authors' code. WRN-28-10 has 36.5M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import check_model_args, init_classifier_bias, init_conv_and_norm


class WideBasicBlock(nn.Module):
    """Pre-activation block: x + conv(relu(bn(dropout(conv(relu(bn(x))))))) ."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = F.relu(self.bn1(x))
        out = self.conv1(preact)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        identity = x if self.shortcut is None else self.shortcut(preact)
        return out + identity


class WideResNet(nn.Module):
    """WRN-``depth``-``width`` for small inputs (Zagoruyko and Komodakis 2016).

    ``features(x)`` is the 64 * width pooled embedding, ``classifier`` the linear head.
    """

    def __init__(
        self,
        depth: int,
        width: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
        head_bias_init: str = "zero",
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, head_bias_init)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth!r}"
            )
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        blocks_per_stage = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.depth = depth
        self.width = width
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.block1 = self._make_stage(channels[0], channels[1], blocks_per_stage, 1, dropout)
        self.block2 = self._make_stage(channels[1], channels[2], blocks_per_stage, 2, dropout)
        self.block3 = self._make_stage(channels[2], channels[3], blocks_per_stage, 2, dropout)
        self.bn = nn.BatchNorm2d(channels[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels[3]
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        init_conv_and_norm(self)
        init_classifier_bias(self.classifier, head_bias_init)

    @staticmethod
    def _make_stage(
        in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float
    ) -> nn.Sequential:
        layers = [WideBasicBlock(in_channels, out_channels, stride, dropout)]
        layers += [
            WideBasicBlock(out_channels, out_channels, 1, dropout) for _ in range(blocks - 1)
        ]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 64 * width) embedding before the classifier."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def wide_resnet(
    depth: int,
    width: int,
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-``depth``-``width`` (depth = 6n + 4; Zagoruyko and Komodakis 2016)."""
    return WideResNet(depth, width, num_classes, in_channels, dropout, head_bias_init)


def wrn28_10(
    num_classes: int, in_channels: int = 3, head_bias_init: str = "zero", dropout: float = 0.0
) -> WideResNet:
    """WRN-28-10, 36.5M parameters (Zagoruyko and Komodakis 2016, Table 5)."""
    return WideResNet(28, 10, num_classes, in_channels, dropout, head_bias_init)
