"""The output folder of a training run: checked before training, written safely after it.

* ``check_out(out, data_root)`` refuses, before anything is created: an
  existing *file* given as the folder, a folder that cannot be created or
  written, and a folder inside the dataset (the next run would train on the
  ``confusion_matrix.png`` written there as an image of a class).
* ``write_run(out, metrics, save_model, draw_figure)`` creates the folder
  only now, writes ``metrics.json`` first, then the model, then the figure
  (which is optional: a failure there is one warning). Every file is written
  under a temporary name and renamed when complete, so nothing half-written
  is ever left under a real name, and a folder that ends up empty is removed.
* The folder is marked with ``OUTPUT_MARKER``; :mod:`tlkit.data` never reads
  images from a folder that holds it, so tlkit never trains on its own files.

Example:
    >>> check_out(Path("runs/mine"), data_root=Path("data"))
    >>> write_run(Path("runs/mine"), metrics, lambda p: save_model(model, p), lambda p: None)
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable

__all__ = ["OUTPUT_MARKER", "check_out", "data_root", "write_atomic", "write_run"]

OUTPUT_MARKER = ".tlkit-output"  # a hidden, empty file in every folder tlkit writes a run to


def check_out(out: Path, data_root: Path | None = None) -> None:
    """ValueError (naming the fix) if ``out`` cannot or must not receive a run's files."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder. Pass a folder name "
                         "(it is created if missing).")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {out} cannot be created: {existing} is a file, not a folder. "
                         "Choose another --out folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be written: no write permission in {existing}. "
                         "Choose a folder you can write to.")
    if data_root is not None:
        root = data_root.resolve()
        if out.resolve() == root or root in out.resolve().parents:
            raise ValueError(f"--out {out} is inside the dataset folder {root}: the next run would train on "
                             "the files written there (confusion_matrix.png as an image of a class). Choose "
                             "a folder outside the dataset, e.g. runs/mine.")


def data_root(*datasets) -> Path | None:
    """The deepest folder holding every file of ``datasets`` (ImageDatasets), or None without files.

    A dataset whose rows are not files (text: ``files`` are the sentences) names the files it was
    read from in ``source_files``.
    """
    files = [f for d in datasets for f in (d.source_files if hasattr(d, "source_files") else getattr(d, "files", []))]
    return Path(os.path.commonpath([os.path.abspath(f) for f in files])) if files else None


def write_atomic(path: Path, data: str | bytes) -> None:
    """Writes ``data`` under a temporary name, then renames it (permissions follow the umask)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_run(out: Path, metrics: dict, save_model: Callable[[Path], object],
              draw_figure: Callable[[Path], object]) -> None:
    """Creates ``out`` and writes metrics.json, model.pt (``save_model(path)``) and the figure, in that order.

    If metrics.json or the model cannot be written the error propagates; files
    already complete stay, nothing partial does, and folders this call created
    are removed again if they hold nothing but the marker.
    """
    created = [p for p in (out, *out.absolute().parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / OUTPUT_MARKER).touch()
        write_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
        save_model(out / "model.pt")
    except BaseException:
        if not (out / "metrics.json").exists():
            (out / OUTPUT_MARKER).unlink(missing_ok=True)
            for folder in created:  # innermost first
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise
    try:
        draw_figure(out / "confusion_matrix.png")
    except (MemoryError, OSError, ValueError) as exc:  # the figure is optional; metrics and model are safe
        warnings.warn(f"Could not write the confusion matrix figure in {out} ({type(exc).__name__}: {exc}); "
                      "metrics.json and model.pt are complete.", stacklevel=2)
