#!/usr/bin/env bash
# Every test, as `make test` and CI run them:
#   1. pytest over tests/ (package, widgets with ipywidgets 8, fault suite, real browser)
#   2. the widget tests again under ipywidgets 7.7.1 (what Colab ships)
#   3. every course notebook through nbval in test mode (TLKIT_FAST=1)
# Every pytest run prints the reason of each skipped test (-rs); a skip that means
# "your setup is incomplete" (no data, no Chromium) says how to complete it.
# Usage: tests/run_all.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
export MPLBACKEND=Agg
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle threads sleep: no spinning on a busy CPU
export TLKIT_CACHE_DIR="${TLKIT_CACHE_DIR:-$PWD/.cache/tlkit}"
if [ -z "${TLKIT_DATA_DIR:-}" ] && [ -d ../shared/data/cats_and_dogs_filtered ]; then
    export TLKIT_DATA_DIR="$(cd ../shared/data && pwd)"
fi

# ONNX Runtime Web for the page `export --web` writes (package-lock.json pins it); without npm
# the web page's browser test skips and says so.
if [ ! -f node_modules/onnxruntime-web/dist/ort.wasm.bundle.min.mjs ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    if command -v npm >/dev/null; then
        npm ci --no-audit --no-fund --loglevel=error \
            || echo "warning: npm ci failed (offline?), so the web page test will skip"
    else
        echo "note: npm not found, so the web page test will skip (Debian/Ubuntu: sudo apt-get install -y npm)"
    fi
fi

echo "== 1/3 pytest: package, widgets (ipywidgets 8), faults, browser =="
"$PY" -m pytest -q -rs -p no:cacheprovider tests

echo "== 2/3 widgets under ipywidgets 7.7.1 (Colab) =="
bash tools/ipyw7_env.sh "$(dirname "$(dirname "$PY")")" .venv-ipyw7
TLKIT_EXPECT_IPYWIDGETS=7 .venv-ipyw7/bin/python -m pytest -q -rs -p no:cacheprovider tests/test_widgets.py tests/test_own_data_panel.py tests/test_shift_lab.py tests/faults/test_faults_widgets.py

echo "== 3/3 notebooks (nbval, TLKIT_FAST=1) =="
# What the notebooks save (models, generated images) goes to a temporary runs/ folder, not
# notebooks/runs/, where a learner's file browser would show it. The folder is named runs so
# that the notebooks' checked outputs ("saved to runs/...") read the same.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/tlkit-nbval-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
TLKIT_FAST=1 TLKIT_RUNS_DIR="$scratch/runs" "$PY" -m pytest -q -rs -p no:cacheprovider --nbval-lax notebooks/
