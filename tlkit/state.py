"""TrainState: what a training run has done so far, and all that a callback is given.

:func:`tlkit.train.fit` keeps the run's changing state here, and every
callback hook receives it (see :mod:`tlkit.callbacks`). A callback reads
``state.model``, ``state.optimizer``, ``state.history`` and ``state.epoch``,
ends the run with ``state.stop("reason")``, or chooses the metric that decides
the best weights with ``state.set_monitor``. The schedule, gradient scaler and
data seed are here too, so that :class:`tlkit.callbacks.Checkpoint` can save
everything a resumed run needs (:func:`tlkit.resume.training_state`).

Example:
    >>> class StopAtNinety(Callback):
    ...     def on_epoch_end(self, state, epoch, row):
    ...         if row["val_acc"] >= 0.9:
    ...             state.stop("good enough")
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tlkit.history import History

log = logging.getLogger(__name__)
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


@dataclass
class TrainState:
    """The state of one run of :func:`tlkit.train.fit`.

    Attributes:
        model: the Backbone being trained.
        optimizer: its optimizer (one parameter group per layer group).
        history: one row per finished epoch.
        epochs: the epochs the run will have when it completes.
        epoch: epochs finished so far (0 before the first).
        stop_reason: None, or why the run ends early.
        monitor, mode: the History column, and ``"max"`` or ``"min"``, that
            decide which weights are the best.
        best: ``{"score", "epoch", "state"}``: the best weights so far, on the CPU.
        schedule, scaler, data_seed: the learning-rate schedule, the gradient
            scaler and the seed of the data order (saved in checkpoints).
    """

    model: nn.Module
    epochs: int
    has_val: bool = True
    optimizer: torch.optim.Optimizer | None = None
    history: History = field(default_factory=History)
    epoch: int = 0
    stop_reason: str | None = None
    quiet_stop: bool = False
    monitor: str = "val_acc"
    mode: str = "max"
    best: dict = field(default_factory=dict)
    schedule: Any = None
    scaler: Any = None
    data_seed: int = 0

    def __post_init__(self) -> None:
        if not self.has_val:  # without validation data the best weights have the lowest training loss
            self.monitor, self.mode = "train_loss", "min"

    def stop(self, reason: str, quiet: bool = False) -> None:
        """Ends training after the current epoch. The first reason given wins."""
        if self.stop_reason is None:
            self.stop_reason, self.quiet_stop = reason, quiet

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights the model ends with (0: the weights before training)."""
        return self.best.get("epoch", 0)

    def set_monitor(self, metric: str, mode: str) -> None:
        """Chooses the History column that decides which weights are the best."""
        if metric not in METRICS or (metric.startswith("val") and not self.has_val):
            valid = METRICS if self.has_val else METRICS[:2]
            raise ValueError(f"Cannot monitor {metric!r}: choose one of {valid}.")
        self.monitor, self.mode = metric, mode

    def keep_if_best(self, row: dict) -> None:
        """Copies the weights to the CPU when ``row`` beats every earlier epoch on the monitored metric."""
        score, best = row.get(self.monitor), self.best.get("score")
        if score is not None and math.isfinite(score) and (
                best is None or (score > best if self.mode == "max" else score < best)):
            self.best = {"score": score, "epoch": row["epoch"], "state": copy_weights(self.model)}

    def restore_best(self) -> None:
        """Loads the best weights into the model and leaves it in eval mode, ready for predictions."""
        self.model.load_state_dict(self.best["state"])
        self.model.eval()

    def finish(self) -> None:
        """Ends the run: the best weights go back into the model, and the History says why it stopped."""
        self.restore_best()
        self.history.stop_reason = self.stop_reason  # lets callers of fit() see it too
        if self.stop_reason and not self.quiet_stop:
            level = logging.INFO if self.stop_reason.startswith("early") else logging.WARNING
            log.log(level, "Training stopped (%s) after %d finished epoch(s); the model has the weights of "
                    "epoch %d.", self.stop_reason, self.epoch, self.best_epoch)

    def group_lrs(self) -> dict[str, float]:
        """Current learning rate per layer group (``stage3`` and ``stage3.no_decay`` share one)."""
        out: dict[str, float] = {}
        for i, g in enumerate(self.optimizer.param_groups):
            out.setdefault(str(g.get("name", f"group{i}")).removesuffix(".no_decay"), g["lr"])
        return out


def copy_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights and buffers (the 'best weights' snapshot)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
