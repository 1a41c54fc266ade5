"""Test-set features of a trained run, embedded in two dimensions by t-SNE (the paper's Fig. 1).

The model is rebuilt exactly as the training loop built it: the saved config, the same data
loader (:func:`frlr.train.load_split`, hence the same decoding, resizing and cache), the same
builder (:func:`frlr.experiments.build_model`) and the training split's channel statistics for
normalisation; then ``checkpoint.pt``'s weights, in eval mode, on the CPU. The features are
``model.features(x)``, the embedding the classifier reads.

Which points: the first ``classes`` class ids of the test split (0-4 by default: reproducible
and the same for every loss), at most ``per_class`` images of each, drawn without replacement
by ``numpy.random.default_rng(0)`` in class order; every panel embeds the same images. t-SNE is
scikit-learn's (Barnes-Hut, PCA initialisation, ``random_state=0``, perplexity
min(30, (n - 1) / 3), one thread); 1,000 points take a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from frlr.config import TrainConfig
from frlr.data import dataset_info
from frlr.data.augment import channel_stats, images_to_tensor, normalize
from frlr.io import load_checkpoint
from frlr.models import build_model
from frlr.report.runs import Run
from frlr.train import load_split

__all__ = [
    "TSNE_CLASSES",
    "TSNE_POINTS",
    "FeatureData",
    "load_feature_data",
    "perplexity_for",
    "run_features",
    "select_points",
    "tsne_2d",
]

TSNE_CLASSES = 5
TSNE_POINTS = 200
SELECTION_SEED = 0
TSNE_SEED = 0


@dataclass
class FeatureData:
    """The chosen test images of one dataset config, and what rebuilding a model needs."""

    images: np.ndarray  # uint8 (n, H, W, C)
    labels: np.ndarray  # int64 (n,)
    class_ids: list[int]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    in_channels: int
    image_size: int


def _train_config(config: dict[str, Any]):
    """The saved config as a TrainConfig (fields this version lacks dropped, lists as tuples)."""
    names = {f.name for f in fields(TrainConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in names}
    return TrainConfig(**values)


def select_points(
    labels: np.ndarray, classes: int = TSNE_CLASSES, per_class: int = TSNE_POINTS
) -> tuple[list[int], np.ndarray]:
    """(the first ``classes`` class ids present, sorted indices of <= ``per_class`` of each)."""
    if classes < 1 or per_class < 1:
        raise ValueError(f"classes and per_class must be >= 1, got {classes}, {per_class}")
    class_ids = [int(c) for c in np.unique(labels)[:classes]]
    rng = np.random.default_rng(SELECTION_SEED)
    chosen = []
    for cls in class_ids:
        members = np.flatnonzero(labels == cls)
        if len(members) > per_class:
            members = np.sort(rng.choice(members, per_class, replace=False))
        chosen.append(members)
    return class_ids, np.sort(np.concatenate(chosen))


def load_feature_data(
    config: dict[str, Any], classes: int = TSNE_CLASSES, per_class: int = TSNE_POINTS
) -> FeatureData:
    """The test images for the t-SNE of runs trained with ``config`` (classification only)."""
    cfg = _train_config(config)
    if cfg.task not in ("classification", "auto"):
        raise ValueError(f"t-SNE of class features needs a classification task, got {cfg.task!r}")
    info = dataset_info(cfg.dataset)
    train_arrays = load_split(cfg, info.train_split)
    mean, std = channel_stats(train_arrays)
    std = tuple(s if s > 0 else 1.0 for s in std)
    # the classifier the run trained: its first num_classes classes when it kept only those
    num_classes = cfg.num_classes or info.num_classes or len(train_arrays.classes)
    _, height, _, in_channels = train_arrays.images.shape
    del train_arrays
    test = load_split(cfg, info.eval_splits[0])
    labels = np.asarray(test.labels)
    if labels.ndim != 1:
        raise ValueError(f"t-SNE needs one class per image, got labels of shape {labels.shape}")
    class_ids, indices = select_points(labels, classes, per_class)
    names = list(test.classes) if test.classes is not None else []
    return FeatureData(
        images=np.ascontiguousarray(test.images[indices]),
        labels=labels[indices].astype(np.int64),
        class_ids=class_ids,
        class_names=[str(n) for n in names],
        mean=tuple(mean),
        std=tuple(std),
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=height,
    )


@torch.no_grad()
def run_features(run: Run, data: FeatureData, batch_size: int = 256) -> np.ndarray:
    """``model.features(x)`` of ``run``'s checkpoint on ``data``'s images, (n, d) float32."""
    if run.checkpoint is None:
        raise FileNotFoundError(f"{run.path}: no checkpoint.pt to rebuild the model from")
    config = run.config
    model = build_model(
        config["arch"],
        data.num_classes,
        data.in_channels,
        config.get("head_bias_init", "zero"),
        image_size=data.image_size,
    )
    state = load_checkpoint(run.checkpoint, ("model",))
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as error:  # torch lists every tensor
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
        raise ValueError(
            f"{run.checkpoint} does not fit the {config['arch']} rebuilt from {run.path}'s "
            f"config ({data.num_classes} classes): {first or type(error).__name__}; the run's "
            "checkpoint and config disagree: rerun the run"
        ) from None
    model.eval()
    if not hasattr(model, "features"):
        raise TypeError(f"arch {config['arch']!r} has no features(x) method to embed")
    images = images_to_tensor(data.images)
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start : start + batch_size], data.mean, data.std)
        out.append(model.features(x).float().flatten(1))
    return torch.cat(out).numpy()


def tsne_2d(features: np.ndarray, seed: int = TSNE_SEED) -> np.ndarray:
    """(n, d) features -> (n, 2) t-SNE coordinates (deterministic for a fixed seed)."""
    from sklearn.manifold import TSNE  # scikit-learn is slow to import: only for a t-SNE
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency, with it

    n = len(features)
    if n < 10:
        raise ValueError(f"t-SNE needs at least 10 points, got {n}")
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity_for(n),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    # One OpenMP thread: Barnes-Hut's gradient on a busy machine is 50x slower with more (the
    # threads wait on each other), and one thread makes the layout bitwise reproducible.
    with threadpool_limits(1):
        return tsne.fit_transform(np.asarray(features, dtype=np.float32))


def perplexity_for(n: int) -> float:
    """t-SNE perplexity for n points: 30 (scikit-learn's default) or less for small n."""
    return float(min(30.0, (n - 1) / 3))
