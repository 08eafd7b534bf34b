"""Static int8 quantization of an exported model with ONNX Runtime's tools.

Weights and activations become int8 (QDQ format: QuantizeLinear /
DequantizeLinear pairs around each operator, which any runtime can read).
The activation ranges come from calibration images, run once through the fp32
model; use training images, never the images you report accuracy on.

Example:
    >>> q = quantize_int8("model.onnx", subset(train, per_class=50), "model.int8.onnx", validation=val)
    >>> q.size_ratio, q.accuracy_fp32, q.accuracy_int8
    (0.27, 0.975, 0.972)
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tlkit.data import ImageDataset, transforms_for
from tlkit.loaders import make_loader
from tlkit.export.latency import Latency, measure_latency
from tlkit.export.onnx_file import write_metadata
from tlkit.export.runtime import INPUT_NAME, OnnxClassifier, read_metadata, require
from tlkit.device import release_memory

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    """Size, agreement, accuracy and latency of the int8 file against its fp32 source."""

    path: Path
    fp32_bytes: int
    int8_bytes: int
    agreement: float  # fraction of images where int8 and fp32 predict the same class
    n: int  # images compared
    accuracy_fp32: float | None = None  # on ``validation``, when given
    accuracy_int8: float | None = None
    latency: list[Latency] = field(default_factory=list)  # fp32 row, int8 row

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.fp32_bytes


def quantize_int8(onnx_path: str | os.PathLike, calibration_data: ImageDataset | torch.Tensor,
                  out_path: str | os.PathLike, validation: ImageDataset | None = None,
                  per_channel: bool = True, measure: bool = True) -> QuantizeResult:
    """Writes a static int8 (QDQ) copy of ``onnx_path`` calibrated on ``calibration_data``.

    Args:
        onnx_path: an fp32 file written by :func:`export_onnx` (its metadata
            gives the preprocessing, and is copied to the int8 file).
        calibration_data: training images (an ImageDataset; about 100 are
            enough) or a preprocessed batch ``(N, 3, S, S)``.
        out_path: the int8 file to write.
        validation: labelled images; when given, both files are evaluated on
            them (accuracy and agreement). Otherwise agreement is measured on
            the calibration images.
        measure: also measure the latency of both files.

    Example:
        >>> quantize_int8("m.onnx", subset(train, 50), "m.int8.onnx").size_ratio
        0.27
    """
    require("onnxruntime.quantization")  # a clear error before any image is decoded
    meta = read_metadata(onnx_path)
    batches = list(_batches(calibration_data, meta))
    if not batches:
        raise ValueError("The calibration data has no readable image; give some training images.")
    out_path = Path(out_path)
    quantize_batches(onnx_path, batches, out_path, per_channel)
    write_metadata(out_path, {**meta, "precision": "int8", "calibration_images": sum(len(b) for b in batches)})
    release_memory()  # the calibration session's activations
    result = _compare(Path(onnx_path), out_path, validation if validation is not None else batches, meta)
    release_memory()
    if measure:
        result.latency = [measure_latency(onnx_path), measure_latency(out_path)]
    log.info("int8: %.1f MB -> %.1f MB, agreement %.3f", result.fp32_bytes / 1e6, result.int8_bytes / 1e6,
             result.agreement)
    return result


def quantize_batches(onnx_path: str | os.PathLike, batches: list[np.ndarray], out_path: str | os.PathLike,
                     per_channel: bool = True) -> Path:
    """Static int8 (QDQ) copy of any ONNX file with one input, calibrated on ``batches`` (MinMax ranges).

    :func:`quantize_int8` uses it for exported classifiers. The frozen feature pass uses tlkit's own,
    faster quantizer instead (:func:`tlkit.engine_qdq.quantize_frozen`).

    Example:
        >>> quantize_batches("body.onnx", [x.numpy() for x in train_batches], "body.int8.onnx")
        PosixPath('body.int8.onnx')
    """
    quant = require("onnxruntime.quantization")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # shape inference + graph optimisation, as ORT recommends
        quant.shape_inference.quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quiet = _QuantizerChatter()  # ORT logs one INFO line per rescaled weight channel (81 for Lite0) to the root
        logging.getLogger().addFilter(quiet)
        try:
            quant.quantize_static(str(prepared), str(out_path), _Reader(batches), quant_format=quant.QuantFormat.QDQ,
                                  activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
                                  per_channel=per_channel, calibrate_method=quant.CalibrationMethod.MinMax)
        finally:
            logging.getLogger().removeFilter(quiet)
    return out_path


class _QuantizerChatter(logging.Filter):
    """Drops ONNX Runtime's quantizer INFO records (sent to the root logger); its warnings still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "quantization" not in record.pathname.replace("\\", "/")


CALIBRATION_CHUNK = 4  # images per calibration run: ORT's memory grows with the batch (~45 MB per image)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol: ``get_next()`` returns a feed dict, then None.

    Each batch is fed in chunks of :data:`CALIBRATION_CHUNK` images. MinMax
    ranges are the min and max over all chunks, so they equal those of the whole
    batch, while the calibration session holds the activations of 4 images, not 16.
    """

    def __init__(self, batches: list[np.ndarray]):
        self._it = (b[i:i + CALIBRATION_CHUNK] for b in batches for i in range(0, len(b), CALIBRATION_CHUNK))

    def get_next(self) -> dict | None:
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}

    def rewind(self) -> None:  # called by some ORT versions between calibration passes
        pass


def _batches(data: ImageDataset | torch.Tensor | list, meta: dict, batch_size: int = 16):
    """Preprocessed float32 arrays ``(B, 3, S, S)`` (the metadata's preprocessing for a dataset)."""
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size].float().numpy()
        return
    if isinstance(data, list):
        yield from data
        return
    if not isinstance(data, ImageDataset):
        raise TypeError(f"calibration_data must be an ImageDataset or a tensor (N, 3, S, S), "
                        f"got {type(data).__name__}.")
    ds = data.with_transform(transforms_for(_Prep(meta), train=False))
    for x, _, _ in make_loader(ds, batch_size=batch_size, num_workers=0):
        if len(x):
            yield x.numpy()


class _Prep:
    """What ``transforms_for`` reads from a model, taken from the file's metadata."""

    def __init__(self, meta: dict):
        self.input_size, self.mean, self.std = meta["image_size"], meta["mean"], meta["std"]


def _compare(fp32: Path, int8: Path, data, meta: dict) -> QuantizeResult:
    a, b = OnnxClassifier(fp32, arena=False), OnnxClassifier(int8, arena=False)  # two sessions: no kept arenas
    if isinstance(data, ImageDataset):
        ds = data.with_transform(transforms_for(_Prep(meta), train=False))
        loader = ((x.numpy(), y.numpy()) for x, y, _ in make_loader(ds, batch_size=32, num_workers=0))
    else:
        loader = ((x, None) for x in data)
    same = n = right_a = right_b = 0
    for x, y in loader:
        if not len(x):
            continue
        pa, pb = a.run(x).argmax(1), b.run(x).argmax(1)
        same, n = same + int((pa == pb).sum()), n + len(x)
        if y is not None:
            right_a, right_b = right_a + int((pa == y).sum()), right_b + int((pb == y).sum())
    labelled = isinstance(data, ImageDataset)
    return QuantizeResult(int8, fp32.stat().st_size, int8.stat().st_size, same / max(n, 1), n,
                          right_a / n if labelled and n else None, right_b / n if labelled and n else None)
