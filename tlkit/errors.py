"""Every exception tlkit raises for the user to fix, and how to say it in one paragraph.

They live here, in a module that imports nothing from tlkit, so that any
module can raise them (the zip extractor and the downloader share
``DownloadError``) and the command line and the widgets can catch them all
with ``USER_ERRORS`` and show them as a message, not a traceback.
Besides ``USER_ERRORS`` (wrong input), :func:`user_message` recognises the
failures of the machine that the user can fix: a full disk, a read-only or
unwritable folder, running out of memory. Anything else is a bug in tlkit and
keeps its traceback (``user_message`` returns None).

Example:
    >>> try:
    ...     image_folder("missing/")
    ... except USER_ERRORS as exc:
    ...     print(user_message(exc))
    Data folder missing does not exist. Pass a folder holding train/<class>/ and val/<class>/ ...
"""
from __future__ import annotations

import errno


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


def _one_paragraph(exc: BaseException) -> str:
    """One paragraph: the message itself (KeyError's quotes removed), no traceback.

    Example:
        >>> _one_paragraph(KeyError("Unknown backbone 'x'. Choose one of: resnet18."))
        "Unknown backbone 'x'. Choose one of: resnet18."
    """
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(msg).split()) or type(exc).__name__


_DISK = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
         errno.EFBIG: "the file is larger than this system allows", errno.EROFS: "the file system is read-only",
         errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
         errno.EEXIST: "it already exists", errno.ENOTDIR: "a part of the path is a file, not a folder",
         errno.EISDIR: "it is a folder"}
_TORCH_WRITE = ("inline_container", "PytorchStreamWriter", "file write failed", "unexpected pos")


def user_message(exc: BaseException) -> str | None:
    """One line for a failure the user can cause or fix, or None for a bug (keep its traceback).

    Example:
        >>> user_message(KeyError("Unknown backbone 'x'. Choose one of: resnet18."))
        "Unknown backbone 'x'. Choose one of: resnet18."
        >>> user_message(OSError(errno.ENOSPC, "No space left on device", "runs/x/model.pt"))
        'could not write runs/x/model.pt: the disk is full (No space left on device). Free some space ...'
    """
    if isinstance(exc, USER_ERRORS) and not isinstance(exc, OSError):
        return _one_paragraph(exc)
    if isinstance(exc, MemoryError) or any(k in str(exc).lower().split("\n")[0] for k in ("out of memory", "can't allocate memory")):
        return ("out of memory" + (f" ({_one_paragraph(exc)})" if str(exc) else "") + ". Use a smaller --image-size "
                "or --batch-size, fewer classes or images, or a machine with more memory.")
    if isinstance(exc, OSError) and exc.errno in _DISK:
        where = f" {exc.filename}" if exc.filename else ""
        return (f"could not write{where}: {_DISK[exc.errno]} ({exc.strerror or exc}). "
                f"{'Free some space' if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else 'Fix the permissions'}"
                " or choose another --out folder.")
    if isinstance(exc, OSError):
        return _one_paragraph(exc)
    if isinstance(exc, RuntimeError) and any(k in str(exc) for k in _TORCH_WRITE):
        return ("could not write the model file: the disk is probably full or the folder unwritable "
                f"({str(exc).splitlines()[0][:200]}). Free some space or choose another --out folder.")
    return None
