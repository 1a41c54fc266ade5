"""Sparse multi-label attribute data: DeepFashion and a Tiny ImageNet mosaic stand-in.

The paper's third test (Sec. "Clothing Attributes Recognition") is DeepFashion's 1,000 clothing
attributes with about 3 positives per image, where plain logistic regression suffers most from
negative class distraction. ``load_deepfashion_attributes`` parses the official Category and
Attribute Prediction Benchmark. DeepFashion cannot be shipped, so
``load_mosaic_tiny_imagenet`` builds a task with the same shape (few positives among many
labels, real images) from Tiny ImageNet: each sample is a 2x2 mosaic of four images of distinct
classes, so it has 4 positives out of 200.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from frlr.data.arrays import ImageArrays
from frlr.data.images import decode_images, progress
from frlr.data.reid import check_root, check_split, decode_hw, image_size_hw, resize_hw
from frlr.data.sources import SourceTree, open_tree
from frlr.data.tiny_imagenet import read_wnids, read_words, train_names, val_names

__all__ = [
    "DEEPFASHION_ATTRIBUTE_TYPES",
    "DEEPFASHION_SPLITS",
    "MOSAIC_SPLITS",
    "load_deepfashion_attributes",
    "load_mosaic_tiny_imagenet",
    "max_mosaics",
    "mosaic_plan",
]

DEEPFASHION_SPLITS = ("train", "val", "test")
"""The official partition (209,222 / 40,000 / 40,000 images)."""

DEEPFASHION_ATTRIBUTE_TYPES = {1: "texture", 2: "fabric", 3: "shape", 4: "part", 5: "style"}
"""The attribute type column of ``list_attr_cloth.txt``."""

MOSAIC_SPLITS = ("train", "val", "test")
"""``"val"`` and ``"test"`` both build from Tiny ImageNet's val folder (its test has no labels)."""

_ATTRIBUTE_VALUES = frozenset({"-1", "0", "1"})


# --------------------------------------------------------------------------- DeepFashion


def _counted_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, stripped line) of a DeepFashion list file's entries, checking the count.

    Every list file starts with the entry count, then a header line; the count is checked
    against the entries actually present so a truncated download fails loudly, naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"DeepFashion annotation file missing: {path}")
    with path.open(encoding="utf-8-sig") as handle:
        first = handle.readline().strip()
        try:
            declared = int(first)
        except ValueError:
            raise ValueError(f"{path}, line 1: expected the entry count, got {first!r}") from None
        if not handle.readline().strip():
            raise ValueError(f"{path}, line 2: expected a header line")
        found = 0
        for number, raw in enumerate(handle, start=3):
            line = raw.strip()
            if not line:
                continue
            found += 1
            yield number, line
    if found != declared:
        raise ValueError(f"{path}: line 1 declares {declared} entries but the file has {found}")


def _deepfashion_attributes(path: Path) -> tuple[list[str], list[int]]:
    """Attribute names (which may contain spaces) and types from ``list_attr_cloth.txt``."""
    names: list[str] = []
    types: list[int] = []
    for number, line in _counted_lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(
                f"{path}, line {number}: expected '<attribute name> <type>', got {line!r}"
            )
        names.append(parts[0].strip())
        types.append(int(parts[1]))
    return names, types


def _deepfashion_partition(path: Path, split: str) -> list[str]:
    """The image names of ``split`` in ``list_eval_partition.txt``, in file order."""
    chosen: list[str] = []
    for number, line in _counted_lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or parts[1] not in DEEPFASHION_SPLITS:
            raise ValueError(
                f"{path}, line {number}: expected '<image> train|val|test', got {line!r}"
            )
        if parts[1] == split:
            chosen.append(parts[0])
    return chosen


