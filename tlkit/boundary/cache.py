"""Activations cached at a freeze boundary: partial fine-tuning runs only the groups above it.

When every layer group below some group (the *boundary*) is frozen, the bottom
of the network is a fixed function (frozen groups stay in eval mode, see
:mod:`tlkit.freezing`), so its output for a photo is the same every epoch.
``extract_activations`` runs the bottom once per (weights below the boundary,
transform, file list, boundary, views) and keeps the activations on disk in
fp16; :class:`TopModel` runs the groups from the boundary up on them, with the
very parameters of the full model, so training it trains the real model.

Augmentation: ``views=K`` caches K augmented versions of every photo, and each
epoch shows every photo one of them, drawn at random. Fresh augmentation would
show a new crop every epoch; with K views the network sees at most K different
crops of a photo over the whole run (see docs/API.md).

The trainer uses this through :func:`plan` (``fit(..., cache_boundary="auto")``).

Example:
    >>> freeze_to(model, -3)                     # stage7, stage8 and the head train
    >>> acts = extract_activations(model, train.with_transform(tf), upto="stage7")
    >>> acts.activations.shape                   # (views, N, C, h, w)
    torch.Size([1, 2000, 192, 7, 7])
    >>> logits = TopModel(model, "stage7")(acts.activations[0, :8].float())
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlkit.data import ImageDataset
from tlkit.device import (default_batch_size, inference_autocast, inference_precision, pick_device,
                          releasing_memory, to_device)
from tlkit.engine import ORT_TAG
from tlkit.engine_choice import plan_engine
from tlkit.feature_cache import default_cache_dir
from tlkit.images import DECODE_VERSION, warn_skipped
from tlkit.inference import ready_for_inference
from tlkit.loaders import make_loader, with_files
from tlkit.storage import atomic_save, hash_file_stamps, safe_load

log = logging.getLogger(__name__)
ACTIVATION_VERSION = 1
STORE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Activations:
    """``activations`` ``(views, N, ...)`` at ``boundary``, labels ``(N,)``, the files they came from."""

    activations: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    boundary: str
    seconds: float = 0.0
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def views(self) -> int:
        return self.activations.shape[0]

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False) -> "Batches":
        """``(x float32 (B, ...), y (B,), [])`` batches, like the trainer's loaders yield.

        ``shuffle``: the order ``make_loader(shuffle=True, seed=seed)`` gives
        (same permutation), and each photo shows one of its views, drawn with ``seed``.
        """
        n = len(self)
        gen = torch.Generator().manual_seed(seed)
        torch.empty((), dtype=torch.int64).random_(generator=gen)  # a DataLoader draws its base seed first
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)  # then RandomSampler's order
        view = torch.randint(self.views, (n,), generator=gen) if self.views > 1 else torch.zeros(n, dtype=torch.long)
        stop = n - n % batch_size if drop_last else n
        return Batches(self, [order[i:min(i + batch_size, stop)] for i in range(0, stop, batch_size)], view, drop_last)


class Batches:
    """An iterable of batches with a length, read from the cache one batch at a time (memory-mapped)."""

    def __init__(self, acts: Activations, index: list[torch.Tensor], view: torch.Tensor, drop_last: bool = False):
        self.acts, self.index, self.view = acts, index, view
        self.drop_last = drop_last  # as a DataLoader's: the trainer's progress bar reads it

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        for idx in self.index:
            yield self.acts.activations[self.view[idx], idx].float(), self.acts.labels[idx], []


def bottom_groups(model: nn.Module, boundary: str) -> list[str]:
    """Names of the groups below ``boundary`` (input side), checked against the model."""
    names = list(model.groups.keys())
    if boundary not in names or boundary == names[0]:
        raise ValueError(f"boundary must be one of {names[1:]} (activations are the input of that group), "
                         f"got {boundary!r}.")
    return names[:names.index(boundary)]


def boundary_for(model: nn.Module) -> str | None:
    """The first trainable group when every group below it is frozen, else None.

    None also when frozen groups update their BatchNorm statistics
    (``bn_policy="train"``): then the bottom is not a fixed function. A group
    counts as frozen when it is in ``model.frozen_groups`` and none of its
    parameters requires gradients.

    Example:
        >>> freeze_to(model, -3); boundary_for(model)
        'stage7'
    """
    if getattr(model, "bn_policy", "eval") == "train" or not hasattr(model, "groups"):
        return None
    for i, (name, group) in enumerate(model.groups.items()):
        # a parameter set trainable by hand (requires_grad) in a "frozen" group trains too: it ends the bottom
        if name not in model.frozen_groups or any(p.requires_grad for p in group.parameters()):
            return name if i > 0 else None
    return None  # everything is frozen: nothing to train


def bottom_fingerprint(model: nn.Module, boundary: str) -> str:
    """Hash of every tensor (weights and BatchNorm statistics) below ``boundary``."""
    h = hashlib.sha1()
    for g in bottom_groups(model, boundary):
        for name, t in model.groups[g].state_dict().items():
            h.update(f"{g}.{name}".encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def activation_key(model: nn.Module, dataset: ImageDataset, boundary: str, views: int = 1, seed: int = 0,
                   precision: str = "fp32", dtype: str = "fp16") -> str:
    """Key over the boundary, the weights below it, precision, views, transform, and each file's size and mtime."""
    h = hashlib.sha256()
    h.update(f"a{ACTIVATION_VERSION}|d{DECODE_VERSION}|{model.name}|{boundary}|{bottom_fingerprint(model, boundary)}|"
             f"{precision}|{dtype}|{views}|{seed}|{dataset.transform!r}".encode())
    hash_file_stamps(h, dataset.files, dataset.targets)
    return h.hexdigest()


