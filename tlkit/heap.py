"""Handing freed memory back to the operating system after a large one-off step.

glibc keeps the memory a big batch's activations occupied, so a process that
exported a model, timed it at batch 32 and extracted features holds a few
hundred MB it no longer uses; the next step's peak then adds on top of that.
:func:`release_memory` collects garbage and asks glibc to return free pages.

Example:
    >>> release_memory()  # after measure_latency, an export, a feature pass
    True
"""
from __future__ import annotations

import ctypes
import gc
import sys


def release_memory() -> bool:
    """Runs the garbage collector, then glibc's ``malloc_trim``; True when pages went back to the system.

    Elsewhere (macOS, Windows, musl) it only collects garbage and returns False.

    Example:
        >>> release_memory()
        True
    """
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # no glibc (musl): nothing to trim
        return False
