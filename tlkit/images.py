"""Robust image decoding: any image file as 8-bit RGB, or a clear reason why not.

Course data comes from the internet and from students' phones, so a dataset
of thousands of files will hold a few bad ones: zero-byte files, text saved as
``.jpg``, truncated JPEGs, 16-bit or palette PNGs with transparency, and
decompression bombs (a tiny file that decodes to gigabytes of pixels). One
such file must never crash a run that has been training for an hour.

* ``open_image(path)`` decodes to RGB, converting every mode PIL knows
  (transparency composited on white), or raises :class:`ImageReadError`.
* Images above ``MAX_PIXELS`` or thinner than ``1:MAX_ASPECT`` are refused
  from their header, before any pixel is decoded.
* Phone photos are turned upright from their EXIF orientation tag, in this
  one place that training, features, evaluation, prediction, thumbnails and
  Grad-CAM all open images through.
* HEIC/HEIF files (iPhone photos, often renamed ``.jpg``) are named as such,
  with how to convert them, instead of "cannot identify image file".
* ``check_image_size(n)`` bounds an input size (from the user or a
  checkpoint) to ``MIN_IMAGE_SIZE``..``MAX_IMAGE_SIZE``.
* ``warn_skipped(paths)`` reports the files a caller dropped in one warning
  instead of one per file.

* ``is_image_file(name)``: a visible file with one of ``IMAGE_EXTENSIONS``.
* ``open_image(path, min_side=S)`` lets a JPEG decoder skip detail the
  caller's resize would throw away: a JPEG at least four times ``S`` on both
  sides is decoded at 1/2, 1/4 or 1/8 scale (PIL's ``draft``), never below
  ``2 S``, so the resize to ``S`` still has twice the pixels it needs. A
  4032x3024 phone photo for a 256 px resize decodes at 1008x756, about 4x
  sooner. (Drafting down to ``S`` itself was faster still, but moved a
  pretrained Lite0's features to cosine 0.977 on a real photo; with the 2x
  headroom every tested photo stays at or above 0.998.) ``draft_side(transform)`` finds ``S`` in an evaluation transform
  (one that starts with a resize of the shorter side); :data:`DECODE_VERSION`
  goes into the cache keys of everything computed from decoded pixels.

:mod:`tlkit.data` builds datasets on these.

Example:
    >>> open_image("cat.1.jpg").mode
    'RGB'
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageOps

from tlkit.errors import ImageReadError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # larger images are treated as decompression bombs and skipped
MAX_ASPECT = 20  # a 1x3000 strip resized by its short side would become gigabytes
MIN_IMAGE_SIZE = 32  # every backbone halves the input 5 times; below 32 px the convolutions fail
MAX_IMAGE_SIZE = 1024  # 1024 px is already 21x the pixels of 224; more only runs out of memory
DECODE_VERSION = 2  # 2: JPEGs >= 2x the resize are decoded at reduced scale (draft); cache keys include it
DRAFT_HEADROOM = 2  # a drafted JPEG keeps at least twice the resize target on both sides
HEIC_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")
HEIC_HINT = ("HEIC/HEIF images (iPhone photos) are not supported; convert it to JPEG, e.g. "
             "`heif-convert photo.heic photo.jpg`, `magick photo.heic photo.jpg`, or export as JPEG "
             "(Photos on macOS, or set the iPhone camera to 'Most Compatible')")


def open_image(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Opens any image as 8-bit RGB, or raises ImageReadError saying why.

    Grayscale, palette, CMYK and 16-bit images are converted; transparency is
    composited on white. Images above ``MAX_PIXELS`` are refused before
    decoding (decompression bombs). ``min_side``: the caller resizes the
    shorter side to this; a JPEG at least four times as large on both sides
    is decoded at a reduced scale that keeps both sides ``>= 2 * min_side``
    (:func:`draft_scale`). Other formats always decode at full size.

    Example:
        >>> open_image("cat.1.jpg").mode
        'RGB'
        >>> open_image("phone_4032x3024.jpg", min_side=256).size
        (1008, 756)
    """
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                problem = _size_problem(im)
                if problem:
                    raise ImageReadError(problem)
                if min_side and im.format == "JPEG" and draft_scale(im.size, min_side) > 1:
                    side = DRAFT_HEADROOM * int(min_side)  # before load(): decode at 1/2, 1/4 or 1/8 scale
                    im.draft(None, (side, side))
                im.load()
                return _to_rgb(_upright(im))
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # PIL's ways of saying "not a usable image"
        raise ImageReadError(_heic_reason(path) or f"{type(exc).__name__}: {exc}") from exc


