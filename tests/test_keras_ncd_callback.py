"""The Keras NCD diagnostics: numpy statistics against the torch ones, and the fit callback."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import frlr.torch as frlr_torch  # noqa: E402
from frlr.keras.diagnostics import NCDCallback, ncd_stats_numpy  # noqa: E402

ALL_LOSSES = ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")
FIELDS = (
    "total",
    "positive",
    "negative",
    "grad_positive",
    "grad_negative",
    "gradient_ratio",
    "prob_positive",
    "prob_negative_mean",
    "prob_negative_max",
)


def inputs(kind: str, n: int, k: int, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale + np.argsort(rng.random((n, k)), 1) * scale * 1e-3
    if kind == "index":
        return z, rng.integers(0, k, n)
    t = (rng.random((n, k)) < 0.15).astype(np.float64)
    t[0], t[1] = 0, 1
    return z, t


def assert_same(numpy_stats, torch_stats, rel=1e-9):
    for name in FIELDS:
        a, b = getattr(numpy_stats, name), getattr(torch_stats, name)
        assert a == pytest.approx(b, rel=rel, abs=1e-12), name
    assert numpy_stats.num_samples == torch_stats.num_samples
    assert numpy_stats.num_classes == torch_stats.num_classes


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("k", [2, 10, 200])
@pytest.mark.parametrize("kind", ["index", "multi_hot"])
def test_numpy_stats_equal_torch_stats(name, k, kind):
    z, t = inputs(kind, 9, k, 3.0, seed=k)
    if name == "hs-sr" and kind == "multi_hot":
        with pytest.raises(ValueError, match="single-label"):
            ncd_stats_numpy(z, t, name)
        return
    assert_same(
        ncd_stats_numpy(z, t, name),
        frlr_torch.ncd_stats(torch.from_numpy(z), torch.from_numpy(t), name),
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lr", {"weight": True}),
        ("hs-lr", {"m": 40.0, "beta": 3.0, "weight": True}),
        ("ss-lr", {"r": 0.5, "alpha": 0.3}),
        ("sr", {"weight": True}),
        ("hs-sr", {"m": 10.0, "weight": True}),
        ("lr", {"normalization": "reference"}),
        ("hs-lr", {"normalization": "reference", "m": 30.0}),
        ("ss-lr", {"normalization": "reference", "weight": True}),
    ],
)
@pytest.mark.parametrize("kind", ["index", "multi_hot"])
def test_numpy_stats_with_options(name, options, kind):
    k = 37
    z, t = inputs(kind, 11, k, 4.0, seed=5)
    if name == "hs-sr" and kind == "multi_hot":
        return
    options = dict(options)
    if options.get("weight") is True:
        options["weight"] = np.random.default_rng(3).random(k)
    if name == "sr" and "weight" in options and kind == "index":
        return  # Keras divides by N, torch by sum w[y]: checked against Keras below
    torch_options = {
        key: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for key, v in options.items()
    }
    assert_same(
        ncd_stats_numpy(z, t, name, **options),
        frlr_torch.ncd_stats(torch.from_numpy(z), torch.from_numpy(t), name, **torch_options),
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("sr", {}),
        ("sr", {"weight": True}),
        ("lr", {"weight": True}),
        ("hs-lr", {"m": 40.0}),
        ("ss-lr", {"beta": 3.0, "r": 1.0}),
        ("hs-sr", {"weight": True}),
        ("lr", {"normalization": "reference"}),
        ("hs-lr", {"normalization": "reference"}),
        ("ss-lr", {"normalization": "reference"}),
    ],
)
@pytest.mark.parametrize("kind", ["index", "multi_hot"])
def test_numpy_total_equals_the_keras_loss(name, options, kind):
    from frlr.keras import get_loss

    k = 23
    z, t = inputs(kind, 10, k, 3.0, seed=8)
    if name == "hs-sr" and kind == "multi_hot":
        return
    options = dict(options)
    if options.get("weight") is True:
        options["weight"] = np.random.default_rng(4).random(k).tolist()
    keras_value = float(keras.ops.convert_to_numpy(get_loss(name, **options)(t, z)))
    stats = ncd_stats_numpy(z, t, name, **options)
    assert stats.total == pytest.approx(keras_value, rel=1e-5)


def test_extreme_logits_and_keras_layouts():
    z, y = inputs("index", 8, 50, 1.0, seed=11)
    z = z * 1e3
    for name in ALL_LOSSES:
        stats = ncd_stats_numpy(z, y, name)
        assert all(math.isfinite(getattr(stats, f)) for f in ("total", "grad_negative"))
        assert_same(stats, frlr_torch.ncd_stats(torch.from_numpy(z), torch.from_numpy(y), name))
    # classes last, (N, d, K), and (N, d, 1) index targets
    z, y = inputs("index", 12, 7, 2.0, seed=2)
    spatial = ncd_stats_numpy(z.reshape(3, 4, 7), y.reshape(3, 4, 1), "ss-lr")
    assert_same(spatial, ncd_stats_numpy(z, y, "ss-lr"))
    with pytest.raises(TypeError, match="takes no option 'm'"):
        ncd_stats_numpy(z, y, "lr", m=3.0)
    with pytest.raises(ValueError, match="multi-hot"):
        ncd_stats_numpy(z, np.full(z.shape, 0.5), "lr")


def tiny_problem(k: int = 20, n: int = 256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = rng.integers(0, k, n)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(k)])
    return model, x, y


def test_callback_records_fit(tmp_path):
    from frlr.keras import get_loss

    model, x, y = tiny_problem()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=get_loss("ss-lr", beta=5.0))
    initial = ncd_stats_numpy(
        keras.ops.convert_to_numpy(model(x[:64], training=False)), y[:64], "ss-lr", beta=5.0
    )
    path = tmp_path / "ncd.jsonl"
    callback = NCDCallback(x[:64], y[:64], model.loss, every=3, path=path, capacity=4)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])  # 16 steps
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 3, 6, 9, 12, 15]
    assert lines[0]["total"] == pytest.approx(initial.total, rel=1e-5)
    assert lines[-1]["total"] < lines[0]["total"]
    assert callback.options == {"beta": 5.0, "r": 2.0, "alpha": None, "normalization": "paper"}
    assert len(callback.history) <= 4
    assert callback.verdict().per_loss["ss-lr"].present is False
    fig = callback.plot(tmp_path / "ncd.png", dpi=50)
    assert fig.axes and (tmp_path / "ncd.png").exists()


def test_callback_lr_at_k200_shows_ncd():
    model, x, y = tiny_problem(k=200, n=512)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")  # the loss plays no part
    lr = NCDCallback(x[:128], y[:128], "lr", every=1)
    sr = NCDCallback(x[:128], y[:128], "sr", every=1, label="softmax")
    model.fit(x, np.eye(200)[y], batch_size=64, epochs=1, verbose=0, callbacks=[lr, sr])
    assert lr.verdict().present
    assert not sr.verdict().present
    assert lr.history[0]["gradient_ratio"] == pytest.approx(1 / 199, rel=0.2)
