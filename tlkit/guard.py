"""Stopping training well: non-finite weights, Ctrl-C and SIGTERM, and the exit status that says why.

* ``first_non_finite(module)`` names the first parameter holding NaN or inf:
  an update with a far too high learning rate can turn the weights into NaN
  while the loss computed *before* it still looked fine.
* ``stop_signals()`` turns SIGTERM (job schedulers, ``docker stop``,
  Binder's culler) into the same ``KeyboardInterrupt`` that Ctrl-C raises, so
  the trainers keep their best weights either way, and records which signal
  came, so that the command line exits 130 (SIGINT) or 143 (SIGTERM).
* ``diverged(reason)`` tells a stop for NaN/inf apart from the other stops.

Example:
    >>> with stop_signals() as received:
    ...     history = fit(model, train, val, epochs=5)
    >>> received.exit_status  # None, 130 or 143
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

__all__ = ["NON_FINITE_LOSS", "NON_FINITE_WEIGHTS", "Received", "diverged", "first_non_finite", "stop_signals"]

NON_FINITE_LOSS = "non-finite loss"  # the stop reason tlkit.train.fit and train_head record
NON_FINITE_WEIGHTS = "non-finite weights"


def first_non_finite(module: nn.Module) -> str | None:
    """Name of the first parameter of ``module`` holding NaN or inf, else None.

    Example:
        >>> first_non_finite(nn.Linear(2, 2)) is None
        True
    """
    for name, p in module.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return name
    return None


def diverged(stop_reason: str | None) -> bool:
    """True when training stopped because the loss or the weights stopped being finite."""
    return bool(stop_reason) and stop_reason.startswith("non-finite")


@dataclass
class Received:
    """The stop signal that arrived (None if none did), and the exit status it calls for."""

    signum: int | None = None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None

    @property
    def exit_status(self) -> int | None:
        """128 + the signal number, as shells report it: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum if self.signum else None


@contextmanager
def stop_signals() -> Iterator[Received]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` inside the block and are recorded.

    Outside the main thread (where Python cannot set handlers) it records
    nothing and changes nothing. The previous handlers come back on exit.
    """
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        if received.signum is None:
            received.signum = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)