def extract_activations(model: nn.Module, dataset: ImageDataset, upto: str, views: int = 1, seed: int = 0,
                        batch_size: int | None = None, device: str | torch.device | None = None,
                        cache: bool = True, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                        num_workers: int | None = None, precision: str = "auto", dtype: str = "fp16",
                        check=None, engine: str = "auto") -> Activations:
    """The output of the groups below ``upto`` for every readable image, ``views`` times.

    Each view is one pass with the dataset's transform (a random transform
    draws new crops each pass, seeded by ``seed + view``; the global RNG is
    left as it was). The bottom runs without gradients in eval mode with
    BatchNorm folded, in ``precision`` (see :func:`tlkit.device.inference_precision`),
    and is stored as ``dtype`` (``"fp16"``, ``"bf16"`` or ``"fp32"``). With
    ``cache=True`` the file is reused while the key (:func:`activation_key`)
    matches; a damaged file is rebuilt. ``check`` is called every batch (the
    trainer's stop button). For ``upto="head"`` the pooled features are stored.
    ``engine``: as for :func:`tlkit.features.extract_features` (ONNX Runtime
    on a CPU where it matches PyTorch and is faster; the key says which).

    Example:
        >>> acts = extract_activations(model, train.with_transform(tf), upto="stage7", views=2)
        >>> acts.views, acts.from_cache
        (2, False)
    """
    bottom_groups(model, upto)
    if dataset.transform is None:
        raise ValueError("The dataset has no transform. Use dataset.with_transform(transforms_for(model)).")
    if not isinstance(views, int) or views < 1 or dtype not in STORE_DTYPES:
        raise ValueError(f"views must be an int >= 1 and dtype one of {list(STORE_DTYPES)}; got {views!r}, {dtype!r}.")
    dev = pick_device(device)
    precision = inference_precision(dev, precision)
    folder, path, key = Path(cache_dir or default_cache_dir()), None, None
    engine, runner = plan_engine(engine, model, upto, dataset, bottom_fingerprint(model, upto), precision, dev, folder)
    if cache:
        key = activation_key(model, dataset, upto, views, seed, ORT_TAG if runner else precision, dtype)
        path = folder / f"{model.name}-{upto}-{key[:24]}.act.pt"
        hit = _load(path, key)
        if hit is not None:
            return hit
    start, acts = time.perf_counter(), None
    for v in range(views):
        a, labels, kept = _run_bottom(model, dataset, upto, v, seed, batch_size or default_batch_size(dev), dev,
                                      progress, num_workers, precision, STORE_DTYPES[dtype], check, runner)
        if acts is None:  # one buffer for all views: memory holds K views plus the one being computed
            acts, files = a.new_empty((views, *a.shape)), kept
        elif kept != files:
            raise RuntimeError("The images changed while their activations were being cached; run again.")
        acts[v] = a
        del a
    out = Activations(acts, labels, files, upto, seconds=time.perf_counter() - start)
    if path is not None:
        _save(path, key, out)
    return out


