"""NCD diagnostics: stats against autograd, the bounded monitor, JSONL, verdict and figure."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import frlr.torch as frlr
import frlr.torch.diagnostics as diagnostics
from frlr.ncd import HalvingHistory, as_series, read_history
from frlr.style import LOSS_COLORS

ALL_LOSSES = ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")


def distinct_logits(n: int, k: int, scale: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Random logits without ties (hard selection is not differentiable at ties)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=dtype) * scale
    ranks = torch.argsort(torch.rand(n, k, generator=g), dim=1).to(dtype)
    return z + ranks * scale * 1e-3


def make_target(kind: str, n: int, k: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "index":
        return torch.randint(0, k, (n,), generator=g)
    if kind == "soft":
        t = torch.rand(n, k, generator=g, dtype=dtype) ** 3  # mostly small masses, a few large
        t[0] = 0
        t[1, : k // 2] = 1
        return t
    t = (torch.rand(n, k, generator=g) < 0.15).to(dtype)
    t[0] = 0  # a sample with no positive
    t[1] = 1  # ... and one with no negative
    t[2, 0], t[2, 1] = 1, 0
    return t


def positive_mask(target: torch.Tensor, k: int) -> torch.Tensor:
    if target.is_floating_point():
        return target >= 0.5  # a soft class counts as positive where most of its mass is
    return F.one_hot(target, k).bool()


def check_against_autograd(name, logits, target, rtol=1e-9, **options):
    """ncd_stats equals the loss value and the |autograd gradient| split by the positive mask."""
    z = logits.clone().requires_grad_(True)
    loss = frlr.get_loss(name, **options)(z, target)
    loss.backward()
    stats = frlr.ncd_stats(logits, target, name, **options)
    k = logits.shape[1]
    valid = torch.ones(len(logits), dtype=torch.bool)
    if not target.is_floating_point() and "ignore_index" in options:
        valid = target != options["ignore_index"]
    pos = (
        positive_mask(torch.where(valid, target, 0), k)
        if not target.is_floating_point()
        else positive_mask(target, k)
    )
    grad = z.grad.abs()[valid]
    pos = pos[valid]
    atol = 1e-12 if logits.dtype == torch.float64 else 1e-5
    assert stats.total == pytest.approx(loss.item(), rel=rtol, abs=atol)
    assert stats.positive + stats.negative == pytest.approx(stats.total, rel=1e-12, abs=1e-12)
    assert stats.grad_positive == pytest.approx(grad[pos].sum().item(), rel=rtol, abs=atol)
    assert stats.grad_negative == pytest.approx(grad[~pos].sum().item(), rel=rtol, abs=atol)
    assert stats.num_classes == k
    return stats


# ---------------------------------------------------------------------------------------------
# ncd_stats against autograd
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("k", [2, 10, 200])
@pytest.mark.parametrize("kind", ["index", "multi_hot"])
def test_stats_equal_autograd(name, k, kind):
    logits = distinct_logits(9, k, 3.0, seed=k)
    target = make_target(kind, 9, k, seed=k)
    if name == "hs-sr" and kind == "multi_hot":
        with pytest.raises(ValueError, match="class-index"):
            frlr.ncd_stats(logits, target, name)
        return
    check_against_autograd(name, logits, target)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lr", {"weight": True}),
        ("hs-lr", {"m": 40.0, "beta": 3.0, "weight": True}),
        ("hs-lr", {"m": 5.0, "alpha": 0.7}),
        ("ss-lr", {"r": 0.5, "alpha": 0.3}),
        ("ss-lr", {"r": 0.0, "weight": True}),
        ("sr", {"weight": True, "label_smoothing": 0.1}),
        ("hs-sr", {"m": 10.0, "weight": True}),
        ("lr", {"normalization": "reference"}),
        ("hs-lr", {"normalization": "reference", "m": 30.0}),
        ("ss-lr", {"normalization": "reference", "weight": True}),
    ],
)
@pytest.mark.parametrize("kind", ["index", "multi_hot"])
def test_stats_equal_autograd_with_options(name, options, kind):
    k = 37
    options = dict(options)
    if options.get("weight") is True:
        options["weight"] = torch.rand(k, generator=torch.Generator().manual_seed(3)).double()
    logits = distinct_logits(11, k, 4.0, seed=5)
    target = make_target(kind, 11, k, seed=5)
    if name == "hs-sr" and kind == "multi_hot":
        return
    check_against_autograd(name, logits, target, **options)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("sr", {}),
        ("lr", {}),
        ("lr", {"weight": True}),
        ("hs-lr", {}),
        ("hs-lr", {"m": 40.0, "beta": 3.0, "weight": True}),
        ("ss-lr", {}),
        ("ss-lr", {"r": 0.5, "alpha": 0.3, "weight": True}),
    ],
)
def test_soft_targets_split_by_mass_and_equal_autograd(name, options):
    """Soft targets: the losses' terms split by mass, the gradient by t >= 1/2."""
    k = 23
    if options.get("weight") is True:
        options = {**options, "weight": torch.rand(k, generator=torch.Generator().manual_seed(4))}
        options["weight"] = options["weight"].double()
    logits = distinct_logits(8, k, 3.0, seed=6)
    target = make_target("soft", 8, k, seed=6)
    stats = check_against_autograd(name, logits, target, **options)
    assert stats.positive > 0 and stats.negative > 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_ignore_index_and_spatial_logits(name):
    k = 12
    logits = distinct_logits(4 * 3 * 5, k, 2.0, seed=1).reshape(4, 3, 5, k).movedim(-1, 1)
    target = torch.randint(0, k, (4, 3, 5), generator=torch.Generator().manual_seed(2))
    target[0, 0, :3] = -1
    z = logits.clone().requires_grad_(True)
    loss = frlr.get_loss(name, ignore_index=-1)(z, target)
    loss.backward()
    stats = frlr.ncd_stats(logits, target, name, ignore_index=-1)
    pos = F.one_hot(target.clamp(min=0), k).movedim(-1, 1).bool() & (target != -1).unsqueeze(1)
    assert stats.num_samples == int((target != -1).sum())
    assert stats.total == pytest.approx(loss.item(), rel=1e-9)
    assert stats.grad_positive == pytest.approx(z.grad.abs()[pos].sum().item(), rel=1e-9)
    assert stats.grad_negative == pytest.approx(z.grad.abs()[~pos].sum().item(), rel=1e-9)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_float32_and_half_logits(name):
    logits = distinct_logits(16, 200, 3.0, seed=7, dtype=torch.float32)
    target = make_target("index", 16, 200, seed=7)
    check_against_autograd(name, logits, target, rtol=2e-5)
    stats = frlr.ncd_stats(logits.bfloat16(), target, name)  # computed in float32
    assert math.isfinite(stats.total) and math.isfinite(stats.gradient_ratio)


