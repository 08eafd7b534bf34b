"""Feature extraction: run the frozen backbone once, keep the result on disk.

With the backbone frozen, its output for an image never changes, so there is
no reason to compute it every epoch. ``extract_features`` runs the body once
per (backbone weights, transform, file list) and caches the pooled vectors;
``train_head`` then trains a new classifier on them in well under a second.
Where and under which key the vectors are kept is :mod:`tlkit.feature_cache`.

Example:
    >>> feats = extract_features(model, val.with_transform(transforms_for(model)))
    >>> feats.features.shape            # (N, num_features)
    torch.Size([1000, 1280])
    >>> head, history = train_head(train_feats, val_feats, epochs=30)
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlkit import distributed
from tlkit.data import ImageDataset
from tlkit.device import default_batch_size, inference_precision, pick_device, trim_heap
from tlkit.engine import ORT_TAG
from tlkit.engine_choice import plan_engine
from tlkit.engine_int8 import plan_int8
from tlkit.feature_cache import body_fingerprint, cache_file, cache_key, default_cache_dir, load_cache, save_cache
from tlkit.guard import NON_FINITE_LOSS, NON_FINITE_WEIGHTS, first_non_finite
from tlkit.heads import make_head
from tlkit.history import History
from tlkit.inference import run_inference
from tlkit.meter import NonFiniteLossError
from tlkit.modes import eval_mode


@dataclass
class Features:
    """Pooled features ``(N, F)`` float32, labels ``(N,)``, and the files they came from."""

    features: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    classes: list[str]
    seconds: float = 0.0
    from_cache: bool = False
    engine: str = "torch"  # what computed them: "torch" or "onnxruntime"
    precision: str = ""  # what they were computed in: "fp32", "bf16", "fp16" or "int8"
    load_seconds: float = 0.0  # of ``seconds``: waiting for decoded images (0 for a cache hit)
    forward_seconds: float = 0.0  # of ``seconds``: the forward pass
    decode_seconds: float = 0.0  # decoding the images (on ONNX Runtime, in a thread during the forward pass)

    def __len__(self) -> int:
        return len(self.labels)


def extract_features(model: nn.Module, dataset: ImageDataset, batch_size: int | None = None,
                     device: str | torch.device | None = None, cache: bool = True,
                     cache_dir: str | os.PathLike | None = None, progress: bool = True,
                     num_workers: int | None = None, precision: str = "auto", engine: str = "auto",
                     calibration: ImageDataset | None = None) -> Features:
    """Pooled backbone features for every readable image of ``dataset``.

    Runs without gradients, with the model in eval mode, channels_last,
    BatchNorm folded into the convolutions (:mod:`tlkit.fold`), and in the
    precision :func:`tlkit.device.inference_precision` picks (``"auto"``: bf16
    on CUDA and on CPUs with native bf16, else fp32). ``batch_size`` None
    means 16 on a CPU (faster than larger batches there) and 128 on a GPU.
    Features are returned as float32. ``engine``: ``"auto"`` runs the body
    with ONNX Runtime (fp32) on a CPU where it is installed, matches PyTorch
    and is faster here, else PyTorch; ``"torch"`` or ``"onnxruntime"`` force
    one (:mod:`tlkit.engine`; ``TLKIT_ENGINE`` overrides). The cache key
    includes the engine, so the two engines' features never mix. Under torchrun: PyTorch.
    ``precision="int8"`` runs a static int8 copy of the ONNX graph, calibrated on
    ``calibration`` (training images; :mod:`tlkit.engine_int8`); ``"auto"`` picks
    int8 only where :func:`tlkit.int8_check.check_int8` showed it keeps the head's
    validation accuracy within fp32's interval. Its key differs from fp32's.
    With ``cache=True`` the result is stored under
    ``cache_dir`` and reused while the backbone, transform and files are
    unchanged. A damaged cache file is detected and rebuilt. Under torchrun
    each rank extracts every ``world_size``-th image, every rank gets all
    rows in file order, and rank 0 alone reads and writes the cache.

    Example:
        >>> f = extract_features(model, train.with_transform(transforms_for(model)))
        >>> f.features.shape, f.from_cache
        (torch.Size([2000, 1280]), False)
    """
    if dataset.transform is None:
        raise ValueError("The dataset has no transform. Use dataset.with_transform(transforms_for(model)).")
    ctx = distributed.context()  # under torchrun: each rank extracts every world_size-th image
    path = None
    dev = pick_device(device)
    folder = Path(cache_dir or default_cache_dir())
    engine, runner, tag, precision = _plan(model, dataset, engine, precision, calibration, dev, folder, ctx)
    shown = "int8" if tag.startswith("onnxruntime-int8") else "fp32" if tag == ORT_TAG else precision  # what ran
    if cache:
        key = cache_key(model, dataset, tag)
        path = cache_file(folder, model, key)
        hit = ctx.broadcast_object(load_cache(path, key) if ctx.is_main else None)  # rank 0 decides
        if hit == "unusable":  # damaged and cannot be removed (read-only folder): compute without the cache
            path = None
        elif hit is not None:
            return Features(*hit, classes=dataset.classes, from_cache=True, engine=engine, precision=shown)
    out = _extract(model, dataset, ctx, batch_size or default_batch_size(dev), dev, progress and ctx.is_main,
                   num_workers, precision, runner)
    out.precision = shown
    if path is not None and ctx.is_main:
        save_cache(path, key, out.features, out.labels, out.files)
    trim_heap()  # the batches' activations, kept by the allocator otherwise (no cycles: gc.collect would
    # cost 0.12 s per call here and free nothing)
    return out


def _plan(model: nn.Module, dataset: ImageDataset, engine: str, precision: str, calibration: ImageDataset | None,
          device: torch.device, folder: Path, ctx: distributed.DistContext) -> tuple[str, object, str, str]:
    """``(engine, ORT runner or None, the cache key's precision tag, PyTorch's precision)`` of the pass."""
    if ctx.world_size > 1:  # every rank must run the same engine, and "auto" decides per process: PyTorch
        if precision == "int8":
            warnings.warn("precision='int8' runs on ONNX Runtime in one process; under torchrun the "
                          "features are computed in PyTorch.", stacklevel=3)
        precision = inference_precision(device, "auto" if precision == "int8" else precision)
        return "torch", None, precision, precision
    fingerprint = body_fingerprint(model)
    int8 = plan_int8(engine, precision, model, dataset, calibration, fingerprint, device, folder)
    if int8 is not None:
        return "onnxruntime", int8[0], int8[1], "fp32"
    precision = inference_precision(device, "auto" if precision == "int8" else precision)  # "auto": this machine's
    engine, runner = plan_engine(engine, model, "head", dataset, fingerprint, precision, device, folder)
    return engine, runner, ORT_TAG if runner is not None else precision, precision  # the key names the engine


def _extract(model: nn.Module, dataset: ImageDataset, ctx: distributed.DistContext, batch_size: int,
             device: torch.device, progress: bool, num_workers: int | None, precision: str,
             runner=None) -> Features:
    """Runs the body on this rank's share of ``dataset``; every rank gets all rows, in file order.

    ``runner``: an :class:`tlkit.engine.OrtRunner` for the body, or None for PyTorch.
    """
    start = time.perf_counter()
    shard = distributed.shard_dataset(dataset, ctx)  # the whole dataset in one process
    forward = runner if runner is not None else model.forward_pooled
    timing: dict = {}
    feats, labels, files = run_inference(model, shard, forward, model.num_features, batch_size, device,
                                         "fp32" if runner is not None else precision, progress, num_workers,
                                         desc="extracting features of", timing=timing,
                                         engine="onnxruntime" if runner is not None else "torch")
    feats, labels, files = distributed.gather_rows(ctx, dataset, files, feats, labels)
    return Features(feats, labels, files, dataset.classes, seconds=time.perf_counter() - start,
                    engine="onnxruntime" if runner is not None else "torch", **timing)


def train_head(train: Features, val: Features | None = None, epochs: int = 30, lr: float = 1e-3,
               batch_size: int = 64, weight_decay: float = 0.0, hidden: tuple[int, ...] = (),
               dropout: float = 0.0, seed: int = 0, stop=None) -> tuple[nn.Sequential, History]:
    """Trains a fresh head on cached features (Adam, CPU). Well under a second for 2,000 images.

    Returns ``(head, history)``; the head is the one from the epoch with the
    best validation accuracy (or the last epoch without validation data).
    ``stop`` is an optional ``threading.Event`` checked every epoch.
    Training stops at the first non-finite loss or weight (one RuntimeWarning
    suggesting a lower ``lr``) and on Ctrl-C; either way the head keeps the
    best finite epoch's weights (the starting ones if no epoch finished) and
    ``history.stop_reason`` says why.

    Example:
        >>> head, hist = train_head(train_feats, val_feats, epochs=30, lr=1e-3)
        >>> hist.best("val_acc")["val_acc"] > 0.95
        True
    """
    if len(train) == 0:
        raise ValueError("No training features: every image was skipped or the dataset is empty.")
    _check_head_options(epochs, lr, batch_size)
    # Local generators, never torch's global one (train_head runs in widget threads too):
    # one for the batch order, one for the initial weights and then the dropout masks.
    gen = torch.Generator().manual_seed(seed)
    init = torch.Generator().manual_seed(seed)
    head = make_head(train.features.shape[1], len(train.classes), hidden=hidden, dropout=dropout, generator=init)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    history, best_acc, best_epoch = History(), -1.0, 0
    best = {k: v.clone() for k, v in head.state_dict().items()}  # no finite epoch yet: the starting weights
    history.stop_reason = None
    try:
        for epoch in range(1, epochs + 1):
            row = _head_epoch(head, opt, train, val, batch_size, (gen, init), epoch, lr)  # NonFiniteLossError
            history.append(**row)
            score = row.get("val_acc", epoch)
            if score > best_acc:
                best_acc, best_epoch = score, epoch
                best = {k: v.clone() for k, v in head.state_dict().items()}
            if stop is not None and stop.is_set():
                history.stop_reason = "stop_event was set"
                break
    except NonFiniteLossError as exc:
        history.stop_reason = exc.reason
        warnings.warn(f"Head training stopped in epoch {len(history) + 1}: {exc}. The learning rate lr={lr:g} "
                      f"is too high; try a lower one (e.g. lr={lr / 100:.0e}). The head keeps the weights of "
                      f"epoch {best_epoch} (0: the starting weights).",
                      RuntimeWarning, stacklevel=2)
    except KeyboardInterrupt:
        history.stop_reason = "interrupted (KeyboardInterrupt)"
    head.load_state_dict(best)
    return head.eval(), history


def _check_head_options(epochs: object, lr: object, batch_size: object) -> None:
    """ValueError naming the valid range for epochs, lr and batch_size."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a whole number of at least 1, got {epochs!r}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number above 0 (e.g. 1e-3), got {lr!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")


