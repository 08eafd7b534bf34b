"""Reading an exported ONNX file: the optional dependencies, its metadata, and a runner.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install tlkit[export]``),
so they are imported only when a function here needs them.

:class:`OnnxClassifier` wraps an ONNX Runtime session in an ``nn.Module`` that
looks like a trained tlkit model to the rest of the toolkit (``class_names``,
``input_size``, ``mean``, ``std``, ``num_classes``), so ``transforms_for``,
``predict`` and ``evaluate_split`` work on an exported file unchanged.

Example:
    >>> model = OnnxClassifier("model.onnx")
    >>> evaluate_split(model, "data/val")["accuracy"]
    0.975
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

METADATA_KEY = "tlkit"  # one metadata_props entry holding a JSON object
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def require(module: str) -> ModuleType:
    """Imports ``onnx``, ``onnxruntime`` or one of their submodules, or says how to install it.

    Example:
        >>> ort = require("onnxruntime")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"Exporting needs the optional packages onnx and onnxruntime ({module} is missing). "
                          "Install them with: pip install tlkit[export]  "
                          "(or: pip install onnx onnxruntime)") from exc


def read_metadata(path: str | os.PathLike) -> dict:
    """The preprocessing and labels tlkit stored in an exported file.

    Returns ``{"image_size", "mean", "std", "class_names", "backbone", ...}``.
    Raises ValueError for an ONNX file that tlkit did not write.

    Example:
        >>> read_metadata("model.onnx")["class_names"]
        ['cats', 'dogs']
    """
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist.")
    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidProtobuf types
        raise ValueError(f"{path} is not a readable ONNX file: {str(exc).splitlines()[0][:200]}") from exc
    return _parse_metadata(meta.custom_metadata_map, path)


def _parse_metadata(props: dict, path: Path) -> dict:
    if METADATA_KEY not in props:
        raise ValueError(f"{path} has no tlkit metadata (input size, mean, std, class names). "
                         "Export it with tlkit.export.export_onnx or `python -m tlkit export`.")
    meta = json.loads(props[METADATA_KEY])
    bad = [k for k, t in (("image_size", int), ("mean", list), ("std", list), ("class_names", list))
           if not isinstance(meta.get(k), t)]
    if bad:
        raise ValueError(f"{path} has damaged tlkit metadata ({', '.join(bad)}). Export the model again.")
    return meta


def open_session(path: str | os.PathLike | bytes, threads: int | None = None, spinning: bool = True,
                 arena: bool = True):
    """An ONNX Runtime CPU session (``threads`` None: ORT's default, one per core) for a file or a serialized model.

    ``spinning=False``: idle worker threads sleep instead of spinning, which
    leaves the cores to DataLoader workers decoding JPEGs at the same time.
    ``arena=False``: no CPU memory arena, so a large batch's activations are
    returned after each run instead of being kept (the arena also rounds its
    growth up to a power of two); used for one-off runs such as timing.
    """
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_cpu_mem_arena = arena
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxClassifier(nn.Module):
    """An exported model run by ONNX Runtime, with the attributes of a trained tlkit model.

    ``forward`` takes a float batch ``(B, 3, H, W)``, preprocessed as the
    metadata says, and returns logits ``(B, C)`` as a CPU tensor.

    Example:
        >>> m = OnnxClassifier("model.onnx")
        >>> m(torch.zeros(1, 3, m.input_size, m.input_size)).shape
        torch.Size([1, 2])
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, arena: bool = True):
        super().__init__()
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.session = open_session(self.path, threads, arena=arena)
        self.name = self.metadata.get("backbone", self.path.stem)
        self.class_names = list(self.metadata["class_names"])
        self.input_size = int(self.metadata["image_size"])
        self.mean, self.std = tuple(self.metadata["mean"]), tuple(self.metadata["std"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(B, C)`` for a float32 array ``(B, 3, H, W)``."""
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().float().cpu().numpy()))
