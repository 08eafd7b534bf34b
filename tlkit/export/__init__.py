"""Taking a trained model out of the notebook: ONNX, int8, latency and distillation.

* :func:`export_onnx` writes an ONNX file with its preprocessing in the
  metadata and checks it against PyTorch (:func:`check_parity`).
* :func:`quantize_int8` makes a static int8 copy, calibrated on training images.
* :func:`measure_latency` times PyTorch eager and ONNX Runtime the same way.
* :func:`distill` trains a small student on a teacher's soft targets.
* :class:`OnnxClassifier` runs an exported file with ONNX Runtime wherever
  tlkit expects a model (``evaluate_split``, ``predict``).

``onnx`` and ``onnxruntime`` are optional: ``pip install tlkit[export]``.

Example:
    >>> from tlkit.export import export_onnx, quantize_int8
    >>> export_onnx(model, "model.onnx", image_size=224, parity_images=val).parity.agreement
    1.0
"""
from tlkit.export.distill import distill, distillation_loss, teacher_logits
from tlkit.export.latency import Latency, format_latency_table, measure_latency
from tlkit.export.onnx_file import ExportResult, Parity, ParityError, check_parity, export_onnx
from tlkit.export.quantize import QuantizeResult, quantize_int8
from tlkit.export.runtime import OnnxClassifier, read_metadata

__all__ = ["export_onnx", "check_parity", "Parity", "ParityError", "ExportResult", "quantize_int8",
           "QuantizeResult", "measure_latency", "Latency", "format_latency_table", "distill",
           "distillation_loss", "teacher_logits", "OnnxClassifier", "read_metadata"]
