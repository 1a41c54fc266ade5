"""Person re-identification benchmarks (Market-1501, DukeMTMC-reID) and an Omniglot stand-in.

The paper (Sec. "Person Instance Identification") trains an identity classifier on the train
identities and evaluates retrieval on disjoint test identities: every query image ranks the
gallery, and Rank-1 / mAP are read off that ranking in the single-query mode. These loaders
return exactly what that protocol needs: relabelled identities for training, raw person ids and
camera ids for query and gallery, so the evaluator can apply the official junk/distractor and
same-camera rules.

Market-1501 and DukeMTMC-reID cannot be shipped; ``load_omniglot_retrieval`` builds the same
cross-class retrieval task from the Omniglot background zips, which can.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from frlr.data.arrays import ImageArrays
from frlr.data.images import MODES, decode_images, decode_member, progress
from frlr.data.sources import SourceTree, open_tree

__all__ = [
    "DISTRACTOR_PID",
    "JUNK_PID",
    "REID_SPLITS",
    "load_dukemtmc_reid",
    "load_market1501",
    "load_omniglot_retrieval",
]

JUNK_PID = -1
"""Market-1501 person id of badly cropped boxes: the evaluator ignores them entirely."""

DISTRACTOR_PID = 0
"""Market-1501 person id of detector false positives: kept in the gallery as true negatives."""

REID_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
"""Split name -> official folder name, shared by Market-1501 and DukeMTMC-reID."""

_MARKET_NAME = re.compile(
    r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)s(?P<seq>\d+)_(?P<frame>\d+)_(?P<box>\d+)$"
)
_DUKE_NAME = re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)_f(?P<frame>\d+)$")
_OMNIGLOT_NAME = re.compile(r"^(?P<char>\d+)_(?P<drawer>\d+)$")

MARKET_ZIP = "Market-1501-v15.09.15.zip"
DUKE_ZIP = "DukeMTMC-reID.zip"
OMNIGLOT_TRAIN_ZIP = "images_background_small1.zip"
OMNIGLOT_EVAL_ZIP = "images_background_small2.zip"


# --------------------------------------------------------------------------- shared helpers
# Decoding itself is frlr.data.images; what is here adds (height, width) sizes, which re-id
# needs (256x128 people) and images.check_image_size (square only) does not take. Public:
# frlr.data.multilabel's loaders check and decode with them too.


def image_size_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Normalise ``image_size`` to (height, width); an int means a square image."""
    if image_size is None:
        return None
    message = (
        f"image_size must be a positive int, a (height, width) pair or None, got {image_size!r}"
    )
    if isinstance(image_size, bool):
        raise TypeError(message)
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        if not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in image_size
        ):
            raise TypeError(message)
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(message)
    if min(size) < 1:
        raise ValueError(message)
    return size


def check_split(split: str, allowed: Sequence[str]) -> str:
    """``split``, if it is one of ``allowed``: a loader's own one-line error for a typo, before
    any file is opened."""
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__} {split!r}")
    if split not in allowed:
        raise ValueError(f"split must be one of {list(allowed)}, got {split!r}")
    return split


def check_root(root: str | Path) -> Path:
    """``root`` as a ``Path`` that exists: a missing dataset folder fails here by name, not
    later inside an archive reader."""
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a str or Path, got {type(root).__name__} {root!r}")
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"root {str(root)!r} does not exist")
    return path


