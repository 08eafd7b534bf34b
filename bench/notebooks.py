"""How long each course notebook takes, and how much memory its kernel needs (CPU profile).

Runs every notebook from its source (``notebooks/src``) in a fresh kernel, as
``make notebooks`` does, and samples the memory of the kernel and its children
(DataLoader workers) every 0.2 s with psutil. The sum uses PSS (proportional
set size: pages shared between the kernel and its forked workers count once),
which is what a container's memory limit sees; plain RSS would count them
twice. The kernel's own peak RSS is shown too. Targets: at most 5 minutes and
2 GB (a Binder machine) per notebook.

By default the notebooks share one empty feature cache, in course order: 02
pays for the feature pass, 03-05 reuse it, as for a learner who works through
the course. ``--cache-dir`` reuses an existing cache (warm), ``--fast`` runs
test mode. Nothing is written to notebooks/. Figures are printed, not asserted.

Usage:
    TLKIT_DATA_DIR=/data python bench/notebooks.py
    TLKIT_DATA_DIR=/data python bench/notebooks.py --only 03 04
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS, TARGET_MIB = 300, 2048


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_notebook(mk, src: Path, fast: bool, cache_dir: str) -> tuple[float, int, int]:
    """(wall seconds, peak PSS of the kernel tree, peak RSS of the kernel) in bytes, one notebook."""
    from nbclient import NotebookClient

    nb = mk.build_notebook(src)
    old, new = dict(os.environ), mk.kernel_env(fast, cache_dir)
    os.environ.clear()
    os.environ.update(new)
    try:
        client = NotebookClient(nb, timeout=900, kernel_name="python3", store_widget_state=False,
                                resources={"metadata": {"path": str(mk.NOTEBOOKS)}})
        start = time.perf_counter()
        with client.setup_kernel():
            with mk.PeakMemory(client.km.provisioner.pid) as sampler:
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
        return time.perf_counter() - start, sampler.peak, sampler.peak_rss
    finally:
        os.environ.clear()
        os.environ.update(old)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers, e.g. 02 04")
    p.add_argument("--fast", action="store_true", help="test mode (TLKIT_FAST=1)")
    p.add_argument("--cache-dir", help="feature cache to use (default: a fresh, empty one)")
    args = p.parse_args(argv)
    mk = _generator()
    mk.check_data()
    print(f"CPU: {os.cpu_count()} logical cores; load average {os.getloadavg()[0]:.1f}; "
          f"profile: {'test' if args.fast else 'cpu'}; cache: {'given' if args.cache_dir else 'fresh'}")
    print(f"{'notebook':<40} {'wall (s)':>9} {'peak PSS, kernel+workers (MiB)':>31} {'kernel RSS (MiB)':>17}")
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-cache-") as fresh:
        for src in mk.source_files(args.only):
            seconds, peak, peak_rss = run_notebook(mk, src, args.fast, args.cache_dir or fresh)
            mib = peak / 2**20
            over = [w for w, bad in (("time", seconds > TARGET_SECONDS), ("memory", mib > TARGET_MIB)) if bad]
            flag = f"  OVER ({', '.join(over)})" if over else ""
            print(f"{src.stem:<40} {seconds:>9.0f} {mib:>31.0f} {peak_rss / 2**20:>17.0f}{flag}", flush=True)
    print(f"targets: <= {TARGET_SECONDS} s and <= {TARGET_MIB} MiB per notebook; load average now "
          f"{os.getloadavg()[0]:.1f} (other processes slow the wall times down)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