def _attribute_row_error(path: Path, number: int, line: str, num_attributes: int) -> ValueError:
    """Say what is wrong with a row the fast parser refused: the count or a value."""
    values = line.split()[1:]
    if len(values) != num_attributes:
        return ValueError(
            f"{path}, line {number}: expected an image name and {num_attributes} values, "
            f"got {len(values)} values"
        )
    bad = sorted(set(values) - _ATTRIBUTE_VALUES)
    return ValueError(f"{path}, line {number}: attribute values must be -1, 0 or 1, got {bad}")


def _deepfashion_labels(path: Path, wanted: list[str], num_attributes: int) -> np.ndarray:
    """Multi-hot uint8 (len(wanted), num_attributes) rows from ``list_attr_img.txt``.

    Values are -1/0/1 or -1/1 depending on the release, and only 1 is positive. The full
    file is 289,222 rows of 1,000 values, so rows outside ``wanted`` are not split at all,
    and the rest are parsed by NumPy's text reader (3x faster than splitting into 1,000
    strings); a row it refuses is re-read token by token to name the problem.
    """
    row_of = {name: i for i, name in enumerate(wanted)}
    labels = np.zeros((len(wanted), num_attributes), dtype=np.uint8)
    seen = np.zeros(len(wanted), dtype=bool)
    with warnings.catch_warnings():
        # NumPy warns (rather than fails) when a text row stops parsing early.
        warnings.simplefilter("error", DeprecationWarning)
        for number, line in _counted_lines(path):
            name, _, rest = line.replace("\t", " ").partition(" ")
            row = row_of.get(name)
            if row is None:
                continue
            try:
                values = np.fromstring(rest, dtype=np.int32, sep=" ")
            except (DeprecationWarning, ValueError):
                raise _attribute_row_error(path, number, line, num_attributes) from None
            if values.size != num_attributes or not ((values >= -1) & (values <= 1)).all():
                raise _attribute_row_error(path, number, line, num_attributes)
            if seen[row]:
                raise ValueError(f"{path}, line {number}: image {name} listed twice")
            seen[row] = True
            labels[row] = values == 1
    if not seen.all():
        missing = wanted[int(np.argmin(seen))]
        raise ValueError(
            f"{path}: image {missing} from the evaluation partition has no attribute row "
            f"({int((~seen).sum())} missing in all)"
        )
    return labels


def _deepfashion_images(root: Path) -> SourceTree:
    """Where the ``img/...`` names resolve: an extracted folder, else the official ``img.zip``.

    The release ships ``Img/img.zip``; reading it in place saves extracting 289,222 files.
    """
    for base in (root, root / "Img"):
        if (base / "img").is_dir():
            return open_tree(base)
    for zip_path in (root / "Img" / "img.zip", root / "img.zip"):
        if zip_path.is_file():
            return open_tree(zip_path)
    raise FileNotFoundError(
        f"DeepFashion images not found under {root}: expected img/, Img/img/ or Img/img.zip"
    )


def _deepfashion_anno(root: Path, name: str) -> Path:
    """``Anno/<name>``; some re-releases name the folder ``Anno_coarse``."""
    for folder in ("Anno", "Anno_coarse"):
        if (root / folder / name).is_file():
            return root / folder / name
    return root / "Anno" / name


