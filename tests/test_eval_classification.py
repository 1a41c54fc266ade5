"""Top-k accuracy on a hand case, and evaluate_classifier on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frlr.eval import evaluate_classifier, topk_accuracy

# row 0: target 1 scores highest                      -> rank 0
# row 1: target 2 is second (0.4 > 0.3)               -> rank 1
# row 2: all tied, target 3 comes after classes 0,1,2 -> rank 3
SCORES = np.array([[0.1, 0.5, 0.3, 0.2], [0.4, 0.1, 0.3, 0.2], [0.2, 0.2, 0.2, 0.2]])
TARGETS = np.array([1, 2, 3])


def test_topk_hand_case():
    result = topk_accuracy(SCORES, TARGETS, k=(1, 2, 3, 4))
    assert result == pytest.approx({"top1": 1 / 3, "top2": 2 / 3, "top3": 2 / 3, "top4": 1.0})


def test_topk_single_k_and_torch_inputs():
    result = topk_accuracy(torch.tensor(SCORES), torch.tensor(TARGETS, dtype=torch.int32), k=2)
    assert result == pytest.approx({"top2": 2 / 3})


def test_topk_matches_torch_topk_without_ties():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 20, generator=generator)
    targets = torch.randint(0, 20, (500,), generator=generator)
    result = topk_accuracy(logits, targets)
    for k in (1, 5):
        expected = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).double().mean()
        assert result[f"top{k}"] == pytest.approx(float(expected))


@pytest.mark.parametrize(
    "scores, targets, k, message",
    [
        (SCORES, TARGETS, 5, "k=5 exceeds the number of classes"),
        (SCORES, TARGETS, (1, 0), "k must be a positive integer, got 0"),
        (SCORES, TARGETS[:2], 1, "targets has 2 entries"),
        (SCORES, TARGETS + 1, 1, r"targets must lie in \[0, 4\)"),
        (SCORES, TARGETS.astype(float), 1, "targets must have an integer dtype"),
        (SCORES[0], TARGETS, 1, "logits_or_scores must be 2-D"),
        (SCORES.astype(np.int64), TARGETS, 1, "logits_or_scores must have a floating dtype"),
    ],
)
def test_topk_rejects_bad_inputs(scores, targets, k, message):
    with pytest.raises(ValueError, match=message):
        topk_accuracy(scores, targets, k=k)


class TinyNet(nn.Module):
    """Global average pool -> linear embedding -> linear classifier."""

    def __init__(self, channels: int = 3, dim: int = 4, num_classes: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(channels, dim)
        self.classifier = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture
def tiny_data():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (23, 3, 5, 5), dtype=torch.uint8)  # images_to_tensor layout
    labels = torch.randint(0, 6, (23,))
    return TinyNet(), images, labels


def test_evaluate_classifier_matches_direct_computation(tiny_data):
    model, images, labels = tiny_data
    model.train()
    result = evaluate_classifier(
        model, images, labels, batch_size=5, loss_fn=F.cross_entropy, return_features=True
    )
    x = images.float() / 255
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
    expected = topk_accuracy(logits, labels)
    assert result["top1"] == pytest.approx(expected["top1"])
    assert result["top5"] == pytest.approx(expected["top5"])
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    assert result["num_samples"] == 23
    torch.testing.assert_close(result["features"], features)
    assert model.training, "the model's mode must be restored"


def test_evaluate_classifier_uses_normalize_fn_on_channels_first_batches(tiny_data):
    model, images, labels = tiny_data
    calls = []

    def normalize(batch: torch.Tensor) -> torch.Tensor:
        calls.append((batch.dtype, tuple(batch.shape[1:])))
        return (batch.float() - 128.0) / 64.0

    with torch.no_grad():
        logits = model(normalize(images))
    expected = topk_accuracy(logits, labels, k=1)["top1"]
    calls.clear()
    result = evaluate_classifier(model, images, labels, 8, "cpu", normalize)
    assert result["top1"] == pytest.approx(expected)
    assert calls == [(torch.uint8, (3, 5, 5))] * 3
    # a numpy uint8 array is the ImageArrays layout (N, H, W, C): permuted per batch
    calls.clear()
    channels_last = images.permute(0, 2, 3, 1).numpy()
    result = evaluate_classifier(model, channels_last, labels.numpy(), 8, "cpu", normalize)
    assert result["top1"] == pytest.approx(expected)
    assert calls == [(torch.uint8, (3, 5, 5))] * 3


def test_evaluate_classifier_features_only_and_float_images(tiny_data):
    model, images, _ = tiny_data
    x = images.float() / 255
    result = evaluate_classifier(model, x, None, batch_size=10, return_features=True)
    assert set(result) == {"num_samples", "features"}
    assert result["features"].shape == (23, 4)


def test_evaluate_classifier_drops_k_above_class_count():
    model = TinyNet(num_classes=3)
    images = torch.zeros((4, 3, 2, 2), dtype=torch.uint8)
    result = evaluate_classifier(model, images, torch.tensor([0, 1, 2, 0]))
    assert "top1" in result and "top5" not in result


def test_evaluate_classifier_counts_nan_logits_as_wrong(tiny_data):
    model, images, labels = tiny_data
    with torch.no_grad():
        model.classifier.bias[0] = float("nan")
    result = evaluate_classifier(model, images, labels, loss_fn=F.cross_entropy)
    assert result["top1"] == 0.0 and result["top5"] == 0.0
    assert np.isnan(result["loss"])


def test_evaluate_classifier_rejects_bad_arguments(tiny_data):
    model, images, labels = tiny_data
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate_classifier(model, images, labels, batch_size=0)
    with pytest.raises(ValueError, match="labels has 22 entries"):
        evaluate_classifier(model, images, labels[:-1])
    with pytest.raises(ValueError, match="nothing to compute"):
        evaluate_classifier(model, images)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        evaluate_classifier(model, images, labels + 6)
    with pytest.raises(ValueError, match=r"return_features=True needs a model\.features"):
        evaluate_classifier(nn.Flatten(), images, labels, return_features=True)
    with pytest.raises(ValueError, match="numpy images must be uint8"):
        evaluate_classifier(model, images.numpy().astype(np.float32), labels)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        evaluate_classifier(lambda x: x, images, labels)
