"""Argument types for ``python -m tlkit``: each checks its range when the command line is parsed.

A bad value ends as one ``error:`` line naming the valid range, exit status 2,
before anything is loaded or created.

Example:
    >>> p = Parser(prog="python -m tlkit"); p.add_argument("--image-size", type=image_size)
    >>> p.parse_args(["--image-size", "0"])
    error: python -m tlkit: argument --image-size: the image size must be between 32 and 1024 pixels, got 0 ...
"""
from __future__ import annotations

import argparse
import math

__all__ = ["Parser", "image_size", "learning_rate", "positive_int"]


class Parser(argparse.ArgumentParser):
    """argparse with the house format for mistakes: one ``error:`` line naming the fix, exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def learning_rate(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0 (e.g. 1e-3), got {text!r}")
    return value


def image_size(text: str) -> int:
    """argparse type: pixels within tlkit.images' MIN_IMAGE_SIZE..MAX_IMAGE_SIZE."""
    from tlkit.images import check_image_size

    try:
        return check_image_size(int(text), "the image size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".") if "between" in str(exc) else
                                         f"must be a whole number of pixels, got {text!r}") from None
