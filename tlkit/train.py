"""The training loop: ``fit()`` and the ``Trainer`` behind it.

Read :meth:`Trainer.fit` first: one screen, one epoch per turn of the loop.
Everything else is a small helper it calls.

* Device and precision come from :mod:`tlkit.device` (CUDA, MPS or CPU;
  bf16/fp16 autocast on CUDA, a gradient scaler for fp16, channels_last).
* The optimizer is built from the backbone's layer groups, so every group can
  have its own learning rate, and norms and biases get no weight decay.
* A learning-rate schedule scales every group's own peak rate.
* The best weights are kept; on the last epoch, on Ctrl-C, on a stop button
  (``stop_event``) or on a NaN loss, the model ends with them.
* Checkpoints hold everything needed to resume bit-for-bit.
* Under torchrun every process runs this same loop on its share of the data,
  with PyTorch's DistributedDataParallel (see :mod:`tlkit.distributed`).

Example:
    >>> history = fit(model, train, val, epochs=3, lr=1e-3)
    >>> history["val_acc"]
    [0.955, 0.968, 0.975]
"""
from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from tlkit import distributed
from tlkit.callbacks import Callback, Checkpoint
from tlkit.data import leaves_one_image, make_loader, transforms_for, warn_skipped
from tlkit.device import autocast, memory_format, needs_grad_scaler, pick_device, to_device, trimmed
from tlkit.fold import fold_frozen_batchnorm
from tlkit.guard import first_non_finite
from tlkit.freezing import param_groups
from tlkit.history import History
from tlkit.lr_finder import LRFinderResult, lr_find  # noqa: F401 - re-exported: part of the training API
from tlkit.resume import (TRAIN_FORMAT, freeze_state, load_freeze_state, load_training_state, rng_state,
                          seed_everything, set_rng_state)
from tlkit.schedule import SCHEDULERS, LRSchedule

log = logging.getLogger(__name__)
OPTIMIZERS = ("adamw", "adam", "sgd")
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
# On a GPU the CPU queues steps ahead; reading the running loss makes it wait, so it reads every N steps.
GPU_READ_EVERY = 20


class NonFiniteLossError(ArithmeticError):
    """The loss became NaN or infinite (the learning rate is usually too high)."""


class _StopRequested(Exception):
    """Raised inside the loop when ``stop_event`` is set (caught by fit)."""