def test_extreme_logits_stay_finite_and_exact():
    k = 50
    logits = distinct_logits(8, k, 1.0, seed=11) * 1e3
    target = make_target("index", 8, k, seed=11)
    for name in ALL_LOSSES:
        stats = check_against_autograd(name, logits, target, rtol=1e-7)
        assert all(
            math.isfinite(v) for v in (stats.total, stats.grad_positive, stats.grad_negative)
        )


def test_no_graph_and_no_grad_side_effects():
    logits = distinct_logits(8, 20, 1.0, seed=0, dtype=torch.float32).requires_grad_(True)
    target = make_target("index", 8, 20, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stats = frlr.ncd_stats(logits * 2, target, "ss-lr")
    assert logits.grad is None
    assert isinstance(stats.total, float)
    assert set(stats.as_dict()) >= {"total", "positive", "negative", "gradient_ratio"}


# ---------------------------------------------------------------------------------------------
# The values the paper quotes, and the ratios the verdict's threshold is derived from
# ---------------------------------------------------------------------------------------------


def test_initial_values_at_k200_match_the_paper():
    """Logits 0 (every p = 1/2): LR's parts are log 2 and 199 log 2 ~ 0.7 and 138 (paper:
    about 0.4 and 140); ratios are 1/(K-1) for LR, 1/beta for HS-LR, 1 for SR."""
    k = 200
    logits = torch.zeros(32, k)
    target = torch.arange(32) % k
    lr = frlr.ncd_stats(logits, target, "lr")
    assert lr.positive == pytest.approx(math.log(2))
    assert lr.negative == pytest.approx((k - 1) * math.log(2))
    assert lr.gradient_ratio == pytest.approx(1 / (k - 1))
    assert lr.prob_positive == pytest.approx(0.5)
    assert lr.prob_negative_max == pytest.approx(0.5)
    assert frlr.ncd_stats(logits, target, "hs-lr").gradient_ratio == pytest.approx(0.1)
    ss = 0.5 / (10 * 0.25 * (2 * 0.5 * math.log(2) + 0.5))
    assert frlr.ncd_stats(logits, target, "ss-lr").gradient_ratio == pytest.approx(ss)
    sr = frlr.ncd_stats(logits, target, "sr")
    assert sr.gradient_ratio == pytest.approx(1.0)
    assert sr.negative == 0.0
    assert sr.prob_positive == pytest.approx(1 / k)


def test_sr_ratio_is_one_at_any_logits():
    logits = distinct_logits(10, 30, 5.0, seed=4)
    target = make_target("index", 10, 30, seed=4)
    assert frlr.ncd_stats(logits, target, "sr").gradient_ratio == pytest.approx(1.0, rel=1e-12)


def test_accepts_a_loss_module_and_checks_arguments():
    logits = distinct_logits(6, 10, 1.0, seed=0)
    target = make_target("index", 6, 10, seed=0)
    module = frlr.SSLRLoss(beta=3.0, r=1.0)
    assert frlr.ncd_stats(logits, target, module).total == pytest.approx(
        module(logits, target).item()
    )
    with pytest.raises(ValueError, match="loss must be one of"):
        frlr.ncd_stats(logits, target, "focal")
    with pytest.raises(TypeError, match="takes no option 'r'"):
        frlr.ncd_stats(logits, target, "lr", r=2.0)
    with pytest.raises(ValueError, match="reduction must be 'mean'"):
        frlr.ncd_stats(logits, target, "lr", reduction="sum")
    with pytest.raises(ValueError, match=r"\[0, 1\], got 1.5"):
        frlr.ncd_stats(logits, torch.full((6, 10), 1.5, dtype=torch.float64), "lr")
    with pytest.raises(ValueError, match="beta"):
        frlr.ncd_stats(logits, target, "ss-lr", beta=-1.0)


def test_all_ignored_batch():
    stats = frlr.ncd_stats(torch.randn(4, 5), torch.full((4,), -100), "lr")
    assert stats.num_samples == 0 and stats.total == 0.0
    assert stats.gradient_ratio == 1.0  # 0 / 0: no side pulls harder
    assert math.isnan(stats.prob_positive)


# ---------------------------------------------------------------------------------------------
# Bounded history
# ---------------------------------------------------------------------------------------------


def assert_evenly_spaced(steps: list[int]) -> None:
    gaps = {b - a for a, b in itertools.pairwise(steps)}
    assert len(gaps) == 1, f"uneven spacing: {sorted(gaps)[:5]}"


@pytest.mark.parametrize("capacity", [2, 3, 64, 1000])
def test_halving_history_is_bounded_and_even(capacity):
    history = HalvingHistory(capacity)
    kept = 0
    for n in range(100_000):
        kept += history.offer({"step": n})
        if n % 9973 == 0 or n < 3 * capacity:
            assert len(history) <= capacity
    # Work done, counted: each halving keeps at most capacity / 2 new records before the next,
    # so O(capacity log n) records are ever stored, not one per offer.
    halvings = history.stride.bit_length() - 1
    assert kept <= capacity + (capacity // 2 + 1) * halvings < 100_000 // 20
    steps = [r["step"] for r in history.records]
    assert len(steps) <= capacity
    assert steps[0] == 0
    assert_evenly_spaced(steps)
    assert steps[-1] > 100_000 - 1 - 2 * history.stride  # covers the whole run
    assert len(steps) >= capacity // 2


def test_monitor_memory_bounded_over_1e5_updates():
    monitor = frlr.NCDMonitor("lr", capacity=50)
    logits, target = torch.randn(2, 3), torch.tensor([0, 2])
    computed = []
    ncd_stats = diagnostics.ncd_stats
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            diagnostics, "ncd_stats", lambda *a, **k: computed.append(1) or ncd_stats(*a, **k)
        )
        returned = sum(monitor.update(logits, target, step) is not None for step in range(100_000))
    steps = [r["step"] for r in monitor.history]
    assert 25 <= len(steps) <= 50
    assert_evenly_spaced(steps)
    assert steps[0] == 0 and steps[-1] >= 100_000 - 2 * (steps[1] - steps[0])
    # Skipped steps compute nothing: one statistic per kept record, O(capacity log n) in all.
    halvings = (steps[1] - steps[0]).bit_length() - 1
    assert len(computed) == returned <= 50 + 26 * halvings < 1_000


def test_monitor_every_and_default_step():
    monitor = frlr.NCDMonitor("sr", every=4)
    logits, target = torch.randn(3, 5), torch.tensor([0, 1, 2])
    results = [monitor.update(logits, target) for _ in range(10)]
    assert [r is not None for r in results] == [i % 4 == 0 for i in range(10)]
    assert [r["step"] for r in monitor.history] == [0, 4, 8]
    with pytest.raises(ValueError, match="every"):
        frlr.NCDMonitor("sr", every=0)


# ---------------------------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------------------------


def strict_loads(line: str):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=reject)


