"""``python -m tlkit export`` and ``evaluate MODEL.onnx``: the command line of :mod:`tlkit.export`.

Kept apart from ``__main__`` so that building the parser imports nothing heavy:
onnx and onnxruntime load only when one of these commands runs, and a missing
package is a one-line user error naming ``pip install tlkit[export]``.

Example:
    python -m tlkit export runs/demo/model.pt --int8          # model.onnx, model.int8.onnx
    python -m tlkit export runs/demo/model.pt --web runs/demo/web    # + a static page (ONNX Runtime Web)
    python -m tlkit evaluate runs/demo/model.int8.onnx data/val --json
"""
from __future__ import annotations

import argparse
from pathlib import Path



def add_export_parser(sub) -> None:
    """Adds the ``export`` subcommand to ``python -m tlkit``'s subparsers."""
    x = sub.add_parser("export", help="export a saved model to ONNX (optionally int8), checked against PyTorch",
                       description="Write MODEL.pt as ONNX with its preprocessing in the metadata, check ONNX "
                                   "Runtime against PyTorch (parity), and print the file size and latency. "
                                   "Needs: pip install tlkit[export].")
    x.add_argument("model", help="a model.pt written by `train` or `demo` (loaded with weights_only=True)")
    x.add_argument("--format", choices=("onnx",), default="onnx", help="output format (default: onnx)")
    x.add_argument("--out", default=None, help="the .onnx file to write (default: MODEL with .onnx)")
    x.add_argument("--int8", action="store_true",
                   help="also write a static int8 copy (FILE.int8.onnx), calibrated on training images")
    x.add_argument("--images", default=None, metavar="DIR",
                   help="class folders of validation images for the parity check and int8 accuracy "
                        "(default: the cats-vs-dogs validation photos when the classes match, else random inputs)")
    x.add_argument("--calibration", default=None, metavar="DIR",
                   help="class folders of training images for int8 calibration (default: cats-vs-dogs train)")
    x.add_argument("--web", default=None, metavar="DIR",
                   help="also write a static web page into DIR that classifies photos in the browser with "
                        "ONNX Runtime Web (serve it with: python -m http.server -d DIR); needs `npm ci` once")
    x.add_argument("--ort-web-dir", default=None, metavar="DIR",
                   help="the onnxruntime-web npm package (or its dist/) for --web (default: "
                        "$TLKIT_ORT_WEB_DIR, else node_modules/ of the repository)")
    x.add_argument("--quiet", action="store_true", help="no progress output")
    x.add_argument("--debug", action="store_true", help="show the traceback of every error")


def _export_extra() -> None:
    """The optional packages, as a user error (exit 2, one line) when they are missing."""
    from tlkit.export.runtime import require

    try:
        require("onnx"), require("onnxruntime")
    except ImportError as exc:
        raise ValueError(str(exc)) from exc


def _labelled_images(folder: str | None, split: str, classes: list[str]):
    """Class folders given on the command line, or the shared dataset's split when its classes match."""
    from tlkit.data import cats_vs_dogs, scan_class_folders

    if folder is not None:
        return scan_class_folders(folder, classes=list(classes))
    try:
        train, val = cats_vs_dogs(download=False)
    except Exception:  # noqa: BLE001 - no local dataset: the caller falls back or says what to pass
        return None
    ds = train if split == "train" else val
    return ds if list(ds.classes) == list(classes) else None


def cmd_export(args: argparse.Namespace) -> dict:
    """Exports (and with ``--int8`` quantizes) ``args.model``; returns what :func:`report_export` prints."""
    from tlkit.checkpoint import load_model
    from tlkit.data import subset

    _export_extra()
    from tlkit.export import export_onnx, measure_latency, quantize_int8

    model = load_model(args.model)  # the same weights_only refusal as `evaluate`
    if args.web:  # before the export: a missing npm install is a quick error, not one after minutes
        from tlkit.export.web import find_ort_web
        find_ort_web(args.ort_web_dir)
    out = Path(args.out or Path(args.model).with_suffix(".onnx"))
    val = _labelled_images(args.images, "val", model.class_names or [])
    result = export_onnx(model, out, image_size=model.input_size,
                         parity_images=subset(val, per_class=32) if val is not None else None)
    report = {"out": str(out), "bytes": result.bytes, "parity": vars(result.parity),
              "latency": [measure_latency(model).as_dict(), measure_latency(out).as_dict()]}
    if args.int8:
        calib = _labelled_images(args.calibration, "train", model.class_names or [])
        if calib is None:
            raise ValueError("--int8 needs training images for calibration: pass --calibration DIR (class folders).")
        q = quantize_int8(out, subset(calib, per_class=50), out.with_suffix(".int8.onnx"),
                          validation=subset(val, per_class=100) if val is not None else None)
        report["int8"] = {"out": str(q.path), "bytes": q.int8_bytes, "size_ratio": round(q.size_ratio, 3),
                          "agreement": q.agreement, "n": q.n, "accuracy_fp32": q.accuracy_fp32,
                          "accuracy_int8": q.accuracy_int8}
        report["latency"].append(q.latency[1].as_dict())
    if args.web:
        from tlkit.export.web import build_web_page
        report["web"] = str(build_web_page(out, args.web, args.ort_web_dir))
    return report


def report_export(r: dict) -> None:
    """Prints the files written, the parity check, the int8 comparison and the latency table."""
    from tlkit.export import Latency, format_latency_table

    p = r["parity"]
    print(f"wrote {r['out']} ({r['bytes'] / 1e6:.1f} MB)")
    print(f"parity vs PyTorch on {p['n']} images ({p['source']}): max |dp| {p['max_abs_diff']:.2e}, "
          f"predictions agree {p['agreement']:.1%}")
    if "int8" in r:
        q = r["int8"]
        print(f"wrote {q['out']} ({q['bytes'] / 1e6:.1f} MB, {q['size_ratio']:.0%} of fp32); int8 agrees with "
              f"fp32 on {q['agreement']:.1%} of {q['n']} images" + (
                  f"; accuracy fp32 {q['accuracy_fp32']:.4f}, int8 {q['accuracy_int8']:.4f}"
                  if q["accuracy_int8"] is not None else ""))
    print(format_latency_table([Latency(**row) for row in r["latency"]]))
    if "web" in r:
        folder = Path(r["web"]).parent
        print(f"wrote the web page {r['web']}; serve it with: python -m http.server -d {folder} "
              "(then open http://localhost:8000 here, or this machine's address on a phone)")


def evaluate_onnx(args: argparse.Namespace) -> dict:
    """``evaluate`` for an exported file: ONNX Runtime with the preprocessing in its metadata."""
    from tlkit.evaluate import evaluate_split

    _export_extra()
    from tlkit.export import OnnxClassifier

    return evaluate_split(OnnxClassifier(args.model), args.split_dir, progress=not args.quiet)
