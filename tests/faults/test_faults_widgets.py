"""The widget panels when the user does something unexpected, driven headless (set values, click).

Nothing raises into the notebook: every problem ends up as a message in the
panel, training runs in at most one thread, and the panel can be used again
afterwards.
"""
from __future__ import annotations

import html
import io
import tempfile
import threading

import pytest
import torch
from PIL import Image

from browser.tiny import tiny_backbone
from faultkit import write_png
from imagegen import make_dataset
from tlkit.callbacks import Callback
from tlkit.data import image_folder
from widgets import FreezePanel, PredictPanel, TrainingDashboard

pytestmark = pytest.mark.filterwarnings("ignore:The `ipykernel.comm.Comm` class has been deprecated")
FIT = {"image_size": 32, "seed": 0, "num_workers": 0}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data(tmp_path):
    return image_folder(make_dataset(tmp_path / "data", train=8, val=4, size=36))


@pytest.fixture
def model():
    return tiny_backbone()


class Gate(Callback):
    """Holds the training thread at the end of epoch ``at`` until the test releases it."""

    def __init__(self, at: int = 1):
        self.at, self.reached, self.release = at, threading.Event(), threading.Event()

    def on_epoch_end(self, state, epoch, row):
        if epoch == self.at:
            self.reached.set()
            assert self.release.wait(60), "the test never released the gate"


class TrainableLog(Callback):
    """Records, after every batch, whether ``group`` trains and whether the optimizer holds it."""

    def __init__(self, group: str):
        self.group, self.rows = group, []

    def on_batch_end(self, state, step, logs):
        params = list(state.model.groups[self.group].parameters())
        in_opt = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
        self.rows.append((logs["epoch"], all(p.requires_grad for p in params),
                          all(id(p) in in_opt for p in params)))


def dashboard_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tlkit-dashboard" and t.is_alive()]


# ---------------------------------------------------------------- TrainingDashboard

def test_start_twice_is_refused_and_only_one_thread_trains(model, data):
    train, val = data
    gate = Gate(at=1)
    dash = TrainingDashboard(model, train, val, epochs=2, batch_size=8, callbacks=[gate], **FIT)
    dash.start_button.click()
    assert gate.reached.wait(60)
    dash.start_button.click()  # a double click (the button is disabled, but clicks can still arrive)
    assert dash.start() is False
    assert "Already training" in dash.status.value
    assert len(dashboard_threads()) == 1
    gate.release.set()
    assert dash.join(60) and dash.error is None
    assert dash.history["epoch"] == [1, 2]  # one run's epochs, not two interleaved runs
    assert dashboard_threads() == []


def test_stop_when_idle_says_so_without_an_error(model, data):
    train, val = data
    dash = TrainingDashboard(model, train, val, epochs=1, batch_size=8, blocking=True, **FIT)
    dash.stop_button.click()  # before any run
    assert dash.status.value == "Nothing to stop: no training is running."
    assert dash.error is None and dash.error_box.value == ""
    dash.start()
    assert dash.status.value.startswith("Done: 1 epoch(s)")
    assert dash.stop() is False  # after the run
    assert dash.status.value.startswith("Nothing to stop") and dash.error is None and dash.error_box.value == ""
    assert len(dash.history) == 1  # the finished run's History is untouched


def test_exception_in_the_training_thread_is_shown_and_the_panel_recovers(model, data, tmp_path):
    train, val = data
    dash = TrainingDashboard(model, train, val, epochs=1, batch_size=8, **FIT)
    saved = {f: open(f, "rb").read() for f in train.files}
    for f in train.files:  # the photos are deleted after the dashboard was built
        open(f, "wb").close()
    with pytest.warns(UserWarning, match=r"Skipped 16 unreadable image\(s\)"):
        dash.start()
        assert dash.join(60)
    assert isinstance(dash.error, ValueError)
    assert "No readable training images" in dash.error_box.value
    assert dash.status.value.startswith("Failed after 0 epoch(s)") and dash.progress.bar_style == "danger"
    shown = "".join(o.get("text", "") for o in dash.log.outputs)
    assert "Traceback" in shown and "No readable training images" in shown
    assert dash.start_button.disabled is False and dash.stop_button.disabled is True
    for f, content in saved.items():  # put them back and press Start again
        open(f, "wb").write(content)
    dash.start()
    assert dash.join(60) and dash.error is None and dash.error_box.value == ""
    assert len(dash.history) == 1


