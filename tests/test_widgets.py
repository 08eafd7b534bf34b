"""Headless tests of every widget panel: set values, click buttons, check the model and the view.

They run under ipywidgets 8 (.venv) and 7.7.1 (.venv-ipyw7, see tools/ipyw7_env.sh);
set TLKIT_EXPECT_IPYWIDGETS=7 or 8 to assert which one is running.
"""
from __future__ import annotations

import datetime
import io
import os
import threading
from collections import OrderedDict

import ipywidgets
import pytest
import torch
from PIL import Image

from browser.tiny import tiny_backbone
from tlkit.backbones import Backbone
from tlkit.callbacks import Callback
from tlkit.data import ImageDataset, image_folder
from tlkit.evaluate import binomial_interval
from tlkit.features import Features
from tlkit.freezing import count_parameters, freeze, set_bn_policy, trainable_summary
from tlkit.history import History
from widgets import FreezePanel, LRExplorer, PredictPanel, StrategyBoard, TrainingDashboard
from widgets._base import PNG_MAGIC, Throttle
from widgets._compat import IPYWIDGETS_MAJOR, uploaded_files
from widgets._plot import png_width
from widgets._snapshot import SNAPSHOT_KEY, Snapshot
from tlkit.viz import format_rate
from widgets.lr_explorer import lr_verdicts

