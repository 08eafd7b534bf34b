"""Records the int8 verdicts tlkit ships (``tlkit/int8_verdicts.json``), from a real run on the course data.

    TLKIT_DATA_DIR=../shared/data python tools/record_int8_verdicts.py

For EfficientNet-Lite0 at 224 px on cats vs dogs (the setting of ``make demo``
and ``bench/peers.py``), :func:`tlkit.int8_check.check_int8` trains the course
head on fp32 and on int8 features (ONNX Runtime, tlkit's quantizer, calibration
on 8 training photos) and compares their validation accuracy. The verdict is written with
its calibration photos named relative to the dataset's folder, so that
``precision="auto"`` can use int8 on any copy of the dataset, and only if the
check passed. Takes about 40 s on a quiet 2-core machine.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlkit.backbones import load_backbone  # noqa: E402
from tlkit.data import cats_vs_dogs, transforms_for  # noqa: E402
from tlkit.engine import atomic_write_text  # noqa: E402
from tlkit.engine_int8 import SHIPPED_VERDICTS, int8_key  # noqa: E402
from tlkit.feature_cache import body_fingerprint  # noqa: E402
from tlkit.freezing import freeze  # noqa: E402
from tlkit.int8_check import check_int8, shipped_form  # noqa: E402

SETTINGS = [("efficientnet_lite0", 224)]


def main() -> None:
    train, val = cats_vs_dogs(download=False)
    root = Path(os.path.commonpath(train.files + val.files))
    shipped = {}
    for name, size in SETTINGS:
        model = load_backbone(name, num_classes=2, class_names=train.classes)
        freeze(model, model.group_names[:-1])
        tf = transforms_for(model, train=False, image_size=size)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            verdict = check_int8(model, train.with_transform(tf), val.with_transform(tf), cache_dir=tmp)
        key = int8_key(model, body_fingerprint(model), val.with_transform(tf))
        import onnxruntime
        verdict["measured"] = (f"{time.strftime('%Y-%m-%d')}, tools/record_int8_verdicts.py, {size} px, "
                               f"onnxruntime {onnxruntime.__version__}, {platform.machine()}, "
                               f"{time.perf_counter() - start:.0f} s")
        shipped[key] = shipped_form(verdict, root)
        print(f"{key}: int8 {verdict['acc_int8']:.4f}, fp32 {verdict['acc_fp32']:.4f} "
              f"(95% interval {verdict['interval'][0]:.4f}-{verdict['interval'][1]:.4f}, n={verdict['n_val']}): "
              f"{'ok: auto uses int8' if verdict['ok'] else 'outside the interval: auto stays fp32'}", flush=True)
    atomic_write_text(SHIPPED_VERDICTS, json.dumps(shipped, indent=1) + "\n")
    print(f"wrote {SHIPPED_VERDICTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
