"""The one inference loop: a forward pass without gradients over a whole dataset.

``extract_features`` (pooled vectors) and ``predict`` (probabilities) both run
it. Inside, the model is in eval mode on the device, in the fast memory layout
(channels_last), with every BatchNorm folded into its convolution
(:mod:`tlkit.fold`, exact), under the chosen precision. Unreadable images are
skipped with one warning, and the model's train/eval modes come back
afterwards.

Example:
    >>> outputs, labels, files = run_inference(model, val, model.forward_pooled, width=model.num_features)
    >>> outputs.shape                   # (N, F) float32 on the CPU
    torch.Size([1000, 1280])
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterable, Iterator, TypeVar

import torch
from torch import nn

from tlkit.data import ImageDataset
from tlkit.device import inference_autocast, memory_format, releasing_memory, to_device
from tlkit.fold import fold_frozen_batchnorm
from tlkit.images import warn_skipped
from tlkit.loaders import make_loader, prefetched, with_files
from tlkit.modes import eval_mode

T = TypeVar("T")


@contextlib.contextmanager
def ready_for_inference(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Eval mode on ``device``, channels_last where faster, every BatchNorm folded into its conv.

    The model stays on ``device`` afterwards; its train/eval modes come back.

    Example:
        >>> with ready_for_inference(model, torch.device("cpu")), torch.no_grad():
        ...     logits = model(x)
    """
    with eval_mode(model):
        model.to(device, memory_format=memory_format(device))
        with fold_frozen_batchnorm(model):  # eval mode: every BatchNorm folds into its conv
            yield model


@torch.no_grad()  # not inference_mode: .to(memory_format) in it would turn the weights into inference tensors
def run_inference(model: nn.Module, dataset: ImageDataset, forward: Callable[[torch.Tensor], torch.Tensor],
                  width: int, batch_size: int, device: torch.device, precision: str = "auto",
                  progress: bool = False, num_workers: int | None = None, desc: str = "running",
                  timing: dict | None = None, engine: str = "torch") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``forward`` over every readable image of ``dataset``, in file order.

    Args:
        model: the network ``forward`` uses; prepared with :func:`ready_for_inference`.
        dataset: images with their transform.
        forward: images ``(B, 3, H, W)`` -> rows ``(B, width)``, e.g. ``model.forward_pooled``.
        width: columns of the output, for the shape of an empty result.
        batch_size, device, num_workers: how to load and where to run.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see
            :func:`tlkit.device.inference_precision`).
        progress: show a tqdm bar labelled ``desc`` (a verb, e.g. "predicting"), which
            also names the pass in the warning about skipped images.
        timing: a dict that receives where the time went: ``load_seconds`` (waiting
            for decoded batches), ``forward_seconds`` (the rest: the forward pass and
            its copies) and ``decode_seconds`` (making the batches; with the decoding thread
            this overlaps the other two).
        engine: what ``forward`` runs on. ``"onnxruntime"``: batches reach it as decoded
            (NCHW, not copied to channels_last, which ONNX Runtime would copy back) and, without
            DataLoader workers, the next batches decode in a thread during the forward pass
            (:func:`tlkit.loaders.prefetched`). The thread pays where the forward pass leaves
            the cores room: on 2 cores, ONNX Runtime's int8 pass over the 3,000 course photos
            took 10.9 s instead of 13.4 s (fp32: 18.5-19.4 s either way), while PyTorch's took
            30-36 s instead of 25-28 s (its threads and the decoder's fight for the cores), so
            ``"torch"`` decodes in the loop.

    Returns:
        ``(outputs (N, width) float32 on the CPU, labels (N,), files kept)``.

    Example:
        >>> probs, labels, files = run_inference(model, val, lambda x: model(x).softmax(1), width=2,
        ...                                      batch_size=16, device=torch.device("cpu"))
    """
    if engine not in ("torch", "onnxruntime"):
        raise ValueError(f"engine must be 'torch' or 'onnxruntime', got {engine!r}.")
    from tqdm.auto import tqdm

    outputs, labels, kept, skipped = [], [], [], []
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers,
                         pin_memory=device.type == "cuda")
    bar = tqdm(total=len(dataset), desc=f"{desc} {dataset.name}", unit="img", disable=not progress)
    timing = {} if timing is None else timing
    timing["load_seconds"], timing["decode_seconds"], start = 0.0, 0.0, time.perf_counter()
    batches = releasing_memory(loader, device)  # freed memory back to the OS (Binder has 2 GB)
    threaded = engine == "onnxruntime" and loader.num_workers == 0
    if threaded:  # a thread decodes the next batches during this one's forward pass
        batches = prefetched(batches, timing=timing)
    with ready_for_inference(model, device):
        for x, y, batch_kept, dropped in with_files(timed(batches, timing), dataset.files):
            kept += batch_kept
            skipped += dropped
            if len(y):
                with inference_autocast(device, precision):
                    x = x if engine == "onnxruntime" else to_device(x, device)  # ORT reads NCHW
                    outputs.append(forward(x).float().cpu())  # (B, width)
                labels.append(y)
            bar.update(len(batch_kept) + len(dropped))
    bar.close()
    timing["forward_seconds"] = time.perf_counter() - start - timing["load_seconds"]
    if not threaded:  # decoding is what the loop waited for (in worker processes, if any)
        timing["decode_seconds"] = timing["load_seconds"]
    warn_skipped(skipped, where=f" while {desc} {dataset.name}")
    return (torch.cat(outputs) if outputs else torch.empty(0, width),
            torch.cat(labels) if labels else torch.empty(0, dtype=torch.long), kept)


def timed(batches: Iterable[T], timing: dict) -> Iterator[T]:
    """Yields from ``batches``, adding the seconds spent waiting for each to ``timing["load_seconds"]``.

    Example:
        >>> timing = {"load_seconds": 0.0}
        >>> for x, y, dropped in timed(make_loader(val), timing): ...
    """
    it = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        timing["load_seconds"] = timing.get("load_seconds", 0.0) + time.perf_counter() - start
        yield item