def test_freezing_a_group_during_training_waits_for_the_epoch_boundary(model, data):
    train, val = data
    gate, log = Gate(at=1), TrainableLog("stage1")
    dash = TrainingDashboard(model, train, val, epochs=2, batch_size=8, **FIT)
    panel = FreezePanel(model, dashboard=dash)
    dash.add_callback(log)
    dash.add_callback(gate)
    dash.start()
    assert gate.reached.wait(60)
    panel.toggles["stage1"].value = False  # the user freezes stage1 in the middle of the run
    assert panel.pending == {"stage1": False} and "stage1" not in model.frozen_groups
    gate.release.set()
    assert dash.join(60) and dash.error is None
    epoch1 = [trains for epoch, trains, _ in log.rows if epoch == 1]
    epoch2 = [trains for epoch, trains, _ in log.rows if epoch == 2]
    assert epoch1 == [True, True] and epoch2 == [False, False]  # never half an epoch
    assert model.frozen_groups == {"stage1"} and panel.applied == [{"epoch": 2, "changes": {"stage1": False}}]


def test_unfreezing_during_training_then_stop_applies_the_change_after_the_run(model, data):
    train, val = data
    gate, log = Gate(at=1), TrainableLog("stem")
    dash = TrainingDashboard(model, train, val, epochs=5, batch_size=8, **FIT)
    panel = FreezePanel(model, dashboard=dash)
    panel.set_trainable("stem", False)  # idle: applied at once
    assert "stem" in model.frozen_groups
    dash.add_callback(log)
    dash.add_callback(gate)
    dash.start()
    assert gate.reached.wait(60)
    panel.set_trainable("stem", True)  # queued ...
    dash.stop()  # ... but the run stops before epoch 2 starts
    gate.release.set()
    assert dash.join(60) and dash.error is None and len(dash.history) == 1
    assert log.rows and all(not trains and not in_opt for _, trains, in_opt in log.rows)  # stem never trained
    assert "stem" not in model.frozen_groups and panel.pending == {}  # not lost: applied after the run
    # Applied either when the run ended or at the start of the epoch 2 that Stop then cancelled.
    assert panel.applied[-1]["changes"] == {"stem": True} and panel.applied[-1]["epoch"] in (None, 2)


# ---------------------------------------------------------------- PredictPanel

def _jpeg(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((size, size), 60).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def _bomb(tmp_path) -> bytes:
    return write_png(tmp_path / "bomb.png", 20000, 20000, bit_depth=1).read_bytes()


UPLOADS = {
    "pdf": lambda tmp: ("report.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n"),
    "text_named_jpg": lambda tmp: ("cat.jpg", b"this is not a picture"),
    "empty_file": lambda tmp: ("empty.png", b""),
    "truncated_jpeg": lambda tmp: ("half.jpg", _jpeg()[:300]),
    "decompression_bomb": lambda tmp: ("huge.png", _bomb(tmp)),
}


@pytest.mark.parametrize("kind", list(UPLOADS))
def test_upload_that_is_not_an_image_shows_a_message(model, tmp_path, monkeypatch, kind):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the panel may put the upload briefly
    panel = PredictPanel(model)
    good = panel.predict_bytes(_jpeg(), "good.jpg")
    assert good is not None and panel.last is not None
    name, content = UPLOADS[kind](tmp_path)
    assert panel.predict_bytes(content, name) is None  # no exception into the notebook
    assert html.escape(f"{name!r} is not an image") in panel.error_box.value and "JPEG or PNG" in panel.error_box.value
    assert panel.last is None
    assert list(scratch.iterdir()) == []  # the temporary copy was removed
    assert panel.predict_bytes(_jpeg(), "again.jpg") is not None and panel.error_box.value == ""
