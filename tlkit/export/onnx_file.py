"""Writing a model to ONNX, and checking that ONNX Runtime computes what PyTorch computes.

``export_onnx`` goes through ``torch.onnx`` (the TorchScript exporter,
``dynamo=False``: it needs no extra package and exports every backbone of the
registry in seconds), checks the file with ``onnx.checker``, stores the
preprocessing in the file's metadata, and runs :func:`check_parity` before it
returns. The batch axis is dynamic; the image size is fixed, as the model was
trained on it.

Example:
    >>> result = export_onnx(model, "model.onnx", image_size=224, parity_images=val)
    >>> result.parity.max_abs_diff < 1e-4, result.parity.agreement
    (True, 1.0)
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlkit.data import ImageDataset, eval_resize, transforms_for
from tlkit.device import release_memory
from tlkit.loaders import make_loader
from tlkit.export.runtime import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, OnnxClassifier, require

log = logging.getLogger(__name__)
OPSET = 17
PARITY_ATOL = 1e-3  # largest allowed |p_onnx - p_torch| of a class probability


class ParityError(ValueError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance: the exported file is not trustworthy."""


@dataclass
class Parity:
    """How closely ONNX Runtime reproduces PyTorch on ``n`` images."""

    max_abs_diff: float  # largest |p_onnx - p_torch| over images and classes
    agreement: float  # fraction of images with the same top class
    n: int
    source: str  # what the images were: a dataset name, or "random"

    def __str__(self) -> str:
        return (f"parity on {self.n} images ({self.source}): max |dp| {self.max_abs_diff:.2e}, "
                f"predictions agree {self.agreement:.1%}")


@dataclass
class ExportResult:
    path: Path
    bytes: int
    parity: Parity
    metadata: dict


def export_onnx(model: nn.Module, path: str | os.PathLike, image_size: int | None = None,
                class_names: list[str] | None = None, parity_images: ImageDataset | torch.Tensor | None = None,
                atol: float = PARITY_ATOL) -> ExportResult:
    """Exports ``model`` to an ONNX file with its preprocessing in the metadata, then checks parity.

    Args:
        model: a tlkit Backbone (or any module with ``mean``, ``std``, ``input_size``).
        path: the ``.onnx`` file to write (its folder is created).
        image_size: input height and width (default: ``model.input_size``).
        class_names: output labels (default: ``model.class_names``).
        parity_images: real images for the parity check, an ImageDataset (the
            model's eval transform is applied) or a batch ``(N, 3, H, W)``;
            None: 8 seeded random images.
        atol: the largest allowed difference of a probability.

    Raises ParityError, and deletes the file, when ONNX Runtime and PyTorch
    differ by more than ``atol``.

    Example:
        >>> export_onnx(model, "model.onnx", image_size=160).parity.agreement
        1.0
    """
    if getattr(model, "input_kind", "image") != "image":  # the graph, metadata and parity check take images
        raise ValueError(f"ONNX export covers image models; {getattr(model, 'name', 'this model')} reads text. "
                         "Save it with tlkit.save_model (python -m tlkit train writes model.pt) instead.")
    onnx = require("onnx")
    size = int(image_size or model.input_size)
    names = list(class_names or getattr(model, "class_names", None) or [])
    n_out = _num_outputs(model, size)
    if names and len(names) != n_out:
        raise ValueError(f"{len(names)} class names {names} for a model with {n_out} outputs; pass one per output.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _torch_export(model, path, size)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = _metadata(model, size, names or [str(i) for i in range(n_out)])
    write_metadata(path, meta)
    try:
        parity = check_parity(model, path, parity_images, image_size=size, atol=atol)
    except ParityError:
        path.unlink(missing_ok=True)
        raise
    log.info("exported %s (%.1f MB); %s", path, path.stat().st_size / 1e6, parity)
    release_memory()  # the exporter's graph copies and the parity session's activations
    return ExportResult(path, path.stat().st_size, parity, meta)


def _metadata(model: nn.Module, size: int, names: list[str]) -> dict:
    """What a runtime needs to feed the file: preprocessing, labels, and a few facts for the tables."""
    return {"format": "tlkit-onnx/1", "backbone": getattr(model, "name", type(model).__name__),
            "image_size": size, "mean": [float(v) for v in model.mean], "std": [float(v) for v in model.std],
            "class_names": names, "resize": f"shorter side to {eval_resize(size)}, centre crop {size}",
            "input": f"{INPUT_NAME} float32 (batch, 3, {size}, {size}) RGB in [0, 1], then (x - mean) / std",
            "output": f"{OUTPUT_NAME} (batch, classes); softmax gives probabilities",
            "parameters": sum(p.numel() for p in model.parameters()), "precision": "fp32"}


def write_metadata(path: str | os.PathLike, meta: dict) -> None:
    """Stores ``meta`` as JSON in the file's ``metadata_props`` (replacing tlkit's previous entry)."""
    onnx = require("onnx")
    proto = onnx.load(str(path))
    for prop in [p for p in proto.metadata_props if p.key == METADATA_KEY]:
        proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


@torch.no_grad()
def _num_outputs(model: nn.Module, size: int) -> int:
    was = model.training
    out = model.eval()(torch.zeros(1, 3, size, size, device=_device_of(model)))
    model.train(was)
    return out.shape[1]


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _torch_export(model: nn.Module, path: Path, size: int) -> None:
    """torch.onnx with the TorchScript exporter; eval mode on the CPU, the caller's state restored."""
    was, device = model.training, _device_of(model)
    model.eval().cpu()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch >= 2.9 warns that this exporter is deprecated; it is the one that needs no onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=OPSET, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, dynamo=False)
    finally:
        model.to(device).train(was)