def load_deepfashion_attributes(
    root: str | Path,
    split: str,
    image_size: int | tuple[int, int] | None = None,
) -> ImageArrays:
    """DeepFashion's 1,000 clothing attributes, official partition (Liu et al. 2016).

    root: the Category and Attribute Prediction Benchmark folder, holding
        ``Anno/list_attr_img.txt``, ``Anno/list_attr_cloth.txt``,
        ``Eval/list_eval_partition.txt`` and the images as ``img/``, ``Img/img/`` or the
        unextracted ``Img/img.zip``.
    split: ``"train"`` (209,222 images), ``"val"`` (40,000) or ``"test"`` (40,000).
    image_size: (height, width) to resize to (an int means square). The real images vary in
        size (longer side 300 px), so ``None`` works only for a set of equal-sized images.

    Labels are multi-hot uint8 (N, 1000): 1 where the attribute file says 1, 0 for -1 and 0
    (releases differ in whether "absent" is -1 or 0). ``classes`` are the attribute names
    (they may contain spaces); ``meta["attribute_types"]`` their types, comma-separated (see
    ``DEEPFASHION_ATTRIBUTE_TYPES``). Every count is checked against the count line of its
    file, and every malformed line raises an error naming the file and line.
    """
    split = check_split(split, DEEPFASHION_SPLITS)
    size_hw = image_size_hw(image_size)
    base = check_root(root)
    cloth_path = _deepfashion_anno(base, "list_attr_cloth.txt")
    img_path = _deepfashion_anno(base, "list_attr_img.txt")
    partition_path = base / "Eval" / "list_eval_partition.txt"

    attribute_names, types = _deepfashion_attributes(cloth_path)
    members = _deepfashion_partition(partition_path, split)
    if len(set(members)) != len(members):
        raise ValueError(f"{partition_path}: an image of split {split!r} is listed twice")
    labels = _deepfashion_labels(img_path, members, len(attribute_names))
    with _deepfashion_images(base) as tree:
        # A zip's top folder (img/) is stripped by open_tree; the annotation names keep it.
        strip = bool(members) and not tree.has(members[0]) and members[0].startswith("img/")
        image_names = [name[len("img/") :] for name in members] if strip else members
        images = decode_hw(tree, image_names, "RGB", size_hw, desc=f"DeepFashion {split}")
        image_source = str(tree.location)
    meta = {
        "dataset": "DeepFashion attributes",
        "split": split,
        "source": str(base),
        "images": image_source,
        "labels": "multi-hot over the attributes; 1 = positive, -1/0 = negative",
        "attribute_types": ",".join(str(t) for t in types),
        "num_images": str(len(members)),
        "mean_positives": f"{labels.sum(axis=1).mean():.3f}" if len(members) else "0",
        "image_size": "original" if size_hw is None else f"{size_hw[0]}x{size_hw[1]}",
    }
    return ImageArrays(images=images, labels=labels, classes=attribute_names, meta=meta)


# --------------------------------------------------------------------------- Tiny ImageNet mosaic


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed!r}")
    return int(seed)


