"""The few places where ipywidgets 7.7.1 (Colab) and 8.x differ.

Only APIs that behave the same in both are used elsewhere. What differs:

* ``FileUpload.value``: 7.x is a dict ``{name: {"content": bytes,
  "metadata": {...}}}``; 8.x is a tuple of dicts with ``"name"`` and a
  ``"content"`` memoryview. :func:`uploaded_files` reads either.
"""
from __future__ import annotations

import ipywidgets as W

IPYWIDGETS_MAJOR = int(W.__version__.split(".")[0])


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """``[(name, content bytes), ...]`` from a FileUpload value of ipywidgets 7 or 8.

    Example:
        >>> uploaded_files({"cat.jpg": {"content": b"..", "metadata": {"name": "cat.jpg"}}})
        [('cat.jpg', b'..')]
        >>> uploaded_files(({"name": "cat.jpg", "content": memoryview(b"..")},))
        [('cat.jpg', b'..')]
    """
    if not value:
        return []
    if isinstance(value, dict):  # ipywidgets 7: name -> {"content", "metadata"}
        items = [(name, entry) for name, entry in value.items()]
    else:  # ipywidgets 8: tuple of {"name", "type", "size", "content", ...}
        items = [(entry.get("name", "upload"), entry) for entry in value]
    out = []
    for name, entry in items:
        content = entry.get("content", b"") if isinstance(entry, dict) else entry
        out.append((str(name), bytes(content)))
    return out

