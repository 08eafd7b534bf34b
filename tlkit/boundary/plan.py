"""What a training loop calls to run on cached boundary activations while that is valid.

The loop makes one plan before its first epoch, then asks it each epoch::

    plan = boundary.plan(model, train_data, val_data, epochs=epochs)   # None: train live
    ...
    cached = plan.train_batches(epoch, batch_size, seed) if plan else None
    loader, forward = cached or (live_loader, model)

``train_batches`` returns ``(batches, TopModel)`` while every group below the
boundary is still frozen and their weights are unchanged, and None (for good:
the cache is dropped) once that stops being true, for example after
``GradualUnfreezing`` unfroze a group below the boundary. So a run never
trains on stale activations. Validity is checked at these calls, so freezing
changes belong between epochs (callbacks' ``on_epoch_begin``, the widgets'
queue), as everywhere in tlkit. The activations are computed at the first
epoch that asks for them, after that epoch's callbacks have changed the
freezing, and kept on disk for the next run.

Example:
    >>> freeze_to(model, -3)
    >>> p = plan(model, train, val, epochs=5, views=2)
    >>> batches, top = p.train_batches(epoch=1, batch_size=32, seed=1)
    >>> top(next(iter(batches))[0]).shape
    torch.Size([32, 2])
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from tlkit.boundary.cache import (STORE_DTYPES, Activations, Batches, TopModel, bottom_fingerprint, bottom_forward,
                                  boundary_for, extract_activations)

log = logging.getLogger(__name__)
MODES = (True, False, "auto")


class BoundaryPlan:
    """Cached activations at ``boundary`` for the training (``views`` views) and validation data.

    Build it with :func:`plan`. ``options`` go to :func:`extract_activations`.
    """

    def __init__(self, model: nn.Module, boundary: str, train_data, val_data=None, views: int = 1, **options):
        self.model, self.boundary, self.views = model, boundary, views
        self.data = {"train": train_data, "val": val_data}
        self.options = options
        self.top = TopModel(model, boundary)
        self._acts: dict[str, Activations] = {}
        self._fingerprint: str | None = None
        self.dropped: str | None = None  # why the cache was dropped, once it is

    def train_batches(self, epoch: int, batch_size: int, seed: int,
                      drop_last: bool = False) -> tuple[Batches, TopModel] | None:
        """This epoch's shuffled batches (``make_loader(shuffle=True, seed=seed)``'s order) and the top model,
        or None when the cache is not valid (any more): then run the model live."""
        acts = self._get("train", epoch)
        return None if acts is None else (acts.batches(batch_size, True, seed, drop_last), self.top)

    def val_batches(self, batch_size: int) -> tuple[Batches, TopModel] | None:
        """Validation batches in file order and the top model, or None (no validation data, or not valid)."""
        acts = self._get("val", None) if self.data["val"] is not None else None
        return None if acts is None else (acts.batches(batch_size), self.top)

    def _get(self, split: str, epoch: int | None) -> Activations | None:
        if self.dropped or not self._still_valid(epoch):
            return None
        if split not in self._acts:
            views = self.views if split == "train" else 1
            self._acts[split] = extract_activations(self.model, self.data[split], self.boundary, views=views,
                                                    **self.options)
            log.info("activations at %s for %s data: %s", self.boundary, split,
                     "from the cache" if self._acts[split].from_cache else f"{self._acts[split].seconds:.1f} s")
        return self._acts[split]

    def _still_valid(self, epoch: int | None) -> bool:
        """Every group below the boundary frozen (BN policy not "train") and their weights unchanged."""
        current = boundary_for(self.model)
        names = list(self.model.groups.keys())
        why = None
        if current is None or names.index(current) < names.index(self.boundary):
            why = "a group below the boundary was unfrozen (or frozen BatchNorm now updates its statistics)"
        else:
            fp = bottom_fingerprint(self.model, self.boundary)
            if self._fingerprint is None:
                self._fingerprint = fp
            elif fp != self._fingerprint:
                why = "the weights below the boundary changed"
        if why:
            self.drop(why if epoch is None else f"{why} before epoch {epoch}")
        return why is None

    def drop(self, reason: str) -> None:
        """Forgets the activations (frees their memory); every later call returns None."""
        self.dropped, self._acts = reason, {}
        log.info("activation cache at %s dropped: %s; the groups below it run live from now on.",
                 self.boundary, reason)


def plan(model: nn.Module, train_data, val_data=None, mode: bool | str | dict = "auto", epochs: int | None = None,
         views: int | None = 2, eval_transform: Callable | None = None, seed: int = 0,
         device: str | torch.device | None = None, check: Callable[[], None] | None = None,
         **options) -> BoundaryPlan | None:
    """A :class:`BoundaryPlan` when training can run on cached activations, else None.

    Args:
        mode: True, False, ``"auto"``, or a dict of keywords for this function
            (means True). ``"auto"`` caches only when it pays: at least
            ``max(views, 2)`` epochs to run (each view costs about one epoch's
            frozen forward pass once; a live epoch costs it every time).
        epochs: the epochs still to run (for ``"auto"``).
        views: augmented views per photo (K). 0 or None: no augmentation, one
            view with ``eval_transform`` (or the data's own transform if None).
        seed: draws the augmented views.
        check: called every batch while extracting (a stop button).
        options: ``cache_dir``, ``precision``, ``dtype``, ``batch_size``,
            ``num_workers``, ``progress`` of :func:`extract_activations`.

    Returns None when ``mode`` is False, nothing trainable sits above a frozen
    bottom (:func:`boundary_for`), the data are not an ``ImageDataset``, or the
    model is not an image model (``model.input_kind``).

    Example:
        >>> freeze_to(model, -3)
        >>> plan(model, train, val, epochs=5).boundary
        'stage7'
    """
    if isinstance(mode, dict):
        return plan(model, train_data, val_data, True, epochs, **{"views": views, "eval_transform": eval_transform,
                                                                   "seed": seed, "device": device, "check": check,
                                                                   **options, **mode})
    if mode not in MODES:
        raise ValueError(f"cache_boundary must be True, False, 'auto' or a dict of options, got {mode!r}.")
    boundary = boundary_for(model)
    if not mode or boundary is None or not all(hasattr(d, "files") for d in (train_data, val_data) if d is not None):
        return None
    if getattr(model, "input_kind", "image") != "image":  # sized and augmented for image batches
        return None
    k = int(views or 0)
    if mode == "auto" and (epochs or 0) < max(k, 2):
        log.info("not caching activations at %s: %s epoch(s) do not pay for %d view(s)", boundary, epochs, k)
        return None
    if k < 1 and eval_transform is not None:
        train_data = train_data.with_transform(eval_transform)
    return BoundaryPlan(model, boundary, train_data, val_data, views=max(k, 1), seed=seed, device=device,
                        check=check, **options)


def plan_for_training(model: nn.Module, train_data, val_data, config, device: torch.device, dist,
                      epochs_left: int, own_transform: bool, check: Callable[[], None] | None = None
                      ) -> BoundaryPlan | None:
    """The plan :class:`tlkit.train.Trainer` follows, from its ``TrainConfig`` (``cache_boundary`` and friends).

    Two augmented views per photo (one, with the eval transform, for ``augment="none"``); the bottom
    runs in the inference precision when ``amp`` is on, else fp32. None under torchrun (each rank
    would cache only its own shard) and whenever :func:`plan` says so.

    Example:
        >>> plan_for_training(model, train, val, TrainConfig(epochs=5), torch.device("cpu"), ctx, 5, True)
    """
    if dist.enabled:
        return None
    views = 0 if config.augment == "none" else 2
    eval_tf = None
    if own_transform:  # the trainer chose the transforms, so it can choose the eval one too
        from tlkit.data import transforms_for  # lazy: data imports nothing from here, keep it that way
        eval_tf = transforms_for(model, image_size=config.image_size)
    return plan(model, train_data, val_data, config.cache_boundary, epochs=epochs_left, views=views,
                eval_transform=eval_tf, device=device, check=check,  # views: seed 0, so runs share them
                precision="auto" if config.amp else "fp32", num_workers=config.num_workers,
                progress=config.progress and dist.is_main)


def activation_bytes(model: nn.Module, boundary: str, image_size: int, images: int, views: int = 1,
                     dtype: str = "fp16") -> int:
    """Bytes the cache of ``images`` photos at ``boundary`` takes, in memory and on disk (one tiny forward pass).

    Example:
        >>> activation_bytes(load_backbone("efficientnet_lite0"), "stage7", 224, 2000, views=2) / 2**20
        71.77734375
    """
    was = model.training
    with torch.no_grad():
        shape = bottom_forward(model.eval(), boundary, torch.zeros(1, 3, image_size, image_size)).shape[1:]
    model.train(was)
    return shape.numel() * images * views * STORE_DTYPES[dtype].itemsize