def max_mosaics(classes: np.ndarray) -> int:
    """The most mosaics of 4 distinct classes that images of these classes can form.

    M mosaics are possible exactly when sum_c min(n_c, M) >= 4M (a class can fill at most
    one slot per mosaic; given that, the construction in ``_group_quads`` always
    succeeds). For balanced classes this is ``len(classes) // 4``.
    """
    counts = np.bincount(np.asarray(classes, dtype=np.int64))
    best = 0
    for m in range(1, len(classes) // 4 + 1):
        if np.minimum(counts, m).sum() >= 4 * m:
            best = m
        else:
            break  # sum_c min(n_c, m) - 4m only decreases once it is negative
    return best


def _group_quads(classes: np.ndarray, seed: int, num_samples: int) -> np.ndarray:
    """Indices (num_samples, 4) of images, each used at most once, four distinct classes a row.

    Shuffle with ``seed``; keep images in that order while their class has fewer than M =
    ``num_samples`` kept (the rest are never used). Then fill the mosaics one by one from
    the head of the shuffled queue, skipping an image whose class the mosaic already has
    (it waits for the next one). The fix-up that makes this always succeed: with R mosaics
    left, a class with exactly R images left must go in this mosaic, so it is placed first.
    That keeps every count <= R and the total 4R, which is all a mosaic needs. For
    balanced data the forced picks only happen in the last few mosaics, so mosaics are
    essentially consecutive quads of the shuffle. Slots are in shuffled order
    (top-left, top-right, bottom-left, bottom-right), a pure function of the inputs.
    """
    classes = np.asarray(classes, dtype=np.int64)
    if not 1 <= num_samples <= max_mosaics(classes):
        raise ValueError(
            f"cannot build {num_samples} mosaics of 4 distinct classes from {len(classes)} "
            f"images of {len(np.unique(classes))} classes (at most {max_mosaics(classes)})"
        )
    order = np.random.default_rng(seed).permutation(len(classes))
    kept_per_class: dict[int, int] = {}
    queue: list[int] = []
    for index in order.tolist():
        c = int(classes[index])
        if kept_per_class.get(c, 0) < num_samples and len(queue) < 4 * num_samples:
            kept_per_class[c] = kept_per_class.get(c, 0) + 1
            queue.append(index)
    rank = {index: r for r, index in enumerate(queue)}
    per_class: dict[int, list[int]] = {}
    for index in reversed(queue):  # popped from the end: earliest in the shuffle first
        per_class.setdefault(int(classes[index]), []).append(index)
    used: set[int] = set()
    head = 0
    quads = np.empty((num_samples, 4), dtype=np.int64)
    for q in range(num_samples):
        left = num_samples - q
        chosen = [per_class[c][-1] for c, items in per_class.items() if len(items) == left]
        chosen_classes = {int(classes[i]) for i in chosen}
        position = head
        while len(chosen) < 4:
            index = queue[position]
            position += 1
            c = int(classes[index])
            if index in used or c in chosen_classes:
                continue
            chosen.append(index)
            chosen_classes.add(c)
        for index in chosen:
            used.add(index)
            per_class[int(classes[index])].remove(index)
        while head < len(queue) and queue[head] in used:
            head += 1
        quads[q] = sorted(chosen, key=rank.__getitem__)
    return quads


def _plan(
    tree: SourceTree, split: str, seed: int, num_samples: int | None
) -> tuple[str, list[str], list[str], list[str], np.ndarray, np.ndarray]:
    """(part, wnids, class names, source names, source labels, quads) for one mosaic split.

    Listing and class order come from ``frlr.data.tiny_imagenet`` (sorted wnids, train
    by class then index, val by index), so class k here is class k of the single-label set.
    """
    part = "train" if split == "train" else "val"
    wnids = read_wnids(tree)
    words = read_words(tree)
    index_of = {wnid: i for i, wnid in enumerate(wnids)}
    names, labels = (train_names if part == "train" else val_names)(tree, index_of)
    classes = np.asarray(labels, dtype=np.int64)
    limit = max_mosaics(classes)
    if limit == 0:
        raise ValueError(
            f"{tree.describe(part)}: images of {len(np.unique(classes))} classes cannot form "
            "one mosaic of 4 distinct classes"
        )
    if num_samples is None:
        num_samples = limit
    elif isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"num_samples must be an int or None, got {num_samples!r}")
    elif not 1 <= num_samples <= limit:
        raise ValueError(
            f"num_samples must be in 1..{limit} (each of the {len(names)} {part} images is "
            f"used at most once, 4 distinct classes a mosaic), got {num_samples!r}"
        )
    quads = _group_quads(classes, seed, int(num_samples))
    class_names = [words.get(wnid, wnid) for wnid in wnids]
    return part, wnids, class_names, names, classes, quads


def _mosaic_arguments(root: str | Path, split: str, seed: int) -> tuple[Path, str, int]:
    return check_root(root), check_split(split, MOSAIC_SPLITS), _check_seed(seed)


def mosaic_plan(
    root: str | Path, split: str, seed: int = 0, num_samples: int | None = None
) -> list[tuple[str, str, str, str]]:
    """The four source images of every mosaic, as names relative to the dataset root.

    Order within a tuple is top-left, top-right, bottom-left, bottom-right; the same
    arguments give the same plan as ``load_mosaic_tiny_imagenet``, so a mosaic can be
    traced back to its sources without decoding anything.
    """
    base, split, seed = _mosaic_arguments(root, split, seed)
    with open_tree(base) as tree:
        _, _, _, names, _, quads = _plan(tree, split, seed, num_samples)
    return [(names[a], names[b], names[c], names[d]) for a, b, c, d in quads.tolist()]


