"""The training loop. Read :meth:`Trainer.fit`, then :meth:`Trainer._train_epoch`: that is all of it.

``fit(model, train, val, epochs=3, lr=1e-3)`` trains a Backbone and returns
its :class:`~tlkit.history.History`. Every option, with its default, is a
field of :class:`TrainConfig` below. The loop itself is plain PyTorch: for
each epoch, for each batch, forward, loss, backward, optimizer step and
learning-rate schedule; then validation, the best weights so far, and the
callbacks. The engineering sits behind one-line calls, each in its own module:

* :mod:`tlkit.decoded`: where batches come from (a DataLoader, or images decoded once);
* :mod:`tlkit.boundary`: while the bottom groups are frozen, their output cached once (the top trains on it);
* :mod:`tlkit.oom`: on CUDA out-of-memory, halve the batch and retry the epoch;
* :mod:`tlkit.meter`: read the running loss from the GPU every few steps only;
* :mod:`tlkit.distributed`: under torchrun, DDP (every call is a no-op in one process);
* :mod:`tlkit.state` and :mod:`tlkit.resume`: what callbacks see, and what a checkpoint holds;
* :mod:`tlkit.device`: CUDA, MPS or CPU; bf16/fp16 autocast; channels_last.

Example:
    >>> history = fit(model, train, val, epochs=3, lr=1e-3)
    >>> history["val_acc"]
    [0.955, 0.968, 0.975]
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from tlkit import boundary, distributed
from tlkit.callbacks import Callback, CallbackList, Checkpoint
from tlkit.data import transforms_for
from tlkit.decoded import lone_last_image, training_loaders
from tlkit.device import autocast, memory_format, pick_device, releasing_memory, to_device
from tlkit.fold import fold_frozen_batchnorm
from tlkit.history import History
from tlkit.meter import EpochMeter, NonFiniteLossError, check_finite, check_weights, progress_bar, stop_on_nan
from tlkit.oom import retry_on_oom
from tlkit.resume import seed_run, start_state
from tlkit.schedule import OPTIMIZERS, SCHEDULERS
from tlkit.state import TrainState
from tlkit.images import warn_skipped

log = logging.getLogger(__name__)
GPU_READ_EVERY = 20  # on a GPU, steps between reads of the running loss (see tlkit.meter)


class _StopRequested(Exception):
    """Raised inside the loop when ``stop_event`` is set (caught by fit)."""


class Trainer:
    """Trains a :class:`tlkit.backbones.Backbone`; :func:`fit` is the one-call version.

    Takes a :class:`TrainConfig`, or its fields as keywords. Datasets without a
    transform get ``transforms_for(model, train=True/False, image_size, augment)``.
    ``trainer.state`` (a :class:`tlkit.state.TrainState`) is what callbacks see.

    Example:
        >>> trainer = Trainer(model, train, val, epochs=3, stop_event=threading.Event())
        >>> history = trainer.fit()
    """

    def fit(self, resume: str | Path | None = None) -> History:
        """Runs the remaining epochs; returns the History (also when stopped early)."""
        self._setup(resume)  # device, optimizer, schedule, loaders; a resumed run's state
        cfg, state = self.config, self.state
        self.callbacks.on_train_begin(state)
        try:
            # Eval-mode BatchNorm runs folded into its convolution: same maths, 1.2-2x faster on a CPU.
            with fold_frozen_batchnorm(self.model, enabled=cfg.fold_bn):
                for epoch in range(state.epoch + 1, cfg.epochs + 1):
                    self.callbacks.on_epoch_begin(state, epoch)  # e.g. GradualUnfreezing adds a group to the optimizer
                    start = time.perf_counter()
                    # Train, then validate; on CUDA out-of-memory, both again with half the batch (if oom_retry).
                    train, val = retry_on_oom(lambda: (self._train_epoch(epoch), self._evaluate()),
                                              cfg, state.optimizer, self.device)
                    check_weights(self.model)  # the loss was finite, but did the last update break a weight?
                    row = {"epoch": epoch, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
                           "val_loss": val["val_loss"], "val_acc": val["val_acc"], "lr": state.group_lrs(),
                           "seconds": time.perf_counter() - start, "img_per_s": train["img_per_s"],
                           "train_images": train["train_images"]}  # unreadable images were skipped
                    state.epoch = epoch
                    state.history.append(**row)
                    state.keep_if_best(row)  # a CPU copy of the weights, when the monitored metric improved
                    log.info("epoch %d/%d %s", epoch, cfg.epochs,
                             " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
                    self.callbacks.on_epoch_end(state, epoch, row)  # e.g. Checkpoint saves; EarlyStopping may stop
                    if state.stopped:
                        break
        except KeyboardInterrupt:  # Ctrl-C, or the notebook's stop button
            state.stop("interrupted (KeyboardInterrupt)")
        except _StopRequested:
            state.stop("stop_event was set")
        except NonFiniteLossError as exc:
            stop_on_nan(state, exc)  # with advice: the learning rate is probably too high
        except BaseException:  # a real error (e.g. out of memory): still leave the best weights
            state.restore_best()
            raise
        state.finish()  # the best weights back into the model; history.stop_reason says why it stopped
        self.callbacks.on_train_end(state)
        return state.history

    def _train_epoch(self, epoch: int) -> dict:
        """One pass over the training data: mean loss, accuracy, images per second."""
        self.model.train()  # Backbone.train() keeps the BatchNorm of frozen groups in eval mode
        self._net = distributed.wrap_model(self.model, self.dist, self.device, current=self._net)  # DDP: rewrap
        # Cached activations at the freeze boundary while they are valid (tlkit.boundary), else live.
        cached = self._boundary and self._boundary.train_batches(
            epoch, self.config.batch_size, self.state.data_seed + epoch,
            lone_last_image(self.train_data, self.config.batch_size, self.dist))
        loader, self._forward = cached or (self.loaders(self.train_data, train=True, epoch=epoch), self._net)
        meter, skipped, start = EpochMeter(self.device, self._read_every), [], time.perf_counter()
        bar = progress_bar(epoch, self.config.epochs, self.dist.shard_size(len(self.train_data)) - loader.drop_last,
                           self.config.progress and self.dist.is_main)
        for step, (x, y, dropped) in enumerate(releasing_memory(loader, self.device)):  # x: (B, 3, H, W), y: (B,)
            self._check_stop()
            skipped += dropped  # unreadable images, left out of the batch
            bar.update(len(y) + len(dropped))
            if not self.dist.every_rank_has(len(y)):  # every image of this batch (on some rank) was unreadable
                continue
            self.state.schedule.update(epoch - 1 + step / len(loader))  # progress in epochs, e.g. 1.25
            logs = meter.add(step, self._train_step(x, y), len(y))  # running loss and accuracy
            bar.set_postfix(loss=f"{logs['loss']:.3f}", acc=f"{logs['acc']:.3f}", refresh=False)
            self.callbacks.on_batch_end(self.state, step, {**logs, "total": len(self.train_data), "epoch": epoch})
        bar.close()
        loss_sum, correct = meter.read()  # one last wait for the GPU
        warn_skipped(skipped, where=f" in epoch {epoch} of {getattr(self.train_data, 'name', 'the data')}")
        distributed.broadcast_buffers(self.model, self.dist)  # DDP: every rank ends with rank 0's BN stats
        loss_sum, correct, seen = self.dist.all_sum(loss_sum, correct, meter.seen)  # DDP: totals over ranks
        if seen == 0:
            raise ValueError("No readable training images: every image was skipped.")
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen,
                "img_per_s": seen / (time.perf_counter() - start), "train_images": seen}

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, loss, backward, update on one batch; returns [loss sum, number correct] on the device."""
        x, y = self._to_device(x), y.to(self.device, non_blocking=True)
        with autocast(self.device, enabled=self.config.amp):  # bf16/fp16 on CUDA; nothing elsewhere
            logits = self._forward(x)  # (B, num_classes); under DDP backward() averages gradients over ranks
            loss = self.loss_fn(logits, y)  # scalar: the mean over the batch
        if self._read_every == 1:  # reading is cheap here: check before the update, so no NaN reaches the weights
            check_finite(loss, self.dist)  # DDP: a NaN on any rank stops every rank
        self.state.optimizer.zero_grad(set_to_none=True)
        # The scaler multiplies the fp16 loss so small gradients do not underflow;
        # when disabled (fp32, bf16) these three calls are plain backward() and step().
        self.state.scaler.scale(loss).backward()
        self.state.scaler.step(self.state.optimizer)
        self.state.scaler.update()
        return torch.stack([loss.detach().float() * len(y), (logits.argmax(1) == y).sum().float()])

    @torch.no_grad()
    def _evaluate(self) -> dict:
        """Mean loss and accuracy on the validation data, in eval mode (None without validation data)."""
        if self.val_data is None:
            return {"val_loss": None, "val_acc": None}
        self.model.eval()
        sums, seen, skipped = torch.zeros(2, device=self.device), 0, []  # sums: [loss sum, correct]
        cached = self._boundary and self._boundary.val_batches(self.config.batch_size)  # tlkit.boundary
        loader, net = cached or (self.loaders(self.val_data, train=False), self.model)
        for x, y, dropped in releasing_memory(loader, self.device):
            self._check_stop()
            skipped += dropped
            if len(y) == 0:
                continue
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            with autocast(self.device, enabled=self.config.amp):
                logits = net(x)  # (B, num_classes)
            sums += torch.stack([nn.functional.cross_entropy(logits.float(), y, reduction="sum"),
                                 (logits.argmax(1) == y).sum().float()])
            seen += len(y)
        loss_sum, correct = sums.tolist()  # one wait for the GPU per validation pass, not one per batch
        warn_skipped(skipped, where=f" in {getattr(self.val_data, 'name', 'the validation data')}")
        loss_sum, correct, seen = self.dist.all_sum(loss_sum, correct, seen)  # DDP: exact totals, no padding
        return {"val_loss": loss_sum / max(seen, 1), "val_acc": correct / max(seen, 1)}

    # ------------------------------------------------------------------ before the loop
    def __init__(self, model: nn.Module, train_data, val_data=None, config: TrainConfig | None = None,
                 **options: Any):
        self.config = cfg = _make_config(config, options)  # a copy: oom_retry may halve its batch_size
        self.model, self.device = model, pick_device(cfg.device)
        self.train_data = _with_transform(train_data, model, True, cfg)
        self.val_data = _with_transform(val_data, model, False, cfg)
        checkpoint = [Checkpoint(cfg.checkpoint_dir)] if cfg.checkpoint_dir else []
        self.callbacks = CallbackList([*cfg.callbacks, *checkpoint])
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.state = TrainState(model, cfg.epochs, has_val=val_data is not None)
        self.dist = distributed.context()  # one process; or, under torchrun with a process group, this rank
        self._net: nn.Module = model  # what the training forward runs: the model, or its DDP wrapper
        self._forward: nn.Module = model  # this epoch's forward: self._net, or the top model on cached activations
        self._boundary: boundary.BoundaryPlan | None = None  # set in _setup
        self._own_transform = getattr(train_data, "transform", None) is None  # the trainer picks the transform
        self._read_every = 1  # steps between reads of the running loss (set in _setup)

    def _setup(self, resume: str | Path | None) -> None:
        cfg, state = self.config, self.state
        self.dist = distributed.context()  # fit never starts a process group: see tlkit.distributed.session
        distributed.warn_without_group()  # torchrun without a group: every process would train alone
        state.data_seed = seed_run(cfg.seed, self.dist)  # seeds the generators; the data order's seed
        self.model.to(self.device, memory_format=self._memory_format())
        # CPU: reading costs nothing. DDP: every rank must agree on a NaN before the update.
        self._read_every = 1 if self.device.type == "cpu" or self.dist.enabled else GPU_READ_EVERY
        self._net = distributed.wrap_model(self.model, self.dist, self.device)  # DDP copies rank 0's weights
        start_state(state, cfg, self.device, resume)  # optimizer, schedule, scaler; or a checkpoint's
        # Batches: a DataLoader, or images decoded once (decode_once); chosen here, not inside the loop.
        self.loaders = training_loaders(cfg, self.model, self.device, self.dist, state.data_seed)
        # Frozen bottom: run it once and cache its output (cache_boundary); None means run live.
        self._boundary = boundary.plan_for_training(self.model, self.train_data, self.val_data, cfg, self.device,
                                                    self.dist, cfg.epochs - state.epoch, self._own_transform,
                                                    check=self._check_stop)

    # ------------------------------------------------------------------ small helpers
    def _check_stop(self) -> None:
        if self.config.stop_event is not None and self.config.stop_event.is_set():
            raise _StopRequested

    def _memory_format(self) -> torch.memory_format:
        return memory_format(self.device) if self.config.channels_last else torch.contiguous_format

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return to_device(x, self.device) if self.config.channels_last else x.to(self.device, non_blocking=True)


