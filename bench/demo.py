"""Benchmark of the main job: `python -m tlkit demo`, cold (empty feature cache) then warm.

    TLKIT_DATA_DIR=../shared/data python bench/demo.py

Prints wall seconds, validation accuracy and peak memory (RSS) of each run, and
the machine they ran on: cores, load average before and after, native bf16.
Other processes on the cores (a load above the core count) and a CPU without
bf16 (fp32 feature pass, about 1.5x as long) make the cold run slower.
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
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_demo(out: Path, cache: Path) -> tuple[float, dict, float]:
    env = {**os.environ, "TLKIT_CACHE_DIR": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tlkit", "demo", "--out", str(out), "--quiet"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return seconds, json.loads((out / "metrics.json").read_text()), peak_mb


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
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for label in ("cold", "warm"):
            seconds, m, peak = run_demo(tmp / label, tmp / "cache")
            rows.append((label, seconds, m, peak))
            print(f"{label:<5} {seconds:7.1f} s  val_accuracy {m['val_accuracy']:.4f}  "
                  f"features {m['features_seconds']:6.1f} s  head {m['head_seconds']:.3f} s  "
                  f"peak RSS {peak:,.0f} MB  ({m['num_train']} train / {m['num_val']} val)")
        n = rows[0][2]["num_train"] + rows[0][2]["num_val"]
        print(f"feature pass: {n / rows[0][2]['features_seconds']:.1f} img/s (cold, JPEG decoding included)")
        print(f"demo_cold_seconds = {rows[0][1]:.1f}")
        print(f"demo_warm_seconds = {rows[1][1]:.1f}")
        print(f"demo_val_accuracy = {rows[1][2]['val_accuracy']:.4f}")
    print(f"load average after: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