def _head_epoch(head: nn.Sequential, opt: torch.optim.Optimizer, train: Features, val: Features | None,
                batch_size: int, gens: tuple[torch.Generator, torch.Generator], epoch: int, lr: float) -> dict:
    """One shuffled pass over the training features, then validation: a History row.

    ``gens``: (batch order, dropout masks). Raises NonFiniteLossError before an update with a
    NaN/inf loss and after one that made a weight NaN/inf.
    """
    start = time.perf_counter()
    head.train()
    x, y = train.features, train.labels  # (N, F), (N,)
    perm = torch.randperm(len(y), generator=gens[0])
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        idx = perm[i:i + batch_size]
        logits = _train_forward(head, x[idx], gens[1])  # (B, C)
        loss = nn.functional.cross_entropy(logits, y[idx])
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(f"the loss became {loss.item()}", NON_FINITE_LOSS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        try:
            opt.step()
        except RuntimeError as exc:  # Adam: "value cannot be converted to type float without overflow"
            if "overflow" not in str(exc):
                raise
            raise NonFiniteLossError(f"the update overflowed ({exc})", NON_FINITE_WEIGHTS) from exc
        bad = first_non_finite(head)
        if bad is not None:  # the loss before this update was fine; the weights after it are not
            raise NonFiniteLossError(f"an update made the weight {bad} NaN or inf", NON_FINITE_WEIGHTS)
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == y[idx]).sum().item()
    row = {"epoch": epoch, "train_loss": loss_sum / len(y), "train_acc": correct / len(y), "lr": lr}
    if val is not None and len(val):
        row["val_loss"], row["val_acc"] = evaluate_head(head, val)
    row["seconds"] = time.perf_counter() - start
    return row


def _train_forward(head: nn.Sequential, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``head(x)`` in training mode, with dropout masks drawn from ``gen`` (nn.Dropout would use the global one)."""
    for layer in head:
        if isinstance(layer, nn.Dropout) and layer.p > 0:
            x = x * (torch.rand(x.shape, generator=gen) >= layer.p).to(x.dtype) / (1 - layer.p)
        else:
            x = layer(x)
    return x


@torch.no_grad()
def evaluate_head(head: nn.Module, feats: Features) -> tuple[float, float]:
    """(loss, accuracy) of ``head`` on cached features, in eval mode (its modes restored).

    Example:
        >>> evaluate_head(head, val_feats)
        (0.061, 0.981)
    """
    with eval_mode(head):
        logits = head(feats.features)  # (N, C)
    loss = nn.functional.cross_entropy(logits, feats.labels).item()
    acc = (logits.argmax(1) == feats.labels).float().mean().item()
    return loss, acc