def load_mosaic_tiny_imagenet(
    root: str | Path,
    split: str,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    num_samples: int | None = None,
) -> ImageArrays:
    """A sparse multi-label stand-in for DeepFashion built from real Tiny ImageNet images.

    This is not DeepFashion: it only shares the property the paper tests, few positives among
    many labels. Each sample is a 2x2 mosaic of four 64x64 Tiny ImageNet images of distinct
    classes (128x128 in all), labelled with those four classes out of 200.

    root: the ``tiny-imagenet-200`` folder (``wnids.txt``, ``train/``, ``val/``) or
        ``tiny-imagenet-200.zip``, as for ``frlr.data.tiny_imagenet.load_tiny_imagenet``.
    split: ``"train"`` builds from ``train/``; ``"val"`` and ``"test"`` both build from
        ``val/`` (the official test split has no labels), so no image file crosses splits.
    image_size: (height, width) to resize the finished mosaic to (an int means square, e.g.
        64: area averaging when shrinking); ``None`` keeps 128x128.
    seed: the shuffle seed; the mosaics are a pure function of it and of the files (see
        ``mosaic_plan`` for the sources of each mosaic).
    num_samples: how many mosaics; default and maximum ``len(split images) // 4``, since each
        source image is used at most once (5,000 train and 2,500 val mosaics on the shared
        100-per-class train subset and full val split).

    Labels are multi-hot uint8 (N, 200) with exactly 4 ones; ``classes`` are the class names
    of the single-label loader (``words.txt``, sorted-wnid order; ``meta["wnids"]`` keeps the
    ids). Grayscale sources are converted to RGB. A known quirk of the source data is kept:
    train ``n01855672_44.JPEG`` is byte-identical to ``val_2157.JPEG`` (under another label),
    so the two splits share those pixels though no file.
    """
    base, split, seed = _mosaic_arguments(root, split, seed)
    size_hw = image_size_hw(image_size)
    with open_tree(base) as tree:
        part, wnids, class_names, names, classes, quads = _plan(tree, split, seed, num_samples)
        tiles = decode_images(
            tree, [names[i] for i in quads.ravel()], "RGB", None, f"mosaic {split} tiles"
        )
    m, (h, w, c) = len(quads), tiles.shape[1:]
    mosaics = tiles.reshape(m, 2, 2, h, w, c).transpose(0, 1, 3, 2, 4, 5)
    mosaics = mosaics.reshape(m, 2 * h, 2 * w, c)
    if size_hw is not None and size_hw != (2 * h, 2 * w):
        resized = np.empty((m, *size_hw, c), dtype=np.uint8)
        for i in progress(range(m), total=m, desc=f"mosaic {split} resize"):
            resized[i] = np.asarray(resize_hw(Image.fromarray(mosaics[i]), size_hw))
        mosaics = resized
    labels = np.zeros((m, len(wnids)), dtype=np.uint8)
    np.put_along_axis(labels, classes[quads], 1, axis=1)
    meta = {
        "dataset": "Tiny ImageNet 2x2 mosaic (a sparse multi-label stand-in, not DeepFashion)",
        "split": split,
        "source": f"{base}/{part}",
        "seed": str(seed),
        "num_samples": str(m),
        "wnids": " ".join(wnids),
        "labels": "multi-hot: the classes of the 4 tiles (top-left, top-right, bottom-left, "
        "bottom-right); their files: frlr.data.multilabel.mosaic_plan(root, split, seed, "
        "num_samples)",
        "image_size": f"{mosaics.shape[1]}x{mosaics.shape[2]}",
    }
    return ImageArrays(images=mosaics, labels=labels, classes=class_names, meta=meta)