class Trainer:
    """Trains a :class:`tlkit.backbones.Backbone`; :func:`fit` is the one-call version.

    Args:
        model: a Backbone; its frozen groups stay frozen (and their BN in eval mode).
        train_data, val_data: ``ImageDataset``s. Without a transform they get
            ``transforms_for(model, train=True/False, image_size, augment)``.
        epochs: total number of epochs, counting those before a resume.
        lr: one rate, ``{group: rate}``, or ``(low, high)`` spread from the
            first to the last trainable group (discriminative rates).
        batch_size, weight_decay: as usual; norms and biases get no decay.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        scheduler: ``"onecycle"``, ``"cosine"``, ``"step"`` or None (see
            :class:`tlkit.schedule.LRSchedule`).
        device: None picks CUDA, then MPS, then CPU.
        amp: autocast on CUDA (bf16, or fp16 with a gradient scaler).
        channels_last: the faster memory layout where :mod:`tlkit.device` says so.
        callbacks: :class:`tlkit.callbacks.Callback` objects.
        stop_event: a ``threading.Event``; setting it ends training after the
            current batch (the unfinished epoch is dropped).
        seed: makes a CPU run repeatable (weights, data order, augmentation).
        progress: one tqdm bar per epoch; False prints nothing.
        num_workers: DataLoader workers (None: ``tlkit.data.num_workers_default()``).
        checkpoint_dir: adds ``Checkpoint(checkpoint_dir)``.
        oom_retry: on CUDA out-of-memory, retry the epoch with half the batch.
        label_smoothing: passed to the cross-entropy loss.
        decode_once: decode every image once into a uint8 tensor on the
            device and crop, flip and normalise whole batches there
            (:mod:`tlkit.decoded`), instead of a DataLoader decoding JPEGs
            every epoch. For fast GPUs; one process only (not under torchrun).
            Uses the standard preprocessing, not a dataset's own transform.
        fold_bn: run each eval-mode BatchNorm folded into the convolution
            before it (:mod:`tlkit.fold`): same results, less work.

    Attributes: ``history``, ``optimizer``, ``scheduler``, ``epoch`` (epochs
    finished), ``stop_reason`` (None, or why training ended early), ``best_epoch``.

    Example:
        >>> trainer = Trainer(model, train, val, epochs=3, stop_event=threading.Event())
        >>> history = trainer.fit()
    """

    def __init__(self, model: nn.Module, train_data, val_data=None, epochs: int = 5,
                 lr: float | dict[str, float] | tuple[float, float] = 1e-3, *, batch_size: int = 32,
                 optimizer: str = "adamw", weight_decay: float = 0.01, scheduler: str | None = "onecycle",
                 device: str | torch.device | None = None, amp: bool = True, channels_last: bool = True,
                 callbacks: Iterable[Callback] = (), stop_event: threading.Event | None = None,
                 seed: int | None = None, progress: bool = True, num_workers: int | None = None,
                 checkpoint_dir: str | Path | None = None, image_size: int | None = None,
                 augment: str = "standard", oom_retry: bool = False, label_smoothing: float = 0.0,
                 fold_bn: bool = True, decode_once: bool = False):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}.")
        if not isinstance(epochs, int) or epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive ints, got {epochs!r} and {batch_size!r}.")
        self.model, self.device, self.epochs, self.lr = model, pick_device(device), epochs, lr
        self.train_data = _with_transform(train_data, model, True, image_size, augment)
        self.val_data = _with_transform(val_data, model, False, image_size, augment)
        self.batch_size, self.weight_decay, self.optimizer_name = batch_size, weight_decay, optimizer
        self.scheduler_name, self.amp, self.channels_last = scheduler, amp, channels_last
        self.callbacks = list(callbacks) + ([Checkpoint(checkpoint_dir)] if checkpoint_dir else [])
        self.stop_event, self.seed, self.progress = stop_event, seed, progress
        self.num_workers, self.oom_retry, self.fold_bn = num_workers, oom_retry, fold_bn
        if decode_once and augment == "strong":
            raise ValueError("decode_once supports augment='standard' or 'none', not 'strong' (colour jitter).")
        self.decode_once, self.augment = decode_once, augment
        self.image_size = int(image_size or getattr(model, "input_size", 224))
        self._decoded: dict[int, Any] = {}  # id(dataset) -> DecodedImages, built on first use
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.history = History()
        self.epoch, self.stop_reason, self._stop_quietly = 0, None, False
        self.monitor, self.mode = ("val_acc", "max") if val_data is not None else ("train_loss", "min")
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: LRSchedule | None = None
        self._best: dict = {}
        self.dist = distributed.context()  # one process, or this rank under torchrun (set again in _setup)
        self._net: nn.Module = model  # what the training forward runs: the model, or its DDP wrapper
        self._read_every = 1  # steps between reads of the running loss (set in _setup)

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: str | Path | None = None) -> History:
        """Runs the remaining epochs; returns the History (also on interrupt)."""
        self._setup(resume)
        self._call("on_train_begin")
        try:
            # Eval-mode BatchNorm runs folded into its convolution: same maths, 1.2-2x faster on a CPU (tlkit/fold.py)
            with fold_frozen_batchnorm(self.model, enabled=self.fold_bn):
                for epoch in range(self.epoch + 1, self.epochs + 1):
                    self._call("on_epoch_begin", epoch)  # e.g. GradualUnfreezing adds a group
                    row = self._run_epoch(epoch)  # train, then validate
                    self._end_epoch(epoch, row)  # History, best weights, checkpoint
                    if self.stop_reason:  # set by a callback such as EarlyStopping
                        break
        except KeyboardInterrupt:  # Ctrl-C, or the notebook's stop button
            self.stop("interrupted (KeyboardInterrupt)")
        except _StopRequested:
            self.stop("stop_event was set")
        except NonFiniteLossError as exc:
            self._stop_on_nan(exc)
        except BaseException:  # a real error (e.g. out of memory): still leave the best weights
            self._restore_best()
            raise
        self._finish()
        return self.history

    def _run_epoch(self, epoch: int) -> dict:
        """One History row. On CUDA out-of-memory, retries with half the batch if allowed."""
        while True:
            try:
                return self._epoch_row(epoch)
            except torch.cuda.OutOfMemoryError as exc:
                self._shrink_batch(exc)  # raises unless oom_retry
            if self.device.type == "cuda":  # outside `except`: the traceback no longer pins tensors
                torch.cuda.empty_cache()

    def _epoch_row(self, epoch: int) -> dict:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        bar = tqdm(total=self.dist.shard_size(len(self.train_data)) - self._lone_last_image(),
                   desc=f"epoch {epoch}/{self.epochs}",
                   unit="img", disable=not (self.progress and self.dist.is_main), leave=True)
        try:
            train = self._train_epoch(epoch, bar)
            bar.set_description(f"epoch {epoch}/{self.epochs} validating")
            val = self._evaluate() if self.val_data is not None else {"val_loss": None, "val_acc": None}
            bar.set_description(f"epoch {epoch}/{self.epochs}")
            bar.set_postfix({k: f"{v:.3f}" for k, v in {**train, **val}.items() if k in METRICS and v is not None})
        finally:
            bar.close()
        return {"epoch": epoch, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
                "val_loss": val["val_loss"], "val_acc": val["val_acc"], "lr": self.group_lrs(),
                "seconds": time.perf_counter() - start, "img_per_s": train["img_per_s"]}

    def _train_epoch(self, epoch: int, bar) -> dict:
        """One pass over the training data: mean loss, accuracy, images per second."""
        self.model.train()  # Backbone.train() keeps BN of frozen groups in eval mode
        self._net = distributed.wrap_model(self.model, self.dist, self.device, current=self._net)  # DDP: rewrap
        loader = self._loader(self.train_data, shuffle=True, seed=self.data_seed + epoch, epoch=epoch)
        sums = torch.zeros(2, device=self.device)  # [loss sum, number correct], kept on the device
        loss_sum, correct, read, seen, skipped, start = 0.0, 0.0, 0, 0, [], time.perf_counter()
        for step, (x, y, dropped) in enumerate(trimmed(loader, self.device)):  # x: (B, 3, H, W), y: (B,)
            self._check_stop()
            skipped += dropped
            bar.update(len(y) + len(dropped))
            if not self.dist.every_rank_has(len(y)):  # every image of this batch (on some rank) was unreadable
                continue
            self.scheduler.update(epoch - 1 + step / len(loader))  # progress in epochs, e.g. 1.25
            sums += self._train_step(x, y)
            seen += len(y)
            if read == 0 or (step + 1) % self._read_every == 0:  # reading makes the CPU wait for the GPU
                (loss_sum, correct), read = self._read_sums(sums), seen
            logs = {"loss": loss_sum / read, "acc": correct / read, "seen": seen,
                    "total": len(self.train_data), "epoch": epoch}
            bar.set_postfix(loss=f"{logs['loss']:.3f}", acc=f"{logs['acc']:.3f}", refresh=False)
            self._call("on_batch_end", step, logs)
        loss_sum, correct = self._read_sums(sums)
        warn_skipped(skipped, where=f" in epoch {epoch} of {getattr(self.train_data, 'name', 'the data')}")
        distributed.broadcast_buffers(self.model, self.dist)  # DDP: every rank ends with rank 0's BN stats
        loss_sum, correct, seen = self.dist.all_sum(loss_sum, correct, seen)  # DDP: totals over all ranks
        if seen == 0:
            raise ValueError("No readable training images: every image was skipped.")
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen,
                "img_per_s": seen / (time.perf_counter() - start),
                "train_images": seen}  # images actually used (unreadable ones were skipped)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward, update on one batch; returns [loss sum, number correct] on the device."""
        x, y = self._to_device(x), y.to(self.device, non_blocking=True)
        with autocast(self.device, enabled=self.amp):
            logits = self._net(x)  # (B, num_classes); under DDP backward() averages gradients over ranks
            loss = self.loss_fn(logits, y)  # scalar: mean over the batch
        if self._read_every == 1:  # reading is cheap here: check before the update, so no NaN reaches the weights
            value = self.dist.shared_finite(loss.item())  # DDP: NaN on any rank stops every rank
            if not math.isfinite(value):
                raise NonFiniteLossError(value)
        self.optimizer.zero_grad(set_to_none=True)
        # The scaler multiplies the fp16 loss so small gradients do not underflow;
        # when disabled (fp32, bf16) these three calls are plain backward() and step().
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return torch.stack([loss.detach().float() * len(y), (logits.argmax(1) == y).sum().float()])

    def _read_sums(self, sums: torch.Tensor) -> tuple[float, float]:
        """Copies [loss sum, correct] to the CPU (on a GPU this waits for the queued steps)."""
        loss_sum, correct = sums.tolist()
        if not math.isfinite(loss_sum):  # on a GPU a NaN is caught here, within _read_every steps
            raise NonFiniteLossError(loss_sum)
        return loss_sum, correct

    @torch.no_grad()
    def _evaluate(self) -> dict:
        """Mean loss and accuracy on the validation data, in eval mode."""
        self.model.eval()
        sums, seen, skipped = torch.zeros(2, device=self.device), 0, []  # sums: [loss sum, correct]
        for x, y, dropped in trimmed(self._loader(self.val_data, shuffle=False), self.device):
            self._check_stop()
            skipped += dropped
            if len(y) == 0:
                continue
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            with autocast(self.device, enabled=self.amp):
                logits = self.model(x)  # (B, num_classes)
            sums += torch.stack([nn.functional.cross_entropy(logits.float(), y, reduction="sum"),
                                 (logits.argmax(1) == y).sum().float()])
            seen += len(y)
        loss_sum, correct = sums.tolist()  # one wait for the GPU per validation pass, not one per batch
        warn_skipped(skipped, where=f" in {getattr(self.val_data, 'name', 'the validation data')}")
        loss_sum, correct, seen = self.dist.all_sum(loss_sum, correct, seen)  # DDP: exact totals, no padding
        return {"val_loss": loss_sum / max(seen, 1), "val_acc": correct / max(seen, 1)}

    def _end_epoch(self, epoch: int, row: dict) -> None:
        if first_non_finite(self.model) is not None:  # the epoch's last update made a weight NaN/inf
            raise NonFiniteLossError(f"finite, but an update made the weight {first_non_finite(self.model)} NaN")
        self.epoch = epoch
        self.history.append(**row)
        score = row.get(self.monitor)
        best = self._best.get("score")
        if score is not None and math.isfinite(score) and (
                best is None or (score > best if self.mode == "max" else score < best)):
            self._best = {"score": score, "epoch": epoch, "state": _copy_state(self.model)}
        log.info("epoch %d/%d %s", epoch, self.epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
        self._call("on_epoch_end", epoch, row)

    # ------------------------------------------------------------------ stopping
    def stop(self, reason: str, quiet: bool = False) -> None:
        """Ends training after the current epoch (callbacks call this). The first reason wins."""
        if self.stop_reason is None:
            self.stop_reason, self._stop_quietly = reason, quiet

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights the model ends with (0: the weights before training)."""
        return self._best.get("epoch", 0)

    def set_monitor(self, metric: str, mode: str) -> None:
        """Chooses the History column that decides which weights are 'best'."""
        if metric not in METRICS or (metric.startswith("val") and self.val_data is None):
            valid = METRICS if self.val_data is not None else METRICS[:2]
            raise ValueError(f"Cannot monitor {metric!r}: choose one of {valid}.")
        self.monitor, self.mode = metric, mode

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise _StopRequested

    def _stop_on_nan(self, exc: NonFiniteLossError) -> None:
        top = max(g.get("peak_lr", g["lr"]) for g in self.optimizer.param_groups)
        msg = (f"Training stopped in epoch {self.epoch + 1}: the loss became {exc.args[0]}. The learning "
               f"rate is probably too high; try a lower one (e.g. lr={top / 10:.0e}, or run lr_find). "
               f"The model keeps the weights of epoch {self.best_epoch}.")
        self.stop("non-finite loss", quiet=True)
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)

    def _shrink_batch(self, exc: BaseException) -> None:
        smaller = max(1, self.batch_size // 2)
        if not self.oom_retry or self.batch_size == 1:
            raise RuntimeError(
                f"CUDA ran out of memory with batch_size={self.batch_size}. Use a smaller batch size "
                f"(e.g. batch_size={smaller}) or image_size, or pass oom_retry=True to halve the batch "
                "automatically.") from exc
        self.optimizer.zero_grad(set_to_none=True)
        warnings.warn(f"CUDA ran out of memory with batch_size={self.batch_size}; retrying this epoch "
                      f"with batch_size={smaller}.", RuntimeWarning, stacklevel=4)
        self.batch_size = smaller

    def _restore_best(self) -> None:
        self.model.load_state_dict(self._best["state"])
        self.model.eval()

    def _finish(self) -> None:
        """Loads the best weights, says why training stopped, runs on_train_end."""
        self._restore_best()
        self.history.stop_reason = self.stop_reason  # lets callers of fit() see it too
        if self.stop_reason:
            level = logging.INFO if self.stop_reason.startswith("early") else logging.WARNING
            if not self._stop_quietly:
                log.log(level, "Training stopped (%s) after %d finished epoch(s); the model has the weights of "
                        "epoch %d.", self.stop_reason, self.epoch, self.best_epoch)
        self._call("on_train_end")

    # ------------------------------------------------------------------ setup and state
    def _setup(self, resume: str | Path | None) -> None:
        self.dist = distributed.init_from_env()  # under torchrun: join the process group (DDP)
        if self.seed is not None:
            seed_everything(self.seed + self.dist.rank)  # DDP: own dropout and augmentation per rank
        # Each epoch shuffles with its own seed, so a resumed run sees the same order (rank 0's on every rank).
        self.data_seed = self.dist.broadcast_object(
            self.seed if self.seed is not None else int(torch.randint(2**31 - 1, ())))
        self.model.to(self.device, memory_format=self._memory_format())
        # CPU: reading costs nothing. DDP: every rank must agree on a NaN before the update.
        self._read_every = 1 if self.device.type == "cpu" or self.dist.enabled else GPU_READ_EVERY
        self._net = distributed.wrap_model(self.model, self.dist, self.device)  # DDP copies rank 0's weights
        groups = param_groups(self.model, self.lr, self.weight_decay)
        if not groups:
            raise ValueError("Nothing to train: every layer group is frozen. Unfreeze at least the head: "
                             "tlkit.freezing.unfreeze(model, 'head').")
        self.optimizer = _make_optimizer(self.optimizer_name, groups)
        self.scheduler = LRSchedule(self.optimizer, self.scheduler_name, self.epochs)
        scaler_on = self.amp and needs_grad_scaler(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self._best = {"score": None, "epoch": 0, "state": _copy_state(self.model)}
        if resume is not None:
            self.load_state_dict(load_training_state(resume))

    def state_dict(self) -> dict:
        """Everything needed to resume: tensors, numbers, strings, lists and dicts only."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return {
            "format": TRAIN_FORMAT, "backbone": getattr(self.model, "name", ""),
            "epoch": self.epoch, "epochs": self.epochs, "data_seed": self.data_seed,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            # Which parameters each optimizer group holds, by name, so that groups added
            # by GradualUnfreezing can be rebuilt before the optimizer state is loaded.
            "optimizer_groups": [{"name": g.get("name", ""), "params": [names[id(p)] for p in g["params"]]}
                                 for g in self.optimizer.param_groups],
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "freeze": freeze_state(self.model), "history": self.history.state_dict(),
            "best": dict(self._best), "monitor": [self.monitor, self.mode], "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores a :meth:`state_dict` (model, optimizer, schedule, freeze state, RNG, History)."""
        if state.get("backbone") != getattr(self.model, "name", ""):
            raise ValueError(f"The checkpoint is for backbone {state.get('backbone')!r}, but the model is "
                             f"{getattr(self.model, 'name', '')!r}. Resume with the same backbone.")
        load_freeze_state(self.model, state["freeze"])
        self.model.load_state_dict(state["model"])
        params = dict(self.model.named_parameters())
        groups = [{"params": [params[n] for n in g["params"]], "name": g["name"]} for g in state["optimizer_groups"]]
        self.optimizer = _make_optimizer(self.optimizer_name, groups)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler = LRSchedule(self.optimizer, self.scheduler_name, self.epochs)
        self.scheduler.check_resume(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.history.load_state_dict(state["history"])
        self.epoch, self.data_seed, self._best = state["epoch"], state["data_seed"], dict(state["best"])
        self.monitor, self.mode = state["monitor"]
        set_rng_state(state["rng"])
        if self.epoch >= self.epochs:
            warnings.warn(f"The checkpoint has already trained {self.epoch} epoch(s); pass epochs > {self.epoch} "
                          "to train more.", stacklevel=4)

    # ------------------------------------------------------------------ small helpers
    def group_lrs(self) -> dict[str, float]:
        """Current learning rate per layer group (``stage3`` and ``stage3.no_decay`` share one)."""
        out: dict[str, float] = {}
        for i, g in enumerate(self.optimizer.param_groups):
            out.setdefault(str(g.get("name", f"group{i}")).removesuffix(".no_decay"), g["lr"])
        return out

    def _loader(self, data, shuffle: bool, seed: int | None = None, epoch: int = 0):
        if self.decode_once and not self.dist.enabled:
            return self._decoded_images(data).loader(self.batch_size, train=shuffle, seed=seed,
                                                     augment=shuffle and self.augment != "none",
                                                     drop_last=shuffle and self._lone_last_image())
        sampler = distributed.sampler_for(data, self.dist, shuffle, self.data_seed, epoch)  # None in one process
        return make_loader(data, batch_size=self.batch_size, shuffle=shuffle, seed=seed,
                           num_workers=self.num_workers, pin_memory=self.device.type == "cuda", sampler=sampler,
                           drop_last=shuffle and self._lone_last_image())

    def _decoded_images(self, data):
        from tlkit.decoded import DecodedImages

        if id(data) not in self._decoded:  # once per dataset and run: the point is not to decode again
            self._decoded[id(data)] = DecodedImages(data, self.image_size, self.model.mean, self.model.std,
                                                    self.device, progress=self.progress and self.dist.is_main,
                                                    num_workers=self.num_workers)
        return self._decoded[id(data)]

    def _lone_last_image(self) -> bool:
        """True when this rank's last training batch would hold one image, which is dropped
        (a different one each epoch: the data is shuffled). See :func:`tlkit.data.leaves_one_image`."""
        return leaves_one_image(self.dist.shard_size(len(self.train_data)), self.batch_size)

    def _memory_format(self) -> torch.memory_format:
        return memory_format(self.device) if self.channels_last else torch.contiguous_format

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return to_device(x, self.device)
        return x.to(self.device, non_blocking=True)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)


def fit(model: nn.Module, train_data, val_data=None, epochs: int = 5,
        lr: float | dict[str, float] | tuple[float, float] = 1e-3, *, resume: str | Path | None = None,
        **options: Any) -> History:
    """Trains ``model`` and returns its :class:`~tlkit.history.History`.

    Takes every keyword of :class:`Trainer` (batch_size, optimizer, weight_decay,
    scheduler, device, amp, channels_last, callbacks, stop_event, seed,
    progress, num_workers, checkpoint_dir, image_size, augment, oom_retry,
    label_smoothing, fold_bn, decode_once). ``resume`` is a checkpoint file or folder; training
    continues after its last finished epoch, exactly as if never stopped.

    When training stops early (Ctrl-C, ``stop_event``, EarlyStopping, NaN
    loss) fit still returns normally; ``history.stop_reason`` says why, and
    the model holds the best weights either way.

    Example:
        >>> freeze_to(model, -1)  # feature extraction: only the head trains
        >>> history = fit(model, train, val, epochs=3, lr=1e-3, checkpoint_dir="runs/a")
        >>> history.best("val_acc")["epoch"]
        3
    """
    return Trainer(model, train_data, val_data, epochs=epochs, lr=lr, **options).fit(resume=resume)


# ---------------------------------------------------------------------- module helpers
def _with_transform(data, model: nn.Module, train: bool, image_size: int | None, augment: str):
    """Gives a dataset without a transform the backbone's preprocessing."""
    if data is None or getattr(data, "transform", True) is not None or not hasattr(data, "with_transform"):
        return data
    return data.with_transform(transforms_for(model, train=train, image_size=image_size, augment=augment))


def _make_optimizer(name: str, groups: list[dict]) -> torch.optim.Optimizer:
    # Every group carries its own lr and weight_decay (tlkit.freezing.param_groups).
    if name == "sgd":
        return torch.optim.SGD(groups, lr=1e-3, momentum=0.9, nesterov=True)
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(groups)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights and buffers (the 'best weights' snapshot)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


__all__ = ["Trainer", "fit", "lr_find", "LRFinderResult", "NonFiniteLossError"]
