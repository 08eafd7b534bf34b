"""TrainingDashboard: Start/Stop buttons, live curves and a status line around ``fit``.

Training runs ``tlkit.train.fit`` in a background thread, so the notebook
stays responsive and a :class:`~widgets.FreezePanel` next to it keeps
working. A callback feeds the progress bar, the status line (epoch, images
per second, time left) and the curves, a PNG drawn at most twice a second.
Stop sets the event that ``fit`` checks every batch; ``fit`` then returns
with the best weights loaded and the History so far.

Example:
    >>> dash = TrainingDashboard(model, train, val, epochs=3)
    >>> dash                       # shows the panel; press Start
    >>> dash.start(); dash.join()  # or from code (blocking=True for scripts)
    >>> dash.history.best("val_acc")
"""
from __future__ import annotations

import threading
import time
import traceback

import ipywidgets as W
from torch import nn

from tlkit.history import History
from tlkit.callbacks import Callback
from tlkit.train import fit
from widgets._base import ThreadedPanel, Throttle, describe_error, keep_global_rng
from widgets._plot import curves_png, message_png, show_png
from widgets._snapshot import Snapshot, image_snapshot


class _LiveCallback(Callback):
    """Forwards fit's events to the dashboard (runs in the training thread)."""

    def __init__(self, dash: "TrainingDashboard"):
        self.dash = dash

    def on_train_begin(self, state) -> None:
        self.dash._live_history = state.history

    def on_batch_end(self, state, step, logs) -> None:
        self.dash._on_batch(logs)

    def on_epoch_end(self, state, epoch, row) -> None:
        self.dash._on_epoch_end(row)


