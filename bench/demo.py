"""Benchmark of the main job: `python -m tlkit demo`, cold (empty feature cache) then warm.

    TLKIT_DATA_DIR=../shared/data python bench/demo.py

Prints wall seconds, validation accuracy and peak memory (RSS) of each run.
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


def main() -> None:
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


if __name__ == "__main__":
    main()
