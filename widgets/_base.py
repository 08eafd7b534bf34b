"""What every panel shares: display by composition, throttled redraws, worker threads.

Nothing here is specific to one panel. The rules it encodes:

* A panel *holds* its root widget (``self.widget``) instead of subclassing a
  widget, and shows it through ``_ipython_display_``.
* Work that takes more than a moment runs in a :class:`Worker` thread; the
  panels that do so derive from :class:`ThreadedPanel` (status line, error
  box, log, the "already running" guard; work returns a result, ``render``
  shows it). Every exception raised there is kept (``.error``) and shown in
  the panel: a short message in an HTML line plus the traceback appended to
  an ``Output`` with ``append_stdout`` (``with out:`` from a thread would
  write into whatever cell happens to be running).
* Redraws go through a :class:`Throttle` so a fast loop does not flood the
  browser with images.
"""
from __future__ import annotations

import contextlib
import html
import threading
import time
import traceback
from typing import Callable

import ipywidgets as W
import torch

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


def widget_tree(roots) -> dict[int, W.Widget]:
    """Every widget model reachable from ``roots``: children, layouts, styles (any synced trait holding one)."""
    found: dict[int, W.Widget] = {}
    stack = list(roots)
    while stack:
        w = stack.pop()
        if not isinstance(w, W.Widget) or id(w) in found:
            continue
        found[id(w)] = w
        for name in w.keys:
            value = getattr(w, name, None)
            stack.extend(value if isinstance(value, (list, tuple)) else [value])
    return found


def replace_children(box: W.Box, children, root: W.Widget | None = None) -> None:
    """``box.children = children``, then closes every widget model that left the panel with the old ones.

    A redraw that builds new rows would otherwise leave the old rows (their
    thumbnails, upload buttons, layouts) alive in the kernel and the browser for
    the rest of the session, and in the notebook's saved widget state. Models
    still reachable from ``root`` (default: ``box``), shared layouts included,
    stay open.

    Example:
        >>> replace_children(self.classes_box, new_rows, root=self.widget)
    """
    old = widget_tree(box.children)
    box.children = tuple(children)
    keep = widget_tree([root if root is not None else box])
    for key, w in old.items():
        if key not in keep:
            w.close()


