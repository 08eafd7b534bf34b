"""Callbacks: small objects that the training loop calls at fixed points.

A callback subclasses :class:`Callback` and overrides the hooks it needs. Each
hook receives the run's :class:`tlkit.state.TrainState`, and nothing else of
the trainer: it can read ``state.model``, ``state.optimizer``,
``state.history`` and ``state.epoch``, end the run with
``state.stop("reason")``, or choose the metric that decides the best weights
with ``state.set_monitor(metric, mode)``.

Built-ins:

* ``EarlyStopping(metric="val_acc", patience=3)``: stop when the metric has
  not improved for ``patience`` epochs; the trainer then restores the weights
  of the best epoch by that metric.
* ``GradualUnfreezing({3: ["stage6", "stage7"]}, lr=1e-4)``: at the start of
  epoch 3 those groups start training, as a new optimizer parameter group.
* ``Checkpoint("runs/exp1")``: after every epoch, write everything needed to
  resume to ``runs/exp1/last.pt``.

What a training checkpoint holds, and how it is read back safely, is in
:mod:`tlkit.resume`. (Saving a finished *model* for predictions is
:func:`tlkit.checkpoint.save_model`.)

Example:
    >>> fit(model, train, val, epochs=6, callbacks=[EarlyStopping(patience=2), Checkpoint("runs/a")])
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from tlkit import distributed
from tlkit.storage import atomic_save
from tlkit.freezing import unfreeze, unfrozen_group_lr
from tlkit.resume import training_state
from tlkit.state import TrainState

log = logging.getLogger(__name__)


class Callback:
    """Base class: every hook does nothing until overridden."""

    def on_train_begin(self, state: TrainState) -> None:
        """Before the first epoch (also of a resumed run)."""

    def on_epoch_begin(self, state: TrainState, epoch: int) -> None:
        """Before epoch ``epoch`` (1-based) starts; the optimizer may be changed here."""

    def on_batch_end(self, state: TrainState, step: int, logs: dict) -> None:
        """After each training batch. ``logs``: loss, acc, seen, total, epoch."""

    def on_epoch_end(self, state: TrainState, epoch: int, row: dict) -> None:
        """After the epoch's History ``row`` was recorded and the best weights updated."""

    def on_train_end(self, state: TrainState) -> None:
        """After training ended (also when stopped), with the best weights loaded."""


class CallbackList(Callback):
    """Several callbacks called as one, in order: what the training loop calls.

    Example:
        >>> callbacks = CallbackList([EarlyStopping(), Checkpoint("runs/a")])
        >>> callbacks.on_epoch_end(state, 3, row)
    """

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks = list(callbacks)

    def on_train_begin(self, state: TrainState) -> None:
        self._call("on_train_begin", state)

    def on_epoch_begin(self, state: TrainState, epoch: int) -> None:
        self._call("on_epoch_begin", state, epoch)

    def on_batch_end(self, state: TrainState, step: int, logs: dict) -> None:
        self._call("on_batch_end", state, step, logs)

    def on_epoch_end(self, state: TrainState, epoch: int, row: dict) -> None:
        self._call("on_epoch_end", state, epoch, row)

    def on_train_end(self, state: TrainState) -> None:
        self._call("on_train_end", state)

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:  # duck-typed: an object need only have the hooks it uses
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)


class EarlyStopping(Callback):
    """Stops when ``metric`` has not improved for ``patience`` epochs.

    The loop keeps a copy of the best weights by ``metric`` and loads them
    when training ends, so the model is the best one, not the last. The state
    is read from the History, so a resumed run counts the same epochs.

    Args:
        metric: a History column, e.g. ``"val_acc"`` or ``"val_loss"``.
        patience: epochs without improvement before stopping.
        mode: ``"max"`` or ``"min"``; default: min for losses, else max.
        min_delta: an improvement smaller than this does not count.

    Example:
        >>> fit(model, train, val, epochs=20, callbacks=[EarlyStopping("val_loss", patience=3)])
    """

    def __init__(self, metric: str = "val_acc", patience: int = 3, mode: str | None = None,
                 min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}.")
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.mode = mode or ("min" if "loss" in metric else "max")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")

    def on_train_begin(self, state: TrainState) -> None:
        state.set_monitor(self.metric, self.mode)  # best weights follow this metric

    def on_epoch_end(self, state: TrainState, epoch: int, row: dict) -> None:
        values = [v for v in state.history[self.metric] if v is not None]
        if not values:
            return
        sign = 1 if self.mode == "max" else -1
        best_i, best = 0, values[0]
        for i, v in enumerate(values):
            if sign * (v - best) > self.min_delta:
                best_i, best = i, v
        if len(values) - 1 - best_i >= self.patience:
            state.stop(f"early stopping: {self.metric} has not improved for {self.patience} epoch(s)")


class GradualUnfreezing(Callback):
    """Unfreezes layer groups at the start of chosen epochs.

    Each unfrozen group joins the optimizer as a new parameter group with its
    own learning rate (``tlkit.freezing.unfreeze``); the learning-rate schedule
    then scales it like every other group. A resumed run restores the freeze
    state and the optimizer groups from the checkpoint, so groups unfrozen
    before the checkpoint stay unfrozen.

    Args:
        schedule: ``{epoch: [group names]}``, epochs 1-based.
        lr: learning rate of the new groups: one float, or ``{group: lr}``.
            Default: :func:`tlkit.freezing.unfrozen_group_lr`.

    Example:
        >>> GradualUnfreezing({3: ["stage7", "stage8"], 5: ["stage5", "stage6"]}, lr=1e-4)
    """

    def __init__(self, schedule: dict[int, list[str] | str], lr: float | dict[str, float] | None = None):
        if not schedule or not all(isinstance(k, int) and k >= 1 for k in schedule):
            raise ValueError(f"schedule must map epochs (ints >= 1) to group names, got {schedule!r}.")
        self.schedule = {k: [v] if isinstance(v, str) else list(v) for k, v in schedule.items()}
        self.lr = lr

    def on_epoch_begin(self, state: TrainState, epoch: int) -> None:
        for group in self.schedule.get(epoch, []):
            lr = self.lr.get(group) if isinstance(self.lr, dict) else self.lr
            if lr is None:
                lr = unfrozen_group_lr(state.optimizer)
            unfreeze(state.model, group, optimizer=state.optimizer, lr=lr)
            log.info("epoch %d: unfroze %s (lr %.1e)", epoch, group, lr)


class Checkpoint(Callback):
    """Writes the full training state to ``dir/last.pt`` after every epoch.

    ``keep_all=True`` also keeps ``dir/epoch_003.pt`` and so on. Resume with
    ``fit(..., resume="dir")`` (or the file's path).

    Example:
        >>> fit(model, train, val, epochs=4, callbacks=[Checkpoint("runs/a")])
        >>> fit(model, train, val, epochs=8, resume="runs/a")
    """

    def __init__(self, dir: str | os.PathLike, keep_all: bool = False):
        self.dir, self.keep_all = Path(dir), keep_all

    def on_epoch_end(self, state: TrainState, epoch: int, row: dict) -> None:
        if not distributed.context().is_main:  # under torchrun only rank 0 writes
            return
        saved = training_state(state)
        atomic_save(saved, self.dir / "last.pt")
        if self.keep_all:
            atomic_save(saved, self.dir / f"epoch_{epoch:03d}.pt")
