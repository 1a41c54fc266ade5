"""Tests for frlr.models: shapes, the features/classifier contract, parameter counts against the
papers and torchvision, the prior bias, torchvision key compatibility, pretrained loading,
bfloat16 autocast and channels_last.

Kept fast for a 2-core CPU: the contract tests run on small members of each family (same code
paths, fewer layers); the large networks are built for their parameter counts and forwarded once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from frlr.models import (
    MODELS,
    DenseNet,
    PretrainedLoadReport,
    ResNet,
    create_model,
    init_classifier_bias,
    load_pretrained,
    prior_logit,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def backbone_params(model: nn.Module) -> int:
    return n_params(model) - n_params(model.classifier)


# Small members of every family: the code paths of the large ones at a fraction of the cost.
SMALL_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20_A": lambda **kw: create_model("resnet20", **kw),
    "resnet20_B": lambda **kw: create_model("resnet20", shortcut="B", **kw),
    "wrn10_2": lambda **kw: create_model("wide_resnet", depth=10, width=2, dropout=0.3, **kw),
    "densenet_small": lambda **kw: DenseNet(
        block_config=(2, 2, 2, 2), growth_rate=8, num_init_features=16, **kw
    ),
    "densenet_imagenet": lambda **kw: DenseNet(
        block_config=(2, 2, 2, 2), growth_rate=8, num_init_features=16, stem="imagenet", **kw
    ),
    "resnet_small": lambda **kw: ResNet((1, 1, 1, 1), stem="small", **kw),
    "resnet_imagenet": lambda **kw: ResNet((1, 1, 1, 1), last_stride=1, **kw),
    "mobilenet_small": lambda **kw: create_model(
        "mobilenet", width_multiplier=0.25, stem="small", **kw
    ),
    "mobilenet_imagenet": lambda **kw: create_model("mobilenet", width_multiplier=0.25, **kw),
}


def probe_input(key: str, channels: int = 3) -> torch.Tensor:
    """The smallest input a model takes: 16x16 for the small stems (8x downsampling), 32x32 for
    the ImageNet stems (32x)."""
    size = 32 if key.endswith("imagenet") else 16
    return torch.randn(2, channels, size, size)


def build_small(key: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return SMALL_MODELS[key](num_classes=num_classes, in_channels=in_channels).eval()


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """features(x) is (N, feature_dim), classifier maps it, forward == classifier(features)."""
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.in_features == model.feature_dim
    assert model.classifier.out_features == num_classes
    with torch.no_grad():
        feats = model.features(x)
        out = model(x)
    assert feats.shape == (x.shape[0], model.feature_dim)
    assert out.shape == (x.shape[0], num_classes)
    torch.testing.assert_close(out, model.classifier(feats))


def check_shapes(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """The contract's shapes with a single forward pass, for the large networks."""
    with torch.no_grad():
        feats = model.features(x)
        assert feats.shape == (x.shape[0], model.feature_dim)
        assert model.classifier(feats).shape == (x.shape[0], num_classes)


# ---------------------------------------------------------------- factory and contract


def test_models_lists_the_issue_names() -> None:
    expected = {
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "wrn28_10",
        "wide_resnet",
        "densenet121",
        "densenet201",
        "resnet50",
        "mobilenet",
    }
    assert set(MODELS) == expected


@pytest.mark.parametrize("key", sorted(SMALL_MODELS))
@pytest.mark.parametrize("size", [(32, 32), (64, 64)])
def test_small_models_contract(key: str, size: tuple[int, int]) -> None:
    model = build_small(key, num_classes=7)
    check_contract(model, torch.randn(2, 3, *size), 7)


@pytest.mark.parametrize("key", sorted(SMALL_MODELS))
def test_one_input_channel(key: str) -> None:
    model = build_small(key, num_classes=5, in_channels=1)
    check_contract(model, probe_input(key, channels=1), 5)


