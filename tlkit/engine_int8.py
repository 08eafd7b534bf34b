"""int8 features: the frozen body quantized for ONNX Runtime, and when ``"auto"`` may use it.

``extract_features(model, ds, precision="int8", calibration=train)`` runs the
body as a static int8 (QDQ) ONNX graph, quantized once with
:func:`tlkit.engine_qdq.quantize_frozen` (tlkit's own quantizer, about 0.3 s
for Lite0) from the fp32 graph of :mod:`tlkit.engine` and calibrated on
:data:`CALIBRATION_IMAGES` evenly spaced images of ``calibration`` (training
images, never the ones you report accuracy on; :func:`calibration_set`). The
int8 graph is cached beside the fp32 one, named by weights, calibration files
and quantizer; its features carry the tag
``"onnxruntime-int8-<calibration>-<quantizer>"`` in the cache key.

``precision="auto"`` uses int8 only where :func:`tlkit.int8_check.check_int8` has shown, on
this backbone and class set, that the course's head on int8 features lands
within the 95% interval of the same head on fp32 features on the validation
set. Verdicts come from two places:

* ``int8-choice.json`` in the cache folder: checks run on this machine (they
  win: a local "no" overrides a shipped "yes");
* ``tlkit/int8_verdicts.json``, shipped with tlkit: the checks
  ``tools/record_int8_verdicts.py`` ran on the course data (EfficientNet-Lite0
  at 224 px, cats vs dogs). Their calibration photos are named relative to the
  dataset's folder and identified by content, so they are found in any copy of
  the dataset; if they are missing or differ, "auto" stays fp32.

Without a verdict, "auto" stays fp32.

Example:
    >>> tlkit.int8_check.check_int8(model, train_tf, val_tf)["ok"]
    True
    >>> extract_features(model, val_tf).precision      # "auto" now picks int8 here
    'int8'
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from tlkit.data import ImageDataset
from tlkit.device import trim_heap
from tlkit.engine import (ENGINES, OrtRunner, _read_json, _Sample, frozen_graph, ort_available, resolve_engine,
                          sample_images)
from tlkit.env import env_choice
from tlkit.engine_qdq import QUANTIZER
from tlkit.storage import content_hash, hash_file_stamps

log = logging.getLogger(__name__)
CALIBRATION_IMAGES = 8  # Lite0, 224 px, cats vs dogs: 8, 16 and 32 photos gave the same head accuracy (0.988)
# and the same int8-vs-fp32 feature cosine (mean 0.9929); 8 quantize 0.2 s sooner than 16
INT8_DECISIONS = "int8-choice.json"
SHIPPED_VERDICTS = Path(__file__).with_name("int8_verdicts.json")


def calibration_set(calibration: ImageDataset, n: int = CALIBRATION_IMAGES) -> ImageDataset:
    """``n`` evenly spaced images of ``calibration`` (all of them if fewer): every class, not the first folder's."""
    total = len(calibration)
    idx = range(total) if total <= n else [i * total // n for i in range(n)]
    return ImageDataset([calibration.files[i] for i in idx], [calibration.targets[i] for i in idx],
                        calibration.classes, calibration.transform, calibration.name)


def calibration_id(calibration: ImageDataset, n: int = CALIBRATION_IMAGES) -> str:
    """Hash of the calibration files (path, size, mtime; :func:`calibration_set`): which images set the int8 ranges."""
    h = hashlib.sha1()
    hash_file_stamps(h, calibration_set(calibration, n).files)
    return h.hexdigest()[:12]


def int8_tag(calib: str) -> str:
    """The precision tag of int8 rows in feature cache keys, e.g. ``"onnxruntime-int8-3f2a...-tlkit-qdq-1"``."""
    return f"onnxruntime-int8-{calib}-{QUANTIZER}"


def int8_graph(fp32: OrtRunner, calibration: ImageDataset, transform, calib: str) -> OrtRunner:
    """A runner for the int8 copy of the fp32 graph ``fp32``, quantized once on ``calibration``.

    ``transform`` is the one the features use (the calibration images go through it too).
    """
    from tlkit.engine_qdq import quantize_frozen

    path = fp32.path.with_name(fp32.path.name.replace("-fp32-", "-int8-").replace(".onnx", f"-{calib}-{QUANTIZER}.onnx"))
    if not path.exists():
        x = sample_images(calibration_set(calibration).with_transform(transform), CALIBRATION_IMAGES)  # (N,3,S,S)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.onnx")
        try:
            quantize_frozen(fp32.path, [x.float().numpy()], tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            trim_heap()  # the calibration run's activations and the graph copies, before the pass
        log.info("quantized %s on %d calibration images", path, len(x))
    return OrtRunner(path)


def plan_int8(engine: str, precision: str, model: nn.Module, dataset: ImageDataset,
              calibration: ImageDataset | None, fingerprint: str, device: torch.device,
              cache_dir: Path) -> tuple[OrtRunner, str] | None:
    """``(int8 runner, cache tag)`` when the pass runs in int8, else None (the fp32/bf16 engines decide).

    ``precision="int8"`` needs ONNX Runtime and ``calibration`` (ValueError naming the fix);
    ``"auto"`` with ``engine="auto"`` uses int8 only where :func:`check_int8` recorded ``ok``.
    """
    if precision == "int8":
        if resolve_engine(engine, device) == "torch":
            raise ValueError("precision='int8' runs on ONNX Runtime on the CPU: use engine='onnxruntime' or "
                             "'auto' (not 'torch', and not TLKIT_ENGINE=torch), device='cpu', and "
                             "pip install tlkit[export].")
        if calibration is None:
            raise ValueError("precision='int8' needs calibration images: pass calibration=<training images>, "
                             "e.g. extract_features(model, val_tf, precision='int8', calibration=train_tf).")
        return _int8_runner(model, dataset, calibration, fingerprint, cache_dir)
    if precision != "auto" or (env_choice("TLKIT_ENGINE", ENGINES) or engine) != "auto":
        return None
    if device.type != "cpu" or not ort_available():
        return None
    key = int8_key(model, fingerprint, dataset)
    verdict = _read_json(Path(cache_dir) / INT8_DECISIONS).get(key)
    if verdict is not None:  # checked on this machine
        if not verdict.get("ok"):
            return None
        recorded = ImageDataset(verdict["calibration_files"], [0] * len(verdict["calibration_files"]),
                                dataset.classes)
        if calibration_id(recorded) != verdict["calibration"]:  # the calibration photos changed since the check
            return None
    else:
        verdict = _read_json(SHIPPED_VERDICTS).get(key)
        recorded = shipped_calibration(verdict, dataset) if verdict and verdict.get("ok") else None
        if recorded is None:
            return None
        log.info("int8 features: tlkit's int8 check passed for %s on these classes and this input size "
                 "(%s; precision='fp32' or TLKIT_ENGINE=torch for full precision)", model.name,
                 verdict.get("measured", "shipped"))
    return _int8_runner(model, dataset, recorded, fingerprint, cache_dir)


def shipped_calibration(verdict: dict, dataset: ImageDataset, levels: int = 4) -> ImageDataset | None:
    """The calibration photos of a shipped verdict, found beside ``dataset``; None if absent or changed.

    The verdict names them relative to the dataset's folder (``train/cats/cat.0.jpg``);
    that folder is searched for among the first ``levels`` parents of ``dataset``'s first
    file, and the photos must have the recorded content hash.
    """
    rel = verdict.get("calibration_files") or []
    if not rel or not dataset.files:
        return None
    for parent in list(Path(dataset.files[0]).parents)[:levels]:
        paths = [parent / r for r in rel]
        if all(p.is_file() for p in paths):
            try:
                same = content_hash(paths) == verdict.get("calibration_sha1")
            except OSError:
                return None
            return ImageDataset([str(p) for p in paths], [0] * len(paths), dataset.classes) if same else None
    return None


def _int8_runner(model: nn.Module, dataset: ImageDataset, calibration: ImageDataset, fingerprint: str,
                 cache_dir: Path) -> tuple[OrtRunner, str] | None:
    fp32 = frozen_graph(model, "head", _Sample(dataset), fingerprint, cache_dir)  # parity-checked fp32 graph
    if fp32 is None:
        warnings.warn("int8 needs the fp32 ONNX graph, which failed its parity check: the features are "
                      "computed in PyTorch instead.", stacklevel=4)
        return None
    calib = calibration_id(calibration)
    return int8_graph(fp32, calibration, dataset.transform, calib), int8_tag(calib)


def int8_key(model: nn.Module, fingerprint: str, dataset: ImageDataset) -> str:
    """Backbone, weights, input size (from the transform's repr), class set and quantizer: what a verdict is about."""
    return f"{model.name}|{fingerprint[:16]}|{hashlib.sha1(repr(dataset.transform).encode()).hexdigest()[:8]}|" \
           f"{','.join(dataset.classes)}|{QUANTIZER}"
