"""Snapshots: what a panel shows now, as a plain PNG output that any notebook viewer draws.

A panel's controls and plots are ipywidgets; GitHub, and any viewer without
a kernel or a widget manager, draws none of them. ``panel.snapshot()``
returns a :class:`Snapshot`: the PNG the panel is showing (the figure its
last run drew, not a new one) plus a text line. As a cell's value it becomes
an ``image/png`` output, saved in the notebook like any matplotlib figure,
and its output metadata names the snapshot (``tlkit_snapshot``), so a test
can find it in a committed notebook.

Example:
    >>> explorer.find_lr(blocking=True)
    >>> explorer.snapshot()          # the range-test curve, as a static image
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

from widgets._base import PNG_MAGIC

SNAPSHOT_KEY = "tlkit_snapshot"  # output metadata key: which panel figure an output is


@dataclass(frozen=True)
class Snapshot:
    """A static image of a panel: ``name`` (e.g. ``"lr_find"``), ``png`` bytes and a ``text`` line.

    Shown as a cell's value it is an ``image/png`` output (``text/plain``:
    ``text``) with ``{"tlkit_snapshot": name}`` in the output's metadata.

    Example:
        >>> snap = dash.snapshot()
        >>> snap.name, snap.png[:4]
        ('training_curves', b'\\x89PNG')
    """

    name: str
    png: bytes
    text: str = ""

    def __post_init__(self) -> None:
        if not bytes(self.png).startswith(PNG_MAGIC):
            raise ValueError(f"Snapshot {self.name!r}: png must be PNG bytes (starting with {PNG_MAGIC!r}); "
                             "pass viz.figure_to_png(fig) or a widgets.Image's value.")

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels, from the PNG header."""
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = {"image/png": base64.b64encode(bytes(self.png)).decode("ascii"),
                "text/plain": self.text or f"<{self.name}: {self.size[0]}x{self.size[1]} PNG>"}
        return data, {SNAPSHOT_KEY: self.name}


def image_snapshot(name: str, image, text: str = "", empty: str = "nothing to show yet") -> Snapshot:
    """The PNG a ``widgets.Image`` shows now, or a placeholder saying ``empty`` when it shows none."""
    from widgets._plot import message_png

    png = bytes(image.value or b"")
    return Snapshot(name, png if png.startswith(PNG_MAGIC) else message_png(empty), text)
