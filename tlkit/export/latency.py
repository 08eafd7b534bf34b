"""How fast is a model on this machine? One method for PyTorch eager and ONNX Runtime.

Every candidate runs the same random input at batch 1 and at a larger batch,
after a warm-up, and reports the median of repeated runs. PyTorch runs in
eval mode under ``torch.inference_mode`` in fp32; ONNX Runtime runs its CPU
provider with its default threads.

Example:
    >>> measure_latency(model, image_size=224).ms_per_image
    21.4
    >>> measure_latency("model.int8.onnx").images_per_s
    118.0
"""
from __future__ import annotations

import io
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tlkit.export.runtime import OnnxClassifier
from tlkit.device import release_memory


@dataclass
class Latency:
    """One row of the latency table."""

    name: str
    ms_per_image: float  # batch 1, median
    images_per_s: float  # batch ``batch``, median
    batch: int
    file_bytes: int
    parameters: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure_latency(model: nn.Module | str | os.PathLike, image_size: int | None = None, batch: int = 32,
                    warmup: int = 3, repeats: int = 10, name: str | None = None) -> Latency:
    """Median latency at batch 1 (ms/image) and throughput at ``batch`` (images/s), file size and parameters.

    ``model`` is a PyTorch module (measured eager, on the CPU, fp32; its file
    size is that of its ``state_dict``) or the path of an ``.onnx`` file
    (measured with ONNX Runtime; size and parameters from the file).

    Example:
        >>> row = measure_latency("model.onnx")
        >>> row.ms_per_image, row.images_per_s, row.file_bytes
        (9.8, 151.0, 13_400_000)
    """
    if warmup < 0 or repeats < 1 or batch < 1:
        raise ValueError(f"Need warmup >= 0, repeats >= 1 and batch >= 1; got {warmup}, {repeats}, {batch}.")
    if isinstance(model, (str, os.PathLike)):
        runner = OnnxClassifier(model, arena=False)  # a batch's activations are freed after each run
        size = int(image_size or runner.input_size)
        call = runner.run
        file_bytes, params = Path(model).stat().st_size, int(runner.metadata.get("parameters", 0))
        label = name or f"ONNX Runtime {runner.metadata.get('precision', 'fp32')}"
        make = lambda n: torch.randn(n, 3, size, size).numpy()  # noqa: E731
    else:
        size = int(image_size or model.input_size)
        call, file_bytes = _eager(model), _state_dict_bytes(model)
        params, label = sum(p.numel() for p in model.parameters()), name or "PyTorch eager fp32"
        make = lambda n: torch.randn(n, 3, size, size)  # noqa: E731
        was, device = model.training, next(model.parameters()).device
        model.eval().cpu()
    try:
        one = _median_seconds(call, make(1), warmup, repeats)
        many = _median_seconds(call, make(batch), warmup, max(3, repeats // 3))
    finally:
        if isinstance(model, nn.Module):
            model.to(device).train(was)  # the caller's device and mode
        call = runner = None  # the session and its activations go before the next step (notebook 08: < 2 GB)
        release_memory()
    return Latency(label, round(one * 1e3, 2), round(batch / many, 1), batch, file_bytes, params)


def _eager(model: nn.Module) -> Callable:
    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return call


def _state_dict_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _median_seconds(call: Callable, x, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def format_latency_table(rows: list[Latency]) -> str:
    """A plain-text table, one row per candidate.

    Example:
        >>> print(format_latency_table([row_eager, row_fp32, row_int8]))
    """
    lines = [f"{'model':<22} {'ms/img (b1)':>11} {'img/s (b' + str(rows[0].batch) + ')':>12} "
             f"{'size MB':>8} {'params':>10}"] if rows else []
    for r in rows:
        lines.append(f"{r.name:<22} {r.ms_per_image:>11.2f} {r.images_per_s:>12.1f} "
                     f"{r.file_bytes / 1e6:>8.2f} {r.parameters:>10,}")
    return "\n".join(lines)
