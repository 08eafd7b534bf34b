"""Every exception tlkit raises for the user to fix, and how to say it in one paragraph.

They live here, in a module that imports nothing from tlkit, so that any
module can raise them (the zip extractor and the downloader share
``DownloadError``) and the command line and the widgets can catch them all
with ``USER_ERRORS`` and show them as a message, not a traceback.

Example:
    >>> try:
    ...     image_folder("missing/")
    ... except USER_ERRORS as exc:
    ...     print(user_message(exc))
    Data folder missing does not exist. Pass a folder holding train/<class>/ and val/<class>/ ...
"""
from __future__ import annotations


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (offline, blocked, corrupt)."""


class CheckpointError(ValueError):
    """A model or training file that cannot be used; the message says why and what to do."""


class DatasetLayoutError(ValueError):
    """A folder that does not look like ``split/class/image`` (message says how to fix it)."""


class ImageReadError(Exception):
    """An image file that cannot be used (corrupt, not an image, too large)."""


class DownloadError(RuntimeError):
    """A download or its extraction failed. ``reason`` is one of ``"offline"``,
    ``"http"``, ``"incomplete"``, ``"mismatch"``, ``"write"``, ``"archive"``."""

    def __init__(self, message: str, reason: str = "http"):
        super().__init__(message)
        self.reason = reason


class UnsafeArchiveError(DownloadError, ValueError):
    """A zip member would land outside the target folder, is a link, or the zip is a bomb."""

    def __init__(self, message: str):
        super().__init__(message, reason="archive")


USER_ERRORS: tuple[type[BaseException], ...] = (
    DatasetLayoutError, CheckpointError, WeightsUnavailableError, DownloadError,
    FileNotFoundError, NotADirectoryError, PermissionError, KeyError, ValueError,
)


def user_message(exc: BaseException) -> str:
    """One paragraph: the message itself (KeyError's quotes removed), no traceback.

    Example:
        >>> user_message(KeyError("Unknown backbone 'x'. Choose one of: resnet18."))
        "Unknown backbone 'x'. Choose one of: resnet18."
    """
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(msg).split()) or type(exc).__name__
