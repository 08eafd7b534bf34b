"""Benchmark of the main job: `python -m tlkit demo`, cold (empty feature cache) then warm.

    TLKIT_DATA_DIR=../shared/data python bench/demo.py

Prints wall seconds, validation accuracy and peak memory (RSS) of each run, and
the machine they ran on: cores, load average before and after, native bf16.
Other processes on the cores (a load above the core count) and a CPU without
bf16 (fp32 feature pass, about 1.5x as long) make the cold run slower.
Targets on the 2-core reference machine: >= 0.97 accuracy, cold <= 150 s, warm <= 15 s.
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


def main() -> None:
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
