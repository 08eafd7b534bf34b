#!/usr/bin/env bash
# Builds .venv-ipyw7: the project's .venv plus ipywidgets 7.7.1 (what Colab ships),
# so tests/test_widgets.py can run against both major versions of ipywidgets.
#
# The new venv reuses .venv's packages (torch etc.) through a .pth file instead of
# installing them again; its own site-packages come first on sys.path, so the
# ipywidgets 7.7.1 installed there shadows the 8.x in .venv.
#
# Usage: tools/ipyw7_env.sh [BASE_VENV] [TARGET_VENV]
#   then: .venv-ipyw7/bin/python -m pytest -q tests/test_widgets.py
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:-.venv}"
TARGET="${2:-.venv-ipyw7}"
BASE_PY="$BASE/bin/python"
test -x "$BASE_PY" || { echo "ipyw7_env: $BASE_PY not found; create the main venv first (make test)." >&2; exit 1; }

# The interpreter behind .venv (not the venv's python: a venv made from a venv
# would point its home at the first one and keep nothing but its stdlib).
BASE_PREFIX="$("$BASE_PY" -c 'import sys; print(sys.base_prefix)')"
BASE_SITE="$("$BASE_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
BASE_VERSION="$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
BASE_EXE="$BASE_PREFIX/bin/python$BASE_VERSION"
test -x "$BASE_EXE" || BASE_EXE="$BASE_PREFIX/bin/python3"

if [ ! -x "$TARGET/bin/python" ]; then
    "$BASE_EXE" -m venv --without-pip "$TARGET"
fi
TARGET_SITE="$("$TARGET/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# This .pth runs at start-up and appends .venv's site-packages (and its own .pth
# files, such as the editable install of tlkit) after this venv's site-packages,
# so packages installed here win and everything else comes from .venv.
echo "import site; site.addsitedir('$(cd "$BASE_SITE" && pwd)')" > "$TARGET_SITE/_tlkit_base_venv.pth"

have="$("$TARGET/bin/python" -c 'import ipywidgets; print(ipywidgets.__version__)' 2>/dev/null || true)"
if [ "$have" != "7.7.1" ]; then
    # --no-deps: ipywidgets' other dependencies (ipykernel, traitlets, ...) come from
    # .venv; ipython_genutils is the one that 7.x needs and 8.x dropped.
    "$BASE_PY" -m pip install -q --disable-pip-version-check --no-deps --target "$TARGET_SITE" --upgrade \
        "ipywidgets==7.7.1" "widgetsnbextension==3.6.*" "jupyterlab_widgets==1.*" "ipython_genutils==0.2.*"
fi

"$TARGET/bin/python" - <<'PY'
import ipywidgets, torch, tlkit  # noqa: F401 - torch and tlkit come from the base venv
assert ipywidgets.__version__ == "7.7.1", f"expected ipywidgets 7.7.1, got {ipywidgets.__version__}"
print(f"ipyw7_env: ok (ipywidgets {ipywidgets.__version__}, torch {torch.__version__}, tlkit from {tlkit.__file__})")
PY
