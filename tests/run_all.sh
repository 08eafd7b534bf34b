#!/usr/bin/env bash
# Every test: the package, the widgets, the notebooks (nbval, test mode).
# Usage: tests/run_all.sh PYTHON
set -euo pipefail
PY="${1:-.venv/bin/python}"
"$PY" -m pytest -q -p no:cacheprovider tests
