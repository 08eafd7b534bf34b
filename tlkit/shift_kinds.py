"""The built-in shifts of notebook 06: plain, seeded, composable image transforms with a severity.

Each shift is a picklable callable ``PIL.Image -> PIL.Image`` (RGB) with a
stable ``repr`` such as ``blur:3``, so feature caches keyed on the transform's
repr never mix shifted and clean images. Severity runs from 1 (mild) to 5
(severe). Shifts that draw random numbers (``noise``) seed a generator per
image from ``seed`` and the image's own pixels, so the result does not depend
on the order, the subset or the DataLoader worker that opened the photo.

=========  ==========================================================
greyscale  colour removed: saturation x 0.8, 0.6, 0.4, 0.2, 0
blur       Gaussian blur, radius 0.4% .. 3% of the shorter side
jpeg       JPEG re-compression at quality 30, 18, 10, 6, 3
dark       low light: brightness x 0.6, 0.4, 0.25, 0.15, 0.08
contrast   low contrast: contrast x 0.6, 0.4, 0.25, 0.15, 0.08
noise      Gaussian pixel noise, sigma 10, 20, 35, 55, 80 (of 255)
sketch     edge map blended over the photo, 20% .. 100% (5 = pure sketch)
=========  ==========================================================

Example:
    >>> blur = make_shift("blur:3")
    >>> blur(img).size == img.size, repr(blur)
    (True, 'blur:3')
    >>> make_shift("dark:2+noise:4", seed=1)   # composed: dark first, then noise
    dark:2+noise:4@1
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

SEVERITIES = (1, 2, 3, 4, 5)


def _greyscale(img: Image.Image, saturation: float, _rng) -> Image.Image:
    return ImageEnhance.Color(img).enhance(saturation)


def _blur(img: Image.Image, fraction: float, _rng) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=fraction * min(img.size)))


def _jpeg(img: Image.Image, quality: float, _rng) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def _dark(img: Image.Image, factor: float, _rng) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(factor)


def _contrast(img: Image.Image, factor: float, _rng) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(factor)


def _noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    x = np.asarray(img, dtype=np.float32)
    x = x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), "RGB")


def sketch_of(img: Image.Image) -> Image.Image:
    """Greyscale -> ``FIND_EDGES`` -> autocontrast -> inverted, as RGB: dark lines on white."""
    edges = img.convert("L").filter(ImageFilter.FIND_EDGES)
    return ImageOps.invert(ImageOps.autocontrast(edges)).convert("RGB")


def _sketch(img: Image.Image, alpha: float, _rng) -> Image.Image:
    return Image.blend(img, sketch_of(img), alpha)


@dataclass(frozen=True)
class ShiftKind:
    """One built-in shift: its function, its parameter at severities 1..5, and a one-line description."""

    name: str
    apply: Callable[[Image.Image, float, "np.random.Generator | None"], Image.Image]
    levels: tuple[float, float, float, float, float]
    description: str
    random: bool = False


SHIFTS: dict[str, ShiftKind] = {k.name: k for k in (
    ShiftKind("greyscale", _greyscale, (0.8, 0.6, 0.4, 0.2, 0.0), "colour removed"),
    ShiftKind("blur", _blur, (0.004, 0.008, 0.012, 0.02, 0.03), "Gaussian blur"),
    ShiftKind("jpeg", _jpeg, (30, 18, 10, 6, 3), "heavy JPEG compression"),
    ShiftKind("dark", _dark, (0.6, 0.4, 0.25, 0.15, 0.08), "low light"),
    ShiftKind("contrast", _contrast, (0.6, 0.4, 0.25, 0.15, 0.08), "low contrast"),
    ShiftKind("noise", _noise, (10, 20, 35, 55, 80), "Gaussian pixel noise", random=True),
    ShiftKind("sketch", _sketch, (0.2, 0.4, 0.6, 0.8, 1.0), "edge map (pencil sketch)"),
)}


def _check_image(img, what: str) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise TypeError(f"{what} expects a PIL image, got {type(img).__name__}. Apply it before ToTensor "
                        "(tlkit.shifts.shifted(dataset, shift) does).")
    return img if img.mode == "RGB" else img.convert("RGB")


class ImageShift:
    """A built-in shift at one severity: ``ImageShift("blur", 3)``; ``make_shift("blur:3")`` is the same.

    Args:
        name: a key of :data:`SHIFTS`.
        severity: 1 (mild) .. 5 (severe).
        seed: seeds the per-image generator of random shifts (``noise``); ignored by the others.

    Example:
        >>> ImageShift("noise", 2, seed=0)(img).size == img.size
        True
    """

    version = 1  # part of the cache key (tlkit.shifts.Then): raise it when a shift's pixels change

    def __init__(self, name: str, severity: int, seed: int = 0):
        if name not in SHIFTS:
            raise ValueError(f"Unknown shift {name!r}. Choose one of: {', '.join(SHIFTS)} "
                             f"(e.g. make_shift('blur:3')).")
        if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
            raise ValueError(f"The severity of {name} must be a whole number from {SEVERITIES[0]} to "
                             f"{SEVERITIES[-1]}, got {severity!r} (e.g. '{name}:3').")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be a whole number, got {type(seed).__name__}.")
        self.name, self.severity, self.seed = name, int(severity), int(seed)

    @property
    def kind(self) -> ShiftKind:
        return SHIFTS[self.name]

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_image(img, repr(self))
        rng = None
        if self.kind.random:  # a generator from the seed and the pixels: no dependence on order or worker
            rng = np.random.default_rng([self.seed, zlib.crc32(img.tobytes()), *img.size])
        return self.kind.apply(img, self.kind.levels[self.severity - 1], rng)

    def __repr__(self) -> str:
        return f"{self.name}:{self.severity}" + (f"@{self.seed}" if self.kind.random and self.seed else "")

    def __eq__(self, other) -> bool:
        return isinstance(other, ImageShift) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class ShiftChain:
    """Shifts applied one after another (``make_shift("dark:2+noise:3")``); repr joins them with ``+``."""

    version = 1

    def __init__(self, shifts: list[Callable[[Image.Image], Image.Image]]):
        if not shifts or not all(callable(s) for s in shifts):
            raise TypeError("ShiftChain needs a non-empty list of shifts (PIL image -> PIL image).")
        self.shifts = list(shifts)

    def __call__(self, img: Image.Image) -> Image.Image:
        for s in self.shifts:
            img = s(img)
        return img

    def __repr__(self) -> str:
        return "+".join(repr(s) for s in self.shifts)


def make_shift(spec: str, seed: int = 0) -> "ImageShift | ShiftChain":
    """A shift from text: ``"NAME:SEVERITY"``, or several joined by ``+`` (applied left to right).

    Raises ValueError naming the valid shifts and severities on anything else.

    Example:
        >>> make_shift("jpeg:5"), make_shift("greyscale:5+blur:1")
        (jpeg:5, greyscale:5+blur:1)
    """
    if not isinstance(spec, str):
        raise TypeError(f"make_shift takes text such as 'blur:3', got {type(spec).__name__}.")
    parts = [p.strip() for p in spec.split("+")]
    shifts = [_parse_one(p) for p in parts]
    made = [ImageShift(name, severity, seed) for name, severity in shifts]
    return made[0] if len(made) == 1 else ShiftChain(made)


def _parse_one(text: str) -> tuple[str, int]:
    name, colon, level = text.partition(":")
    name = name.strip().lower()
    if not colon or name not in SHIFTS or not level.strip().isdigit():
        why = (f"unknown shift {name!r}" if name not in SHIFTS else
               "no severity" if not colon else f"severity {level.strip()!r} is not a whole number")
        raise ValueError(f"Bad shift {text!r} ({why}). Write NAME:SEVERITY with NAME one of "
                         f"{', '.join(SHIFTS)} and SEVERITY {SEVERITIES[0]}..{SEVERITIES[-1]}, e.g. 'blur:3'.")
    return name, int(level)


def all_shifts(seed: int = 0) -> list[ImageShift]:
    """Every built-in shift at every severity, in :data:`SHIFTS` order (what ``bench/shift.py`` runs).

    Example:
        >>> len(all_shifts()), all_shifts()[0]
        (35, greyscale:1)
    """
    return [ImageShift(name, s, seed) for name in SHIFTS for s in SEVERITIES]
