"""Export check on the real data: ONNX parity, int8 accuracy against fp32, and the latency table.

    TLKIT_DATA_DIR=/path/with/cats_and_dogs_filtered python bench/export_check.py runs/lite0_160/model.pt

Exports MODEL.pt (a tlkit checkpoint, e.g. from ``python -m tlkit train ... --image-size 160``)
with the parity check on 64 validation photos, quantizes it to int8 calibrated on 100
training photos (50 per class), evaluates fp32 and int8 with ONNX Runtime on all
validation photos, and times PyTorch eager, ONNX Runtime fp32 and int8 the same way
(:func:`tlkit.export.measure_latency`). Writes ``bench/results/export.json``. Figures are
printed, not asserted (except the parity check, which raises on a mismatch).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlkit.checkpoint import load_model  # noqa: E402
from tlkit.data import cats_vs_dogs, subset  # noqa: E402
from tlkit.evaluate import evaluate_split  # noqa: E402
from tlkit.export import OnnxClassifier, export_onnx, format_latency_table, measure_latency, quantize_int8  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--calibration", type=int, default=50, help="calibration photos per class (default 50)")
    p.add_argument("--out", default="bench/results/export.json")
    args = p.parse_args()
    model = load_model(args.model)
    train, val = cats_vs_dogs(download=False)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        exp = export_onnx(model, fp32, parity_images=subset(val, per_class=32))
        print(exp.parity)
        q = quantize_int8(fp32, subset(train, per_class=args.calibration), Path(tmp) / "model.int8.onnx",
                          validation=None, measure=False)
        val_dir = Path(val.files[0]).parents[1]
        acc = {"pytorch": evaluate_split(model, val_dir)["accuracy"],
               "onnx_fp32": evaluate_split(OnnxClassifier(fp32), val_dir)["accuracy"],
               "onnx_int8": evaluate_split(OnnxClassifier(q.path), val_dir)["accuracy"]}
        load = os.getloadavg()[0]  # other work on the machine slows every row; recorded with the figures
        rows = [measure_latency(model), measure_latency(fp32), measure_latency(q.path)]
    table = format_latency_table(rows)
    print(f"validation accuracy on {len(val)} photos: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    print(f"int8 size {q.int8_bytes / 1e6:.2f} MB = {q.size_ratio:.1%} of fp32 ({q.fp32_bytes / 1e6:.2f} MB)")
    print(table)
    print(f"(1-minute load average {load:.1f} on {os.cpu_count()} cores while timing)")
    out = {"model": model.name, "image_size": model.input_size, "num_val": len(val),
           "calibration_images": q.n, "parity": vars(exp.parity) | {"source": "validation photos"},
           "accuracy": acc, "int8_size_ratio": round(q.size_ratio, 4), "latency": [r.as_dict() for r in rows],
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_average_1min": round(load, 1),
           "seconds": round(time.perf_counter() - start, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
