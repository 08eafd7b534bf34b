"""Benchmark of the main job: `python -m tlkit demo`, cold (empty feature cache) then warm, with each engine.

    TLKIT_DATA_DIR=../shared/data python bench/demo.py [--quick]

Runs the demo cold then warm with the frozen pass in PyTorch
(``TLKIT_ENGINE=torch``), in ONNX Runtime fp32 (``TLKIT_ENGINE=onnxruntime``;
the cold run includes the one-time export and parity check), and with the
default, ``TLKIT_ENGINE=auto``: on this backbone and data that is int8, from
the verdict tlkit ships (``tlkit/int8_verdicts.json``, recorded by
``tools/record_int8_verdicts.py``); its cold run includes the export and the
quantization. ``--quick`` runs the default only.
Each row: wall seconds, validation accuracy, the feature pass, the time spent
decoding (on ONNX Runtime in a thread, during the forward pass), the time the
loop waited for decoded images, and the demo process's peak RSS
(target <= 1.5 GB). Also printed: cores, load average, native bf16. Other
processes on the cores (a load above the core count) make every run slower.
Targets on the 2-core reference machine: >= 0.97 accuracy, cold <= 150 s, warm <= 15 s.

    TLKIT_DATA_DIR=../shared/data python bench/demo.py --engines 300

instead times only the frozen pass of the demo's Lite0 over the first 300
validation photos (JPEG decoding in the DataLoader included, no feature
cache) at 160 and 224 px: DataLoader decoding alone, PyTorch (the default
precision, folded BatchNorm, channels_last) and ONNX Runtime fp32. The one-time
ONNX export is done before the timing and reported on its own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # the demo's own peak, not earlier runs'


def run_demo(out: Path, cache: Path, engine: str) -> tuple[float, dict, float]:
    """``(wall seconds, metrics.json, peak RSS in MB)`` of one ``python -m tlkit demo`` with ``TLKIT_ENGINE=engine``."""
    env = {**os.environ, "TLKIT_CACHE_DIR": str(cache), "TLKIT_ENGINE": engine}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "tlkit", "demo", "--out", str(out),
                           "--quiet"], env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "metrics.json").read_text()), int(done.stdout.split()[-1]) / 1024


def machine_summary() -> str:
    """Cores, load averages (1/5/15 min) and bf16 support: what the timings depend on."""
    from tlkit.device import cpu_has_native_bf16  # imports torch: only when the benchmark runs

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    busy = " (busy: other processes compete for the cores)" if os.getloadavg()[0] > usable else ""
    if cpu_has_native_bf16():
        bf16 = "off (TLKIT_CPU_BF16=0)" if os.environ.get("TLKIT_CPU_BF16") == "0" else "yes"
    else:
        bf16 = "no (fp32 feature pass)"
    return f"{cores} logical cores ({usable} usable), load average {load}{busy}, native bf16: {bf16}"


def engine_rows(n: int, sizes: tuple[int, ...] = (160, 224)) -> None:
    """Prints img/s of decoding alone, PyTorch and ONNX Runtime over ``n`` validation photos per size."""
    from tlkit.backbones import load_backbone
    from tlkit.data import ImageDataset, cats_vs_dogs, transforms_for
    from tlkit.device import default_batch_size, inference_precision, pick_device
    from tlkit.features import extract_features
    from tlkit.loaders import make_loader

    model = load_backbone("efficientnet_lite0", num_classes=2)
    _, val = cats_vs_dogs(download=False)
    precision = inference_precision(pick_device("cpu"), "auto")
    print(f"machine: {machine_summary()}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            ds = val.with_transform(transforms_for(model, train=False, image_size=size))
            ds = ImageDataset(ds.files[:n], ds.targets[:n], ds.classes, ds.transform, f"val{n}")
            start = time.perf_counter()
            extract_features(model, ImageDataset(ds.files[:16], ds.targets[:16], ds.classes, ds.transform, "w"),
                             cache=False, cache_dir=tmp, engine="onnxruntime", progress=False)  # export once
            export = time.perf_counter() - start
            start = time.perf_counter()
            count = sum(len(x) for x, _, _ in make_loader(ds, batch_size=default_batch_size(pick_device("cpu"))))
            rows = [("decode only (DataLoader)", count / (time.perf_counter() - start))]
            for engine, label in (("torch", f"torch {precision}"), ("onnxruntime", "onnxruntime fp32")):
                f = extract_features(model, ds, cache=False, cache_dir=tmp, engine=engine, progress=False)
                rows.append((label, len(f) / f.seconds))
            for label, rate in rows:
                print(f"{size} px  {label:<26} {rate:6.1f} img/s")
            print(f"{size} px  onnx export + parity (once)  {export:5.1f} s")
    print(f"load average after: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


def main() -> None:
    if "--engines" in sys.argv:
        i = sys.argv.index("--engines")
        engine_rows(int(sys.argv[i + 1]) if len(sys.argv) > i + 1 else 300)
        return
    print(f"machine: {machine_summary()}")
    print(f"{'engine':<12} {'run':<5} {'wall s':>7} {'val acc':>8} {'features s':>10} {'decode s':>8} "
          f"{'wait s':>6} {'forward s':>9} {'peak MB':>8}  engine and precision used")
    rows = []
    engines = (("auto", "auto"),) if "--quick" in sys.argv else \
        (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("auto", "auto"))
    with tempfile.TemporaryDirectory() as tmp:
        for label, engine in engines:
            cache = Path(tmp) / label
            for run in ("cold", "warm"):
                seconds, m, peak = run_demo(Path(tmp) / f"{label}-{run}", cache, engine)
                rows.append((label, run, seconds, m, peak))
                print(f"{label:<12} {run:<5} {seconds:7.1f} {m['val_accuracy']:8.4f} {m['features_seconds']:10.1f} "
                      f"{m.get('decode_seconds', 0):8.1f} {m.get('wait_seconds', 0):6.1f} "
                      f"{m.get('forward_seconds', 0):9.1f} {peak:8,.0f}  "
                      f"{m.get('engine', '?')} {m.get('features_precision', '?')}", flush=True)
    for label, run, seconds, m, peak in rows:
        print(f"demo_{run}_seconds[{label}] = {seconds:.1f}")
    print(f"peak_rss_mb = {max(r[4] for r in rows):.0f} (target <= 1536)")
    print(f"load average after: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
