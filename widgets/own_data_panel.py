"""OwnDataPanel: from a learner's own photos to a trained, tested, saved classifier.

* **Gather**: name two or more classes, then upload photos into each (several
  at once; ipywidgets 7.7.1 and 8), a zip of class folders, or a folder on the
  server. Each class shows its count and thumbnails.
* **Keep**: every accepted photo is written at once into
  ``<folder>/<class>/`` (:class:`tlkit.own_data.PhotoStore`); reopening the
  panel on the folder restores everything. Refused files are listed by name.
* **Train**: cached features plus a new head, in a worker thread with a Stop
  button (:func:`tlkit.own_model.train_on_store`); accuracy with its 95%
  interval, a confusion matrix and the misclassified photos.
* **Try**: a :class:`widgets.PredictPanel` on the trained model.
* **Save**: a ``model.pt`` that ``python -m tlkit evaluate`` and ``load_model`` read, or
  an ONNX file (:func:`tlkit.export.export_onnx`, parity checked on the photos).

Example:
    >>> panel = OwnDataPanel("runs/own-data", blocking=True)
    >>> panel.add_class("mugs"); panel.add_class("plants")
    >>> panel.add_images("mugs", [("mug1.jpg", data), ...])
    >>> panel.train()
    >>> panel.accuracy
    0.95
    >>> panel.save("runs/own-data-model.pt")
"""
from __future__ import annotations

import html
import io
import os
import threading
from pathlib import Path
from typing import Callable

import ipywidgets as W
from PIL import Image

from tlkit.backbones import Backbone, load_backbone
from tlkit.checkpoint import save_model
from tlkit.errors import ImageReadError
from tlkit.images import open_image
from tlkit.own_data import DEFAULT_FOLDER, AddReport, PhotoStore
from tlkit.own_model import FeatureBank, OwnDataResult, predict_bytes, train_on_store
from tlkit.data import transforms_for
from widgets._base import ThreadedPanel, describe_error, error_html, keep_global_rng, replace_children
from widgets._compat import IPYWIDGETS_MAJOR, uploaded_files
from widgets.predict_panel import PredictPanel

THUMBS = 8  # thumbnails shown per class (the newest)


