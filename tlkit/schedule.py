"""Learning-rate schedules: one curve that scales every parameter group's own rate.

Each optimizer parameter group keeps its peak rate in ``group["peak_lr"]``;
before every batch the trainer sets ``group["lr"] = peak_lr * factor(t)``,
where ``t`` is the training progress in epochs (``1.5`` = half way through the
second epoch). So discriminative rates keep their ratios all the way through.

Why not ``torch.optim.lr_scheduler``? Its schedulers fix the number of
parameter groups when they are built, but gradual unfreezing adds groups in
the middle of a run. Here a new group simply joins the curve, with the rate it
was added with as its peak. The shapes follow PyTorch's:

* ``"onecycle"`` (like ``OneCycleLR``): warm up from ``peak / 25`` to the peak
  over the first 25% of training, then anneal (cosine) to ``peak / 250000``.
  Updated every batch.
* ``"cosine"`` (like ``CosineAnnealingLR``): from the peak down to 0 along half
  a cosine. Updated every batch.
* ``"step"`` (like ``StepLR``): divide by 10 every ``step_size`` epochs
  (default: a third of the run). Changes only between epochs.
* ``None``: constant.

Example:
    >>> sched = LRSchedule(optimizer, "onecycle", epochs=4)
    >>> sched.factor(0.0), sched.factor(1.0), round(sched.factor(4.0), 6)
    (0.04, 1.0, 4e-06)
"""
from __future__ import annotations

import math
import warnings

import torch

SCHEDULERS = ("onecycle", "cosine", "step", None)
OPTIMIZERS = ("adamw", "adam", "sgd")


def make_optimizer(name: str, groups: list[dict]) -> torch.optim.Optimizer:
    """``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9, Nesterov) over parameter groups that
    each carry their own ``lr`` and ``weight_decay`` (:func:`tlkit.freezing.param_groups`).

    Example:
        >>> opt = make_optimizer("adamw", param_groups(model, 1e-3, weight_decay=0.01))
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}.")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=1e-3, momentum=0.9, nesterov=True)
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(groups)


class LRSchedule:
    """Sets every group's lr to ``peak_lr * factor(progress)``.

    Args:
        optimizer: its groups' current ``lr`` becomes their ``peak_lr``.
        kind: ``"onecycle"``, ``"cosine"``, ``"step"`` or None.
        epochs: length of the whole run.
        step_size, gamma: for ``"step"``.
        warmup, div, final_div: for ``"onecycle"`` (fraction of the run spent
            warming up; start = peak / div; end = start / final_div).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str | None, epochs: int,
                 step_size: int | None = None, gamma: float = 0.1, warmup: float = 0.25,
                 div: float = 25.0, final_div: float = 1e4):
        if kind not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}.")
        self.optimizer, self.kind, self.epochs = optimizer, kind, epochs
        self.step_size = step_size or max(1, epochs // 3)
        self.gamma, self.warmup, self.div, self.final_div = gamma, warmup, div, final_div

    def factor(self, progress: float) -> float:
        """The multiplier at ``progress`` epochs into the run (0 .. epochs)."""
        t = min(max(progress / self.epochs, 0.0), 1.0)  # fraction of the run done
        if self.kind == "onecycle":
            if t < self.warmup:
                return _cosine(1 / self.div, 1.0, t / self.warmup)
            return _cosine(1.0, 1 / (self.div * self.final_div), (t - self.warmup) / (1 - self.warmup))
        if self.kind == "cosine":
            return _cosine(1.0, 0.0, t)
        if self.kind == "step":
            return self.gamma ** (int(progress) // self.step_size)  # whole epochs only
        return 1.0

    def update(self, progress: float) -> None:
        """Sets the learning rate of every group (new groups adopt their current lr as peak)."""
        f = self.factor(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("peak_lr", group["lr"]) * f

    def state_dict(self) -> dict:
        # The position is not stored: the trainer passes it in every time, and each
        # group's peak_lr travels inside the optimizer's own state_dict.
        return {"kind": self.kind, "epochs": self.epochs, "step_size": self.step_size, "gamma": self.gamma,
                "warmup": self.warmup, "div": self.div, "final_div": self.final_div}

    def check_resume(self, state: dict) -> None:
        """Warns when a resumed run's schedule differs from the checkpoint's."""
        if state["kind"] != self.kind or (self.kind in ("onecycle", "cosine") and state["epochs"] != self.epochs):
            warnings.warn(f"Resuming a run trained with scheduler={state['kind']!r} over {state['epochs']} "
                          f"epochs as scheduler={self.kind!r} over {self.epochs}: the learning-rate curve "
                          "jumps. Pass the original scheduler and epochs to continue it exactly.", stacklevel=3)


def _cosine(start: float, end: float, t: float) -> float:
    """Half a cosine from ``start`` (t=0) to ``end`` (t=1)."""
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2