@pytest.mark.parametrize("name", ["resnet32", "resnet44", "resnet56", "resnet110"])
def test_cifar_resnet_depths(name: str) -> None:
    model = create_model(name, num_classes=10).eval()
    check_contract(model, torch.randn(2, 3, 32, 32), 10)
    assert model.feature_dim == 64
    assert model.depth == int(name[len("resnet") :])


def test_densenet121_small_stem_32_and_64() -> None:
    model = create_model("densenet121", num_classes=200).eval()
    assert model.feature_dim == 1024
    check_shapes(model, torch.randn(2, 3, 32, 32), 200)
    check_shapes(model, torch.randn(1, 3, 64, 64), 200)


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [({}, (256, 128)), ({}, (64, 64)), ({"stem": "small"}, (32, 32))],
)
def test_resnet50_shapes(kwargs: dict[str, str], size: tuple[int, int]) -> None:
    model = create_model("resnet50", num_classes=751, **kwargs).eval()
    assert model.feature_dim == 2048
    check_shapes(model, torch.randn(2, 3, *size), 751)


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [({}, (256, 128)), ({}, (32, 32)), ({"stem": "small"}, (32, 32)), ({}, (64, 64))],
)
def test_mobilenet_shapes(kwargs: dict[str, str], size: tuple[int, int]) -> None:
    model = create_model("mobilenet", num_classes=100, **kwargs).eval()
    assert model.feature_dim == 1024
    check_shapes(model, torch.randn(2, 3, *size), 100)


def test_large_models_forward_once() -> None:
    """WRN-28-10 and DenseNet-201, one 16x16 image each (the slow members of the zoo)."""
    for name, dim in (("wrn28_10", 640), ("densenet201", 1920)):
        model = create_model(name, num_classes=100).eval()
        assert model.feature_dim == dim
        check_shapes(model, torch.randn(1, 3, 16, 16), 100)


def test_create_model_is_case_insensitive_and_passes_kwargs() -> None:
    model = create_model(" ResNet32 ", num_classes=10, shortcut="B")
    assert isinstance(model.layer2[0].shortcut, nn.Sequential)
    wide = create_model("wide_resnet", num_classes=10, depth=16, width=4)
    assert wide.feature_dim == 256 and wide.depth == 16


# ---------------------------------------------------------------- parameter counts


def test_cifar_resnet_parameter_counts_match_he_et_al() -> None:
    """He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M (option A, CIFAR-10)."""
    names = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
    counts = {name: n_params(create_model(name, num_classes=10)) for name in names}
    assert counts == {
        "resnet20": 269_722,
        "resnet32": 464_154,
        "resnet44": 658_586,
        "resnet56": 853_018,
        "resnet110": 1_727_962,
    }
    # Option B adds two 1x1 projections + BN: 16*32 + 2*32 + 32*64 + 2*64.
    assert n_params(create_model("resnet32", 10, shortcut="B")) == 464_154 + 2_752


def test_wrn28_10_parameter_count() -> None:
    """Zagoruyko and Komodakis 2016: WRN-28-10 has 36.5M parameters (CIFAR-10 head)."""
    assert n_params(create_model("wrn28_10", num_classes=10)) == 36_479_194


def test_densenet_parameter_counts() -> None:
    # torchvision's published totals with the 1000-class head: 7,978,856 and 20,013,928.
    assert n_params(create_model("densenet121", 1000, stem="imagenet")) == 7_978_856
    assert n_params(create_model("densenet201", 1000, stem="imagenet")) == 20_013_928
    # The small stem trades the 7x7x3x64 conv0 (9,408) for a 3x3x3x64 one (1,728).
    small121 = create_model("densenet121", 10)
    assert backbone_params(small121) == 6_953_856 - 9_408 + 1_728 == 6_946_176
    assert n_params(small121) == 6_956_426
    assert backbone_params(create_model("densenet201", 10)) == 18_085_248


