"""Wall time of each course notebook run as a plain script (no Jupyter kernel needed).

For machines that have PyTorch but no Jupyter (a lent GPU machine, a CI box):
each notebook source in ``notebooks/src`` runs in a fresh Python process, with
its ``%config`` lines dropped (they only set the inline figure format) and
``display`` taken from IPython where it is installed. The profile is whatever
the notebook picks itself: ``gpu`` when CUDA is visible, else ``cpu``. The
notebooks share one empty feature cache in course order, as for a learner.
Figures are printed (and written as JSON with ``--json``), not asserted.

Usage:
    TLKIT_DATA_DIR=/data python bench/notebooks_as_scripts.py --only 02 03 --timeout 300
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = ("try:\n    from IPython.display import display\nexcept ImportError:\n    display = print\n"
           "import matplotlib\nmatplotlib.use('Agg')\n")


def as_script(source: Path) -> str:
    """The notebook source as plain Python: IPython magics commented out, ``display`` defined."""
    lines = [("# " + line) if line.lstrip().startswith(("%", "!")) else line
             for line in source.read_text().splitlines()]
    return PRELUDE + "\n".join(lines) + "\n"


def run_one(source: Path, env: dict, timeout: float, log_dir: Path) -> dict:
    """Run one notebook source; its output goes to ``log_dir/<name>.log``."""
    script = log_dir / (source.stem + ".script.py")
    script.write_text(as_script(source))
    start = time.perf_counter()
    with open(log_dir / (source.stem + ".log"), "w") as log:
        try:
            rc = subprocess.run([sys.executable, str(script)], cwd=ROOT / "notebooks", env=env,
                                stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"notebook": source.stem, "seconds": round(time.perf_counter() - start, 1), "status": rc}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 02 03")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per notebook")
    p.add_argument("--json", default=None, help="also write the figures here as JSON")
    p.add_argument("--log-dir", default=None, help="keep each notebook's output here (default: a temp folder)")
    args = p.parse_args(argv)
    sources = sorted((ROOT / "notebooks" / "src").glob("0*.py"))
    if args.only:
        sources = [s for s in sources if s.name[:2] in args.only]
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="tlkit-nb-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TLKIT_CACHE_DIR=cache, TLKIT_PROGRESS="0", MPLBACKEND="Agg",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        rows = []
        for source in sources:
            rows.append(run_one(source, env, args.timeout, log_dir))
            print(f"{rows[-1]['notebook']:<45}{rows[-1]['seconds']:>8.1f} s  status {rows[-1]['status']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
