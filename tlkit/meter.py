"""The running loss and accuracy of a training epoch, read from the GPU without stalling it.

On a GPU the CPU queues the steps ahead of the GPU. Copying the running loss
to the CPU (``.item()``, ``.tolist()``) makes the CPU wait until every queued
step has run, so the queue drains and the GPU idles. The meter therefore keeps
its sums on the device and reads them every ``read_every`` steps (every step on
a CPU, where reading costs nothing). The numbers shown in between are those of
the last read; the epoch's totals are exact.

Example:
    >>> meter = EpochMeter(device, read_every=20)
    >>> logs = meter.add(step, sums, len(y))   # sums: (2,) [loss sum, number correct]
    >>> loss_sum, correct = meter.read()
"""
from __future__ import annotations

import logging
import math
import warnings

import torch

from tlkit.distributed import DistContext
from tlkit.guard import NON_FINITE_LOSS, first_non_finite
from tlkit.state import TrainState

log = logging.getLogger(__name__)


class NonFiniteLossError(ArithmeticError):
    """The loss, or a weight after an update, became NaN or infinite (the learning rate is usually too high).

    ``reason`` is the stop reason to record (:data:`tlkit.guard.NON_FINITE_LOSS` or ``NON_FINITE_WEIGHTS``).
    """

    def __init__(self, what: object, reason: str = NON_FINITE_LOSS):
        super().__init__(what)
        self.reason = reason


class EpochMeter:
    """Sums ``[loss sum, number correct]`` on the device and reads them every ``read_every`` steps.

    Example:
        >>> meter = EpochMeter(torch.device("cpu"), read_every=1)
        >>> meter.add(0, torch.tensor([1.4, 1.0]), 2)["loss"]
        0.7
    """

    def __init__(self, device: torch.device, read_every: int = 1):
        self.sums = torch.zeros(2, device=device)  # [loss sum, number correct], kept on the device
        self.read_every, self.seen = read_every, 0
        self._last, self._read_at = (0.0, 0.0), 0  # the last values read, and `seen` when they were read

    def add(self, step: int, sums: torch.Tensor, n: int) -> dict:
        """Adds one batch of ``n`` images; returns the running ``loss``, ``acc`` and ``seen``."""
        self.sums += sums
        self.seen += n
        if self._read_at == 0 or (step + 1) % self.read_every == 0:  # reading makes the CPU wait for the GPU
            self._last, self._read_at = self.read(), self.seen
        loss_sum, correct = self._last
        return {"loss": loss_sum / self._read_at, "acc": correct / self._read_at, "seen": self.seen}

    def read(self) -> tuple[float, float]:
        """Copies ``[loss sum, correct]`` to the CPU; raises NonFiniteLossError on a NaN or infinite loss."""
        loss_sum, correct = self.sums.tolist()
        if not math.isfinite(loss_sum):  # on a GPU a NaN is caught here, within read_every steps
            raise NonFiniteLossError(loss_sum)
        return loss_sum, correct


def check_finite(loss: torch.Tensor, ctx: DistContext) -> None:
    """Raises NonFiniteLossError when ``loss`` (a scalar) is NaN or infinite, on this or (DDP) any rank.

    Reading the loss makes the CPU wait for the GPU, so the loop calls this
    before every update only where that is cheap (a CPU) or needed (DDP, where
    every rank must stop together); elsewhere :meth:`EpochMeter.read` catches it.
    """
    value = ctx.shared_finite(loss.item())
    if not math.isfinite(value):
        raise NonFiniteLossError(value)


def check_weights(model: torch.nn.Module) -> None:
    """Raises NonFiniteLossError when a weight of ``model`` is NaN or infinite.

    An update with a far too high learning rate can break the weights while the loss
    computed before it was still finite; the loop checks once per epoch, before it
    records the epoch, so such weights are never kept as the best.
    """
    bad = first_non_finite(model)
    if bad is not None:
        raise NonFiniteLossError(f"finite, but an update made the weight {bad} NaN")


def stop_on_nan(state: TrainState, exc: NonFiniteLossError) -> None:
    """Stops the run and says what to do: a NaN loss nearly always means the learning rate is too high."""
    top = max(g.get("peak_lr", g["lr"]) for g in state.optimizer.param_groups)
    msg = (f"Training stopped in epoch {state.epoch + 1}: the loss became {exc.args[0]}. The learning "
           f"rate is probably too high; try a lower one (e.g. lr={top / 10:.0e}, or run lr_find). "
           f"The model keeps the weights of epoch {state.best_epoch}.")
    state.stop("non-finite loss", quiet=True)
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)


def progress_bar(epoch: int, epochs: int, total: int, enabled: bool):
    """One tqdm bar for the epoch's training images (nothing is printed when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="img", leave=True, disable=not enabled)