def test_resnet50_parameter_count() -> None:
    model = create_model("resnet50", num_classes=1000)
    assert n_params(model) == 25_557_032  # torchvision's resnet50
    assert backbone_params(model) == 23_508_032  # the 23.5M before the head
    assert n_params(model.fc) == 2048 * 1000 + 1000


def test_mobilenet_parameter_count() -> None:
    """Howard et al. 2017, Table 1/8: 4.2M with the 1000-class head, 3.2M without."""
    model = create_model("mobilenet", num_classes=1000)
    assert backbone_params(model) == 3_206_976
    assert n_params(model) == 4_231_976
    half = create_model("mobilenet", num_classes=1000, width_multiplier=0.5)
    assert half.feature_dim == 512 and n_params(half) == 1_331_592  # paper: 1.3M


# ---------------------------------------------------------------- classifier bias


@pytest.mark.parametrize("num_classes", [2, 10, 100, 200, 1000])
def test_prior_logit_is_log_odds_of_uniform_prior(num_classes: int) -> None:
    p = 1.0 / num_classes
    assert prior_logit(num_classes) == -math.log(num_classes - 1)
    assert math.isclose(prior_logit(num_classes), math.log(p / (1 - p)), abs_tol=1e-12)


@pytest.mark.parametrize("key", sorted(SMALL_MODELS))
@pytest.mark.parametrize("num_classes", [2, 100])
def test_head_bias_init(key: str, num_classes: int) -> None:
    prior = SMALL_MODELS[key](num_classes=num_classes, head_bias_init="prior")
    expected = torch.full((num_classes,), -math.log(num_classes - 1), dtype=torch.float32)
    assert torch.equal(prior.classifier.bias.detach(), expected)
    torch.testing.assert_close(
        torch.sigmoid(prior.classifier.bias.detach()), torch.full((num_classes,), 1 / num_classes)
    )
    zero = SMALL_MODELS[key](num_classes=num_classes)
    assert torch.count_nonzero(zero.classifier.bias) == 0


def test_init_classifier_bias_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="head_bias_init"):
        init_classifier_bias(nn.Linear(4, 3), "uniform")
    with pytest.raises(ValueError, match="no bias"):
        init_classifier_bias(nn.Linear(4, 3, bias=False), "prior")
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        init_classifier_bias(nn.Conv2d(4, 3, 1), "prior")  # type: ignore[arg-type]


def test_backbone_initialisation() -> None:
    model = create_model("resnet20", num_classes=10)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * 3 * 3)).
    std = model.layer3[1].conv1.weight.std().item()
    assert math.isclose(std, math.sqrt(2 / (64 * 9)), rel_tol=0.1)


# ---------------------------------------------------------------- torchvision names


def torchvision_resnet50_state_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision.models.resnet50().state_dict() names and shapes, written out independently."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (blocks, planes) in enumerate(
        zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), start=1
    ):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