def error_html(message: str) -> str:
    """A red one-line message for an HTML widget (the text is escaped)."""
    return f"<span style='color:#b00020'><b>Error:</b> {html.escape(message)}</span>"


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def keep_global_rng():
    """Torch's global generators are back as they were when the block ends.

    ``fit(seed=...)`` seeds the global generators (its augmentations and
    dropout draw from them). Run from a panel's worker thread inside this
    block, it leaves the notebook's own random state as it found it.

    Example:
        >>> with keep_global_rng():
        ...     history = fit(model, train, val, seed=0)
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


class Worker:
    """Runs ``target()`` in a daemon thread (or inline when ``blocking``); keeps its result or error.

    ``on_error(exc, traceback_text)`` and ``on_done()`` are called in the
    worker thread; ``on_done`` always runs, after ``on_error`` when the target
    raised. ``on_done`` and the end of :attr:`is_running` happen together
    under one lock that :meth:`start` takes too: a start requested while the
    last run finishes waits for it and then starts, instead of being refused
    while the panel already says "Done" (issue 24, a swallowed Start click).
    """

    def __init__(self, target: Callable[[], object], on_error: Callable[[BaseException, str], None],
                 on_done: Callable[[], None] | None = None, name: str = "tlkit-worker"):
        self.target, self.on_error, self.on_done, self.name = target, on_error, on_done, name
        self.error: BaseException | None = None
        self.result: object = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._lock = threading.RLock()

    @property
    def is_running(self) -> bool:
        return self._running.is_set()

    def start(self, blocking: bool = False, on_start: Callable[[], None] | None = None) -> bool:
        """Starts the work; False (and nothing started) if it is already running.

        ``on_start()`` runs under the lock, after the check: the place to
        disable buttons, so their state changes together with the running
        state. With ``blocking=True`` the work runs in the calling thread, and
        an exception is shown in the panel *and* re-raised, so a script or an
        nbval run fails loudly instead of passing over a broken cell.
        """
        with self._lock:
            if self._running.is_set():
                return False
            self.error, self.result = None, None
            self._running.set()  # set before the thread exists, so is_running is True on return
            if on_start is not None:
                on_start()
            if not blocking:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        if blocking:
            self._run()
            if self.error is not None:
                raise self.error
        return True

    def _run(self) -> None:
        try:
            self.result = self.target()
        except BaseException as exc:  # noqa: BLE001 - every failure is shown, none swallowed
            self.error = exc
            self.on_error(exc, traceback.format_exc())
        finally:
            with self._lock:  # a start() waits here: it sees the run finished *and* the view updated
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


class ThreadedPanel(Panel):
    """What the panels whose work runs in a thread share (dashboard, LR explorer, strategy board).

    A status line, a red error box and a log (``self.status``, ``error_box``,
    ``log``), one :class:`Worker`, the "already running" guard and the error
    display. Controls, work and view stay apart, as in ipywidgets'
    ``interactive``: an action calls :meth:`_launch` with a *work* function
    that returns its result, and :meth:`render` alone turns a result into
    the view (it may also be called for progress while the work goes on).
    Subclasses call :meth:`_init_threaded` first and may override
    :meth:`_set_busy` to disable their controls during a run.

    Example:
        >>> class Squares(ThreadedPanel):
        ...     def __init__(self):
        ...         self._init_threaded("squares", blocking=True)
        ...         self.widget = W.VBox([self.status, self.error_box, self.log])
        ...     def run(self, n): return self._launch(lambda: n * n, f"squaring {n}")
        ...     def render(self, result): self.status.value = f"result: {result}"
    """

    busy_message = "Busy: wait for the current run to finish."
    idle_stop_message = "Nothing to stop: nothing is running."
    stopping_message = "Stopping after this batch ..."

    def _init_threaded(self, name: str, blocking: bool = False, status: str = "") -> None:
        self.blocking = blocking
        self.status = W.Label(value=status)
        self.error_box = W.HTML(value="")
        self.log = W.Output()
        self._work: Callable[[], object] = lambda: None
        self._stop_event = threading.Event()  # set by stop(); the work checks it every batch
        self._worker = Worker(lambda: self._work(), on_error=self._show_error, on_done=self._finish, name=name)

    @property
    def is_running(self) -> bool:
        """True from the start of an action until its thread has finished and the view is updated."""
        return self._worker.is_running

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the last action, or None."""
        return self._worker.error

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the worker thread; True when it has finished."""
        return self._worker.join(timeout)

    def stop(self) -> bool:
        """Asks the running work to stop after its current batch; False (and a message) when idle."""
        if not self.is_running:
            self.status.value = self.idle_stop_message
            return False
        self._stop_event.set()
        self.status.value = self.stopping_message
        return True

    def _launch(self, work: Callable[[], object], message: str, blocking: bool | None = None,
                prepare: Callable[[], None] | None = None) -> bool:
        """Runs ``work`` in the worker (refused with :attr:`busy_message` while one runs).

        ``prepare()`` runs first, under the worker's lock: clear what the new
        action supersedes there.
        """
        def on_start() -> None:
            self._work = work
            self.error_box.value = ""
            self.status.value = message
            if prepare is not None:
                prepare()
            self._set_busy(True)

        started = self._worker.start(blocking=self.blocking if blocking is None else blocking, on_start=on_start)
        if not started:
            self.status.value = self.busy_message
        return started

    def render(self, result: object) -> None:
        """Shows a work function's result (subclasses)."""

    def _set_busy(self, busy: bool) -> None:
        """Enables or disables the controls (subclasses); called with the running state."""

    def _finish(self) -> None:
        """In the worker, under its lock: render the result (unless it failed), then free the controls."""
        try:
            if self.error is None:
                self.render(self._worker.result)
        except Exception as exc:  # noqa: BLE001 - a failing view is shown like a failing run
            self._worker.error = exc
            self._show_error(exc, traceback.format_exc())
        finally:
            self._set_busy(False)

    def _show_error(self, exc: BaseException, tb: str) -> None:
        self.error_box.value = error_html(describe_error(exc))
        self.log.append_stdout(tb)
        self.status.value = f"Failed: {describe_error(exc)}"