def draft_scale(size: tuple[int, int], min_side: int) -> int:
    """The JPEG reduction (1, 2, 4 or 8) that keeps both sides of ``size`` at least ``2 * min_side``.

    Example:
        >>> draft_scale((4032, 3024), 256), draft_scale((500, 375), 256), draft_scale((1100, 1100), 256)
        (4, 1, 2)
    """
    ratio = min(size) // (DRAFT_HEADROOM * max(1, int(min_side)))
    return next((s for s in (8, 4, 2) if ratio >= s), 1)


def draft_side(transform: object) -> int | None:
    """``S`` when ``transform`` starts by resizing the shorter side to ``S`` (the evaluation preset), else None.

    Random crops (training) need every pixel, so they get None and full decoding.

    Example:
        >>> draft_side(transforms_for(model, train=False)), draft_side(transforms_for(model, train=True))
        (256, None)
    """
    steps = getattr(transform, "transforms", None)
    first = steps[0] if steps else None
    if type(first).__name__ != "Resize" or getattr(first, "max_size", None) is not None:
        return None
    size = first.size
    if isinstance(size, (list, tuple)):
        size = size[0] if len(size) == 1 else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def _upright(im: Image.Image) -> Image.Image:
    """The image as it should be seen: rotated/flipped as its EXIF orientation tag says (phone photos)."""
    if im.getexif().get(0x0112, 1) in (None, 1):  # no tag, or "already upright": no copy
        return im
    return ImageOps.exif_transpose(im)


def _heic_reason(path: str | os.PathLike) -> str | None:
    """HEIC_HINT if the file is HEIC/HEIF (whatever its extension), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    return HEIC_HINT if head[4:8] == b"ftyp" and head[8:12] in HEIC_BRANDS else None


def check_image_size(size: object, source: str = "image_size") -> int:
    """``size`` as an int if it lies in ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``, else ValueError naming the range.

    Example:
        >>> check_image_size(224)
        224
        >>> check_image_size(0)
        ValueError: image_size must be between 32 and 1024 pixels, got 0.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"{source} must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels, got {size!r}.")
    return size


def _size_problem(im: Image.Image) -> str | None:
    """Why an image's size (read from its header) makes it unusable, or None."""
    w, h = im.size
    if w * h > MAX_PIXELS:
        return f"{w}x{h} pixels is above the {MAX_PIXELS:,} limit (decompression bomb?)"
    if max(w, h) > MAX_ASPECT * max(1, min(w, h)) and max(w, h) > 64:
        return f"{w}x{h} is a strip, more than {MAX_ASPECT}:1; resizing it would need far too much memory"
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey -> 8-bit
        im = im.point(lambda v: v / 256).convert("L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def is_image_file(name: str) -> bool:
    """True for a visible file name ending in one of ``IMAGE_EXTENSIONS`` (any case).

    Example:
        >>> is_image_file("cat.1.JPG"), is_image_file(".cat.1.jpg"), is_image_file("notes.txt")
        (True, False, False)
    """
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def header_problem(path: Path) -> str | None:
    """Cheap check (header only, no decoding): None if usable, else the reason.

    Example:
        >>> header_problem(Path("cat.1.jpg")) is None
        True
    """
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return _size_problem(im)
    except Exception as exc:  # noqa: BLE001 - any failure means "skip this file"
        return _heic_reason(path) or f"{type(exc).__name__}: {exc}"
    return None


def warn_skipped(paths: Sequence[str], reasons: Sequence[str] | None = None, where: str = "") -> None:
    """One warning for a batch of skipped images: the count and the first few paths.

    ``reasons`` (one per path) are shown next to the first three paths.

    Example:
        >>> warn_skipped(["a.jpg", "b.jpg"], ["empty file (0 bytes)", "OSError: truncated"], where=" in train")
        UserWarning: Skipped 2 unreadable image(s) in train: a.jpg (empty file (0 bytes)), b.jpg (OSError: truncated).
    """
    if not paths:
        return
    first = ", ".join(f"{p} ({r})" if reasons else str(p) for p, r in zip(paths[:3], reasons or [""] * 3))
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    warnings.warn(f"Skipped {len(paths)} unreadable image(s){where}: {first}{more}.", stacklevel=3)
