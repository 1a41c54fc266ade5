"""The model zoo of the paper's experiments, written here (no torchvision or timm dependency).

Every model takes ``num_classes``, ``in_channels`` (1 for Omniglot, 3 otherwise) and
``head_bias_init`` (``"zero"`` or ``"prior"``, see :func:`init_classifier_bias`), exposes
``features(x) -> (N, feature_dim)`` (the embedding after global pooling) and ``classifier``
(``nn.Linear(feature_dim, num_classes)``), and computes ``forward(x) = classifier(features(x))``.

=============  ==========================================  =====================  ===========
name           architecture                                input it is built for  feature_dim
=============  ==========================================  =====================  ===========
resnet20..110  He et al. 2016 CIFAR ResNet, option-A        32x32                  64
wrn28_10       Zagoruyko & Komodakis 2016, pre-activation  32x32                  640
wide_resnet    WRN-depth-width (``depth=``, ``width=``)    32x32                  64 * width
densenet121    Huang et al. 2017, torchvision names        ``stem="small"``       1024
densenet201    Huang et al. 2017, torchvision names        ``stem="small"``       1920
resnet50       He et al. 2016, torchvision names           ``stem="imagenet"``    2048
mobilenet      Howard et al. 2017 v1, width multiplier     ``stem="imagenet"``    1024 * alpha
small-cnn      3 conv-BN-ReLU layers (:mod:`.small`)       8x8 and up             128
mlp            2 hidden layers of 256 (:mod:`.small`)      any fixed size         256
=============  ==========================================  =====================  ===========

:func:`build_model` builds any of them by its ``arch`` name (:data:`ARCHS`); :func:`create_model`
builds the zoo models above the tiny ones.

Example::

    from frlr.models import create_model, load_pretrained
    model = create_model("resnet50", num_classes=751, head_bias_init="prior")
    print(load_pretrained(model, "resnet50-0676ba61.pth"))  # fc is dropped: 751 != 1000
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .densenet import DenseNet, densenet121, densenet201
from .init import (
    HEAD_BIAS_INITS,
    STEMS,
    init_classifier_bias,
    init_conv_and_norm,
    prior_logit,
)
from .mobilenet import MobileNetV1, mobilenet
from .pretrained import PretrainedLoadReport, load_pretrained
from .resnet import ResNet, resnet50
from .resnet_cifar import CIFAR_RESNET_DEPTHS, CifarResNet, cifar_resnet
from .small import MLP, SMALL_MODELS, SmallConvNet
from .wide_resnet import WideResNet, wide_resnet, wrn28_10

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(cifar_resnet, depth) for name, depth in CIFAR_RESNET_DEPTHS.items()},
    "wrn28_10": wrn28_10,
    "wide_resnet": wide_resnet,
    "densenet121": densenet121,
    "densenet201": densenet201,
    "resnet50": resnet50,
    "mobilenet": mobilenet,
}

MODELS: tuple[str, ...] = tuple(_BUILDERS)
"""Names accepted by :func:`create_model`."""


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    **kwargs: object,
) -> nn.Module:
    """Build the model ``name`` (one of ``MODELS``, case-insensitive).

    ``kwargs`` go to the architecture: ``shortcut`` ("A"/"B") for the CIFAR ResNets;
    ``depth``, ``width`` (required) and ``dropout`` for ``wide_resnet``; ``dropout`` for
    ``wrn28_10``; ``stem`` ("small"/"imagenet") and ``drop_rate`` for the DenseNets; ``stem``,
    ``last_stride`` and ``zero_init_residual`` for ``resnet50``; ``width_multiplier`` and
    ``stem`` for ``mobilenet``.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    builder = _BUILDERS.get(name.strip().lower())
    if builder is None:
        raise ValueError(f"unknown model name {name!r}; known names: {', '.join(MODELS)}")
    return builder(
        num_classes=num_classes, in_channels=in_channels, head_bias_init=head_bias_init, **kwargs
    )


ARCHS: tuple[str, ...] = (*SMALL_MODELS, *MODELS)
"""Every ``arch`` the training loop accepts: the tiny networks and the zoo."""


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    head_bias_init: str = "zero",
    image_size: int | None = None,
) -> nn.Module:
    """A tiny network of :data:`SMALL_MODELS` or a zoo model of :func:`create_model`.

    ``image_size`` (the square input side) is needed by ``mlp`` only.
    """
    key = name.strip().lower()
    if key == "mlp":
        if image_size is None:
            raise ValueError("arch 'mlp' needs image_size (the input side in pixels)")
        return MLP(num_classes, in_channels, head_bias_init, image_size=image_size)
    if key in SMALL_MODELS:
        return SMALL_MODELS[key](num_classes, in_channels, head_bias_init)
    if key not in MODELS:
        raise ValueError(f"unknown arch {name!r}; known: {', '.join(ARCHS)}")
    return create_model(key, num_classes, in_channels, head_bias_init)


__all__ = [
    "ARCHS",
    "HEAD_BIAS_INITS",
    "MLP",
    "MODELS",
    "SMALL_MODELS",
    "STEMS",
    "CifarResNet",
    "DenseNet",
    "MobileNetV1",
    "PretrainedLoadReport",
    "ResNet",
    "SmallConvNet",
    "WideResNet",
    "build_model",
    "cifar_resnet",
    "create_model",
    "densenet121",
    "densenet201",
    "init_classifier_bias",
    "init_conv_and_norm",
    "load_pretrained",
    "mobilenet",
    "prior_logit",
    "resnet50",
    "wide_resnet",
    "wrn28_10",
]
