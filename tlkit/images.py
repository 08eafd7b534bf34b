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
* ``warn_skipped(paths)`` reports the files a caller dropped in one warning
  instead of one per file.

* ``is_image_file(name)``: a visible file with one of ``IMAGE_EXTENSIONS``.

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

from PIL import Image

from tlkit.errors import ImageReadError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # larger images are treated as decompression bombs and skipped
MAX_ASPECT = 20  # a 1x3000 strip resized by its short side would become gigabytes


def open_image(path: str | os.PathLike) -> Image.Image:
    """Opens any image as 8-bit RGB, or raises ImageReadError saying why.

    Grayscale, palette, CMYK and 16-bit images are converted; transparency is
    composited on white. Images above ``MAX_PIXELS`` are refused before
    decoding (decompression bombs).

    Example:
        >>> open_image("cat.1.jpg").mode
        'RGB'
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
                im.load()
                return _to_rgb(im)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # PIL's ways of saying "not a usable image"
        raise ImageReadError(f"{type(exc).__name__}: {exc}") from exc


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
        return f"{type(exc).__name__}: {exc}"
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