def test_jsonl_is_valid_and_complete(tmp_path):
    path = tmp_path / "runs" / "lr.jsonl"
    with frlr.NCDMonitor("hs-lr", every=3, capacity=4, path=path, label="hs-lr run") as monitor:
        for step in range(30):
            logits = torch.randn(5, 8)
            monitor.update(logits, torch.randint(0, 8, (5,)), step)
        monitor.update(torch.zeros(1, 8), torch.ones(1, 8), 30)  # no negative: ratio inf
    lines = path.read_text().splitlines()
    assert len(lines) == 11  # every record is in the file, although memory kept at most 4
    records = [strict_loads(line) for line in lines]
    assert [r["step"] for r in records] == list(range(0, 31, 3))
    expected = {"step", "label", "loss", "num_classes", "num_samples", "total", "positive"}
    expected |= {"negative", "grad_positive", "grad_negative", "gradient_ratio"}
    expected |= {"prob_positive", "prob_negative_mean", "prob_negative_max"}
    assert all(set(r) == expected for r in records)
    assert records[-1]["gradient_ratio"] == "inf"
    back = read_history(path)
    assert back[-1]["gradient_ratio"] == math.inf
    assert back[0]["total"] == pytest.approx(records[0]["total"])
    assert len(monitor.history) <= 4