pytestmark = [pytest.mark.filterwarnings("ignore:The `ipykernel.comm.Comm` class has been deprecated:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]  # the fixture: conftest.py

FIT = {"image_size": 32, "seed": 0, "num_workers": 0}  # tiny and repeatable




@pytest.fixture
def data(tiny_images):
    """(train, val): 12 + 12 small JPEGs per split, classes cats and dogs."""
    return image_folder(tiny_images)


@pytest.fixture
def model():
    return tiny_backbone()


def _png(colour=(200, 60, 50), size=40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


class Gate(Callback):
    """Holds the training thread at the end of epoch ``at`` until ``release`` is set."""

    def __init__(self, at: int = 1):
        self.at, self.reached, self.release = at, threading.Event(), threading.Event()

    def on_epoch_end(self, state, epoch, row):
        if epoch == self.at:
            self.reached.set()
            assert self.release.wait(60), "the test never released the gate"


class Probe(Callback):
    """Records, at each epoch start, which groups train and which the optimizer holds."""

    def __init__(self):
        self.trainable, self.opt_groups = {}, {}

    def on_epoch_begin(self, state, epoch):
        self.trainable[epoch] = {r["group"]: r["trainable"] for r in trainable_summary(state.model)}
        self.opt_groups[epoch] = {g.get("name") for g in state.optimizer.param_groups}


# ---------------------------------------------------------------- versions and helpers
def test_widget_ipywidgets_version_is_recorded():
    major = int(ipywidgets.__version__.split(".")[0])
    print(f"ipywidgets {ipywidgets.__version__}")
    assert major in (7, 8)
    assert IPYWIDGETS_MAJOR == major
    expected = os.environ.get("TLKIT_EXPECT_IPYWIDGETS")
    if expected:
        assert major == int(expected), f"expected ipywidgets {expected}.x, running {ipywidgets.__version__}"


def test_widget_upload_values_of_both_ipywidgets_versions():
    v7 = {"cat.png": {"content": b"abc", "metadata": {"name": "cat.png", "type": "image/png"}}}
    v8 = ({"name": "dog.png", "type": "image/png", "size": 3, "content": memoryview(b"xyz")},)
    assert uploaded_files(v7) == [("cat.png", b"abc")]
    assert uploaded_files(v8) == [("dog.png", b"xyz")]
    assert uploaded_files({}) == [] and uploaded_files(()) == []


def test_widget_throttle_lets_one_call_through_per_interval():
    now = [0.0]
    t = Throttle(0.5, clock=lambda: now[0])
    assert t.ready() and not t.ready()
    now[0] = 0.4
    assert not t.ready() and t.ready(force=True)
    now[0] = 1.0
    assert t.ready()


# ---------------------------------------------------------------- FreezePanel
def _totals(panel) -> tuple[int, int]:
    """(trainable, frozen) parsed from the panel's totals label."""
    parts = panel.totals.value.split("|")
    return (int(parts[0].split(":")[1].split()[0].replace(",", "")),
            int(parts[1].split(":")[1].strip().replace(",", "")))


def test_freeze_panel_widget_toggle_freezes_group_and_updates_totals(model):
    panel = FreezePanel(model)
    trainable, total = count_parameters(model)
    assert _totals(panel) == (trainable, 0)
    panel.toggles["stem"].value = False  # what a click in the browser does
    stem = sum(p.numel() for p in model.groups["stem"].parameters())
    assert "stem" in model.frozen_groups
    assert not any(p.requires_grad for p in model.groups["stem"].parameters())
    assert count_parameters(model)[0] == total - stem
    assert _totals(panel) == (total - stem, stem)
    summary = {r["group"]: r for r in trainable_summary(model)}
    assert {g: t.value for g, t in panel.toggles.items()} == {g: r["trainable"] for g, r in summary.items()}
    assert panel.bn_labels["stem"].value == "BatchNorm: eval"  # frozen BN keeps its running stats
    assert panel.bn_labels["stage1"].value == "BatchNorm: train"
    assert panel.state_labels["stem"].value.startswith("frozen")
    panel.toggles["stem"].value = True
    assert count_parameters(model)[0] == total and not model.frozen_groups


def test_freeze_panel_widget_buttons_and_bn_policy(model):
    panel = FreezePanel(model)
    head = sum(p.numel() for p in model.head.parameters())
    panel.freeze_body_button.click()
    assert count_parameters(model)[0] == head
    assert [t.value for t in panel.toggles.values()] == [False, False, False, True]
    assert _totals(panel)[0] == head
    panel.bn_checkbox.value = False  # frozen BN may update its statistics
    assert model.bn_policy == "train"
    assert panel.bn_labels["stem"].value == "BatchNorm: train"
    panel.unfreeze_all_button.click()
    assert count_parameters(model)[0] == count_parameters(model)[1]
    assert all(t.value for t in panel.toggles.values())


def test_freeze_panel_widget_bn_checkbox_retick_keeps_eval_all(model, data):
    """Issue 16: unticking then ticking the BatchNorm box wrote "eval" and lost "eval_all"."""
    set_bn_policy(model, "eval_all")
    panel = FreezePanel(model)
    assert panel.bn_checkbox.value is True
    panel.bn_checkbox.value = False
    assert model.bn_policy == "train"
    panel.bn_checkbox.value = True
    assert model.bn_policy == "eval_all"
    assert panel.bn_labels["stage1"].value == "BatchNorm: eval"  # trainable group, statistics kept
    plain = FreezePanel(tiny_backbone())  # a model that starts with "eval" gets "eval" back
    plain.bn_checkbox.value = False
    plain.bn_checkbox.value = True
    assert plain.model.bn_policy == "eval"
    train, val = data  # while training: queued, and the queued value is the one restored
    gate = Gate(at=1)
    dash = TrainingDashboard(model, train, val, epochs=2, batch_size=8, callbacks=[gate], **FIT)
    panel.attach(dash)
    dash.start()
    assert gate.reached.wait(60)
    panel.bn_checkbox.value = False
    panel.bn_checkbox.value = True
    assert panel.pending == {} and model.bn_policy == "eval_all"  # untick + tick: nothing left to do
    panel.bn_checkbox.value = False
    assert panel.pending == {"__bn_policy__": "train"}
    gate.release.set()
    assert dash.join(60) and dash.error is None
    assert model.bn_policy == "train"
    panel.bn_checkbox.value = True
    assert model.bn_policy == "eval_all"


def test_freeze_panel_widget_reports_bad_input(model):
    panel = FreezePanel(model)
    with pytest.raises(KeyError, match="stage1"):
        panel.set_trainable("stage9", False)
    with pytest.raises(TypeError, match="Backbone"):
        FreezePanel(torch.nn.Linear(2, 2))


def test_freeze_panel_widget_change_during_training_waits_for_next_epoch(model, data):
    train, val = data
    freeze(model, "stem")
    gate, probe = Gate(at=1), Probe()
    dash = TrainingDashboard(model, train, val, epochs=3, batch_size=8, **FIT)
    panel = FreezePanel(model, dashboard=dash)
    dash.add_callback(probe)  # after the panel's hook: sees the state the epoch trains with
    dash.add_callback(gate)
    assert dash.start()
    assert gate.reached.wait(60)
    panel.toggles["stage1"].value = False  # freeze during epoch 1 ...
    panel.toggles["stem"].value = True  # ... and unfreeze another group
    panel.toggles["stage2"].value = False
    panel.toggles["stage2"].value = True  # changed back: nothing to do for stage2
    assert panel.pending == {"stage1": False, "stem": True}
    assert "stage1" not in model.frozen_groups and "stem" in model.frozen_groups  # not yet applied
    assert "queued" in panel.status.value and "next epoch" in panel.status.value
    assert "(queued)" in panel.state_labels["stage1"].value
    gate.release.set()
    assert dash.join(60) and dash.error is None
    assert probe.trainable[1]["stage1"] and not probe.trainable[1]["stem"]
    assert not probe.trainable[2]["stage1"] and probe.trainable[2]["stem"]  # applied at epoch 2's start
    assert "stem" not in probe.opt_groups[1] and "stem" in probe.opt_groups[2]  # joined the optimizer
    assert panel.applied[0]["epoch"] == 2 and panel.pending == {}
    assert "start of epoch 2" in panel.status.value
    assert model.frozen_groups == {"stage1"}
    assert _totals(panel)[1] == sum(p.numel() for p in model.groups["stage1"].parameters())


def _model_that_pauses_in_its_forward(ui_thread: threading.Thread):
    """A Backbone whose first training forward waits inside its frozen stem, just before a BN.

    Returns ``(model, inside, go, seen)``: ``inside`` is set when the forward is parked,
    ``go`` lets it continue, ``seen`` lists the stem BN's ``.training`` at every call.
    If ``ui_thread`` ever calls ``model.train()`` (what the old summary did), the hook in
    the head lets the parked forward run *during* that call, so the race is not left to luck.
    """
    inside, go, bn_done, seen = threading.Event(), threading.Event(), threading.Event(), []

    class Pause(torch.nn.Module):
        def forward(self, x):
            if torch.is_grad_enabled() and not inside.is_set():  # a training batch, not validation
                bn_done.clear()
                inside.set()
                assert go.wait(60), "the test never let the forward pass continue"
            return x * 1.0

    class RecordingBN(torch.nn.BatchNorm2d):
        def forward(self, x):
            seen.append(self.training)
            out = super().forward(x)
            bn_done.set()
            return out

    class TrainHook(torch.nn.Identity):
        def train(self, mode=True):
            if mode and inside.is_set() and not go.is_set() and threading.current_thread() is ui_thread:
                go.set()  # the UI thread is half-way through model.train(): let the batch run now
                bn_done.wait(10)
            return super().train(mode)

    groups = OrderedDict(stem=torch.nn.Sequential(Pause(), RecordingBN(3), torch.nn.Conv2d(3, 8, 3, 2, 1)),
                         stage1=torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.BatchNorm2d(16),
                                                    torch.nn.ReLU()))
    torch.manual_seed(0)
    head = torch.nn.Sequential(TrainHook(), torch.nn.Linear(16, 2))
    model = Backbone("paused", groups, head, 16, input_size=32, weights=None, class_names=["cats", "dogs"])
    return model, inside, go, seen


def test_freeze_panel_widget_click_during_a_forward_pass_keeps_frozen_bn_in_eval(data):
    """Issue 16: a click (and its refresh) while a batch is inside its forward pass must not
    flip the frozen BatchNorm to training mode, even for an instant."""
    train, val = data
    model, inside, go, seen = _model_that_pauses_in_its_forward(threading.current_thread())
    dash = TrainingDashboard(model, train, val, epochs=1, batch_size=8, **FIT)
    panel = FreezePanel(model, dashboard=dash)
    panel.set_trainable("stem", False)  # idle: applied at once
    stats = {k: v.clone() for k, v in model.groups["stem"].state_dict().items()}
    assert dash.start()
    assert inside.wait(60)  # the first training batch is parked inside the frozen stem
    panel.toggles["stage1"].value = False  # a click: queued, and the panel refreshes
    panel.refresh()
    assert panel.pending == {"stage1": False}
    assert panel.bn_labels["stem"].value == "BatchNorm: eval"
    go.set()
    assert dash.join(60) and dash.error is None, dash.error_box.value
    print("SEEN", seen[:5], len(seen)); assert seen and not any(seen)  # the frozen BN was in eval mode in every forward, the parked one too
    after = model.groups["stem"].state_dict()
    assert all(torch.equal(v, after[k]) for k, v in stats.items())  # running statistics untouched
    assert model.frozen_groups == {"stem", "stage1"}  # the queued click was applied after the run


class _HoldBegin(Callback):
    """Holds the training thread in on_train_begin (before the panel's own hook has run)."""

    def __init__(self):
        self.reached, self.release = threading.Event(), threading.Event()

    def on_train_begin(self, trainer):
        self.reached.set()
        assert self.release.wait(60), "the test never released on_train_begin"


def test_freeze_panel_widget_click_between_start_and_first_epoch_is_queued(model, data):
    """From the Start click on, a toggle is queued: the training thread may be building its optimizer."""
    train, val = data
    hold = _HoldBegin()
    dash = TrainingDashboard(model, train, val, epochs=1, batch_size=8, callbacks=[hold], **FIT)
    panel = FreezePanel(model, dashboard=dash)
    dash.start()
    assert hold.reached.wait(60)
    panel.toggles["stage1"].value = False
    assert panel.pending == {"stage1": False} and "stage1" not in model.frozen_groups
    hold.release.set()
    assert dash.join(60) and dash.error is None
    assert model.frozen_groups == {"stage1"} and panel.pending == {}


# ---------------------------------------------------------------- TrainingDashboard
def test_training_dashboard_widget_blocking_run_draws_curves(model, data):
    train, val = data
    dash = TrainingDashboard(model, train, val, epochs=2, batch_size=8, blocking=True, **FIT)
    before = dash.plot.value
    dash.epochs.value = 3
    rng = torch.random.get_rng_state()
    dash.start_button.click()
    assert torch.equal(torch.random.get_rng_state(), rng)  # fit(seed=0) ran; the notebook's RNG is as it was
    assert not dash.is_running and dash.error is None
    assert len(dash.history) == 3 and dash.history["epoch"] == [1, 2, 3]
    assert bytes(dash.plot.value).startswith(PNG_MAGIC) and dash.plot.value != before
    assert dash.plot.layout.width == f"{png_width(dash.plot.value)}px"  # shown at its own size, not stretched
    assert dash.redraws >= 3  # one forced redraw per epoch at least
    assert dash.progress.value == dash.progress.max
    assert dash.status.value.startswith("Done: 3 epoch(s)")
    assert dash.start_button.disabled is False and dash.stop_button.disabled is True


def test_training_dashboard_widget_thread_start_twice_and_stop(model, data):
    train, val = data
    gate = Gate(at=1)
    dash = TrainingDashboard(model, train, val, epochs=20, batch_size=8, callbacks=[gate], **FIT)
    assert dash.stop() is False and dash.status.value.startswith("Nothing to stop")
    assert dash.start() is True
    assert dash.is_running
    assert gate.reached.wait(60)
    assert dash.start() is False  # refused while running
    assert dash.status.value.startswith("Already training")
    dash.stop_button.click()
    gate.release.set()
    assert dash.join(60)
    assert not dash.is_running and dash.error is None
    assert 1 <= len(dash.history) < 20
    assert dash.history.stop_reason == "stop_event was set"
    assert dash.status.value.startswith(f"Stopped after {len(dash.history)} epoch(s)")
    dash.stop()
    assert dash.status.value.startswith("Nothing to stop")


class _SlowFinish(Callback):
    """Holds the dashboard's thread in its end-of-run work (where it re-enables Start) until released."""

    def __init__(self):
        self.finishing, self.release, self.calls = threading.Event(), threading.Event(), 0

    def run_finished(self):
        self.calls += 1
        if self.calls == 1:
            self.finishing.set()
            assert self.release.wait(60), "the test never released the end of the run"


def test_training_dashboard_widget_start_right_after_a_run_ends_starts_a_new_run(model, data):
    """Issue 24 #7: a Start click while the last run was ending printed "Already training",
    was overwritten by "Done", and no run started. Now it waits for the end and starts."""
    train, val = data
    slow = _SlowFinish()
    dash = TrainingDashboard(model, train, val, epochs=1, batch_size=8, callbacks=[slow], **FIT)
    assert dash.start()
    assert slow.finishing.wait(60)  # run 1 is ending: its thread is in the dashboard's end-of-run work
    threading.Timer(0.3, slow.release.set).start()
    assert dash.start_button.disabled is True  # the button still says "running" ...
    assert dash.start() is True  # ... and the click is not swallowed: it starts run 2 once run 1 is done
    assert dash.start_button.disabled is True and dash.stop_button.disabled is False
    assert not dash.status.value.startswith("Already training")
    assert dash.join(60) and dash.error is None and slow.calls == 2
    assert len(dash.history) == 1 and dash.status.value.startswith("Done: 1 epoch(s)")
    assert dash.start_button.disabled is False and dash.stop_button.disabled is True


class _StopAtOne(Callback):
    def on_epoch_end(self, state, epoch, row):
        state.stop("enough for this test")


def test_training_dashboard_widget_says_why_a_run_ended_early(model, data):
    train, val = data
    dash = TrainingDashboard(model, train, val, epochs=5, batch_size=8, callbacks=[_StopAtOne()], blocking=True, **FIT)
    dash.start()
    assert len(dash.history) == 1
    assert dash.status.value.startswith("Ended early (enough for this test) after 1 epoch(s)")
    assert not dash.epochs.disabled and dash.stop_button.disabled  # controls are back after the run


class _Boom:
    def __call__(self, img):
        raise RuntimeError("boom from the transform")


def test_training_dashboard_widget_shows_thread_exception(model, data):
    train, val = data
    bad = ImageDataset(train.files, train.targets, train.classes, transform=_Boom(), name="bad")
    dash = TrainingDashboard(model, bad, val, epochs=2, batch_size=8, **FIT)
    dash.start()
    assert dash.join(60) and not dash.is_running
    assert isinstance(dash.error, RuntimeError)
    assert "RuntimeError: boom from the transform" in dash.error_box.value
    traceback_text = "".join(o.get("text", "") for o in dash.log.outputs)
    assert "Traceback" in traceback_text and "boom from the transform" in traceback_text
    assert dash.status.value.startswith("Failed")
    assert dash.progress.bar_style == "danger"
    with pytest.raises(RuntimeError, match="boom"):  # blocking mode re-raises after showing it
        dash.start(blocking=True)


# ---------------------------------------------------------------- PredictPanel
def _simulate_upload(upload, name: str, content: bytes) -> None:
    """What the browser does when a file is chosen, in either ipywidgets version."""
    if IPYWIDGETS_MAJOR >= 8:
        upload.value = ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
                         "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    else:
        upload.metadata = [{"name": name, "type": "image/png", "size": len(content), "lastModified": 0}]
        upload.data = [content]
        upload._counter += 1


def test_predict_panel_widget_upload_shows_probs_and_grad_cam(model, data):
    panel = PredictPanel(model)
    _simulate_upload(panel.upload, "red.png", _png())
    assert panel.error_box.value == ""
    probs = panel.last["probs"]
    assert [name for name, _ in probs] and {n for n, _ in probs} == {"cats", "dogs"}
    assert sum(p for _, p in probs) == pytest.approx(1.0, abs=1e-5)
    assert bytes(panel.image.value).startswith(PNG_MAGIC)
    assert bytes(panel.cam.value).startswith(PNG_MAGIC)
    assert "cats" in panel.probs.value and "%" in panel.probs.value


def test_predict_panel_widget_not_an_image_shows_error(model):
    panel = PredictPanel(model)
    assert panel.predict_bytes(b"%PDF-1.4 definitely not a photo", "report.pdf") is None
    assert "not an image" in panel.error_box.value and "report.pdf" in panel.error_box.value
    _simulate_upload(panel.upload, "notes.txt", b"hello")
    assert "notes.txt" in panel.error_box.value and panel.last is None
    assert panel.predict_bytes(_png(), "ok.png") is not None  # a good upload clears the error
    assert panel.error_box.value == ""


def test_predict_panel_widget_bad_upload_replaces_old_result_and_names_the_file(model, data):
    """Issue 24 #8: the error showed '/tmp/tlkit-upload-.../upload.txt' under the old "cats 95.8%"."""
    _, val = data
    panel = PredictPanel(model, val_dataset=val, max_choices=4)
    panel.pick.value = panel.pick.options[1][1]
    assert panel.last is not None and "%" in panel.probs.value
    _simulate_upload(panel.upload, "holiday notes.txt", b"not a photo at all")
    assert "holiday notes.txt" in panel.error_box.value
    assert "tlkit-upload" not in panel.error_box.value and "upload.txt" not in panel.error_box.value
    assert panel.last is None and panel.probs.value == "" and bytes(panel.image.value) == b""
    assert bytes(panel.cam.value) == b""
    assert panel.pick.value is None  # the dropdown no longer names a photo
    panel.pick.value = panel.pick.options[2][1]
    _simulate_upload(panel.upload, "red.png", _png())
    assert panel.pick.value is None and panel.last["name"] == "red.png" and panel.error_box.value == ""


def test_predict_panel_widget_pick_validation_image(model, data):
    _, val = data
    panel = PredictPanel(model, val_dataset=val, max_choices=6)
    assert len(panel.pick.options) == 1 + 6  # placeholder + 3 per class
    path = panel.pick.options[-1][1]
    panel.pick.value = path
    assert panel.last["true"] == "dogs"
    assert "true class: <b>dogs</b>" in panel.probs.value


# ---------------------------------------------------------------- LRExplorer
def _blobs(n: int, seed: int) -> Features:
    """Two overlapping Gaussian classes in 64-D: learnable, but not perfectly, so rates differ."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    feats = torch.randn(n, 64, generator=g) + (labels[:, None] * 2 - 1) * 0.15
    return Features(feats, labels, [f"f{i}" for i in range(n)], ["cats", "dogs"])


def test_lr_explorer_widget_compare_gives_verdicts_and_plot():
    panel = LRExplorer(_blobs(256, 0), _blobs(128, 1), epochs=8, blocking=True)
    before = panel.plot.value
    panel.lr.value = 1e-2
    panel.compare_button.click()
    assert panel.error is None, panel.error_box.value
    assert sorted(panel.runs) == [1e-5, 1e-3, 1e-2, 1e-1, 1.0]
    assert all(len(h) == 8 for h in panel.runs.values())
    assert panel.verdicts[1e-5][0] == "too low"
    assert panel.verdicts[1.0][0] == "too high"
    assert "good" in {v for v, _ in panel.verdicts.values()}
    assert panel.verdict_box.value.count("<div>") == 5
    assert bytes(panel.plot.value).startswith(PNG_MAGIC) and panel.plot.value != before
    assert "lr 1e-02" in panel.verdict_box.value


def test_lr_explorer_widget_leaves_global_rng_and_find_clears_old_verdicts():
    """Issue 16: no reseeding of the global RNG from the worker; issue 24 #8: "find LR" replaces
    the compare verdicts; #9: the status names the rate the slider shows, the PNG is shown at its size."""
    panel = LRExplorer(_blobs(128, 0), _blobs(64, 1), lrs=(1e-3, 1.0), epochs=3, blocking=True)
    torch.manual_seed(7)
    rng = torch.random.get_rng_state()
    panel.compare()
    assert panel.verdict_box.value.count("<div>") == 2
    panel.find_lr()
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert panel.error is None and panel.verdict_box.value == ""  # the old verdicts are gone
    shown = panel.lr.value
    assert panel.finder.suggestion == pytest.approx(shown, rel=0.012)  # slider steps are 10**0.01
    assert f"slider set to {format_rate(shown)}" in panel.status.value
    assert panel.plot.layout.width == f"{png_width(panel.plot.value)}px"
    other = LRExplorer(_blobs(128, 0), _blobs(64, 1), lrs=(1e-3, 1.0), epochs=3, blocking=True)
    other.find_lr()
    assert other.finder.losses == panel.finder.losses  # seeded all the same


def test_lr_explorer_widget_find_lr_moves_slider():
    panel = LRExplorer(_blobs(256, 0), _blobs(64, 1), lr=1e-6, blocking=True)
    panel.find_button.click()
    assert panel.error is None, panel.error_box.value
    assert len(panel.finder.lrs) == len(panel.finder.losses) > 5
    assert panel.finder.suggestion is not None
    assert panel.lr.value == pytest.approx(panel.finder.suggestion, rel=0.012)  # slider steps are 10**0.01
    assert bytes(panel.plot.value).startswith(PNG_MAGIC)


def test_lr_verdicts_flags_nan_runs_as_too_high():
    ok = History([{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.9}])
    nan = History([{"epoch": 1, "train_loss": float("nan"), "val_loss": float("nan"), "val_acc": 0.5}])
    verdicts = lr_verdicts({1e-3: ok, 10.0: nan})
    assert verdicts[1e-3][0] == "good" and verdicts[10.0][0] == "too high"


def test_lr_explorer_widget_finetune_mode(model, data):
    train, val = data
    panel = LRExplorer(model=model, train_data=train, val_data=val, mode="finetune", per_class=6,
                       image_size=32, finetune_epochs=1, lr=1.0, low_lr=1e-3, blocking=True)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    panel.finetune_button.click()
    assert panel.error is None, panel.error_box.value
    assert sorted(panel.runs) == [1e-3, 1.0]
    assert all(h["epoch"] == [0, 1] for h in panel.runs.values())
    assert panel.verdict_box.value.count("<div>") == 2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # copies were trained
    with pytest.raises(ValueError, match="mode"):
        LRExplorer(model=model, train_data=train, val_data=val, mode="fast")


# ---------------------------------------------------------------- StrategyBoard
def test_strategy_board_widget_compares_three_strategies(data, tmp_path):
    train, val = data
    board = StrategyBoard(train, val, backbone=tiny_backbone, per_class=None, image_size=32, blocking=True,
                          epochs={"features": 3, "partial": 1, "finetune": 1}, cache_dir=tmp_path, batch_size=8)
    rng = torch.random.get_rng_state()
    board.run_button.click()
    assert torch.equal(torch.random.get_rng_state(), rng)  # the worker never reseeded the global RNG
    assert board.error is None, board.error_box.value
    res = board.results
    assert list(res) == ["features", "partial", "finetune"]
    total = count_parameters(tiny_backbone())[1]
    head = sum(p.numel() for p in tiny_backbone().head.parameters())
    assert res["features"]["trainable_params"] == head
    assert head < res["partial"]["trainable_params"] < res["finetune"]["trainable_params"] == total
    assert [r["epochs"] for r in res.values()] == [3, 1, 1]
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["seconds"] > 0 for r in res.values())
    for label in ("feature extraction", "partial fine-tuning", "full fine-tuning"):
        assert label in board.table.value
    assert bytes(board.plot.value).startswith(PNG_MAGIC)
    assert board.status.value.startswith("Done")
    snap = board.snapshot()  # issue 15: the comparison as a static image, the PNG this run drew
    assert snap.name == "strategy_curves" and snap.png == bytes(board.plot.value)
    lines = snap.text.splitlines()
    assert lines[0] == board.status.value and len(lines) == 4
    assert lines[1].startswith(f"feature extraction: best val acc {res['features']['val_acc']:.3f}")


def test_strategy_board_calls_a_tie_a_tie(data):
    """The old 05 result: 0.875 against 0.85 on 40 photos is a tie, not a winner; unequal budgets are named."""
    from widgets.strategy_board import verdict

    train, val = data
    board = StrategyBoard(train, val, backbone=tiny_backbone, per_class=None, image_size=32)
    assert {s: w.value for s, w in board.epochs.items()} == {"features": 3, "partial": 3, "finetune": 3}
    row = dict(trainable_params=10, seconds=1.0, history=History([{"epoch": 1, "val_loss": 0.5, "val_acc": 0.8}]))
    results = {"features": dict(row, strategy="feature extraction", val_acc=0.875, epochs=15),
               "partial": dict(row, strategy="partial fine-tuning", val_acc=0.85, epochs=2),
               "finetune": dict(row, strategy="full fine-tuning", val_acc=0.6, epochs=2)}
    n = len(board.val_ds)
    board.render(results)
    assert "Tie: feature extraction and partial fine-tuning" in board.status.value
    assert "Best" not in board.status.value and "Budgets differ (15 vs 2 vs 2 epochs)" in board.status.value
    assert f"95% interval ({n} photos)" in board.table.value
    lo, hi = binomial_interval(0.875, n)
    assert f"{lo:.3f}-{hi:.3f}" in board.table.value
    clear = {k: dict(v, epochs=3) for k, v in results.items()}
    clear["features"]["val_acc"], clear["partial"]["val_acc"] = 0.95, 0.80
    assert verdict(clear, 400).startswith("Done. Best: feature extraction (0.950")
    assert "Same budget: 3 epochs each." in verdict(clear, 400)
    assert verdict(clear, 10).startswith("Done. Tie: feature extraction and partial fine-tuning")


def test_strategy_board_widget_shows_errors(data):
    train, val = data

    def broken():
        raise RuntimeError("no backbone today")

    board = StrategyBoard(train, val, backbone=broken, per_class=None, image_size=32)
    board.run()
    assert board.join(60) and not board.is_running
    assert "no backbone today" in board.error_box.value
    assert board.status.value.startswith("Failed")
    with pytest.raises(KeyError, match="features"):
        StrategyBoard(train, val, epochs={"linear": 3})


def test_widgets_display_through_ipython(model, capsys):
    panel = FreezePanel(model)
    panel._ipython_display_()  # outside a kernel IPython prints the widget's repr
    assert isinstance(panel.widget, ipywidgets.VBox)
    assert capsys.readouterr().out.startswith("VBox(children=(HTML(value='<b>Layer groups</b>")


# ---------------------------------------------------------------- snapshots (issue 15: visible without a kernel)
def _shown(snap):
    """What IPython puts in the notebook for ``snap`` as a cell's value: (PNG bytes, output metadata, text)."""
    import base64

    from IPython.core.formatters import DisplayFormatter

    data, meta = DisplayFormatter().format(snap)
    return base64.b64decode(data["image/png"]), meta, data["text/plain"]


def test_snapshot_of_the_dashboard_is_the_png_it_drew_as_an_image_output(model, data):
    train, val = data
    dash = TrainingDashboard(model, train, val, epochs=2, batch_size=8, blocking=True, **FIT)
    placeholder = dash.snapshot()
    assert placeholder.png == bytes(dash.plot.value)  # "press Start to train", before any run
    dash.start()
    snap = dash.snapshot()
    assert snap.name == "training_curves" and snap.text == dash.status.value
    assert snap.png == bytes(dash.plot.value) != placeholder.png  # the run's own figure, not a new drawing
    width, height = snap.size
    assert width == png_width(snap.png) and width >= 400 and height >= 150 and len(snap.png) > 5_000
    png, meta, text = _shown(snap)
    assert png == snap.png and meta == {SNAPSHOT_KEY: "training_curves"} and text.startswith("Done: 2 epoch(s)")
    with pytest.raises(ValueError, match="PNG bytes"):
        Snapshot("broken", b"GIF89a")


def test_snapshot_of_the_freeze_panel_lists_every_group_as_the_model_has_it(model, data):
    panel = FreezePanel(model)
    panel.freeze_all_but_head()
    snap = panel.snapshot()
    assert snap.name == "freeze_state" and snap.png.startswith(PNG_MAGIC) and len(snap.png) > 3_000
    totals, *rows = snap.text.splitlines()
    assert totals == panel.totals.value
    summary = trainable_summary(model)
    assert [r.split(":")[0] for r in rows] == [r["group"] for r in summary] == list(model.group_names)
    for line, r in zip(rows, summary):
        state = "frozen" if r["group"] in model.frozen_groups else "trainable"
        assert line == f"{r['group']}: {state}, {r['params']:,} params"
    assert rows[-1].startswith("head: trainable") and all(": frozen," in r for r in rows[:-1])
    panel.unfreeze_all()
    after = panel.snapshot()
    assert not model.frozen_groups and all(": trainable," in r for r in after.text.splitlines()[1:])
    assert after.png != snap.png and after.size[1] == snap.size[1]  # same table, other colours and totals
    panel._set_active(True)  # as during a run: a click is queued
    panel.set_trainable("stem", False)
    assert f"{model.group_names[0]}: trainable -> frozen (queued)," in panel.snapshot().text
    panel._set_active(False)
    assert _shown(panel.snapshot())[1] == {SNAPSHOT_KEY: "freeze_state"}


def test_snapshot_of_the_lr_explorer_keeps_the_range_test_curve_after_compare():
    panel = LRExplorer(_blobs(128, 0), _blobs(64, 1), lrs=(1e-3, 1.0), epochs=3, blocking=True)
    with pytest.raises(ValueError, match="No 'find' plot yet"):
        panel.snapshot("find")
    panel.find_lr()
    curve = bytes(panel.plot.value)
    assert panel.snapshot().name == "lr_find" and panel.snapshot().png == curve
    panel.compare()
    find, now = panel.snapshot("find"), panel.snapshot()
    assert find.png == curve and find.name == "lr_find" and "Suggested learning rate" in find.text
    assert now.name == "lr_compare" and now.png == bytes(panel.plot.value) != curve
    assert now.text.count("\nlr ") == len(panel.runs) == 3 and "lr 1e+00: too high" in now.text  # + the slider's rate
    assert _shown(find)[1] == {SNAPSHOT_KEY: "lr_find"}
    with pytest.raises(ValueError, match="'find', 'compare' or 'finetune'"):
        panel.snapshot("range")


def test_snapshot_of_the_predict_panel_is_its_grad_cam_figure(model):
    panel = PredictPanel(model)
    assert panel.snapshot().text == "no prediction yet" and panel.snapshot().png.startswith(PNG_MAGIC)
    probs = panel.predict_bytes(_png(), "red.png")
    snap = panel.snapshot()
    assert snap.name == "grad_cam" and snap.png == bytes(panel.cam.value) and snap.size[0] >= 300
    assert snap.text == "red.png: " + ", ".join(f"{n} {100 * p:.1f}%" for n, p in probs)
