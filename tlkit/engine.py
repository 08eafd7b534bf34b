"""Which engine runs the frozen part of a network: PyTorch or ONNX Runtime.

The frozen pass (pooled features, or the activations at a freeze boundary)
is the same fixed function for every photo, so it can run in any engine that
computes the same numbers. On a CPU, ONNX Runtime is often faster than
PyTorch. ``engine="auto"`` (the default of ``extract_features``,
``extract_activations`` and ``predict``) uses it when

* ``onnxruntime`` is installed (an optional extra: ``pip install tlkit[export]``),
* the device is a CPU (on a GPU tlkit keeps PyTorch),
* the exported graph reproduces PyTorch's fp32 output on a few real images
  (:data:`PARITY_MIN_COSINE`, :data:`PARITY_REL_DIFF`), and
* a one-time timing on this machine shows it faster than PyTorch's pass
  (:mod:`tlkit.engine_choice`, which also holds :func:`plan_engine`, the entry point).

Otherwise it uses PyTorch and says why in one warning. ``TLKIT_ENGINE``
(``auto``, ``torch`` or ``onnxruntime``) overrides the argument.

The exported graph of the frozen part is cached in ``graphs/`` next to the
features, named by backbone, boundary, input size, precision and a
fingerprint of the weights it contains, so changed weights export again.
ONNX Runtime runs fp32; its features carry the precision tag
``"onnxruntime-fp32"`` in the feature cache key, so they never mix with
PyTorch's (which may be bf16).

Example:
    >>> runner = frozen_graph(model, "head", sample_images(val), body_fingerprint(model), cache_dir)
    >>> runner(torch.zeros(2, 3, 224, 224)).shape
    torch.Size([2, 1280])
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from tlkit.data import ImageDataset
from tlkit.device import trim_heap
from tlkit.env import env_choice
from tlkit.modes import eval_mode

log = logging.getLogger(__name__)
ENGINES = ("auto", "torch", "onnxruntime")
ORT_TAG = "onnxruntime-fp32"  # the precision tag of ONNX Runtime's rows in cache keys
PARITY_MIN_COSINE = 1 - 1e-5  # every row of ORT's output vs PyTorch fp32: cosine similarity at least this
PARITY_REL_DIFF = 1e-4  # and max |ort - torch| at most this times max |torch|
SAMPLE = 16  # real images for the one-time timing of the two engines
PARITY_SAMPLE = 8  # real images for the parity check (PyTorch's fp32 reference costs ~56 ms each on 2 cores)


def resolve_engine(engine: str, device: torch.device) -> str:
    """``TLKIT_ENGINE`` or ``engine``, checked: ``"torch"``, ``"onnxruntime"`` or ``"auto"`` (CPU only).

    ``"auto"`` becomes ``"torch"`` on a GPU and, with one warning, when
    onnxruntime is not installed. ``"onnxruntime"`` on a GPU raises ValueError.

    Example:
        >>> resolve_engine("auto", torch.device("cuda"))
        'torch'
    """
    engine = env_choice("TLKIT_ENGINE", ENGINES) or engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if engine != "torch" and device.type != "cpu":
        if engine == "onnxruntime":
            raise ValueError(f"engine='onnxruntime' runs on the CPU only, but the device is {device}. "
                             "Use engine='auto' or 'torch', or device='cpu'.")
        return "torch"
    if engine == "auto" and not ort_available():
        warnings.warn("onnxruntime is not installed: the frozen pass runs in PyTorch. "
                      "pip install tlkit[export] for a faster pass on the CPU.", stacklevel=3)
        return "torch"
    return engine


def ort_available() -> bool:
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True


def frozen_forward(model: nn.Module, upto: str, x: torch.Tensor) -> torch.Tensor:
    """The groups below ``upto``; pooled to ``(B, F)`` when ``upto`` is ``"head"`` (``forward_pooled``)."""
    if upto == "head" and hasattr(model, "forward_pooled"):
        return model.forward_pooled(x)
    for name, group in model.groups.items():
        if name == upto:
            break
        x = group(x)
    if upto == "head" and x.ndim == 4:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
    return x


class FrozenPart(nn.Module):
    """The frozen bottom of ``model`` as a module of its own (what is exported)."""

    def __init__(self, model: nn.Module, upto: str):
        super().__init__()
        self.model, self.upto = model, upto

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return frozen_forward(self.model, self.upto, x)


class OrtRunner:
    """Calls an exported frozen part with ONNX Runtime: images ``(B, 3, S, S)`` -> CPU tensor.

    The session opens on the first call, so a cache hit costs nothing.
    """

    def __init__(self, path: Path):
        self.path, self._session = path, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from tlkit.export.runtime import INPUT_NAME, open_session

        if self._session is None:
            self._session = open_session(self.path, spinning=False)  # the DataLoader's decoders need the cores
        arr = x.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self._session.run(None, {INPUT_NAME: arr})[0])


def sample_images(dataset: ImageDataset, n: int = SAMPLE) -> torch.Tensor:
    """The first ``n`` readable images of ``dataset`` with its transform, ``(n, 3, S, S)``."""
    xs = []
    with torch.random.fork_rng(devices=[]):  # a random transform must not move the training RNG
        for i in range(len(dataset)):
            x, _ = dataset[i]
            if x is not None:
                xs.append(x)
            if len(xs) == n:
                break
    if not xs:
        raise ValueError(f"No readable image in {dataset.name or 'the dataset'}.")
    return torch.stack(xs)


def graph_path(model: nn.Module, upto: str, size: int, fingerprint: str, cache_dir: Path) -> Path:
    """Where the exported frozen part lives: backbone, boundary, size, precision, weights."""
    return Path(cache_dir) / "graphs" / f"{model.name}-{upto}-{size}px-fp32-{fingerprint[:16]}.onnx"


class _Sample:
    """A few real images of a dataset, decoded only when needed (the image size needs one)."""

    def __init__(self, dataset: ImageDataset):
        self.dataset, self._x = dataset, None

    def size(self) -> int:
        return int((self._x if self._x is not None else sample_images(self.dataset, 1)).shape[-1])

    def images(self, n: int = SAMPLE) -> torch.Tensor:
        """The first ``n`` (at most :data:`SAMPLE`) readable images; the :data:`SAMPLE` are decoded once."""
        if self._x is None:
            self._x = sample_images(self.dataset)
        return self._x[:n]


def frozen_graph(model: nn.Module, upto: str, sample: "_Sample | torch.Tensor", fingerprint: str,
                 cache_dir: Path) -> OrtRunner | None:
    """An ONNX Runtime runner for the frozen part, exported once; None when it fails the parity check.

    ``sample``: real images ``(N, 3, S, S)`` for the parity check on first use.
    The graph and its parity record (a ``.json`` beside it) are reused while
    the weights and size match; a failed check is remembered too.

    Example:
        >>> frozen_graph(model, "head", sample_images(val), body_fingerprint(model), cache_dir)(x).shape
        torch.Size([16, 1280])
    """
    size = sample.size() if isinstance(sample, _Sample) else sample.shape[-1]
    path = graph_path(model, upto, size, fingerprint, cache_dir)
    record = path.with_suffix(".json")
    info = _read_json(record)
    if not (info.get("ok") and path.exists()) and not info.get("failed"):
        try:
            x = sample.images(PARITY_SAMPLE) if isinstance(sample, _Sample) else sample
            info = _export_and_check(model, upto, x, path)
        except Exception as exc:  # noqa: BLE001 - an op ONNX cannot express, a full disk: PyTorch still works
            info = {"ok": False, "failed": True, "why": f"export failed: {type(exc).__name__}: {exc}"[:300]}
        trim_heap()  # the exporter's and the parity check's memory, before the pass itself (no cycles to collect)
        try:
            atomic_write_text(record, json.dumps(info))
        except OSError as exc:
            warnings.warn(f"Could not record the ONNX graph's parity in {record} ({exc}).", stacklevel=3)
    if not info.get("ok"):
        warnings.warn(f"ONNX Runtime's output of {model.name} up to {upto} differs from PyTorch's "
                      f"({info.get('why', 'parity check failed')}); the frozen pass runs in PyTorch.", stacklevel=3)
        return None
    return OrtRunner(path)


def _export_and_check(model: nn.Module, upto: str, x: torch.Tensor, path: Path) -> dict:
    """Exports ``FrozenPart(model, upto)`` to ``path`` and compares ORT with PyTorch fp32 on ``x``."""
    from tlkit.export.onnx_file import _torch_export  # the export issue's exporter (classic, dynamo=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    start = time.perf_counter()
    try:
        with eval_mode(model), torch.no_grad():
            part = FrozenPart(model, upto).eval()
            _torch_export(part, tmp, x.shape[-1])
            ref = part.cpu()(x).float()
        got = OrtRunner(tmp)(x)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    info = parity(got, ref)
    info["export_seconds"] = round(time.perf_counter() - start, 2)
    log.info("exported %s (%s)", path, info)
    if not info["ok"]:
        path.unlink(missing_ok=True)
        info["failed"] = True
    return info


def parity(got: torch.Tensor, ref: torch.Tensor) -> dict:
    """``{"ok", "min_cosine", "max_abs_diff", "why"}`` of ``got`` against ``ref`` (same shape).

    Example:
        >>> parity(torch.ones(2, 4), torch.ones(2, 4))["ok"]
        True
    """
    a, b = got.flatten(1).double(), ref.flatten(1).double()
    if a.shape != b.shape:
        return {"ok": False, "why": f"shape {tuple(got.shape)} vs {tuple(ref.shape)}"}
    cos = float(nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12).min())
    diff, scale = float((a - b).abs().max()), float(b.abs().max())
    ok = bool(torch.isfinite(a).all()) and cos >= PARITY_MIN_COSINE and diff <= PARITY_REL_DIFF * max(scale, 1e-6)
    return {"ok": ok, "min_cosine": cos, "max_abs_diff": diff,
            "why": f"min cosine {cos:.7f} (>= {PARITY_MIN_COSINE}), max |diff| {diff:.2e} "
                   f"(<= {PARITY_REL_DIFF:g} x {scale:.3g})"}


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to a temp file beside ``path``, then renames it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
