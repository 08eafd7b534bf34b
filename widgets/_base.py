"""What every panel shares: display by composition, throttled redraws, worker threads.

Nothing here is specific to one panel. The rules it encodes:

* A panel *holds* its root widget (``self.widget``) instead of subclassing a
  widget, and shows it through ``_ipython_display_``.
* Work that takes more than a moment runs in a :class:`Worker` thread. Every
  exception raised there is kept (``.error``) and shown in the panel: a short
  message in an HTML line plus the traceback appended to an ``Output`` with
  ``append_stdout`` (``with out:`` from a thread would write into whatever
  cell happens to be running).
* Redraws go through a :class:`Throttle` so a fast loop does not flood the
  browser with images.
"""
from __future__ import annotations

import html
import threading
import time
import traceback
from typing import Callable

import ipywidgets as W

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Panel:
    """Base for composed panels: ``self.widget`` is the root that gets displayed."""

    widget: W.Widget

    def _ipython_display_(self, **kwargs) -> None:
        from IPython.display import display  # lazy: widgets must import without IPython running

        display(self.widget)


class Throttle:
    """Lets a call through at most once per ``interval`` seconds (``force`` always passes).

    Example:
        >>> t = Throttle(0.5)
        >>> t.ready(), t.ready()
        (True, False)
    """

    def __init__(self, interval: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._last = -float("inf")
        self._lock = threading.Lock()

    def ready(self, force: bool = False) -> bool:
        with self._lock:
            now = self.clock()
            if force or now - self._last >= self.interval:
                self._last = now
                return True
            return False


def error_html(message: str) -> str:
    """A red one-line message for an HTML widget (the text is escaped)."""
    return f"<span style='color:#b00020'><b>Error:</b> {html.escape(message)}</span>"


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Worker:
    """Runs ``target()`` in a daemon thread (or inline when ``blocking``) and keeps its error.

    ``on_error(exc, traceback_text)`` and ``on_done()`` are called in the
    worker thread; ``on_done`` always runs, after ``on_error`` when the target
    raised.
    """

    def __init__(self, target: Callable[[], None], on_error: Callable[[BaseException, str], None],
                 on_done: Callable[[], None] | None = None, name: str = "tlkit-worker"):
        self.target, self.on_error, self.on_done, self.name = target, on_error, on_done, name
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()

    @property
    def is_running(self) -> bool:
        return self._running.is_set()

    def start(self, blocking: bool = False) -> bool:
        """Starts the work; False (and nothing started) if it is already running.

        With ``blocking=True`` the work runs in the calling thread, and an
        exception is shown in the panel *and* re-raised, so a script or an
        nbval run fails loudly instead of passing over a broken cell.
        """
        if self._running.is_set():
            return False
        self.error = None
        self._running.set()  # set before the thread exists, so is_running is True on return
        if blocking:
            self._run()
            if self.error is not None:
                raise self.error
        else:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return True

    def _run(self) -> None:
        try:
            self.target()
        except BaseException as exc:  # noqa: BLE001 - every failure is shown, none swallowed
            self.error = exc
            self.on_error(exc, traceback.format_exc())
        finally:
            try:
                if self.on_done is not None:
                    self.on_done()
            finally:
                self._running.clear()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the thread; True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self._running.is_set()
