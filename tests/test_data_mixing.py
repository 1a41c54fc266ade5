"""Mixup, CutMix and label smoothing batches (frlr.data.mixing): mass is preserved, a seed fixes
the batch, CutMix's lambda is the share of pixels a sample keeps, bad values are refused, and
the sparse form (for the logits-free losses) is the dense batch from the same draws."""

from __future__ import annotations

import pytest
import torch

import frlr.torch as frlr
from frlr.data.mixing import cutmix_box, mix_batch, mix_batch_sparse, mix_targets, smooth_targets

K = 10


def batch(n: int = 8, h: int = 6, w: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant i + 1 (so every pixel tells which sample it came from)."""
    images = (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, 3, h, w)
    return images.contiguous(), torch.arange(n) % K


def multi_hot(n: int = 8) -> torch.Tensor:
    rows = torch.zeros(n, K)
    rows[torch.arange(n), torch.arange(n) % K] = 1.0
    rows[torch.arange(n), (torch.arange(n) + 3) % K] = 1.0
    return rows


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- label smoothing


def test_label_smoothing_is_timms_convention_and_keeps_each_row_a_distribution():
    labels = torch.tensor([0, 3, 9])
    t = smooth_targets(labels, K, 0.1)
    expected = torch.full((3, K), 0.1 / K)
    expected[torch.arange(3), labels] = 0.9 + 0.1 / K
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    assert torch.equal(smooth_targets(labels, K), torch.eye(K)[labels])


def test_multi_hot_smoothing_is_per_label():
    rows = multi_hot()
    torch.testing.assert_close(smooth_targets(rows, K, 0.2), rows * 0.8 + 0.1)
    assert torch.equal(smooth_targets(rows.bool(), K), rows)


def test_label_smoothing_alone_draws_nothing_and_leaves_the_images():
    images, labels = batch()
    generator = seeded()
    state = generator.get_state()
    mixed = mix_batch(images, labels, generator, num_classes=K, label_smoothing=0.1)
    assert torch.equal(generator.get_state(), state)
    assert mixed.images is images and torch.equal(mixed.dominant, labels)
    torch.testing.assert_close(mixed.targets, smooth_targets(labels, K, 0.1))
    assert float(mixed.lam) == 1.0


# --------------------------------------------------------------------------- mixup


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_mixes_images_and_targets_with_one_lambda_and_keeps_the_mass(smoothing):
    images, labels = batch()
    mixed = mix_batch(images, labels, seeded(), num_classes=K, mixup=0.4, label_smoothing=smoothing)
    lam = float(mixed.lam)
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(mixed.images, lam * images + (1 - lam) * images.flip(0))
    soft = smooth_targets(labels, K, smoothing)
    torch.testing.assert_close(mixed.targets, lam * soft + (1 - lam) * soft.flip(0))
    torch.testing.assert_close(mixed.targets.sum(1), torch.ones(len(labels)))
    assert bool(((mixed.targets >= 0) & (mixed.targets <= 1)).all())


def test_multi_hot_rows_are_mixed_as_rows():
    images, _ = batch()
    rows = multi_hot()
    mixed = mix_batch(images, rows, seeded(3), num_classes=K, mixup=1.0)
    lam = float(mixed.lam)
    torch.testing.assert_close(mixed.targets, lam * rows + (1 - lam) * rows.flip(0))
    torch.testing.assert_close(mixed.targets.sum(1), torch.full((len(rows),), 2.0))
    assert torch.equal(mixed.dominant, rows if lam >= 0.5 else rows.flip(0))


def test_the_dominant_label_is_that_of_the_larger_weight():
    images, labels = batch()
    seen = set()
    for seed in range(20):
        mixed = mix_batch(images, labels, seeded(seed), num_classes=K, mixup=1.0)
        own = float(mixed.lam) >= 0.5
        seen.add(own)
        assert torch.equal(mixed.dominant, labels if own else labels.flip(0))
        assert torch.equal(mixed.targets.argmax(1), mixed.dominant) or float(mixed.lam) == 0.5
    assert seen == {True, False}


def test_mixup_lambda_is_beta_alpha_alpha():
    """Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.179, mostly near 0 or 1."""
    images, labels = batch(n=2, h=1, w=1)
    generator = seeded()
    lams = torch.stack(
        [mix_batch(images, labels, generator, num_classes=K, mixup=0.2).lam for _ in range(4000)]
    ).double()
    assert abs(float(lams.mean()) - 0.5) < 0.02
    assert abs(float(lams.var()) - 1 / (4 * 1.4)) < 0.01
    assert float(((lams < 0.1) | (lams > 0.9)).double().mean()) > 0.5


# --------------------------------------------------------------------------- CutMix


def test_cutmix_lambda_is_the_share_of_pixels_each_sample_keeps():
    images, labels = batch(n=8, h=12, w=10)
    for seed in range(30):
        mixed = mix_batch(images, labels, seeded(seed), num_classes=K, cutmix=1.0)
        own = (mixed.images == images).all(1)  # (N, H, W): the pixel is the sample's own
        partner = (mixed.images == images.flip(0)).all(1)
        assert bool((own | partner).all())  # pasted, not blended
        kept = own.double().mean((1, 2))
        torch.testing.assert_close(kept, torch.full((8,), float(mixed.lam), dtype=torch.float64))
        soft = smooth_targets(labels, K)
        lam = float(mixed.lam)
        torch.testing.assert_close(mixed.targets, lam * soft + (1 - lam) * soft.flip(0))


def test_cutmix_box_follows_timm():
    """cut = floor(side * sqrt(1 - lam)), centre floor(u * side), [c - cut // 2, c + cut // 2)
    clipped to the image."""
    box, lam = cutmix_box(10, 8, torch.tensor(0.64), torch.tensor([0.0, 0.99]))
    # cut = (6, 4), centre (0, 7): rows [-3, 3) -> [0, 3), columns [5, 9) -> [5, 8)
    expected = torch.zeros(10, 8, dtype=torch.bool)
    expected[0:3, 5:8] = True
    assert torch.equal(box, expected)
    assert float(lam) == pytest.approx(1 - 9 / 80)
    box, lam = cutmix_box(4, 4, torch.tensor(1.0), torch.tensor([0.5, 0.5]))
    assert not box.any() and float(lam) == 1.0


def test_both_on_pick_one_per_batch_about_half_the_time():
    images, labels = batch(n=4, h=8, w=8)
    generator = seeded()
    kinds = []
    for _ in range(200):
        mixed = mix_batch(images, labels, generator, num_classes=K, mixup=0.2, cutmix=1.0)
        pasted = bool(((mixed.images == images) | (mixed.images == images.flip(0))).all())
        kinds.append(pasted)
    assert 70 < sum(kinds) < 130


# --------------------------------------------------------------------------- determinism, checks


@pytest.mark.parametrize(
    "options",
    [{"mixup": 0.2}, {"cutmix": 1.0}, {"mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1}],
)
def test_a_seed_fixes_the_batch(options):
    images, labels = batch()
    images = images + torch.randn(images.shape, generator=seeded(9))
    a = mix_batch(images, labels, seeded(5), num_classes=K, **options)
    b = mix_batch(images, labels, seeded(5), num_classes=K, **options)
    for name in ("images", "targets", "dominant", "lam"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    others = [mix_batch(images, labels, seeded(s), num_classes=K, **options) for s in range(6, 9)]
    assert any(not torch.equal(o.images, a.images) for o in others)


def test_mix_targets_stays_in_the_unit_interval():
    rows = torch.rand(64, K, generator=seeded())
    rows[:, 0] = 1.0
    for lam in (0.0, 1e-8, 0.3, 0.5, 1 - 1e-8, 1.0):
        mixed = mix_targets(rows, lam)
        assert bool(((mixed >= 0) & (mixed <= 1)).all())
        assert bool((mixed[:, 0] == 1.0).all())


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"mixup": -0.1}, ValueError, "mixup must be finite, >= 0, got -0.1"),
        ({"cutmix": float("nan")}, ValueError, "cutmix must be finite"),
        ({"mixup": float("inf")}, ValueError, "mixup must be finite"),
        ({"label_smoothing": 1.0}, ValueError, r"smoothing must be finite, >= 0 and < 1, got 1.0"),
        ({"mixup": "0.2"}, TypeError, "mixup must be a real number, got '0.2'"),
        ({"cutmix": True}, TypeError, "cutmix must be a real number"),
    ],
)
def test_bad_values_name_the_argument(options, error, message):
    images, labels = batch()
    with pytest.raises(error, match=message):
        mix_batch(images, labels, seeded(), num_classes=K, **options)


def test_bad_batches_are_refused():
    images, labels = batch()
    with pytest.raises(TypeError, match="normalised float batch"):
        mix_batch(images.to(torch.uint8), labels, num_classes=K, mixup=0.2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        mix_batch(images[0], labels, num_classes=K, mixup=0.2)
    with pytest.raises(ValueError, match="7 targets for 8 images"):
        mix_batch(images, labels[:7], num_classes=K, mixup=0.2)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        mix_batch(images, labels, 0, num_classes=K, mixup=0.2)
    with pytest.raises(ValueError, match=r"multi-hot targets must have shape \(N, 10\)"):
        smooth_targets(torch.zeros(8, 3), K)
    with pytest.raises(ValueError, match=r"class-index targets must have shape \(N,\)"):
        smooth_targets(torch.zeros(8, 3, dtype=torch.long), K)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        smooth_targets(labels, 1)


# --------------------------------------------------------------------------- the sparse form


def _densify(sparse, num_classes: int) -> torch.Tensor:
    """t = (1 - eps) sum_p weight_p e_{class_p} + eps / K of a sparse batch's targets."""
    classes = sparse.targets if sparse.targets.dim() == 2 else sparse.targets[:, None]
    weights = sparse.target_weights
    weights = torch.ones(classes.shape) if weights is None else weights
    rows = torch.arange(len(classes)).repeat_interleave(classes.shape[1])
    dense = torch.zeros(len(classes), num_classes)
    dense.index_put_((rows, classes.reshape(-1)), weights.reshape(-1), accumulate=True)
    eps = sparse.label_smoothing
    return dense * (1 - eps) + eps / num_classes


@pytest.mark.parametrize(
    "options",
    [
        {"label_smoothing": 0.1},
        {"mixup": 0.2},
        {"cutmix": 1.0, "label_smoothing": 0.2},
        {"mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1},
    ],
)
def test_the_sparse_form_is_the_dense_batch_from_the_same_draws(options):
    images, labels = batch(n=9)  # odd: the middle sample is its own partner
    images = images + torch.randn(images.shape, generator=seeded(9))
    labels[2] = labels[6]  # a pair that agrees: lam + (1 - lam) of one class
    for seed in range(4):
        dense = mix_batch(images, labels, seeded(seed), num_classes=K, **options)
        sparse = mix_batch_sparse(images, labels, seeded(seed), **options)
        for name in ("images", "dominant", "lam"):
            assert torch.equal(getattr(sparse, name), getattr(dense, name)), name
        torch.testing.assert_close(_densify(sparse, K), dense.targets, rtol=0, atol=1e-6)
        # and the logits-free loss on the sparse form is the materialised one on the dense rows
        features = torch.randn(9, 4, generator=seeded(seed))
        head = torch.nn.Linear(4, K)
        for linear, materialised in (
            (frlr.linear_hs_lr_loss, frlr.hs_lr_loss),
            (frlr.linear_sr_loss, frlr.sr_loss),
        ):
            got = linear(features, head.weight, sparse.targets, bias=head.bias,
                         target_weights=sparse.target_weights,
                         label_smoothing=sparse.label_smoothing)  # fmt: skip
            want = materialised(head(features), dense.targets)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_sparse_form_takes_class_indices_only():
    images, labels = batch()
    with pytest.raises(ValueError, match="mix_batch_sparse takes class indices"):
        mix_batch_sparse(images, multi_hot(), seeded(), mixup=0.2)
    with pytest.raises(ValueError, match="label_smoothing must be finite, >= 0 and < 1"):
        mix_batch_sparse(images, labels, seeded(), label_smoothing=1.0)
    with pytest.raises(ValueError, match="7 targets for 8 images"):
        mix_batch_sparse(images, labels[:7], mixup=0.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_follow_the_generator():
    """A CPU generator gives a CUDA batch the CPU batch's draws; a CUDA generator (the training
    loop's on a GPU) draws on the device and is as deterministic."""
    images, labels = batch(n=16, h=8, w=8)
    options = {"num_classes": K, "mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1}
    for seed in range(4):
        on_cpu = mix_batch(images, labels, seeded(seed), **options)
        on_gpu = mix_batch(images.cuda(), labels.cuda(), seeded(seed), **options)
        assert on_gpu.images.device.type == "cuda"
        torch.testing.assert_close(on_gpu.images.cpu(), on_cpu.images)
        torch.testing.assert_close(on_gpu.targets.cpu(), on_cpu.targets)
        assert torch.equal(on_gpu.dominant.cpu(), on_cpu.dominant)
    a, b = (
        mix_batch(images.cuda(), labels.cuda(), torch.Generator("cuda").manual_seed(1), **options)
        for _ in range(2)
    )
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    torch.testing.assert_close(a.targets.sum(1), torch.ones(16, device="cuda"))
