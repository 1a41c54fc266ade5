"""ResNet-50: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Table 1).

Bottleneck blocks 3/4/6/3 with the stride on the 3x3 convolution (torchvision's "v1.5"), and
torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``), so ImageNet
weights saved from torchvision load with ``model.load_state_dict(sd, strict=False)`` or
:func:`frlr.models.load_pretrained`. The head is registered as ``fc`` for that reason and is
also reachable as ``classifier`` like every other model of the zoo.

``stem="imagenet"`` (default) is the standard 7x7 stride-2 convolution + 3x3 stride-2 max-pool,
right for ImageNet and re-identification crops of 256x128. ``stem="small"`` replaces it by one
3x3 stride-1 convolution without max-pool, for 32x32 / 64x64 inputs, where the standard stem
would leave a 32x32 image at 1x1 in ``layer4``. ``last_stride=1`` keeps ``layer4`` at the
resolution of ``layer3``, the common re-identification variant (Luo et al., "Bag of Tricks and
a Strong Baseline for Deep Person Re-identification", CVPRW 2019); the default 2 is the paper's.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import check_model_args, check_stem, init_classifier_bias, init_conv_and_norm


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, with a projection shortcut where shapes change."""

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet with torchvision's names; ``features(x)`` is the pooled embedding."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int = 3,
        stem: str = "imagenet",
        last_stride: int = 2,
        zero_init_residual: bool = False,
        head_bias_init: str = "zero",
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, head_bias_init)
        check_stem(stem)
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        self.stem = stem
        imagenet_stem = stem == "imagenet"
        self.conv1 = (
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            if imagenet_stem
            else nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        )
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet_stem else nn.Identity()
        self._in_channels = 64
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], last_stride)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512 * Bottleneck.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes)
        init_conv_and_norm(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
        init_classifier_bias(self.fc, head_bias_init)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_channels = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = [Bottleneck(self._in_channels, planes, stride, downsample)]
        self._in_channels = out_channels
        layers += [Bottleneck(out_channels, planes, 1, None) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    @property
    def classifier(self) -> nn.Linear:
        """The linear head; stored as ``fc`` to keep torchvision's state-dict keys."""
        return self.fc

    def __setattr__(self, name: str, value: object) -> None:
        # Assigning ``model.classifier`` must replace ``fc``, not register a second head.
        super().__setattr__("fc" if name == "classifier" else name, value)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 2048) embedding before the classifier."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnet50(
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    stem: str = "imagenet",
    last_stride: int = 2,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-50 (He et al. 2016), 23.5M parameters before the head, 2048-d features."""
    return ResNet(
        (3, 4, 6, 3),
        num_classes,
        in_channels,
        stem=stem,
        last_stride=last_stride,
        zero_init_residual=zero_init_residual,
        head_bias_init=head_bias_init,
    )
