"""Headless tests of widgets.OwnDataPanel under ipywidgets 8 (.venv) and 7.7.1 (.venv-ipyw7).

Uploads are simulated with the value shapes each version's browser side
produces (see tests/test_widgets.py); the buttons are clicked.
"""
from __future__ import annotations

import datetime
import importlib.util
import threading

import pytest
import torch

from imagegen import COLOURS, write_image
from tlkit.backbones import load_backbone
from tlkit.checkpoint import load_model
from widgets import OwnDataPanel
from widgets._base import PNG_MAGIC
from widgets._compat import IPYWIDGETS_MAJOR
from zipgen import make_zip

pytestmark = [pytest.mark.filterwarnings("ignore:The `ipykernel.comm.Comm` class has been deprecated:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]  # the fixture: conftest.py


def photo(cls: str, i: int, tmp) -> bytes:
    return write_image(tmp / "gen" / cls / f"{i}.jpg", COLOURS[cls], 40,
                       seed=1000 * sorted(COLOURS).index(cls) + i).read_bytes()


def simulate_upload(upload, files: list[tuple[str, bytes]]) -> None:
    """What the browser does when several files are chosen, in either ipywidgets version."""
    if IPYWIDGETS_MAJOR >= 8:
        now = datetime.datetime.now(datetime.timezone.utc)
        upload.value = tuple({"name": n, "type": "image/jpeg", "size": len(c), "content": memoryview(c),
                              "last_modified": now} for n, c in files)
    else:
        upload.metadata = [{"name": n, "type": "image/jpeg", "size": len(c), "lastModified": 0} for n, c in files]
        upload.data = [c for _, c in files]
        upload._counter += 1


def backbone():
    torch.manual_seed(0)
    return load_backbone("resnet18", pretrained=False)


def panel_on(folder, **kw) -> OwnDataPanel:
    return OwnDataPanel(folder, backbone=backbone, image_size=32, blocking=True, **kw)


def test_own_data_panel_upload_click_train_restore_and_save(tmp_path):
    panel = panel_on(tmp_path / "own")
    for name in ("cats", "dogs"):
        panel.class_name.value = name
        panel.add_button.click()
    assert list(panel.rows) == ["cats", "dogs"] and panel.remove_pick.options == ("cats", "dogs")
    for cls in ("cats", "dogs"):
        upload = panel.rows[cls].children[0].children[1]
        simulate_upload(upload, [(f"{cls}{i}.jpg", photo(cls, i, tmp_path)) for i in range(12)])
    assert panel.store.counts() == {"cats": 12, "dogs": 12}
    assert len(list((tmp_path / "own" / "dogs").glob("*.jpg"))) == 12  # on disk at once
    thumbs = panel.rows["cats"].children[1].children
    assert len(thumbs) == 8 and bytes(thumbs[0].value).startswith(PNG_MAGIC)
    assert "12 photos" in panel.rows["dogs"].children[0].children[0].value

    panel.train_button.click()
    assert panel.error is None and panel.accuracy >= 0.9
    assert "accuracy" in panel.status.value and "cross-validation (5 folds)" in panel.status.value
    assert "<table" in panel.report.value and panel.try_box.children == (panel.try_panel.widget,)
    probs = panel.predict(photo("dogs", 99, tmp_path), "new.jpg")
    assert max(probs, key=probs.get) == "dogs"
    panel.save_path.value = str(tmp_path / "model.pt")
    panel.save_button.click()
    assert panel.error_box.value == "" and "Saved" in panel.messages.value
    reloaded = load_model(tmp_path / "model.pt", expect_classes=["cats", "dogs"])
    from tlkit.own_model import predict_bytes
    assert predict_bytes(reloaded, photo("dogs", 99, tmp_path)) == pytest.approx(probs, abs=1e-5)

    if importlib.util.find_spec("onnxruntime") is not None:  # the optional export extra
        panel.save_path.value = str(tmp_path / "model.pt")
        panel.onnx_button.click()
        assert panel.error_box.value == "" and (tmp_path / "model.onnx").stat().st_size > 1000
        assert "parity checked" in panel.messages.value

    again = panel_on(tmp_path / "own")  # a kernel restart: a new panel on the same folder
    assert again.store.counts() == {"cats": 12, "dogs": 12} and list(again.rows) == ["cats", "dogs"]
    assert again.status.value.startswith("Restored 2 classes, 24 photos")


def test_own_data_panel_bad_files_are_listed_by_name_and_the_rest_kept(tmp_path):
    panel = panel_on(tmp_path / "own")
    panel.add_class("cats")
    upload = panel.rows["cats"].children[0].children[1]
    simulate_upload(upload, [("good.jpg", photo("cats", 1, tmp_path)), ("holiday notes.txt", b"not a photo"),
                             ("cut.jpg", photo("cats", 2, tmp_path)[:150]),
                             ("evil.zip", make_zip({"../../escape.jpg": photo("cats", 3, tmp_path)}))])
    text = panel.messages.value
    assert "Kept 1 photo." in text and "holiday notes.txt" in text and "cut.jpg" in text and "evil.zip" in text
    assert "tlkit-upload" not in text and ".part" not in text
    assert panel.store.counts() == {"cats": 1} and not list(tmp_path.rglob("escape*"))
    simulate_upload(panel.rows["cats"].children[0].children[1], [("copy.jpg", photo("cats", 1, tmp_path))])
    assert "copy.jpg: already there" in panel.messages.value and panel.store.counts() == {"cats": 1}


def live_widgets() -> int:
    """Widget models open in this kernel (ipywidgets 8 keeps them in ``_instances``, 7.7.1 in ``Widget.widgets``)."""
    import ipywidgets as W
    from ipywidgets.widgets import widget as registry
    return len(registry._instances if hasattr(registry, "_instances") else W.Widget.widgets)


def test_own_data_panel_redraws_close_the_widgets_they_replace(tmp_path):
    """Each upload redraws the class rows. The old rows (thumbnails, upload button, layouts) are closed, so a
    long session, the browser and the notebook's saved widget state do not keep them."""
    import ipywidgets as W
    from widgets._base import widget_tree
    panel = panel_on(tmp_path / "own")
    panel.add_class("cats")
    panel.add_images("cats", [(f"cats{i}.jpg", photo("cats", i, tmp_path)) for i in range(3)])
    old = widget_tree([panel.rows["cats"]])
    assert sum(isinstance(w, W.Image) for w in old.values()) == 3 and all(w.comm is not None for w in old.values())
    before = live_widgets()
    for i in range(3, 6):  # three redraws; the row gains a thumbnail each time
        panel.add_images("cats", [(f"cats{i}.jpg", photo("cats", i, tmp_path))])
    assert all(w.comm is None for w in old.values())  # the replaced row, closed down to its layouts
    new = widget_tree([panel.rows["cats"]])
    assert sum(isinstance(w, W.Image) for w in new.values()) == 6 and all(w.comm is not None for w in new.values())
    assert live_widgets() - before == 3 * 2  # three more thumbnails, each an Image and its Layout; nothing else
    assert panel.class_name.comm is not None and panel.classes_box.children == (panel.rows["cats"],)


def test_own_data_panel_zip_folder_too_few_and_remove(tmp_path):
    panel = panel_on(tmp_path / "own")
    simulate_upload(panel.zip_upload, [("set.zip", make_zip({f"birds/{i}.jpg": photo("birds", i, tmp_path)
                                                             for i in range(4)}))])
    for i in range(2):
        write_image(tmp_path / "server" / "dogs" / f"{i}.jpg", COLOURS["dogs"], 40, seed=70 + i)
    panel.folder_path.value = str(tmp_path / "server")
    panel.folder_button.click()
    assert panel.store.counts() == {"birds": 4, "dogs": 2}
    with pytest.raises(ValueError, match=r"Too few photos in dogs \(2\)"):
        panel.train()
    assert "Too few photos in dogs" in panel.error_box.value and panel.accuracy is None
    panel.folder_path.value = str(tmp_path / "missing")
    panel.folder_button.click()
    assert "not a folder" in panel.error_box.value  # a button's mistake is shown, not raised
    panel.remove_pick.value = "dogs"
    panel.remove_button.click()
    assert panel.store.classes == ["birds"] and list(panel.rows) == ["birds"]
    with pytest.raises(ValueError, match="No trained model"):
        panel.predict(photo("birds", 1, tmp_path))


def test_own_data_panel_stop_during_training_keeps_the_model(tmp_path):
    panel = OwnDataPanel(tmp_path / "own", backbone=backbone, image_size=32)
    for cls in ("cats", "dogs"):
        panel.add_images(cls, [(f"{i}.jpg", photo(cls, i, tmp_path)) for i in range(40)])
    gate, release = threading.Event(), threading.Event()

    def slow_progress(done, total):  # holds the worker after the first chunk of features
        gate.set()
        assert release.wait(30)
    panel._on_progress = slow_progress
    assert panel.train() is True and gate.wait(30)
    assert panel.train() is False and panel.status.value == panel.busy_message
    assert panel.stop() is True
    release.set()
    assert panel.join(30)
    assert panel.error is None and panel.status.value == "Stopped; the model was not changed."
    assert panel.accuracy is None and panel.train_button.disabled is False
