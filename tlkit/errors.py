"""Which exceptions are the user's to fix, and how to say so in one paragraph.

The command line and the widgets show these as a message, not a traceback.

Example:
    >>> try:
    ...     image_folder("missing/")
    ... except USER_ERRORS as exc:
    ...     print(explain(exc))
"""
from __future__ import annotations

from tlkit.backbones import WeightsUnavailableError
from tlkit.checkpoint import CheckpointError
from tlkit.data import DatasetLayoutError
from tlkit.download import DownloadError

USER_ERRORS: tuple[type[BaseException], ...] = (
    DatasetLayoutError, CheckpointError, WeightsUnavailableError, DownloadError,
    FileNotFoundError, NotADirectoryError, PermissionError, KeyError, ValueError,
)


def explain(exc: BaseException) -> str:
    """One paragraph: the message itself (KeyError's quotes removed), no traceback."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(msg).split()) or type(exc).__name__