def resize_hw(image: Image.Image, size_hw: tuple[int, int]) -> Image.Image:
    """Resize to (height, width) with the policy of ``images.resize_image``.

    Area averaging (``BOX``) when shrinking both sides, bilinear otherwise, so rectangular
    and square resizes of one dataset treat pixels alike.
    """
    target = (size_hw[1], size_hw[0])
    if image.size == target:
        return image
    if image.mode == "1":
        image = image.convert("L")
    shrinking = image.size[0] >= target[0] and image.size[1] >= target[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return image.resize(target, resample=resample)


def decode_hw(
    tree: SourceTree,
    names: Sequence[str],
    mode: str,
    size_hw: tuple[int, int] | None,
    desc: str,
) -> np.ndarray:
    """``images.decode_images`` for any (height, width): square sizes go straight through it.

    A rectangular size decodes and resizes image by image (``decode_images`` would insist on
    a common native size first, which a resize makes unnecessary).
    """
    if size_hw is None or size_hw[0] == size_hw[1]:
        return decode_images(tree, names, mode, None if size_hw is None else size_hw[0], desc)
    out = np.empty((len(names), *size_hw, MODES[mode]), dtype=np.uint8)
    for i, name in enumerate(progress(names, total=len(names), desc=desc)):
        array = decode_member(tree, name, mode, None)
        plane = array[:, :, 0] if array.shape[2] == 1 else array
        out[i] = np.asarray(resize_hw(Image.fromarray(plane), size_hw)).reshape(out.shape[1:])
    return out


def _open_dataset(root: Path, marker: str, zip_names: Sequence[str], dataset: str) -> SourceTree:
    """Open ``root`` as a folder holding ``marker``, a folder holding the official zip, or the zip.

    The official release is a zip; reading it in place spares extracting tens of thousands of
    small JPEGs that are decoded once and cached anyway.
    """
    if root.is_dir():
        if (root / marker).exists():
            return open_tree(root)
        for zip_name in zip_names:
            if (root / zip_name).is_file():
                return open_tree(root / zip_name)
        raise FileNotFoundError(
            f"{dataset}: {root} holds neither {marker} nor {' / '.join(zip_names)}; root must be "
            "the extracted dataset folder or the folder holding the official zip"
        )
    return open_tree(root)


# --------------------------------------------------------------------------- Market / Duke


def _load_reid_folder(
    root: str | Path,
    split: str,
    image_size: int | tuple[int, int] | None,
    pattern: re.Pattern[str],
    dataset: str,
    zip_name: str,
) -> ImageArrays:
    """Shared parser for the two benchmarks: they differ only in the file-name pattern."""
    split = check_split(split, tuple(REID_SPLITS))
    size_hw = image_size_hw(image_size)
    base = check_root(root)
    folder = REID_SPLITS[split]
    with _open_dataset(base, REID_SPLITS["train"], (zip_name,), dataset) as tree:
        files = [
            name
            for name in tree.names()
            if name.startswith(folder + "/")
            and name.count("/") == 1
            and name.lower().endswith(".jpg")
        ]
        if not files:
            raise FileNotFoundError(f"{dataset}: no .jpg images in {tree.describe(folder)}")

        pid_strings: list[str] = []
        kept: list[str] = []
        cams: list[int] = []
        skipped = 0
        for name in files:
            match = pattern.match(PurePosixPath(name).stem)
            if match is None:
                raise ValueError(
                    f"{dataset}: file name {tree.describe(name)} does not follow the pattern "
                    f"{pattern.pattern}"
                )
            pid = match["pid"]
            if split == "train" and int(pid) in (JUNK_PID, DISTRACTOR_PID):
                skipped += 1
                continue
            pid_strings.append(pid)
            kept.append(name)
            cams.append(int(match["cam"]))
        if not kept:
            raise ValueError(f"{dataset}: no identity images left in {tree.describe(folder)}")
        images = decode_hw(tree, kept, "RGB", size_hw, desc=f"{dataset} {split}")
        source = tree.describe(folder)

    pids = np.array([int(p) for p in pid_strings], dtype=np.int64)
    by_pid = {int(p): p for p in pid_strings}
    classes = [by_pid[p] for p in sorted(by_pid)]
    if split == "train":
        # Identity classification needs contiguous targets; classes[k] is the k-th pid by value.
        labels = np.searchsorted(np.array(sorted(by_pid), dtype=np.int64), pids).astype(np.int64)
        label_note = "relabelled identities 0..K-1 in pid order; classes[k] is the raw pid"
    else:
        labels = pids
        label_note = (
            "raw person ids, not indices into classes (classes lists the distinct pids); "
            f"{JUNK_PID} = junk (ignored by the evaluator), {DISTRACTOR_PID} = distractor "
            "(a true negative)"
        )
    meta = {
        "dataset": dataset,
        "split": split,
        "source": source,
        "labels": label_note,
        "cams": "camera id from the file name",
        "num_images": str(len(kept)),
        "num_identities": str(len(classes)),
        "skipped_junk_or_distractor": str(skipped),
        "image_size": "original" if size_hw is None else f"{size_hw[0]}x{size_hw[1]}",
    }
    return ImageArrays(
        images=images,
        labels=labels,
        classes=classes,
        cams=np.array(cams, dtype=np.int64),
        meta=meta,
    )


def load_market1501(
    root: str | Path,
    split: str,
    image_size: int | tuple[int, int] | None = (256, 128),
) -> ImageArrays:
    """Load a Market-1501 split (Zheng et al. 2015).

    root: the extracted ``Market-1501-v15.09.15`` folder (``bounding_box_train``,
        ``bounding_box_test``, ``query``), or the folder holding the official
        ``Market-1501-v15.09.15.zip`` (read in place). File names are
        ``PPPP_cCsS_FFFFFF_BB.jpg`` (person, camera, sequence, frame, box).
    split: ``"train"`` (751 identities, 12,936 images), ``"query"`` (3,368) or ``"gallery"``
        (``bounding_box_test``, 19,732).
    image_size: (height, width) to resize to (an int means square); ``None`` keeps the native
        128x64. The default 256x128 is the usual re-id input.

    Labels follow the official protocol:

    - ``"train"``: identities relabelled to 0..K-1 in pid order (``classes[k]`` is the pid
      string), because the classifier needs contiguous targets. The official train folder has
      no pid -1 or 0000 images; any that appear are skipped (counted in
      ``meta["skipped_junk_or_distractor"]``) since they are not identities.
    - ``"query"`` / ``"gallery"``: raw pids as int64, kept as they are; ``classes`` lists the
      distinct pid strings. The gallery holds pid ``-1`` (junk: partial or bad boxes) and
      ``0`` (distractors: false detections). The evaluator ignores junk images entirely and
      counts distractors as wrong matches, and it also drops gallery images of the query's
      identity seen by the query's own camera. ``cams`` holds the camera id ``C`` (1..6) for
      that rule (train images carry theirs too).
    """
    return _load_reid_folder(root, split, image_size, _MARKET_NAME, "Market-1501", MARKET_ZIP)


def load_dukemtmc_reid(
    root: str | Path,
    split: str,
    image_size: int | tuple[int, int] | None = (256, 128),
) -> ImageArrays:
    """Load a DukeMTMC-reID split (Zheng, Zheng and Yang 2017).

    root: the extracted ``DukeMTMC-reID`` folder with the same three folders as Market-1501,
        or the folder holding ``DukeMTMC-reID.zip``. File names are ``PPPP_cC_fFFFFFFF.jpg``
        (person, camera 1..8, frame).
    split: ``"train"`` (702 identities, 16,522 images), ``"query"`` (2,228) or ``"gallery"``
        (17,661, including 408 distractor identities that carry ordinary pids).

    Labels and cameras follow ``load_market1501``: relabelled identities for ``"train"``,
    raw pids and camera ids for ``"query"`` / ``"gallery"``. The official release has no -1/0
    pids; they are handled exactly as for Market-1501 should a variant contain them.
    """
    return _load_reid_folder(root, split, image_size, _DUKE_NAME, "DukeMTMC-reID", DUKE_ZIP)


# --------------------------------------------------------------------------- Omniglot


def _omniglot_drawings(tree: SourceTree) -> dict[str, list[str]]:
    """Map ``Alphabet/characterNN`` -> sorted names of its PNG drawings.

    ``open_tree`` strips the zip's own top folder (``images_background_small1/``), so the keys
    of two zips compare by alphabet and character alone.
    """
    characters: dict[str, list[str]] = {}
    for name in tree.names():
        if not name.lower().endswith(".png"):
            continue
        parts = PurePosixPath(name).parts
        if len(parts) != 3:
            raise ValueError(
                f"{tree.describe(name)} is not <zip root>/<Alphabet>/<character>/<file>.png"
            )
        characters.setdefault(f"{parts[0]}/{parts[1]}", []).append(name)
    if not characters:
        raise ValueError(f"{tree.location}: no .png drawings inside")
    return {key: sorted(names) for key, names in sorted(characters.items())}


def _omniglot_ids(tree: SourceTree, name: str) -> tuple[str, int]:
    """``<charid>_<drawer>.png`` -> (charid, drawer)."""
    match = _OMNIGLOT_NAME.match(PurePosixPath(name).stem)
    if match is None:
        raise ValueError(f"{tree.describe(name)} is not named <charid>_<drawer>.png")
    return match["char"], int(match["drawer"])


def _unseen_characters(
    train: SourceTree,
    train_chars: dict[str, list[str]],
    evaluation: SourceTree,
    eval_chars: dict[str, list[str]],
) -> list[str]:
    """The evaluation characters absent from the training zip, proven disjoint three ways.

    A character is seen when its ``Alphabet/characterNN`` path is in the training zip. The
    rest are then checked against the training zip by path, by Omniglot's global character id
    (the ``<charid>`` file-name prefix) and by image bytes (SHA-256), so a renamed copy of a
    training character cannot pass as unseen. The two zips are a few MB, so hashing is cheap.
    """
    unseen = [key for key in eval_chars if key not in train_chars]
    assert not set(unseen) & set(train_chars)
    train_ids: set[str] = set()
    train_digests: dict[bytes, str] = {}
    for names in train_chars.values():
        for name in names:
            train_ids.add(_omniglot_ids(train, name)[0])
            train_digests[hashlib.sha256(train.read(name)).digest()] = name
    for key in unseen:
        for name in eval_chars[key]:
            char_id = _omniglot_ids(evaluation, name)[0]
            if char_id in train_ids:
                raise ValueError(
                    f"{evaluation.describe(name)} has character id {char_id}, which "
                    f"{train.location} also holds under another path: it is not unseen"
                )
            twin = train_digests.get(hashlib.sha256(evaluation.read(name)).digest())
            if twin is not None:
                raise ValueError(
                    f"{evaluation.describe(name)} is byte-identical to {train.describe(twin)}: "
                    "it is not an unseen class"
                )
    return unseen


def load_omniglot_retrieval(
    root: str | Path,
    split: str,
    image_size: int | tuple[int, int] | None = None,
) -> ImageArrays:
    """Omniglot as a cross-class retrieval task shaped like person re-id (Lake et al. 2015).

    Re-id trains on some identities and retrieves unseen ones; here the identities are
    handwritten characters, read straight from the zips (no extraction).

    root: the folder holding ``images_background_small1.zip`` and
        ``images_background_small2.zip``.
    split:
        ``"train"``: every character of small1 is a class (136 classes, 2,720 images);
        labels are class indices, ``classes`` the ``Alphabet/characterNN`` paths.
        ``"query"`` / ``"gallery"``: the characters of small2 whose alphabet/character path
        is not in small1 (for the shipped zips: Japanese_(katakana), Sanskrit and Tagalog,
        106 characters, 2,120 images; Greek and Latin are byte-identical in both zips and so
        excluded). Both splits return the same 2,120 images: every drawing is a query against
        all the others. ``cams`` is the drawer (1..20): the evaluator's re-id rule "drop
        gallery items with the query's identity *and* camera" then removes exactly the query
        itself, leaving 19 true matches per query.
    image_size: (height, width) to resize to (area averaging when shrinking); ``None`` keeps
        105x105.

    Images are uint8 (N, H, W, 1), inverted so strokes are 255 on a 0 background. One channel
    because the data is binary (three copies would only triple memory); inverted because then
    the background is zero, the value that zero-padding, random translation and convolution
    borders assume, and the sparse strokes carry the signal, as in MNIST.
    """
    split = check_split(split, ("train", "query", "gallery"))
    size_hw = image_size_hw(image_size)
    base = check_root(root)
    train_path, eval_path = base / OMNIGLOT_TRAIN_ZIP, base / OMNIGLOT_EVAL_ZIP
    for path in (train_path,) if split == "train" else (train_path, eval_path):
        if not path.is_file():
            raise FileNotFoundError(f"Omniglot zip missing: {path}")

    with open_tree(train_path) as train:
        train_chars = _omniglot_drawings(train)
        if split == "train":
            return _omniglot_arrays(train, train_chars, list(train_chars), split, size_hw)
        with open_tree(eval_path) as evaluation:
            eval_chars = _omniglot_drawings(evaluation)
            unseen = _unseen_characters(train, train_chars, evaluation, eval_chars)
            if not unseen:
                raise ValueError(f"{eval_path} holds no character that {train_path} lacks")
            arrays = _omniglot_arrays(evaluation, eval_chars, unseen, split, size_hw)
            arrays.meta["excluded_seen_characters"] = str(len(eval_chars) - len(unseen))
            return arrays


def _omniglot_arrays(
    tree: SourceTree,
    characters: dict[str, list[str]],
    keep: list[str],
    split: str,
    size_hw: tuple[int, int] | None,
) -> ImageArrays:
    names = [name for key in keep for name in characters[key]]
    labels = np.array([k for k, key in enumerate(keep) for _ in characters[key]], dtype=np.int64)
    drawers = np.array([_omniglot_ids(tree, name)[1] for name in names], dtype=np.int64)
    if len(set(zip(labels.tolist(), drawers.tolist(), strict=True))) != len(names):
        raise ValueError(
            f"{tree.location}: a character has two drawings by one drawer, so the camera filter "
            "would remove more than the query itself"
        )
    images = decode_hw(tree, names, "L", size_hw, desc=f"Omniglot {split}")
    np.subtract(255, images, out=images)
    meta = {
        "dataset": "Omniglot retrieval",
        "split": split,
        "source": str(tree.location),
        "labels": "character index; classes are Alphabet/characterNN paths",
        "cams": "drawer id (1..20); each (character, drawer) pair is one image",
        "polarity": "strokes 255 on background 0 (inverted from the PNGs)",
        "alphabets": ",".join(sorted({key.split("/")[0] for key in keep})),
        "num_images": str(len(names)),
        "num_characters": str(len(keep)),
        "image_size": "original" if size_hw is None else f"{size_hw[0]}x{size_hw[1]}",
    }
    return ImageArrays(images=images, labels=labels, classes=list(keep), cams=drawers, meta=meta)
