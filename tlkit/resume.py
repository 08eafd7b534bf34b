"""The state a training run starts from, and what a checkpoint saves so that it resumes exactly.

``fit(..., resume="runs/a")`` reads what :class:`tlkit.callbacks.Checkpoint`
wrote there. (A finished *model*, for predictions, is saved with
:func:`tlkit.checkpoint.save_model` instead.) :func:`start_state` gives a run
its optimizer, schedule and gradient scaler, then restores a checkpoint into
them; :func:`training_state` is what is saved.

Weights alone are not enough. To continue as if never stopped, a checkpoint
also holds the optimizer's moment estimates, which parameters each optimizer
group holds, the schedule, the gradient scaler, the freeze state
(``frozen_groups``, BN policy, ``requires_grad`` of every parameter), the
History, the best weights so far, and the random number generators (data
order, augmentation and dropout all draw from them).

Only tensors, numbers, strings, lists, tuples and dicts go in, so checkpoints
load with ``torch.load(path, weights_only=True)``: opening one cannot run code.

Example:
    >>> state = load_training_state("runs/a")          # runs/a/last.pt
    >>> state["epoch"], state["freeze"]["frozen_groups"]
    (2, ['stem', 'stage1'])
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlkit.errors import CheckpointError
from tlkit.device import needs_grad_scaler
from tlkit.distributed import DistContext
from tlkit.freezing import param_groups
from tlkit.schedule import LRSchedule, make_optimizer
from tlkit.state import TrainState, copy_weights
from tlkit.storage import safe_load

TRAIN_FORMAT = "tlkit-train/1"
__all__ = ["TRAIN_FORMAT", "seed_run", "start_state", "training_state", "restore_training_state",
           "load_training_state", "freeze_state", "load_freeze_state", "seed_everything", "rng_state", "set_rng_state"]


def seed_run(seed: int | None, ctx: DistContext) -> int:
    """Seeds the generators (each rank its own: dropout, augmentation) and returns the data seed.

    Every epoch shuffles with ``data seed + epoch``, so a resumed run sees the
    same order; under torchrun every rank gets rank 0's data seed.

    Example:
        >>> seed_run(0, DistContext())
        0
    """
    if seed is not None:
        seed_everything(seed + ctx.rank)
    return ctx.broadcast_object(seed if seed is not None else int(torch.randint(2**31 - 1, ())))


def start_state(state: TrainState, config, device: torch.device, resume: str | os.PathLike | None) -> None:
    """Gives ``state`` its optimizer, schedule, gradient scaler and starting best weights;
    with ``resume``, everything else from that checkpoint too.

    ``config`` is a :class:`tlkit.train.TrainConfig`.

    Example:
        >>> start_state(state, config, device, resume="runs/a")
    """
    groups = param_groups(state.model, config.lr, config.weight_decay)
    if not groups:
        raise ValueError("Nothing to train: every layer group is frozen. Unfreeze at least the head: "
                         "tlkit.freezing.unfreeze(model, 'head').")
    state.optimizer = make_optimizer(config.optimizer, groups)
    state.schedule = LRSchedule(state.optimizer, config.scheduler, config.epochs)
    state.scaler = torch.amp.GradScaler(device.type, enabled=config.amp and needs_grad_scaler(device))
    state.best = {"score": None, "epoch": 0, "state": copy_weights(state.model)}  # epoch 0: the weights before
    if resume is not None:
        restore_training_state(state, load_training_state(resume), config.optimizer)


def training_state(state: TrainState) -> dict:
    """Everything needed to resume ``state``'s run: tensors, numbers, strings, lists and dicts only.

    Example:
        >>> atomic_save(training_state(state), "runs/a/last.pt")   # what Checkpoint does
    """
    model, optimizer = state.model, state.optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        "format": TRAIN_FORMAT, "backbone": getattr(model, "name", ""),
        "epoch": state.epoch, "epochs": state.epochs, "data_seed": state.data_seed,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        # Which parameters each optimizer group holds, by name, so that groups added
        # by GradualUnfreezing can be rebuilt before the optimizer state is loaded.
        "optimizer_groups": [{"name": g.get("name", ""), "params": [names[id(p)] for p in g["params"]]}
                             for g in optimizer.param_groups],
        "scheduler": state.schedule.state_dict(), "scaler": state.scaler.state_dict(),
        "freeze": freeze_state(model), "history": state.history.state_dict(),
        "best": dict(state.best), "monitor": [state.monitor, state.mode], "rng": rng_state(),
    }


def restore_training_state(state: TrainState, saved: dict, optimizer: str) -> None:
    """Puts a :func:`training_state` back: model, freeze state, optimizer, schedule, History, RNG.

    The ``optimizer`` (its kind, e.g. ``"adamw"``) is rebuilt with the saved
    parameter groups before the saved optimizer state is loaded into it.

    Example:
        >>> restore_training_state(state, load_training_state("runs/a"), "adamw")
    """
    model = state.model
    if saved.get("backbone") != getattr(model, "name", ""):
        raise ValueError(f"The checkpoint is for backbone {saved.get('backbone')!r}, but the model is "
                         f"{getattr(model, 'name', '')!r}. Resume with the same backbone.")
    load_freeze_state(model, saved["freeze"])
    model.load_state_dict(saved["model"])
    params = dict(model.named_parameters())
    groups = [{"params": [params[n] for n in g["params"]], "name": g["name"]} for g in saved["optimizer_groups"]]
    state.optimizer = make_optimizer(optimizer, groups)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.schedule = LRSchedule(state.optimizer, state.schedule.kind, state.epochs)
    state.schedule.check_resume(saved["scheduler"])
    if saved["scaler"] and state.scaler.is_enabled():
        state.scaler.load_state_dict(saved["scaler"])
    state.history.load_state_dict(saved["history"])
    state.epoch, state.data_seed, state.best = saved["epoch"], saved["data_seed"], dict(saved["best"])
    state.monitor, state.mode = saved["monitor"]
    set_rng_state(saved["rng"])
    if state.epoch >= state.epochs:
        warnings.warn(f"The checkpoint has already trained {state.epoch} epoch(s); pass epochs > {state.epoch} "
                      "to train more.", stacklevel=5)


def load_training_state(path: str | os.PathLike) -> dict:
    """Reads a training checkpoint to CPU with ``weights_only=True`` (no code can run).

    ``path`` may be the file or the folder that holds ``last.pt``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: the file holds arbitrary Python objects (refused,
            raised from the ``pickle.UnpicklingError``), is damaged, or is not
            a tlkit training checkpoint.

    Example:
        >>> load_training_state("runs/a")["epoch"]
        4
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"No training checkpoint at {path}. Pass the file, or the folder that "
                                "Checkpoint(dir) / fit(checkpoint_dir=...) wrote last.pt into.")
    state = safe_load(path, "training checkpoint")
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a tlkit training checkpoint (format {found!r}, expected "
                              f"{TRAIN_FORMAT!r}). To load a saved model use tlkit.checkpoint.load_model.")
    return state


def freeze_state(model: nn.Module) -> dict:
    """Frozen groups, BN policy and ``requires_grad`` of every parameter (by name)."""
    return {"frozen_groups": sorted(getattr(model, "frozen_groups", ())),
            "bn_policy": getattr(model, "bn_policy", "eval"),
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()}}


def load_freeze_state(model: nn.Module, state: dict) -> None:
    """Restores :func:`freeze_state` (and re-applies the BN policy)."""
    model.frozen_groups = set(state["frozen_groups"])
    model.bn_policy = state["bn_policy"]
    for n, p in model.named_parameters():
        p.requires_grad_(state["requires_grad"][n])
    model.train(model.training)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's generators (torch also seeds every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states, as tensors and plain numbers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restores :func:`rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