def thumbnail_png(path: str | os.PathLike, side: int = 64) -> bytes:
    """A small upright PNG of a stored photo (b"" if it cannot be read)."""
    try:
        image = open_image(path)
    except ImageReadError:
        return b""
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class OwnDataPanel(ThreadedPanel):
    """Gather, keep, train, try and save a classifier on your own photos.

    Args:
        folder: where the photos live, one sub-folder per class (reopened as it is).
        backbone: a registered name (``efficientnet_lite0``: offline weights), a
            Backbone, or a function returning one.
        pretrained: ImageNet weights for a registered name.
        image_size: input size (None: the backbone's own).
        epochs, lr, seed, val_fraction: passed to :func:`tlkit.own_model.train_on_store`.
        blocking: ``train()`` runs in the calling thread (scripts, tests, nbval).
    """

    busy_message = "Already training: wait for it to finish, or press Stop."
    idle_stop_message = "Nothing to stop: no training is running."
    stopping_message = "Stopping ..."

    def __init__(self, folder: str | os.PathLike = DEFAULT_FOLDER,
                 backbone: str | Backbone | Callable[[], Backbone] = "efficientnet_lite0", pretrained: bool = True,
                 image_size: int | None = None, epochs: int = 50, lr: float = 1e-2, seed: int = 0,
                 val_fraction: float = 0.2, blocking: bool = False):
        self.store = PhotoStore(folder)
        self.backbone, self.pretrained, self.image_size = backbone, pretrained, image_size
        self.options = {"epochs": epochs, "lr": lr, "seed": seed, "val_fraction": val_fraction}
        self.model: Backbone | None = None
        self.result: OwnDataResult | None = None
        self._bank: FeatureBank | None = None
        self._init_threaded("tlkit-own-data", blocking)
        self._build()
        self.refresh()
        counts = self.store.counts()
        self.status.value = (f"Restored {len(counts)} classes, {sum(counts.values())} photos from {self.store.folder}."
                             if counts else "Add two or more classes, then photos for each.")

    # ---- view ----------------------------------------------------------------
    def _build(self) -> None:
        self.class_name = W.Text(placeholder="class name, e.g. mugs", description="New class")
        self.add_button = W.Button(description="add class", icon="plus")
        self.add_button.on_click(lambda _: self._guard(lambda: self.add_class(self.class_name.value)))
        self.remove_pick = W.Dropdown(options=[], description="Class")
        self.remove_button = W.Button(description="remove class", icon="trash")
        self.remove_button.on_click(lambda _: self._guard(lambda: self.remove_class(self.remove_pick.value)))
        self.zip_upload = W.FileUpload(accept=".zip", multiple=True, description="zip of class folders",
                                       layout=W.Layout(width="auto"))
        self.zip_upload.observe(self._on_zip, names="value")
        self.folder_path = W.Text(placeholder="path/on/server with one sub-folder per class", description="Folder")
        self.folder_button = W.Button(description="add folder", icon="folder-open")
        self.folder_button.on_click(lambda _: self._guard(lambda: self.add_folder(self.folder_path.value)))
        self.messages = W.HTML(value="")
        self.classes_box = W.VBox([])
        self.train_button = W.Button(description="train", button_style="success", icon="play")
        self.stop_button = W.Button(description="stop", button_style="danger", icon="stop")
        self.train_button.on_click(lambda _: self.train())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="features")
        self.report = W.HTML(value="")
        self.mistakes = W.HBox([])
        self.try_box = W.VBox([W.HTML("<i>Train first, then upload a new photo here to try the model.</i>")])
        self.save_path = W.Text(value=str(self.store.folder.parent / f"{self.store.folder.name}-model.pt"),
                                description="Save as")
        self.save_button = W.Button(description="save model", icon="save")
        self.save_button.on_click(lambda _: self._guard(lambda: self.save(self.save_path.value)))
        self.onnx_button = W.Button(description="export ONNX", icon="share")
        self.onnx_button.on_click(lambda _: self._guard(
            lambda: self.export_onnx(Path(self.save_path.value).with_suffix(".onnx"))))
        self.widget = W.VBox([
            W.HTML("<b>1. Gather</b>"), W.HBox([self.class_name, self.add_button]),
            W.HBox([self.remove_pick, self.remove_button]), W.HBox([self.zip_upload]),
            W.HBox([self.folder_path, self.folder_button]), self.messages, self.classes_box,
            W.HTML("<b>2. Train</b>"), W.HBox([self.train_button, self.stop_button, self.progress]),
            self.status, self.error_box, self.report, self.mistakes,
            W.HTML("<b>3. Try</b>"), self.try_box,
            W.HTML("<b>4. Save</b>"), W.HBox([self.save_path, self.save_button, self.onnx_button]), self.log])

    def _class_row(self, name: str, count: int) -> W.Widget:
        upload = W.FileUpload(accept="image/*,.zip", multiple=True, description=f"photos of {name}",
                              layout=W.Layout(width="auto"))
        upload.observe(lambda change, n=name: self._on_upload(n, change), names="value")
        thumbs = [W.Image(value=png, format="png", layout=W.Layout(width="64px"))
                  for png in map(thumbnail_png, self.store.files(name)[-THUMBS:]) if png]
        label = W.HTML(f"<b>{html.escape(name)}</b>: {count} photo{'s' if count != 1 else ''}")
        return W.VBox([W.HBox([label, upload]), W.HBox(thumbs)])

    def refresh(self) -> dict[str, int]:
        """Redraws the class rows (count, thumbnails, upload) from the folder; returns the counts."""
        counts = self.store.counts()
        self.rows = {name: self._class_row(name, n) for name, n in counts.items()}
        replace_children(self.classes_box, self.rows.values(), root=self.widget)  # old rows closed
        self.remove_pick.options = list(counts)
        return counts

    def _show_report(self, report: AddReport) -> AddReport:
        kept = f"Kept {len(report.added)} photo{'s' if len(report.added) != 1 else ''}."
        lines = report.messages()
        self.messages.value = html.escape(kept) + "".join(
            f"<br><span style='color:#b00020'>{html.escape(m)}</span>" for m in lines)
        self.refresh()
        return report

    def _guard(self, action: Callable[[], object]) -> None:
        """Runs a button's action; a mistake (bad class name, missing folder) is shown, not raised."""
        self.error_box.value = ""
        try:
            action()
        except (ValueError, KeyError, TypeError, OSError, ImportError, RuntimeError) as exc:
            self.error_box.value = error_html(describe_error(exc))

    # ---- gather (headless surface) ------------------------------------------------
    def add_class(self, name: str) -> str:
        """Adds a class (its folder); returns the clean name."""
        name = self.store.add_class(name)
        self.class_name.value = ""
        self.refresh()
        return name

    def remove_class(self, name: str) -> Path:
        """Removes a class from training; its photos move to ``<folder>/.removed/``."""
        moved = self.store.remove_class(name)
        self.messages.value = html.escape(f"Removed {name}; its photos were moved to {moved.name} in .removed/.")
        self.refresh()
        return moved

    def add_images(self, name: str, files: list[tuple[str, bytes]]) -> AddReport:
        """Adds ``[(filename, bytes)]`` (what an upload delivers) to class ``name``."""
        return self._show_report(self.store.add_images(name, files))

    def add_folder(self, path: str | os.PathLike, name: str | None = None) -> AddReport:
        """Adds a folder on the server: one sub-folder per class, or its images into class ``name``."""
        return self._show_report(self.store.add_folder(path, name))

    def add_zip(self, data: bytes, filename: str = "upload.zip") -> AddReport:
        """Adds a zip of class folders."""
        return self._show_report(self.store.add_zip(data, filename))

    def _on_upload(self, name: str, change) -> None:
        files = uploaded_files(change["new"])
        if files:
            self.add_images(name, files)
            _clear_upload(change["owner"])

    def _on_zip(self, change) -> None:
        files = uploaded_files(change["new"])
        if files:
            report = AddReport()
            for filename, data in files:
                report.merge(self.store.add_zip(data, filename))
            self._show_report(report)
            _clear_upload(change["owner"])

    # ---- train ------------------------------------------------------------------------
    def train(self, blocking: bool | None = None) -> bool:
        """Extracts features (only new photos cost time) and trains the head; False if already running."""
        def prepare() -> None:
            self._stop_event = threading.Event()
            self.progress.value = 0

        return self._launch(self._train_work, "Training ...", blocking, prepare=prepare)

    def _set_busy(self, busy: bool) -> None:
        self.train_button.disabled = busy
        self.save_button.disabled = busy

    def _fresh_model(self) -> Backbone:
        if isinstance(self.backbone, Backbone):
            return self.backbone
        if callable(self.backbone):
            return self.backbone()
        return load_backbone(self.backbone, pretrained=self.pretrained)

    def _train_work(self) -> OwnDataResult | None:
        with keep_global_rng():
            if self.model is None:
                self.status.value = "Loading the backbone ..."
                self.model = self._fresh_model()
                self._bank = None
            if self._bank is None:
                self._bank = FeatureBank(self.model, transforms_for(self.model, image_size=self.image_size),
                                         self.store.folder / ".features")
            self.status.value = "Computing features of new photos ..."
            try:
                return train_on_store(self.model, self.store, self.image_size, bank=self._bank,
                                      stop=self._stop_event, progress=self._on_progress, **self.options)
            except InterruptedError:
                return None

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)
        self.status.value = f"Computing features: {done}/{total} new photos ..."

    def render(self, result: OwnDataResult | None) -> None:
        """Accuracy with its interval, notes, confusion matrix, mistakes; then the Try panel."""
        if result is None:
            self.status.value = "Stopped; the model was not changed."
            return
        self.result = result
        self.progress.value = 1
        lo, hi = result.interval
        self.status.value = (f"Done in {result.seconds:.1f} s ({result.new_photos} new photos): accuracy "
                             f"{result.accuracy:.0%} (95% interval {lo:.0%}-{hi:.0%}, {result.judged} photos, "
                             f"{result.method}).")
        self.report.value = _confusion_html(result) + "".join(
            f"<div style='color:#8a5300'>{html.escape(n)}</div>" for n in result.notes)
        replace_children(self.mistakes, (
            W.VBox([W.Image(value=png, format="png", layout=W.Layout(width="64px")),
                    W.HTML(f"<small>{html.escape(t)} &rarr; {html.escape(p)}</small>")])
            for f, t, p in result.mistakes[:THUMBS] for png in [thumbnail_png(f)] if png), root=self.widget)
        if not hasattr(self, "try_panel"):
            self.try_panel = PredictPanel(result.model, topk=len(result.classes))
        self.try_panel.model, self.try_panel.topk = result.model, len(result.classes)
        replace_children(self.try_box, (self.try_panel.widget,), root=self.widget)

    @property
    def accuracy(self) -> float | None:
        """The last training's accuracy (holdout or cross-validation), or None before training."""
        return None if self.result is None else self.result.accuracy

    # ---- try and save -----------------------------------------------------------
    def predict(self, image_bytes: bytes, name: str = "upload") -> dict[str, float]:
        """``{class: probability}`` for one photo, from the trained model."""
        self._need_model()
        return predict_bytes(self.result.model, image_bytes, name)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the trained model (``load_model`` and ``python -m tlkit evaluate`` read it)."""
        self._need_model()
        out = save_model(self.result.model, path, image_size=self.image_size, val_accuracy=self.result.accuracy,
                         accuracy_method=self.result.method, photos_folder=self.store.folder.name)
        self.messages.value = html.escape(f"Saved the model to {out}.")
        return out

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Writes the trained model as ONNX (``pip install tlkit[export]``), checked on the store's photos."""
        self._need_model()
        from tlkit.export import export_onnx  # optional dependency: imported only when asked for

        out = export_onnx(self.result.model, path, image_size=self.image_size,
                          parity_images=self.store.dataset()).path
        self.messages.value = html.escape(f"Exported the model to {out} (ONNX, parity checked).")
        return out

    def _need_model(self) -> None:
        if self.result is None:
            raise ValueError("No trained model yet: add photos to two or more classes and press train first.")


def _confusion_html(result: OwnDataResult) -> str:
    names = [html.escape(c) for c in result.classes]
    head = "".join(f"<th>{n}</th>" for n in names)
    rows = "".join(f"<tr><th style='text-align:left'>{n}</th>" + "".join(
        f"<td style='text-align:right'>{v}</td>" for v in row) + "</tr>" for n, row in zip(names, result.confusion))
    return ("<table cellpadding='3'><tr><th>true \\ predicted</th>" + head + "</tr>" + rows + "</table>")


def _clear_upload(upload: W.FileUpload) -> None:
    """Empties a FileUpload after its files are kept, so choosing the same files again is seen."""
    if IPYWIDGETS_MAJOR >= 8:
        upload.value = ()
    else:  # 7.x: value is read-only, computed from data and metadata when _counter changes
        upload.set_trait("value", {})
