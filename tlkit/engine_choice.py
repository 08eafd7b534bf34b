"""Which engine ``engine="auto"`` picks for the frozen pass here: PyTorch or ONNX Runtime.

:func:`plan_engine` is what ``extract_features``, ``extract_activations`` and
``predict`` call. ``"auto"`` uses ONNX Runtime when it is installed, the device is a
CPU, the exported graph passes the parity check (:func:`tlkit.engine.frozen_graph`)
and a one-time timing on this machine (:func:`choose_engine`) shows it faster than
PyTorch's pass (bf16 or fp32, BatchNorm folded, channels_last). The decision is kept in
``engine-choice.json`` in the cache folder, keyed by backbone, boundary, input size,
precision, ONNX Runtime and torch versions, and the CPU (:func:`decision_key`).
Delete the file to time again (for example after timing on a busy machine).

Example:
    >>> plan_engine("auto", model, "head", val, body_fingerprint(model), "bf16", torch.device("cpu"), cache_dir)
    ('onnxruntime', <tlkit.engine.OrtRunner ...>)
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from tlkit.data import ImageDataset
from tlkit.device import inference_autocast, to_device
from tlkit.engine import OrtRunner, _read_json, _Sample, atomic_write_text, frozen_forward, frozen_graph, resolve_engine
from tlkit.inference import ready_for_inference

log = logging.getLogger(__name__)
DECISIONS = "engine-choice.json"


def plan_engine(engine: str, model: nn.Module, upto: str, dataset: ImageDataset, fingerprint: str, precision: str,
                device: torch.device, cache_dir: Path) -> tuple[str, "OrtRunner | None"]:
    """The engine of the frozen pass and, for ONNX Runtime, its runner: ``("torch", None)`` or ``("onnxruntime", r)``.

    ``"auto"`` and ``"onnxruntime"`` export the frozen part once (:func:`frozen_graph`)
    and fall back to PyTorch, with one warning, when it fails the parity
    check; ``"auto"`` also asks :func:`choose_engine` whether it is faster here.

    Example:
        >>> plan_engine("auto", model, "head", val, body_fingerprint(model), "bf16", torch.device("cpu"), cache)
        ('onnxruntime', <tlkit.engine.OrtRunner ...>)
    """
    engine = resolve_engine(engine, device)
    if engine == "torch" or not (hasattr(model, "forward_pooled") or hasattr(model, "groups")) \
            or getattr(model, "input_kind", "image") != "image":  # the graph is exported for image batches
        return "torch", None
    sample = _Sample(dataset)
    size = sample.size()
    if engine == "auto" and _read_json(Path(cache_dir) / DECISIONS).get(
            decision_key(model, upto, size, precision), {}).get("engine") == "torch":  # known slower here
        return "torch", None
    runner = frozen_graph(model, upto, sample, fingerprint, cache_dir)
    if runner is None:
        return "torch", None
    if engine == "auto" and choose_engine(model, upto, sample, runner, precision, cache_dir) == "torch":
        return "torch", None
    return "onnxruntime", runner


def choose_engine(model: nn.Module, upto: str, sample: "_Sample", runner: OrtRunner, precision: str,
                  cache_dir: Path) -> str:
    """``"onnxruntime"`` or ``"torch"``, whichever is faster here, timed once and stored.

    Times PyTorch's pass (in ``precision``, BatchNorm folded, channels_last)
    and ONNX Runtime's on the same real images; the result goes to
    ``engine-choice.json`` in ``cache_dir`` under :func:`decision_key`.

    Example:
        >>> choose_engine(model, "head", _Sample(val), runner, "bf16", cache_dir)
        'onnxruntime'
    """
    store = Path(cache_dir) / DECISIONS
    key = decision_key(model, upto, sample.size(), precision)
    known = _read_json(store)
    if key in known:
        return known[key]["engine"]
    x = sample.images()
    t_torch, t_ort = _time_torch(model, upto, x, precision), _time(runner, x)
    choice = "onnxruntime" if t_ort < t_torch else "torch"
    known[key] = {"engine": choice, "torch_img_s": round(len(x) / t_torch, 1), "ort_img_s": round(len(x) / t_ort, 1)}
    try:
        atomic_write_text(store, json.dumps(known, indent=1))
    except OSError as exc:
        warnings.warn(f"Could not store the engine decision in {store} ({exc}).", stacklevel=3)
    if choice == "torch":
        warnings.warn(f"ONNX Runtime is slower than PyTorch here ({known[key]['ort_img_s']} vs "
                      f"{known[key]['torch_img_s']} img/s): the frozen pass runs in PyTorch.", stacklevel=3)
    log.info("engine for %s: %s", key, known[key])
    return choice


def decision_key(model: nn.Module, upto: str, size: int, precision: str) -> str:
    """Backbone, boundary, size, precision, ORT and torch versions, CPU model and core count."""
    ort = importlib.import_module("onnxruntime")
    return (f"{model.name}|{upto}|{size}px|{precision}|ort {ort.__version__}|torch {torch.__version__}|"
            f"{_cpu_name()}|{os.cpu_count()} cores")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@torch.no_grad()
def _time_torch(model: nn.Module, upto: str, x: torch.Tensor, precision: str) -> float:
    cpu = torch.device("cpu")
    with ready_for_inference(model, cpu), inference_autocast(cpu, precision):
        return _time(lambda b: frozen_forward(model, upto, to_device(b, cpu)), x)


def _time(fn, x: torch.Tensor, repeats: int = 2) -> float:
    """Best of ``repeats`` timed calls after one warm-up call, in seconds."""
    fn(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best
