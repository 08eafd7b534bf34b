"""Whether int8 features keep the course head's accuracy: :func:`check_int8` (its verdict drives ``"auto"``).

:mod:`tlkit.engine_int8` builds and runs the int8 graph; this module trains the
head on fp32 and on int8 features and stores the verdict that
``precision="auto"`` reads (it imports :mod:`tlkit.features`, which imports the
engine, so it lives apart from it).

Example:
    >>> check_int8(model, train_tf, val_tf)["ok"]
    True
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from torch import nn

from tlkit.data import ImageDataset
from tlkit.engine import _read_json, atomic_write_text
from tlkit.engine_int8 import INT8_DECISIONS, calibration_id, calibration_set, int8_key
from tlkit.evaluate import binomial_interval
from tlkit.feature_cache import body_fingerprint, default_cache_dir
from tlkit.features import evaluate_head, extract_features, train_head
from tlkit.storage import content_hash

log = logging.getLogger(__name__)


def check_int8(model: nn.Module, train: ImageDataset, val: ImageDataset, cache_dir: str | os.PathLike | None = None,
               epochs: int = 30, seed: int = 0) -> dict:
    """Trains the course's head on fp32 and on int8 features; int8 is ``ok`` if its val accuracy is in fp32's interval.

    Both with ONNX Runtime, the same head recipe and seed; calibration on
    ``train``. The verdict (accuracies, interval, ``ok``) is stored in
    ``int8-choice.json`` for ``precision="auto"``, and returned.

    Example:
        >>> check_int8(model, train_tf, val_tf)
        {'ok': True, 'acc_fp32': 0.978, 'interval': [0.968, 0.985], 'acc_int8': 0.976, ...}
    """
    folder = Path(cache_dir or default_cache_dir())
    accs, seconds = {}, {}
    for precision in ("fp32", "int8"):
        kw = {"precision": precision, "calibration": train} if precision == "int8" else {"precision": "fp32"}
        ftr, fva = (extract_features(model, ds, cache=False, cache_dir=folder, engine="onnxruntime",
                                     progress=False, **kw) for ds in (train, val))
        head, _ = train_head(ftr, fva, epochs=epochs, seed=seed)
        accs[precision] = round(evaluate_head(head, fva)[1], 4)
        seconds[precision] = round(ftr.seconds + fva.seconds, 1)
    n = len(val)
    lo, hi = binomial_interval(accs["fp32"], n)
    verdict = {"ok": accs["int8"] >= lo, "acc_fp32": accs["fp32"], "interval": [round(lo, 4), round(hi, 4)],
               "acc_int8": accs["int8"], "n_val": n, "seconds": seconds,
               "calibration": calibration_id(train), "calibration_files": calibration_set(train).files}
    store = folder / INT8_DECISIONS
    known = _read_json(store)
    known[int8_key(model, body_fingerprint(model), val)] = verdict
    atomic_write_text(store, json.dumps(known, indent=1))
    log.info("int8 check for %s: %s", model.name, {k: v for k, v in verdict.items() if k != "calibration_files"})
    return verdict


def shipped_form(verdict: dict, root: str | os.PathLike) -> dict:
    """``verdict`` as ``tlkit/int8_verdicts.json`` keeps it: calibration photos relative to ``root``, by content.

    ``root`` is the dataset's folder (``.../cats_and_dogs_filtered``); every
    calibration file must lie under it. :func:`tlkit.engine_int8.shipped_calibration`
    finds them again in another copy of the dataset.

    Example:
        >>> shipped_form(check_int8(model, train_tf, val_tf), data_dir / "cats_and_dogs_filtered")["calibration_files"][0]
        'train/cats/cat.1.jpg'
    """
    root = Path(root).resolve()
    files = [Path(f).resolve() for f in verdict["calibration_files"]]
    keep = {k: v for k, v in verdict.items() if k not in ("calibration", "calibration_files")}
    return {**keep, "dataset": root.name, "calibration_files": [f.relative_to(root).as_posix() for f in files],
            "calibration_sha1": content_hash(files)}
