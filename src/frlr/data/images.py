"""Decode encoded images (JPEG, PNG ...) into one uint8 (N, H, W, C) array, resizing on the way.

Decoding happens once per dataset (the result is cached), so this is the only place that touches
PIL. Every decoding failure is re-raised as [`CorruptImageError`][] naming the file (for an
archive, the archive and the member), what PIL found wrong and what to do, in one line, because a
bare PIL ``OSError`` from deep inside a 100k-image loop does not say which file to fix.

Resizing (``image_size``) uses area averaging (PIL ``BOX``) when shrinking, which is exact for
the 64 -> 32 Tiny ImageNet case (each output pixel is the mean of a 2x2 block), and bilinear
interpolation when enlarging.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from frlr.data.errors import REDOWNLOAD, DataError

if TYPE_CHECKING:
    from frlr.data.sources import SourceTree

T = TypeVar("T")

MODES = {"RGB": 3, "L": 1}
"""The PIL modes loaders ask for, and the channel count each gives."""


class CorruptImageError(DataError):
    """An image file could not be decoded; the message names the file and the archive member.

    A [`DataError`][frlr.data.DataError] (so a ``ValueError``): a dataset with a truncated or
    non-image file fails at decode time with the file's name, instead of training on a
    half-read split.

    Args:
        path: the file, or the archive that holds ``member``.
        problem: what is wrong with it.
        remedy: what the user can do about it.
        member: the file inside the archive ``path``, or None for a plain file.

    Examples:
        >>> from frlr.data import CorruptImageError
        >>> from frlr.data.images import decode_image
        >>> try:
        ...     decode_image(b"not an image", "train/cat/0.jpg")
        ... except CorruptImageError as error:
        ...     print("train/cat/0.jpg" in str(error))
        True
    """


def check_image_size(image_size: object) -> int | None:
    """Validate an ``image_size`` argument: None (keep the native size) or a positive int."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(f"image_size must be a positive int or None, got {image_size!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    return int(image_size)


_CONVERTIBLE = frozenset({"1", "L", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LA", "PA", "HSV"})
"""PIL modes whose ``convert`` to RGB and L is a colour conversion; PIL "converts" LAB by
copying its bands, so LAB (and any other mode) is refused rather than silently miscoloured."""


def _to_8_bit_grey(image: Image.Image) -> Image.Image | None:
    """A 16-bit, 32-bit integer or float grey image as 8-bit ``L``, scaled (never clipped):
    16-bit by 255/65535; 32-bit integers by the same when above 255, else as they are; floats
    in [0, 1] by 255, in [0, 255] as they are. None when the values fit none of these."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        top = 65535.0
    else:
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0:
            return None
        if image.mode == "F" and high <= 1:
            top = 1.0
        elif high <= 255:
            top = 255.0
        elif image.mode == "I" and high <= 65535:
            top = 65535.0
        else:
            return None
    scaled = np.rint(array.astype(np.float64) * (255.0 / top))
    return Image.fromarray(scaled.astype(np.uint8), "L")


def convert_image(
    image: Image.Image, mode: str, name: str = "image", member: str | None = None
) -> Image.Image:
    """``image`` in 8-bit ``mode`` (RGB or L): 16-bit and other deep grey modes scaled to 8
    bits (PIL's own ``convert`` clips them, turning a 16-bit image white), palette, CMYK,
    YCbCr, HSV and the alpha modes (LA, PA, RGBA; alpha dropped) by PIL. A mode that converts
    to neither raises :class:`CorruptImageError` naming the file and the mode."""
    if image.mode == mode:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        grey = _to_8_bit_grey(image)
        if grey is None:
            raise CorruptImageError(
                name,
                f"image mode {image.mode!r} holds values outside 8 or 16 bits, which do not "
                f"convert to 8-bit {mode} without guessing their range",
                "convert the image to 8- or 16-bit RGB or greyscale (PNG), then load it again",
                member=member,
            )
        return grey if mode == "L" else grey.convert(mode)
    if image.mode in _CONVERTIBLE:
        return image.convert(mode)
    raise CorruptImageError(
        name,
        f"image mode {image.mode!r} cannot be converted to 8-bit {mode}",
        "convert the image to 8-bit RGB or greyscale (PNG or JPEG), then load it again",
        member=member,
    )


def resize_image(image: Image.Image, image_size: int) -> Image.Image:
    """Resize to image_size x image_size: area averaging when shrinking, bilinear when enlarging."""
    if image.size == (image_size, image_size):
        return image
    if image.mode == "1":
        image = image.convert("L")
    shrinking = image.size[0] >= image_size and image.size[1] >= image_size
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return image.resize((image_size, image_size), resample=resample)


def decode_image(
    data: bytes,
    name: str,
    mode: str = "RGB",
    image_size: int | None = None,
    *,
    member: str | None = None,
) -> np.ndarray:
    """Decode one encoded image to uint8 (H, W, C); grayscale/CMYK/palette become ``mode``.

    ``name`` (the file, or the archive holding ``member``) only labels errors. Truncated files
    fail here (PIL decodes lazily otherwise).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = convert_image(opened, mode, name, member)
            if image_size is not None:
                image = resize_image(image, image_size)
            array = np.asarray(image, dtype=np.uint8)
    except CorruptImageError:  # a mode convert_image refuses: its own message
        raise
    except UnidentifiedImageError as exc:
        # PIL's message names an anonymous BytesIO, not the file.
        problem = f"not an image PIL can read ({len(data)} bytes, unknown format)"
        raise CorruptImageError(name, problem, _image_remedy(member), member=member) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        problem = f"cannot decode image ({type(exc).__name__}: {exc})"
        raise CorruptImageError(name, problem, _image_remedy(member), member=member) from exc
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def _image_remedy(member: str | None) -> str:
    if member is None:
        return "the file is damaged or cut short: replace it, or download the dataset again"
    return f"the image is damaged inside the archive: the archive is corrupt, {REDOWNLOAD}"


def decode_member(
    tree: SourceTree, name: str, mode: str = "RGB", image_size: int | None = None
) -> np.ndarray:
    """``decode_image`` of one file of ``tree``; an error names the archive and the member."""
    path, member = tree.locate(name)
    return decode_image(tree.read(name), path, mode, image_size, member=member)


def progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """A tqdm bar over ``items`` when stderr is a terminal; silent in tests, CI and logs.

    ``FRLR_PROGRESS=0`` turns it off everywhere, ``FRLR_PROGRESS=1`` forces it on.
    """
    from tqdm.auto import tqdm  # the data layer imports no toolkit extra until a bar is shown

    setting = os.environ.get("FRLR_PROGRESS", "")
    disable: bool | None = None if setting == "" else setting == "0"
    yield from tqdm(items, total=total, desc=desc, disable=disable, leave=False, mininterval=0.5)


def decode_images(
    tree: SourceTree,
    names: Sequence[str],
    mode: str = "RGB",
    image_size: int | None = None,
    desc: str = "decoding",
) -> np.ndarray:
    """Decode ``names`` from ``tree`` into one uint8 (N, H, W, C) array, in the given order.

    All images must share one size unless ``image_size`` resizes them; the first one that does
    not is named in the error.
    """
    image_size = check_image_size(image_size)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    if not names:
        size = image_size or 0
        return np.zeros((0, size, size, MODES[mode]), dtype=np.uint8)
    out: np.ndarray | None = None
    for i, name in enumerate(progress(names, total=len(names), desc=desc)):
        array = decode_member(tree, name, mode, image_size)
        if out is None:
            out = np.empty((len(names), *array.shape), dtype=np.uint8)
        elif array.shape != out.shape[1:]:
            raise tree.error(
                name,
                f"image is {array.shape[1]}x{array.shape[0]}, the ones before it are "
                f"{out.shape[2]}x{out.shape[1]}",
                "pass image_size to resize them all",
            )
        out[i] = array
    assert out is not None
    return out


def resize_images(images: np.ndarray, image_size: int | None, desc: str = "resizing") -> np.ndarray:
    """Resize decoded uint8 (N, H, W, C) arrays (CIFAR, digits) as ``decode_image`` would."""
    image_size = check_image_size(image_size)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    channels = images.shape[3]
    out = np.empty((len(images), image_size, image_size, channels), dtype=np.uint8)
    for i in progress(range(len(images)), total=len(images), desc=desc):
        plane = images[i, :, :, 0] if channels == 1 else images[i]
        resized = np.asarray(resize_image(Image.fromarray(plane), image_size), dtype=np.uint8)
        out[i] = resized.reshape(image_size, image_size, channels)
    return out