@dataclass
class TrainConfig:
    """Every option of :func:`fit`, with its default. ``fit(..., batch_size=64)`` sets one."""

    epochs: int = 5  # total epochs, counting those before a resume
    lr: float | dict[str, float] | tuple[float, float] = 1e-3  # one rate, {group: rate}, or (low, high)
    batch_size: int = 32  # images per step (halved by oom_retry)
    optimizer: str = "adamw"  # "adamw", "adam" or "sgd" (momentum 0.9, Nesterov)
    weight_decay: float = 0.01  # norms and biases get none
    scheduler: str | None = "onecycle"  # "onecycle", "cosine", "step" or None (tlkit.schedule)
    label_smoothing: float = 0.0  # passed to the cross-entropy loss
    image_size: int | None = None  # None: the backbone's input size
    augment: str = "standard"  # "standard", "strong" or "none" (tlkit.data.transforms_for)
    device: str | torch.device | None = None  # None: CUDA, then MPS, then CPU
    amp: bool = True  # autocast on CUDA: bf16, or fp16 with a gradient scaler
    channels_last: bool = True  # the faster memory layout, where tlkit.device says it is faster
    fold_bn: bool = True  # run eval-mode BatchNorm folded into its conv (tlkit.fold): same maths, faster
    decode_once: bool = False  # decode every image once and augment batches on the device (tlkit.decoded)
    num_workers: int | None = None  # DataLoader workers; None: tlkit.loaders.num_workers_default()
    seed: int | None = None  # makes a CPU run repeatable (weights, data order, augmentation)
    callbacks: Iterable[Callback] = ()  # tlkit.callbacks objects, called at fixed points of the loop
    checkpoint_dir: str | Path | None = None  # adds Checkpoint(checkpoint_dir): resume from there
    stop_event: threading.Event | None = None  # set it to stop after the current batch
    progress: bool = True  # one tqdm bar per epoch; False prints nothing
    oom_retry: bool = False  # on CUDA out-of-memory, retry the epoch with half the batch
    cache_boundary: bool | str | dict = "auto"  # cache the frozen bottom's output (tlkit.boundary.plan options)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}.")
        if not isinstance(self.epochs, int) or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive ints, got {self.epochs!r} and "
                             f"{self.batch_size!r}.")
        if self.decode_once and self.augment == "strong":
            raise ValueError("decode_once supports augment='standard' or 'none', not 'strong' (colour jitter).")