@torch.no_grad()
def _run_bottom(model, dataset, upto, view, seed, batch_size, device, progress, num_workers, precision, dtype,
                check, runner=None):
    """One pass of the groups below ``upto``: (activations (N, ...), labels (N,), kept files).

    ``runner``: an :class:`tlkit.engine.OrtRunner` of the bottom, or None for PyTorch.
    """
    from tqdm.auto import tqdm

    kept, skipped, chunks, labels = [], [], [], []
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, seed=seed + view,
                         pin_memory=device.type == "cuda")
    bar = tqdm(total=len(dataset), desc=f"activations at {upto}, view {view + 1}", unit="img", disable=not progress)
    with torch.random.fork_rng(devices=[]), ready_for_inference(model, device), bar:  # the training RNG stays untouched
        torch.manual_seed(seed + view)  # a random transform in this process draws the same crops every time
        for x, y, batch_kept, dropped in with_files(releasing_memory(loader, device), dataset.files):
            if check is not None:
                check()  # the trainer's stop button: raises
            kept += batch_kept
            skipped += dropped
            if len(y):
                if runner is not None:
                    a = runner(x)
                else:
                    with inference_autocast(device, precision):
                        a = bottom_forward(model, upto, to_device(x, device))
                chunks.append(a.to("cpu", dtype).contiguous())  # (B, C, h, w), or (B, F) below the head
                labels.append(y)
            bar.update(len(batch_kept) + len(dropped))
    warn_skipped(skipped, where=f" while caching activations of {dataset.name}")
    if not chunks:
        raise ValueError(f"No readable images in {dataset.name or 'the dataset'}: nothing to cache.")
    return torch.cat(chunks), torch.cat(labels), kept


def bottom_forward(model: nn.Module, boundary: str, x: torch.Tensor) -> torch.Tensor:
    """Runs the groups below ``boundary``; pools ``(B, F, h, w)`` to ``(B, F)`` when ``boundary`` is the head."""
    for g in bottom_groups(model, boundary):
        x = model.groups[g](x)
    return _pool(x) if boundary == "head" else x


def _pool(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1) if x.ndim == 4 else x


class TopModel(nn.Module):
    """The groups from ``boundary`` to the head, run on cached activations.

    Holds the full model as a submodule, so its parameters *are* the model's:
    training this trains the model, and ``train()``/``eval()`` apply the
    model's BatchNorm policy.

    Example:
        >>> top = TopModel(model, "stage7")
        >>> top(acts.activations[0, :4].float()).shape      # (4, num_classes)
        torch.Size([4, 2])
    """

    def __init__(self, model: nn.Module, boundary: str):
        super().__init__()
        below = bottom_groups(model, boundary)
        self.model, self.boundary = model, boundary
        self.names = [g for g in model.groups.keys() if g not in below]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for g in self.names:
            if g == "head":
                x = _pool(x)  # what Backbone.forward_pooled does after the last body group
            x = self.model.groups[g](x)
        return x


def _load(path: Path, key: str) -> Activations | None:
    if not path.exists():
        return None
    try:
        blob = safe_load(path, "activation cache", mmap=True)  # mmap: read pages as used
        acts = blob["activations"]
        ok = (blob.get("key") == key and acts.ndim >= 3 and acts.shape[1] == len(blob["labels"]) == len(blob["files"])
              and bool(torch.isfinite(acts).all()))
        if not ok:
            raise ValueError("key or shapes do not match")
    except Exception as exc:  # noqa: BLE001 - any damage means "rebuild"
        warnings.warn(f"Activation cache {path} is damaged ({type(exc).__name__}: {exc}); rebuilding it.",
                      stacklevel=3)
        path.unlink(missing_ok=True)
        return None
    log.info("activation cache hit: %s", path)
    return Activations(acts, blob["labels"], list(blob["files"]), blob["boundary"], from_cache=True)


def _save(path: Path, key: str, a: Activations) -> None:
    """Atomic: a temp file in the same folder, renamed into place; a half-written file never has the name."""
    try:
        atomic_save({"key": key, "activations": a.activations, "labels": a.labels, "files": a.files,
                     "boundary": a.boundary}, path)
    except OSError as exc:
        warnings.warn(f"Could not write the activation cache {path} ({exc}); continuing without it.", stacklevel=3)