def parity_batch(model: nn.Module, images: ImageDataset | torch.Tensor | None, image_size: int,
                 limit: int = 64) -> tuple[torch.Tensor, str]:
    """At most ``limit`` preprocessed images ``(N, 3, S, S)`` and where they came from."""
    if images is None:
        return torch.randn(8, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)), "random"
    if isinstance(images, torch.Tensor):
        return images[:limit].float().cpu(), "given tensor"
    ds = images if images.transform is not None else images.with_transform(
        transforms_for(model, train=False, image_size=image_size))
    chunks, total = [], 0
    for x, _, _ in make_loader(ds, batch_size=16, num_workers=0):
        chunks.append(x)
        total += len(x)
        if total >= limit:
            break
    if not chunks or total == 0:
        raise ValueError(f"No readable image in {ds.name} for the parity check.")
    return torch.cat(chunks)[:limit], ds.name


@torch.no_grad()
def check_parity(model: nn.Module, onnx_path: str | os.PathLike, images: ImageDataset | torch.Tensor | None = None,
                 image_size: int | None = None, atol: float = PARITY_ATOL) -> Parity:
    """Compares ONNX Runtime's probabilities with PyTorch's on the same images; ParityError beyond ``atol``.

    Example:
        >>> check_parity(model, "model.onnx", val).max_abs_diff
        2.4e-07
    """
    x, source = parity_batch(model, images, int(image_size or model.input_size))
    was, device = model.training, _device_of(model)
    ref = model.eval().cpu()(x).float().softmax(1)  # (N, C) fp32 on the CPU, no autocast
    model.to(device).train(was)
    got = torch.from_numpy(OnnxClassifier(onnx_path).run(x.numpy())).softmax(1)
    parity = Parity(float((got - ref).abs().max()), float((got.argmax(1) == ref.argmax(1)).float().mean()),
                    len(x), source)
    if not np.isfinite(parity.max_abs_diff) or parity.max_abs_diff > atol:
        raise ParityError(f"The ONNX file {onnx_path} does not reproduce the PyTorch model: {parity} "
                          f"(tolerance {atol:g}). Do not use this file; report the backbone and torch version.")
    return parity