def test_read_history_drops_a_truncated_last_line(tmp_path):
    path = tmp_path / "h.jsonl"
    monitor = frlr.NCDMonitor("lr", path=path)
    for step in range(3):
        monitor.update(torch.randn(2, 4), torch.tensor([0, 1]), step)
    monitor.close()
    with open(path, "a") as f:
        f.write('{"step": 3, "tot')
    with pytest.warns(UserWarning, match="truncated"):
        assert len(read_history(path)) == 3


# ---------------------------------------------------------------------------------------------
# Forward hook
# ---------------------------------------------------------------------------------------------


def test_attach_records_training_forwards_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6))
    monitor = frlr.NCDMonitor("ss-lr").attach(model[2])
    x, y = torch.randn(5, 4), torch.randint(0, 6, (5,))
    monitor.set_target(y)
    logits = model(x)
    assert len(monitor.history) == 1
    assert monitor.history[0]["total"] == pytest.approx(frlr.ss_lr_loss(logits, y).item())
    model.eval()
    monitor.set_target(y)
    model(x)
    assert len(monitor.history) == 1  # eval pass skipped
    model.train()
    model(x)  # the eval pass left the target unused; this training pass takes it
    assert len(monitor.history) == 2
    with pytest.warns(UserWarning, match="set_target"):
        model(x)
    monitor.detach()
    monitor.set_target(y)
    model(x)
    assert len(monitor.history) == 2


# ---------------------------------------------------------------------------------------------
# Verdict, on real (tiny) training runs at K = 200
# ---------------------------------------------------------------------------------------------