def torchvision_densenet_state_shapes(
    block_config: tuple[int, ...], legacy: bool = False
) -> dict[str, tuple[int, ...]]:
    """torchvision.models.densenet121/201().state_dict() names and shapes (growth 32, 64 init).

    ``legacy`` writes torchvision's published files: dense-layer names "norm.1", "conv.2" ...
    and no "num_batches_tracked" (they predate it).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    sep = "." if legacy else ""

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        if not legacy:
            shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["features.conv0.weight"] = (64, 3, 7, 7)
    bn("features.norm0", 64)
    c = 64
    for i, layers in enumerate(block_config, start=1):
        for j in range(1, layers + 1):
            p = f"features.denseblock{i}.denselayer{j}"
            cin = c + (j - 1) * 32
            bn(f"{p}.norm{sep}1", cin)
            shapes[f"{p}.conv{sep}1.weight"] = (128, cin, 1, 1)
            bn(f"{p}.norm{sep}2", 128)
            shapes[f"{p}.conv{sep}2.weight"] = (32, 128, 3, 3)
        c += layers * 32
        if i < len(block_config):
            bn(f"features.transition{i}.norm", c)
            shapes[f"features.transition{i}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    bn("features.norm5", c)
    shapes["classifier.weight"] = (1000, c)
    shapes["classifier.bias"] = (1000,)
    return shapes


def fabricate(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with those names and shapes. Stride-0 views of one random number per tensor
    keep the saved file a few kilobytes instead of 100 MB; loading copies them out in full."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.rand(1, generator=gen).reshape([1] * len(shape)).expand(shape)
    return state


def test_resnet50_keys_match_torchvision() -> None:
    shapes = torchvision_resnet50_state_shapes()
    assert len(shapes) == 320
    model = create_model("resnet50", num_classes=1000)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    model.load_state_dict(fabricate(shapes), strict=True)
    small = create_model("resnet50", num_classes=1000, stem="small")
    assert set(small.state_dict()) == set(shapes)  # same names; only conv1's shape differs


@pytest.mark.parametrize(
    ("name", "block_config", "n_keys"),
    [("densenet121", (6, 12, 24, 16), 727), ("densenet201", (6, 12, 48, 32), 1207)],
)
def test_densenet_keys_match_torchvision(
    name: str, block_config: tuple[int, ...], n_keys: int
) -> None:
    shapes = torchvision_densenet_state_shapes(block_config)
    assert len(shapes) == n_keys
    model = create_model(name, num_classes=1000, stem="imagenet")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    model.load_state_dict(fabricate(shapes), strict=True)
    small = create_model(name, num_classes=1000)
    assert set(small.state_dict()) == set(shapes)


def test_resnet50_classifier_alias() -> None:
    model = create_model("resnet50", num_classes=10)
    assert model.classifier is model.fc
    model.classifier = nn.Linear(2048, 5)
    assert model.fc.out_features == 5 and model.classifier is model.fc
    assert not any(k.startswith("classifier.") for k in model.state_dict())


# ---------------------------------------------------------------- load_pretrained


def test_load_pretrained_drops_the_head(tmp_path: Path) -> None:
    path = tmp_path / "resnet50-fabricated.pth"
    state = fabricate(torchvision_resnet50_state_shapes())
    torch.save(state, path)
    model = create_model("resnet50", num_classes=10, head_bias_init="prior")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = load_pretrained(model, path)
    assert isinstance(report, PretrainedLoadReport)
    assert report.classifier_dropped
    assert report.mismatched == ("fc.weight", "fc.bias")
    assert report.missing == ()
    assert report.unexpected == ()
    assert len(report.loaded) == 318
    torch.testing.assert_close(model.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])
    assert model.bn1.num_batches_tracked.item() == 7
    assert torch.equal(model.fc.bias, torch.full((10,), -math.log(9)))
    assert "classifier not loaded" in str(report)


def test_load_pretrained_same_class_count_loads_head(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    state = fabricate(torchvision_resnet50_state_shapes())
    torch.save(state, path)
    model = create_model("resnet50", num_classes=1000)
    report = load_pretrained(model, path)
    assert not report.classifier_dropped and report.missing == () and len(report.loaded) == 320
    torch.testing.assert_close(model.fc.bias, state["fc.bias"])


def test_load_pretrained_reports_small_stem(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(fabricate(torchvision_resnet50_state_shapes()), path)
    model = create_model("resnet50", num_classes=10, stem="small")
    with pytest.warns(UserWarning, match="backbone tensors did not load"):
        report = load_pretrained(model, path)
    assert report.mismatched == ("conv1.weight", "fc.weight", "fc.bias")
    assert report.missing == () and report.unexpected == ()


def test_load_pretrained_legacy_densenet_and_wrapped_checkpoints(tmp_path: Path) -> None:
    legacy = fabricate(torchvision_densenet_state_shapes((6, 12, 24, 16), legacy=True))
    assert not any(k.endswith("num_batches_tracked") for k in legacy)
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    path = tmp_path / "densenet121-legacy.pth"
    # A DDP-trained checkpoint wrapped as {"state_dict": {"module.<key>": ...}}.
    torch.save({"state_dict": {f"module.{k}": v for k, v in legacy.items()}, "epoch": 3}, path)
    model = create_model("densenet121", num_classes=200)
    with pytest.warns(UserWarning):  # conv0 is 3x3 in the small stem
        report = load_pretrained(model, path)
    assert report.unexpected == ()
    assert report.mismatched == ("features.conv0.weight", "classifier.weight", "classifier.bias")
    assert report.missing == ()
    torch.testing.assert_close(
        model.features.denseblock4.denselayer16.conv2.weight,
        legacy["features.denseblock4.denselayer16.conv.2.weight"],
    )


def test_load_pretrained_errors(tmp_path: Path) -> None:
    model = create_model("resnet20", num_classes=10)
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_pretrained(model, tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"lr": 0.1}, bad)
    with pytest.raises(ValueError, match="state dict"):
        load_pretrained(model, bad)


# ---------------------------------------------------------------- precision and memory format


@pytest.mark.parametrize("key", sorted(SMALL_MODELS))
def test_bfloat16_autocast_forward(key: str) -> None:
    model = build_small(key)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.classifier(model.features(probe_input(key)))
    assert out.shape == (2, 10) and out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()


# Backward under autocast once per block type (bf16 convolutions are slow on CPUs without AMX).
@pytest.mark.parametrize("key", ["resnet20_A", "wrn10_2", "densenet_small", "mobilenet_small"])
def test_bfloat16_autocast_backward(key: str) -> None:
    model = build_small(key).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(probe_input(key))
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("key", sorted(SMALL_MODELS))
def test_channels_last_matches_contiguous(key: str) -> None:
    model = build_small(key)
    x = probe_input(key)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- argument errors


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model name 'resnet18'.*resnet32.*mobilenet"):
        create_model("resnet18", num_classes=10)
    with pytest.raises(TypeError, match="name"):
        create_model(None, num_classes=10)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_num_classes_below_two_raises(name: str, num_classes: int) -> None:
    kwargs = {"depth": 10, "width": 1} if name == "wide_resnet" else {}
    with pytest.raises(ValueError, match=r"num_classes must be >= 2"):
        create_model(name, num_classes=num_classes, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("resnet32", {"num_classes": 10.0}, TypeError, "num_classes must be an int"),
        ("resnet32", {"num_classes": True}, TypeError, "num_classes must be an int"),
        ("resnet32", {"num_classes": 10, "in_channels": 0}, ValueError, "in_channels"),
        ("resnet32", {"num_classes": 10, "head_bias_init": "one"}, ValueError, "head_bias_init"),
        ("resnet32", {"num_classes": 10, "shortcut": "C"}, ValueError, "shortcut"),
        ("wide_resnet", {"num_classes": 10, "depth": 27, "width": 2}, ValueError, "depth"),
        ("wide_resnet", {"num_classes": 10, "depth": 16, "width": 0}, ValueError, "width"),
        ("wrn28_10", {"num_classes": 10, "dropout": 1.0}, ValueError, "dropout"),
        ("densenet121", {"num_classes": 10, "stem": "tiny"}, ValueError, "stem"),
        ("resnet50", {"num_classes": 10, "last_stride": 3}, ValueError, "last_stride"),
        ("mobilenet", {"num_classes": 10, "width_multiplier": 0}, ValueError, "width_multiplier"),
    ],
)
def test_bad_arguments_raise(
    name: str, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        create_model(name, **kwargs)  # type: ignore[arg-type]


def test_cifar_resnet_depth_must_be_6n_plus_2() -> None:
    from frlr.models import cifar_resnet

    with pytest.raises(ValueError, match="6n \\+ 2"):
        cifar_resnet(33, num_classes=10)
