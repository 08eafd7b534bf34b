"""PredictPanel: upload a photo (or pick a validation image) and see what the model says.

Shows the image, the class probabilities as bars, and a Grad-CAM overlay:
where in the picture the evidence for the predicted class was. Anything that
is not a usable image (a PDF, a text file, a truncated JPEG) gives a clear
message in the panel; nothing is raised into the notebook.

Example:
    >>> panel = PredictPanel(model, val_dataset=val)
    >>> panel                                   # upload a photo, or pick one
    >>> panel.predict_bytes(open("cat.jpg", "rb").read(), "cat.jpg")
    [('cats', 0.97), ('dogs', 0.03)]
"""
from __future__ import annotations

import html
import io
import os
import tempfile
import traceback
from pathlib import Path

import ipywidgets as W
from PIL import Image
from torch import nn

from tlkit import viz
from tlkit.data import transforms_for
from tlkit.errors import ImageReadError
from tlkit.images import open_image
from tlkit.explain import classify_image, grad_cam
from widgets._base import Panel, describe_error, error_html
from widgets._compat import uploaded_files
from widgets._plot import show_png
from widgets._snapshot import Snapshot, image_snapshot

_NO_CHOICE = "(pick a validation image)"


def _decode(data: bytes, name: str) -> Image.Image:
    """RGB image from uploaded bytes, through tlkit's robust decoder (bombs, modes, 0 bytes).

    The bytes go through a temporary file; an error names the user's file
    (``name``), never that temporary path.
    """
    suffix = Path(name).suffix if len(Path(name).suffix) <= 6 else ""
    with tempfile.TemporaryDirectory(prefix="tlkit-upload-") as tmp:
        path = os.path.join(tmp, "upload" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        try:
            return open_image(path)
        except ImageReadError as exc:
            raise ImageReadError(str(exc).replace(path, name).replace(tmp, "")) from None


def _png(image: Image.Image, max_side: int = 224) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return buf.getvalue()


def probability_bars(probs: list[tuple[str, float]], true_label: str | None = None) -> str:
    """HTML bars, one per class (core widgets only: no plotting library needed)."""
    lines = []
    for name, p in probs:
        mark = " &#10003;" if name == true_label else ""
        lines.append(
            "<div style='display:flex;align-items:center;margin:2px 0'>"
            f"<span style='width:130px;overflow:hidden'>{html.escape(name)}{mark}</span>"
            f"<span style='display:inline-block;background:#4c78a8;height:12px;width:{int(200 * p)}px'></span>"
            f"<span style='margin-left:6px'>{100 * p:.1f}%</span></div>")
    head = f"<div>true class: <b>{html.escape(true_label)}</b></div>" if true_label else ""
    return head + "".join(lines)


class PredictPanel(Panel):
    """Image, class probabilities and Grad-CAM for one uploaded or chosen photo.

    Args:
        model: a tlkit Backbone (a trained one, or an ImageNet one: names come
            from ``model.class_names`` or ImageNet's list).
        val_dataset: optional ImageDataset; its images can be picked from a Dropdown.
        max_choices: at most this many images in the Dropdown (spread over classes).
        topk: number of classes shown.

    Example:
        >>> panel = PredictPanel(model, val)
        >>> panel.pick.value = panel.pick.options[1][1]   # first validation image
        >>> panel.last["probs"][0]
        ('cats', 0.98)
    """

    def __init__(self, model: nn.Module, val_dataset=None, max_choices: int = 200, topk: int = 5):
        self.model, self.val_dataset, self.topk = model, val_dataset, topk
        self.last: dict | None = None  # name, probs, true label of the last prediction
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload photo")
        self.upload.observe(self._on_upload, names="value")
        self.pick = W.Dropdown(options=self._choices(max_choices), value=None, description="or pick",
                               layout=W.Layout(width="420px"))
        self.pick.observe(self._on_pick, names="value")
        self.error_box = W.HTML(value="")
        self.image = W.Image(format="png", layout=W.Layout(width="224px"))
        self.probs = W.HTML(value="<i>Upload a photo or pick a validation image.</i>")
        self.cam = W.Image(format="png")
        self.log = W.Output()
        self.widget = W.VBox([W.HBox([self.upload, self.pick]), self.error_box,
                              W.HBox([self.image, self.probs]), self.cam, self.log])

    def snapshot(self) -> Snapshot:
        """The Grad-CAM figure shown now (``"grad_cam"``: photo and heatmap, the PNG the last
        prediction drew) and its probabilities, as a static image for viewers without a kernel."""
        last = self.last
        text = (f"{last['name']}: " + ", ".join(f"{n} {100 * p:.1f}%" for n, p in last["probs"])
                + (f" (true class: {last['true']})" if last["true"] else "")) if last else "no prediction yet"
        return image_snapshot("grad_cam", self.cam, text, empty="no prediction yet")

    def _choices(self, limit: int) -> list[tuple[str, str | None]]:
        options: list[tuple[str, str | None]] = [(_NO_CHOICE, None)]
        ds = self.val_dataset
        if ds is None:
            return options
        by_class: list[list[int]] = [[i for i, t in enumerate(ds.targets) if t == c] for c in range(len(ds.classes))]
        per_class = max(1, limit // max(len(by_class), 1))
        for c, idx in enumerate(by_class):
            for i in idx[:per_class]:
                options.append((f"{ds.classes[c]}/{Path(ds.files[i]).name}", ds.files[i]))
        return options

    # ---- controller ---------------------------------------------------
    def _on_upload(self, change) -> None:
        for name, data in uploaded_files(change["new"]):
            self.pick.value = None  # the dropdown no longer names what is shown
            self.predict_bytes(data, name)

    def _on_pick(self, change) -> None:
        if change["new"] is not None:
            self.predict_file(change["new"])

    def _clear(self, error: str) -> None:
        """An error replaces the last result: no old photo or probabilities next to it."""
        self.error_box.value = error_html(error)
        self.image.value, self.cam.value = b"", b""
        self.probs.value = ""
        self.last = None

    def predict_file(self, path: str | os.PathLike) -> list[tuple[str, float]] | None:
        """Prediction for an image file (a validation image shows its true class too)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            self._clear(f"Could not read {Path(path).name}: {exc.strerror or exc}")
            return None
        true = None
        ds = self.val_dataset
        if ds is not None and str(path) in ds.files:
            true = ds.classes[ds.targets[ds.files.index(str(path))]]
        return self.predict_bytes(data, Path(path).name, true_label=true)

    def predict_bytes(self, data: bytes, name: str = "upload",
                      true_label: str | None = None) -> list[tuple[str, float]] | None:
        """Classifies image bytes, shows everything, and returns ``[(class, prob), ...]``.

        Returns None, with the reason shown in the panel, when the bytes are
        not a usable image or the model fails.
        """
        self.error_box.value = ""
        try:
            image = _decode(bytes(data), name)
        except ImageReadError as exc:
            self._clear(f"{name!r} is not an image this panel can read ({exc}). Upload a JPEG or PNG photo.")
            return None
        try:
            probs = classify_image(self.model, image, topk=self.topk)
            heat = grad_cam(self.model, transforms_for(self.model)(image))  # (H, W) in [0, 1]
            fig = viz.show_grad_cam(image, heat)
            cam_png = viz.figure_to_png(fig)
        except Exception as exc:  # noqa: BLE001 - shown in the panel, the notebook keeps running
            self._clear(f"Prediction failed for {name!r}: {describe_error(exc)}")
            self.log.append_stdout(traceback.format_exc())
            return None
        self.image.value = _png(image)
        self.probs.value = probability_bars(probs, true_label)
        show_png(self.cam, cam_png)
        self.last = {"name": name, "probs": probs, "true": true_label}
        return probs