def train_linear(name: str, steps: int = 60, k: int = 200, **options) -> frlr.NCDMonitor:
    """A linear classifier on fixed random features, SGD, monitored every step."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1024, 32, generator=g)
    labels = torch.randint(0, k, (1024,), generator=g)
    head = torch.nn.Linear(32, k)
    torch.nn.init.normal_(head.weight, std=0.01, generator=g)
    torch.nn.init.zeros_(head.bias)
    criterion = frlr.get_loss(name, **options)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    monitor = frlr.NCDMonitor(name, **options)
    for step in range(steps):
        rows = torch.randint(0, 1024, (64,), generator=g)
        logits = head(features[rows])
        loss = criterion(logits, labels[rows])
        monitor.update(logits, labels[rows], step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return monitor


@pytest.fixture(scope="module")
def runs():
    return {name: train_linear(name) for name in ("lr", "sr", "hs-lr", "ss-lr")}


def test_verdict_lr_present_sr_absent(runs):
    lr = frlr.ncd_verdict(runs["lr"])
    assert lr.present
    assert "NCD present in lr" in lr.summary
    assert lr.per_loss["lr"].initial_ratio == pytest.approx(1 / 199, rel=0.05)
    sr = frlr.ncd_verdict(runs["sr"])
    assert not sr.present
    assert sr.per_loss["sr"].median_ratio == pytest.approx(1.0)
    assert sr.summary.startswith("No NCD")


def test_verdict_names_the_losses_that_removed_it(runs):
    verdict = frlr.ncd_verdict(runs)
    assert verdict.present
    assert [label for label, v in verdict.per_loss.items() if v.present] == ["lr"]
    assert verdict.removed_by == ("hs-lr", "ss-lr")
    assert "Removed by: hs-lr, ss-lr." in verdict.summary
    with pytest.raises(ValueError, match="threshold"):
        frlr.ncd_verdict(runs, threshold=0.0)


def synthetic(label: str, ratios: list[float], loss: str | None = None) -> list[dict]:
    return [
        {"step": step, "label": label, "loss": loss or label, "gradient_ratio": ratio}
        for step, ratio in enumerate(ratios)
    ]


def test_verdict_window_counts_steps_not_run_length():
    """A 19-step distracted phase (as LR at lr 0.1) is found in a run of any length."""
    short = synthetic("lr", [0.01] * 19 + [0.9] * 100)
    long = synthetic("lr", [0.01] * 19 + [0.9] * 100_000)
    assert frlr.ncd_verdict(short).present and frlr.ncd_verdict(long).present
    assert not frlr.ncd_verdict(long, early_fraction=0.1).present
    blip = synthetic("lr", [0.01] * 2 + [0.9] * 100)  # one transient step is not NCD
    assert not frlr.ncd_verdict(blip).present
    sparse = synthetic("lr", [0.01, 0.01, 0.9, 0.9])  # fewer records than the window needs
    verdict = frlr.ncd_verdict(sparse, early_steps=0)
    assert verdict.per_loss["lr"].early_records == 3 and verdict.present
    with pytest.raises(ValueError, match="early_steps"):
        frlr.ncd_verdict(short, early_steps=-1)


def test_verdict_from_jsonl_paths(tmp_path, runs):
    paths = {}
    for name, monitor in runs.items():
        paths[name] = tmp_path / f"{name}.jsonl"
        with open(paths[name], "w") as f:
            for record in monitor.history:
                f.write(json.dumps(record) + "\n")
    from_files = frlr.ncd_verdict(list(paths.values()))
    assert from_files.removed_by == ("hs-lr", "ss-lr")


# ---------------------------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------------------------


def test_plot_writes_png_and_svg(tmp_path, runs):
    from PIL import Image

    png, svg = tmp_path / "ncd.png", tmp_path / "fig" / "ncd.svg"
    fig = frlr.plot_ncd(runs, png, dpi=100, figsize=(7.0, 5.0))
    frlr.plot_ncd(list(runs.values()), svg, smooth=5, xscale="symlog")
    with Image.open(png) as image:
        image.load()
        assert image.size == (700, 500)
        assert image.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255))
    text = svg.read_text()
    assert "<svg" in text and "</svg>" in text
    axes = fig.axes
    assert all(ax.get_yscale() == "log" for ax in axes[:4])
    assert axes[0].get_ylabel() and axes[3].get_ylabel() and axes[3].get_xlabel()
    colors = {line.get_label(): line.get_color() for line in axes[0].lines}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["LR", "SR", "HS-LR", "SS-LR"]
    assert colors["LR"] == LOSS_COLORS["lr"] and colors["SS-LR"] == LOSS_COLORS["ss-lr"]
    assert "SR: 0 by definition" in axes[2].get_title()
    assert not list(tmp_path.glob("**/*.partial*"))


def test_monitor_plot_and_series_labels(tmp_path):
    monitor = frlr.NCDMonitor("lr", label="LR, seed 1")
    for step in range(5):
        monitor.update(torch.randn(4, 10), torch.randint(0, 10, (4,)), step)
    monitor.plot(tmp_path / "one.png", dpi=50)
    assert (tmp_path / "one.png").stat().st_size > 1000
    (series,) = as_series(monitor)
    assert series.label == "LR, seed 1" and series.loss == "lr"


def test_plot_smoothing_window_longer_than_the_history(tmp_path):
    monitor = frlr.NCDMonitor("lr")
    for step in range(3):
        monitor.update(torch.randn(4, 10), torch.randint(0, 10, (4,)), step)
    monitor.plot(tmp_path / "short.png", dpi=50, smooth=9)  # window 9 over 3 records
    assert (tmp_path / "short.png").stat().st_size > 1000


def test_import_frlr_torch_does_not_import_matplotlib():
    code = "import sys, frlr.torch; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
