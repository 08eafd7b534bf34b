"""A static web page that runs an exported model in the visitor's browser.

:func:`build_web_page` writes a folder that any static file server can serve
(``python -m http.server``, Binder's file server, a phone on the same Wi-Fi):

* ``index.html``, ``app.js`` and ``preprocess.js``: pick or drop a photo, see
  the class probabilities. ``preprocess.js`` reproduces tlkit's eval transform
  pixel for pixel (Pillow's bilinear resize of the shorter side, centre crop,
  mean and std), so the page computes what PyTorch computes.
* ``model.onnx`` and ``model.json`` (its tlkit metadata: size, mean, std,
  class names);
* ``ort/``: ONNX Runtime Web's JavaScript and WebAssembly, copied from the
  ``onnxruntime-web`` npm package (pinned in the repository's
  ``package.json``; ``npm ci`` installs it). The page fetches nothing from the
  internet.

It runs on the WebAssembly backend with one thread, so the server needs no
cross-origin-isolation headers.

Example:
    >>> build_web_page("runs/demo/model.onnx", "runs/demo/web")
    PosixPath('runs/demo/web/index.html')
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from tlkit.data import eval_resize
from tlkit.export.runtime import INPUT_NAME, OUTPUT_NAME, read_metadata

log = logging.getLogger(__name__)
PAGE_DIR = Path(__file__).with_name("web_page")  # the page itself: index.html and its scripts
PAGE_FILES = ("index.html", "app.js", "preprocess.js")
# onnxruntime-web file -> name in the page's ort/ folder. The bundle is an ES module; as .js every
# static server sends it with a JavaScript MIME type (older Pythons do not know .mjs).
ORT_FILES = {"ort.wasm.bundle.min.mjs": "ort.wasm.bundle.min.js",
             "ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm"}
ORT_ENV = "TLKIT_ORT_WEB_DIR"
REPO = Path(__file__).resolve().parents[2]


def find_ort_web(ort_dir: str | os.PathLike | None = None) -> Path:
    """The ``dist`` folder of the ``onnxruntime-web`` npm package.

    Looks in ``ort_dir`` (the package folder or its ``dist``), then
    ``$TLKIT_ORT_WEB_DIR``, then ``node_modules/`` of the repository and of
    the current folder. Raises FileNotFoundError saying how to install it.

    Example:
        >>> find_ort_web().name
        'dist'
    """
    given = ort_dir if ort_dir is not None else os.environ.get(ORT_ENV) or None
    candidates = [Path(given)] if given else [REPO / "node_modules" / "onnxruntime-web",
                                              Path.cwd() / "node_modules" / "onnxruntime-web"]
    for folder in candidates:
        for dist in (folder / "dist", folder):
            if all((dist / name).is_file() for name in ORT_FILES):
                return dist
    where = " or ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"ONNX Runtime Web's files ({', '.join(ORT_FILES)}) were not found in {where}. Install them with "
        f"`npm ci` in the repository root (or `make web-deps`), or point --ort-web-dir (or {ORT_ENV}) "
        "at the dist/ folder of the onnxruntime-web npm package.")


def page_metadata(onnx_path: str | os.PathLike) -> dict:
    """What ``app.js`` reads from ``model.json``: tlkit's metadata plus the resize and tensor names.

    Example:
        >>> page_metadata("model.onnx")["resize_to"]
        256
    """
    meta = read_metadata(onnx_path)
    return {**meta, "resize_to": eval_resize(int(meta["image_size"])),
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME}


def build_web_page(onnx_path: str | os.PathLike, out_dir: str | os.PathLike,
                   ort_dir: str | os.PathLike | None = None) -> Path:
    """Writes the static page for ``onnx_path`` (a file tlkit exported) into ``out_dir``.

    Args:
        onnx_path: an fp32 or int8 file written by :func:`tlkit.export.export_onnx`.
        out_dir: the folder to write (created; tlkit's files in it are replaced).
        ort_dir: where onnxruntime-web is (default: see :func:`find_ort_web`).

    Returns the path of ``index.html``. Raises FileNotFoundError when ONNX
    Runtime Web is not installed, ValueError for a file without tlkit metadata.

    Example:
        >>> build_web_page("model.onnx", "web")   # then: python -m http.server -d web
        PosixPath('web/index.html')
    """
    dist = find_ort_web(ort_dir)
    meta = page_metadata(onnx_path)
    out = Path(out_dir)
    (out / "ort").mkdir(parents=True, exist_ok=True)
    for name, target in ORT_FILES.items():
        shutil.copyfile(dist / name, out / "ort" / target)
    for name in PAGE_FILES:
        shutil.copyfile(PAGE_DIR / name, out / name)
    shutil.copyfile(onnx_path, out / "model.onnx")
    (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    version = _ort_version(dist)
    log.info("wrote %s (ONNX Runtime Web %s); serve it with: python -m http.server -d %s", out, version, out)
    return out / "index.html"


def _ort_version(dist: Path) -> str:
    try:
        return json.loads((dist.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "unknown version"
