"""Training checkpoints: what must be saved so that a stopped run resumes exactly.

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
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlkit.errors import CheckpointError
from tlkit.storage import safe_load

TRAIN_FORMAT = "tlkit-train/1"
__all__ = ["TRAIN_FORMAT", "load_training_state", "freeze_state", "load_freeze_state",
           "seed_everything", "rng_state", "set_rng_state"]


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