class TrainingDashboard(ThreadedPanel):
    """Trains a model in a background thread and shows it happening.

    Args:
        model: a tlkit Backbone.
        train_data, val_data: ImageDatasets, passed to ``fit``.
        epochs, batch_size, lr: starting values of the controls.
        blocking: ``start()`` runs in the calling thread (scripts, nbval).
        callbacks: extra ``fit`` callbacks for every run (see :meth:`add_callback`).
        refresh_interval: seconds between plot redraws while an epoch runs.
        **fit_kwargs: anything else for ``fit`` (``seed``, ``image_size``,
            ``scheduler``, ``device``, ...).

    Example:
        >>> dash = TrainingDashboard(model, train, val, epochs=2, blocking=True)
        >>> dash.start()
        >>> len(dash.history)
        2
    """

    busy_message = "Already training: press Stop first, or wait for this run to end."
    idle_stop_message = 'Nothing to stop: no training is running.'
    stopping_message = 'Stopping after this batch; the best weights will be kept ...'

    def __init__(self, model: nn.Module, train_data, val_data=None, epochs: int = 3, batch_size: int = 32,
                 lr: float = 1e-3, blocking: bool = False, callbacks=(), refresh_interval: float = 0.5,
                 **fit_kwargs):
        for key in ("stop_event", "progress", "callbacks"):
            fit_kwargs.pop(key, None)  # the dashboard owns these
        self.model, self.train_data, self.val_data = model, train_data, val_data
        self.fit_kwargs = fit_kwargs
        self._callbacks = list(callbacks)
        self._throttle = Throttle(refresh_interval)
        self._init_threaded("tlkit-dashboard", blocking, status="Ready: press Start.")
        self._live_history: History | None = None
        self._final_history: History | None = None
        self._batch_losses: list[tuple[float, float]] = []
        self._run_epochs = int(epochs)
        self._started = time.perf_counter()
        self.redraws = 0
        self._build(epochs, batch_size, lr)

    # ---- view ---------------------------------------------------------
    def _build(self, epochs: int, batch_size: int, lr: float) -> None:
        style = {"description_width": "initial"}
        self.epochs = W.IntSlider(value=epochs, min=1, max=max(50, epochs), description="epochs", style=style)
        sizes = sorted({8, 16, 32, 64, 128, int(batch_size)})
        self.batch_size = W.Dropdown(options=sizes, value=int(batch_size), description="batch size",
                                     style=style, layout=W.Layout(width="160px"))
        self.lr = W.FloatLogSlider(value=lr, base=10, min=-6, max=0, step=0.1, description="learning rate",
                                   readout_format=".0e", style=style)
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.IntProgress(value=0, min=0, max=1000, description="progress", style=style)
        self.plot = W.Image(format="png")
        show_png(self.plot, message_png("press Start to train"))
        self.widget = W.VBox([W.HBox([self.epochs, self.batch_size]), self.lr,
                              W.HBox([self.start_button, self.stop_button, self.progress]),
                              self.status, self.error_box, self.plot, self.log])

    def _redraw(self, force: bool = False) -> None:
        if not self._throttle.ready(force):
            return
        rows = list(self._live_history.rows) if self._live_history is not None else []
        show_png(self.plot, curves_png(rows, list(self._batch_losses), total_epochs=self._run_epochs))
        self.redraws += 1

    # ---- public controller ---------------------------------------------
    @property
    def history(self) -> History | None:
        """The History of the current or last run (live while training)."""
        return self._final_history if self._final_history is not None else self._live_history

    def snapshot(self) -> Snapshot:
        """The curves the panel shows now (``"training_curves"``: the PNG it drew, not a new
        figure) and its status line, as a static image for viewers without a kernel."""
        return image_snapshot("training_curves", self.plot, self.status.value, empty="no training run yet")

    def add_callback(self, callback) -> None:
        """Adds a ``fit`` callback to every later run (a FreezePanel's epoch hook, for example)."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def start(self, blocking: bool | None = None) -> bool:
        """Starts training with the current control values; False if a run is going already."""
        epochs, batch_size = int(self.epochs.value), int(self.batch_size.value)

        def prepare() -> None:
            self._stop_event = threading.Event()
            self._live_history, self._final_history = None, None
            self._batch_losses = []
            self._run_epochs = epochs
            self._started = time.perf_counter()
            self.progress.value, self.progress.bar_style = 0, ""
            for cb in self._callbacks:  # e.g. a FreezePanel queues clicks from now on
                if hasattr(cb, "run_starting"):
                    cb.run_starting()

        return self._launch(self._train, f"Starting: {epochs} epoch(s), batch size {batch_size} ...",
                            blocking, prepare=prepare)

    # ---- training thread ----------------------------------------------
    def _train(self) -> History:
        callbacks = [_LiveCallback(self), *self._callbacks]
        with keep_global_rng():  # fit(seed=...) seeds torch's global RNG: not the notebook's, after the run
            return fit(self.model, self.train_data, self.val_data, epochs=self._run_epochs,
                       lr=float(self.lr.value), batch_size=int(self.batch_size.value),
                       callbacks=callbacks, stop_event=self._stop_event, progress=False, **self.fit_kwargs)

    def _on_batch(self, logs: dict) -> None:
        epoch, seen, total = logs.get("epoch", 1), logs.get("seen", 0), max(logs.get("total", 1), 1)
        frac = min(1.0, ((epoch - 1) + seen / total) / self._run_epochs)
        self._batch_losses.append((epoch - 1 + seen / total, float(logs.get("loss", float("nan")))))
        self.progress.value = int(1000 * frac)
        elapsed = time.perf_counter() - self._started
        done_images = (epoch - 1) * total + seen
        speed = done_images / max(elapsed, 1e-9)
        left = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        self.status.value = (f"epoch {epoch}/{self._run_epochs} | {seen}/{total} images | "
                             f"{speed:.0f} img/s | about {_seconds(left)} left")
        self._redraw()

    def _on_epoch_end(self, row: dict) -> None:
        self._redraw(force=True)

    def _set_busy(self, busy: bool) -> None:
        """While a run goes, its settings cannot change (they would not apply to it)."""
        for w in (self.start_button, self.epochs, self.batch_size, self.lr):
            w.disabled = busy
        self.stop_button.disabled = not busy

    def _finish(self) -> None:
        for cb in self._callbacks:  # e.g. a FreezePanel applies changes queued for an epoch that never came
            if hasattr(cb, "run_finished"):
                try:
                    cb.run_finished()
                except Exception as exc:  # noqa: BLE001 - shown like an error of the run itself
                    self._worker.error = self._worker.error or exc
                    self._show_error(exc, traceback.format_exc())
        if self.error is not None:
            self._redraw(force=True)  # the epochs it did finish
        super()._finish()  # render (or the error), then the controls come back

    def _show_error(self, exc: BaseException, tb: str) -> None:
        super()._show_error(exc, tb)
        hist = self.history
        self.progress.bar_style = "danger"
        self.status.value = f"Failed after {len(hist) if hist is not None else 0} epoch(s): {describe_error(exc)}"

    def render(self, history: History | None) -> None:
        """The finished run: final curves, and why it ended."""
        if history is not None:
            self._final_history = history
        self._redraw(force=True)
        hist = self.history
        n = len(hist) if hist is not None else 0
        best = hist.best("val_acc") if hist is not None else None
        best_text = f"; best val_acc {best['val_acc']:.3f} (epoch {best['epoch']})" if best else ""
        reason = getattr(hist, "stop_reason", None)
        if self._stop_event.is_set():
            self.status.value = f"Stopped after {n} epoch(s){best_text}; best weights loaded."
        elif reason:  # EarlyStopping, a NaN loss (learning rate too high), ...
            self.status.value = f"Ended early ({reason}) after {n} epoch(s){best_text}; best weights loaded."
        else:
            self.progress.value, self.progress.bar_style = 1000, "success"
            seconds = time.perf_counter() - self._started
            self.status.value = f"Done: {n} epoch(s) in {_seconds(seconds)}{best_text}."


def _seconds(s: float) -> str:
    if s != s or s == float("inf"):  # NaN or unknown
        return "? s"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"