def fit(model: nn.Module, train_data, val_data=None, epochs: int | None = None,
        lr: float | dict[str, float] | tuple[float, float] | None = None, *, resume: str | Path | None = None,
        config: TrainConfig | None = None, **options: Any) -> History:
    """Trains ``model`` and returns its :class:`~tlkit.history.History`.

    Takes every field of :class:`TrainConfig` as a keyword (batch_size,
    optimizer, scheduler, device, callbacks, stop_event, seed, ...), or a
    ``config`` (then ``epochs`` and ``lr`` default to the config's). ``resume``
    is a checkpoint file or folder; training continues after its last finished
    epoch, exactly as if never stopped. Under torchrun, start the process group
    first (:func:`tlkit.distributed.session`): fit never starts one itself.

    When training stops early (Ctrl-C, ``stop_event``, EarlyStopping, NaN
    loss) fit still returns normally; ``history.stop_reason`` says why, and
    the model holds the best weights either way.

    Example:
        >>> freeze_to(model, -1)  # feature extraction: only the head trains
        >>> history = fit(model, train, val, epochs=3, lr=1e-3, checkpoint_dir="runs/a")
        >>> history.best("val_acc")["epoch"]
        3
    """
    options.update({k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None})
    return Trainer(model, train_data, val_data, config, **options).fit(resume=resume)


def _make_config(config: TrainConfig | None, options: dict) -> TrainConfig:
    """A copy of ``config`` (or the defaults) with ``options`` applied."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}. Pass options by keyword, "
                        "e.g. Trainer(model, train, val, epochs=3).")
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"Unknown training option(s) {unknown}; valid ones: {sorted(valid)}.")
    return replace(config or TrainConfig(), **options)


def _with_transform(data, model: nn.Module, train: bool, cfg: TrainConfig):
    """Gives a dataset without a transform the backbone's preprocessing."""
    if data is None or getattr(data, "transform", True) is not None or not hasattr(data, "with_transform"):
        return data
    return data.with_transform(transforms_for(model, train=train, image_size=cfg.image_size, augment=cfg.augment))


__all__ = ["TrainConfig", "Trainer", "fit"]
