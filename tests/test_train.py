"""fit / Trainer: History, learning rates, resume, interrupts, NaN, OOM, BatchNorm policy.

Tiny untrained MobileNetV3-Small on 32 px synthetic images (CPU, one thread).
"""
from __future__ import annotations

import logging
import pickle
import threading
import warnings

import pytest
import torch

from tlkit.callbacks import Callback, Checkpoint, EarlyStopping, GradualUnfreezing
from tlkit.errors import CheckpointError
from tlkit.freezing import freeze_to, set_bn_policy
from tlkit.resume import TRAIN_FORMAT, load_training_state
from tlkit.strategy import train_strategy
from tlkit.state import TrainState
from tlkit.train import TrainConfig, Trainer, fit

TIMING = ("seconds", "img_per_s")


@pytest.fixture(autouse=True)
def one_thread():
    # On a small shared CPU two threads per test run several times slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(model, train, val=None, **kw):
    opts = dict(epochs=2, lr=1e-3, batch_size=8, image_size=32, num_workers=0, progress=False, seed=0)
    opts.update(kw)
    return fit(model, train, val, **opts)


def untimed(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history.rows]


def frozen_state(model) -> dict:
    """Every parameter and BatchNorm buffer of the frozen groups, by name."""
    return {f"{g}.{n}": t for g in model.frozen_groups for n, t in model.groups[g].state_dict().items()}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


class Recorder(Callback):
    """Calls ``action(state, epoch, step)`` after every batch; records the head's lr."""

    def __init__(self, action=None):
        self.action, self.lrs, self.begin_groups = action, [], None

    def on_train_begin(self, state):
        self.begin_groups = [g["name"] for g in state.optimizer.param_groups]

    def on_batch_end(self, state, step, logs):
        self.lrs.append(state.group_lrs()["head"])
        if self.action:
            self.action(state, logs["epoch"], step)


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state, epoch, row):
        if epoch == self.epoch:
            state.stop("test stop")


# ---------------------------------------------------------------- TrainConfig, TrainState, process group
def test_a_config_object_trains_exactly_like_keywords(make_model, tiny_datasets):
    train, val = tiny_datasets
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=8, image_size=32, num_workers=0, progress=False, seed=0)
    by_config = fit(make_model("mobilenet_v3_small", seed=0), train, val, config=config)
    by_keywords = run(make_model("mobilenet_v3_small", seed=0), train, val, epochs=1)
    assert untimed(by_config) == untimed(by_keywords) and len(by_config) == 1
    assert config.epochs == 1 and config.batch_size == 8  # fit works on a copy


def test_unknown_options_and_bad_values_name_the_valid_ones(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    with pytest.raises(TypeError, match="batch_size"):
        Trainer(mobilenet_2, train, bacth_size=8)
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(mobilenet_2, train, None, 3)  # epochs is a keyword
    with pytest.raises(ValueError, match="adamw"):
        TrainConfig(optimizer="lamb")


def test_callbacks_receive_the_train_state(mobilenet_2, tiny_datasets):
    train, val = tiny_datasets
    seen = []

    class Look(Callback):
        def on_epoch_end(self, state, epoch, row):
            seen.append((type(state), state.epoch, len(state.history), state.model is mobilenet_2,
                         state.history.last() == row, hasattr(state, "loaders")))

    run(mobilenet_2, train, val, epochs=2, callbacks=[Look()])
    assert seen == [(TrainState, 1, 1, True, True, False), (TrainState, 2, 2, True, True, False)]


def test_fit_under_torchrun_never_starts_a_process_group(make_model, tiny_datasets, monkeypatch):
    train, _ = tiny_datasets
    for var, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(var, value)
    with pytest.warns(RuntimeWarning, match="no process group"):
        history = run(make_model("mobilenet_v3_small", seed=0), train, epochs=1)
    assert len(history) == 1 and not torch.distributed.is_initialized()


# ---------------------------------------------------------------- History and learning rates
def test_history_has_every_field_per_epoch(mobilenet_2, tiny_datasets):
    train, val = tiny_datasets
    history = run(mobilenet_2, train, val, epochs=2)
    assert len(history) == 2 and history["epoch"] == [1, 2]
    assert list(history[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                                "img_per_s", "train_images"]
    for row in history.rows:
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1
        assert row["train_images"] == len(train)  # every image readable: all used
        assert row["train_loss"] > 0 and row["val_loss"] > 0
        assert row["seconds"] > 0 and row["img_per_s"] > 0
        assert list(row["lr"]) == mobilenet_2.group_names  # nothing frozen: every group, in order
    assert history.stop_reason is None
    assert not mobilenet_2.training  # handed back in eval mode, ready for predictions


def test_fit_learns_the_tiny_task(resnet18_2, tiny_datasets):
    train, val = tiny_datasets
    history = run(resnet18_2, train, val, epochs=3, lr=1e-3)
    assert history.best("val_acc")["val_acc"] >= 0.9
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_without_validation_the_best_is_by_train_loss(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    trainer = Trainer(mobilenet_2, train, epochs=2, batch_size=8, image_size=32, num_workers=0,
                      progress=False, seed=0)
    history = trainer.fit()
    assert history["val_acc"] == [None, None]
    assert trainer.state.monitor == "train_loss"
    assert trainer.state.best_epoch == history.best("train_loss", mode="min")["epoch"]


def test_discriminative_rates_per_group_in_history(mobilenet_2, tiny_datasets):
    train, val = tiny_datasets
    freeze_to(mobilenet_2, 2)  # stem and stage1 frozen: not in the optimizer, not in History
    history = run(mobilenet_2, train, val, epochs=1, lr=(1e-5, 1e-2), scheduler=None)
    lrs = history[0]["lr"]
    assert list(lrs) == ["stage2", "stage3", "stage4", "stage5", "head"]
    assert lrs["stage2"] == pytest.approx(1e-5) and lrs["head"] == pytest.approx(1e-2)
    values = list(lrs.values())
    assert all(a < b for a, b in zip(values, values[1:]))


def test_no_weight_decay_on_norms_and_biases(resnet18_2, tiny_datasets):
    train, _ = tiny_datasets
    trainer = Trainer(resnet18_2, train, epochs=1, weight_decay=0.05, image_size=32, progress=False)
    trainer._setup(resume=None)
    bn_weights = {id(m.weight) for m in resnet18_2.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    no_decay = set()
    for g in trainer.state.optimizer.param_groups:
        if g["name"].endswith(".no_decay"):
            assert g["weight_decay"] == 0 and all(p.ndim == 1 for p in g["params"])
            no_decay |= {id(p) for p in g["params"]}
        else:
            assert g["weight_decay"] == 0.05 and all(p.ndim > 1 for p in g["params"])
    assert bn_weights <= no_decay and id(resnet18_2.head[-1].bias) in no_decay


def test_onecycle_warms_up_then_anneals(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    rec = Recorder()
    run(mobilenet_2, train, epochs=4, lr=1e-2, scheduler="onecycle", callbacks=[rec])
    lrs = rec.lrs  # 4 epochs x 3 batches, one per batch
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert len(lrs) == 12 and 0 < peak < len(lrs) - 1
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert lrs[peak] > 0.9e-2 and lrs[-1] < 1e-3
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_cosine_ends_low_and_step_divides(mobilenet_2, make_model, tiny_datasets):
    train, _ = tiny_datasets
    rec = Recorder()
    run(mobilenet_2, train, epochs=2, lr=1e-2, scheduler="cosine", callbacks=[rec])
    assert rec.lrs[0] == pytest.approx(1e-2)
    assert rec.lrs[-1] < 0.1 * 1e-2 and all(a > b for a, b in zip(rec.lrs, rec.lrs[1:]))

    rec = Recorder()
    history = run(make_model("mobilenet_v3_small"), train, epochs=3, lr=1e-2, scheduler="step", callbacks=[rec])
    assert [r["lr"]["head"] for r in history.rows] == pytest.approx([1e-2, 1e-3, 1e-4])
    assert rec.lrs[:3] == pytest.approx([1e-2] * 3)  # constant within an epoch


# ---------------------------------------------------------------- reproducibility and resume
def test_same_seed_same_history_and_weights(make_model, tiny_datasets):
    train, val = tiny_datasets
    a, b = make_model("mobilenet_v3_small"), make_model("mobilenet_v3_small")
    ha, hb = run(a, train, val, seed=3), run(b, train, val, seed=3)
    assert untimed(ha) == untimed(hb)
    assert states_equal(a.state_dict(), b.state_dict())


def test_resume_continues_exactly(make_model, tiny_datasets, tmp_path):
    train, val = tiny_datasets
    full = make_model("mobilenet_v3_small")
    h_full = run(full, train, val, epochs=4, seed=1, checkpoint_dir=tmp_path / "full")

    part = make_model("mobilenet_v3_small")
    h_part = run(part, train, val, epochs=4, seed=1, checkpoint_dir=tmp_path / "part", callbacks=[StopAfter(2)])
    assert len(h_part) == 2 and h_part.stop_reason == "test stop"
    resumed = make_model("mobilenet_v3_small", seed=99)  # other weights: all must come from the file
    h_resumed = run(resumed, train, val, epochs=4, seed=1, checkpoint_dir=tmp_path / "part",
                    resume=tmp_path / "part")

    assert untimed(h_resumed) == untimed(h_full)
    last_full = load_training_state(tmp_path / "full")
    last_resumed = load_training_state(tmp_path / "part")
    assert last_full["epoch"] == last_resumed["epoch"] == 4
    assert states_equal(last_full["model"], last_resumed["model"])  # weights after epoch 4
    assert states_equal(full.state_dict(), resumed.state_dict())  # best weights at the end


def test_two_epochs_then_resume_for_two_more(make_model, tiny_datasets, tmp_path):
    train, val = tiny_datasets
    full = make_model("mobilenet_v3_small")
    h_full = run(full, train, val, epochs=4, scheduler="step", checkpoint_dir=tmp_path / "a")
    first = make_model("mobilenet_v3_small")
    run(first, train, val, epochs=2, scheduler="step", checkpoint_dir=tmp_path / "b")
    h_more = run(make_model("mobilenet_v3_small"), train, val, epochs=4, scheduler="step",
                 checkpoint_dir=tmp_path / "b", resume=tmp_path / "b" / "last.pt")
    assert untimed(h_more) == untimed(h_full)
    assert states_equal(load_training_state(tmp_path / "a")["model"], load_training_state(tmp_path / "b")["model"])


def test_resumed_gradual_unfreezing_keeps_groups_and_matches(make_model, tiny_datasets, tmp_path):
    train, val = tiny_datasets

    def start():
        model = make_model("mobilenet_v3_small")
        freeze_to(model, -1)  # features only
        return model, GradualUnfreezing({2: ["stage4", "stage5"]}, lr=1e-4)

    full, unfreezing = start()
    h_full = run(full, train, val, epochs=4, callbacks=[unfreezing], checkpoint_dir=tmp_path / "full")
    assert list(h_full[0]["lr"]) == ["head"]
    assert list(h_full[1]["lr"]) == ["head", "stage4", "stage5"]

    part, unfreezing = start()
    run(part, train, val, epochs=4, callbacks=[unfreezing, StopAfter(3)], checkpoint_dir=tmp_path / "part")
    state = load_training_state(tmp_path / "part")
    assert [g["name"] for g in state["optimizer_groups"]] == ["head", "head.no_decay", "stage4", "stage5"]
    assert state["freeze"]["frozen_groups"] == ["stage1", "stage2", "stage3", "stem"]

    resumed, unfreezing = start()  # a fresh model with only the head trainable, as at the very start
    rec = Recorder()
    h_resumed = run(resumed, train, val, epochs=4, callbacks=[unfreezing, rec], checkpoint_dir=tmp_path / "part",
                    resume=tmp_path / "part")
    assert rec.begin_groups == ["head", "head.no_decay", "stage4", "stage5"]
    assert resumed.frozen_groups == {"stem", "stage1", "stage2", "stage3"}
    assert all(p.requires_grad for p in resumed.groups["stage5"].parameters())
    assert untimed(h_resumed) == untimed(h_full)
    assert states_equal(load_training_state(tmp_path / "full")["model"],
                        load_training_state(tmp_path / "part")["model"])


# ---------------------------------------------------------------- stopping early
def _best_saved_weights(history, folder):
    best = history.best("val_acc")["epoch"]
    return load_training_state(folder / f"epoch_{best:03d}.pt")["model"]


def test_stop_event_mid_epoch_keeps_best_weights(mobilenet_2, tiny_datasets, tmp_path, caplog):
    train, val = tiny_datasets
    stop = threading.Event()

    def press_stop(trainer, epoch, step):
        if epoch == 3 and step == 1:
            stop.set()

    with caplog.at_level(logging.WARNING, logger="tlkit.train"):
        history = run(mobilenet_2, train, val, epochs=5, stop_event=stop, callbacks=[
            Recorder(press_stop), Checkpoint(tmp_path, keep_all=True)])
    assert len(history) == 2 and history.stop_reason == "stop_event was set"
    assert states_equal(mobilenet_2.state_dict(), _best_saved_weights(history, tmp_path))
    assert len([r for r in caplog.records if "stopped" in r.getMessage()]) == 1


def test_keyboard_interrupt_returns_history_and_best(mobilenet_2, tiny_datasets, tmp_path):
    train, val = tiny_datasets

    def ctrl_c(trainer, epoch, step):
        if epoch == 3 and step == 2:
            raise KeyboardInterrupt

    trainer = Trainer(mobilenet_2, train, val, epochs=5, batch_size=8, image_size=32, num_workers=0,
                      progress=False, seed=0, callbacks=[Recorder(ctrl_c), Checkpoint(tmp_path, keep_all=True)])
    history = trainer.fit()  # returns normally
    assert trainer.state.stopped and "KeyboardInterrupt" in trainer.state.stop_reason
    assert len(history) == 2 and trainer.state.epoch == 2
    assert states_equal(mobilenet_2.state_dict(), _best_saved_weights(history, tmp_path))


def test_early_stopping_restores_best_epoch(mobilenet_2, tiny_datasets, tmp_path, monkeypatch):
    train, val = tiny_datasets
    scripted = iter([0.5, 0.9, 0.6, 0.7, 0.95, 0.99])
    monkeypatch.setattr(Trainer, "_evaluate", lambda self: {"val_loss": 1.0, "val_acc": next(scripted)})
    history = run(mobilenet_2, train, val, epochs=6, callbacks=[
        EarlyStopping("val_acc", patience=2), Checkpoint(tmp_path, keep_all=True)])
    assert history["val_acc"] == [0.5, 0.9, 0.6, 0.7] and history.stop_reason.startswith("early stopping")
    best = load_training_state(tmp_path / "epoch_002.pt")["model"]
    last = load_training_state(tmp_path / "epoch_004.pt")["model"]
    assert states_equal(mobilenet_2.state_dict(), best)
    assert not states_equal(mobilenet_2.state_dict(), last)


def _nan_at_step(trainer: Trainer, n: int) -> None:
    """Makes the loss of the n-th training step (1-based, counted over the run) NaN."""
    real_loss, calls = trainer.loss_fn, {"n": 0}

    def loss_that_explodes(logits, y):
        calls["n"] += 1
        return real_loss(logits, y) * (float("nan") if calls["n"] == n else 1.0)

    trainer.loss_fn = loss_that_explodes


def test_nan_loss_stops_with_advice_and_keeps_best(mobilenet_2, tiny_datasets, tmp_path):
    train, val = tiny_datasets
    trainer = Trainer(mobilenet_2, train, val, epochs=4, batch_size=8, image_size=32, num_workers=0,
                      progress=False, seed=0, callbacks=[Checkpoint(tmp_path, keep_all=True)])
    _nan_at_step(trainer, 5)  # 3 batches per epoch: NaN in the second batch of epoch 2
    with pytest.warns(RuntimeWarning, match="learning rate is probably too high"):
        history = trainer.fit()
    assert trainer.state.stop_reason == "non-finite loss" and len(history) == 1
    assert states_equal(mobilenet_2.state_dict(), load_training_state(tmp_path / "epoch_001.pt")["model"])
    assert all(torch.isfinite(t).all() for t in mobilenet_2.state_dict().values() if t.is_floating_point())


def _read_every(monkeypatch, every: int) -> None:
    """Makes the CPU read the running loss every ``every`` steps, as a GPU does."""
    real_setup = Trainer._setup

    def setup(self, resume):
        real_setup(self, resume)
        self._read_every = every

    monkeypatch.setattr(Trainer, "_setup", setup)


class LossLog(Callback):
    """(step, images seen, running loss) after every batch."""

    def __init__(self):
        self.rows = []

    def on_batch_end(self, state, step, logs):
        self.rows.append((step, logs["seen"], logs["loss"]))


def test_reading_the_loss_every_few_steps_gives_the_same_history(make_model, tiny_datasets, monkeypatch):
    train, val = tiny_datasets  # 24 images, batch 8: 3 steps per epoch
    runs = []
    for every in (1, 2):
        _read_every(monkeypatch, every)
        log = LossLog()
        history = run(make_model("mobilenet_v3_small", seed=0), train, val, callbacks=[log])
        runs.append((untimed(history), log.rows))
    (rows1, logs1), (rows2, logs2) = runs
    for a, b in zip(rows1, rows2, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert (a["train_acc"], a["val_acc"], a["lr"]) == (b["train_acc"], b["val_acc"], b["lr"])
    assert [s[:2] for s in logs1] == [s[:2] for s in logs2] == [(0, 8), (1, 16), (2, 24)] * 2  # every step
    for i in (0, 1, 3, 4):  # read at each epoch's first step and every second step
        assert logs2[i][2] == pytest.approx(logs1[i][2], rel=1e-5)
    assert logs2[2][2] == logs2[1][2] and logs2[5][2] == logs2[4][2]  # the others show the last value read


def test_nan_is_caught_when_the_loss_is_read_every_few_steps(mobilenet_2, tiny_datasets, monkeypatch):
    train, val = tiny_datasets
    _read_every(monkeypatch, 2)
    before = {k: v.clone() for k, v in mobilenet_2.state_dict().items()}
    trainer = Trainer(mobilenet_2, train, val, epochs=2, batch_size=8, image_size=32, num_workers=0,
                      progress=False, seed=0)
    _nan_at_step(trainer, 3)  # step 3 of 3, which is not a reading step
    with pytest.warns(RuntimeWarning, match="learning rate is probably too high"):
        history = trainer.fit()
    # Caught at the epoch's last read, after a NaN update reached the live weights: the model ends with the best.
    assert trainer.state.stop_reason == "non-finite loss" and len(history) == 0
    assert states_equal(mobilenet_2.state_dict(), before)


def test_huge_learning_rate_ends_with_finite_weights(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    before = {k: v.clone() for k, v in mobilenet_2.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = run(mobilenet_2, train, epochs=3, lr=1e6, optimizer="sgd", scheduler=None)
    if history.stop_reason == "non-finite loss":  # the usual outcome
        assert any("lower" in str(w.message) for w in caught)
    weights = mobilenet_2.state_dict()
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    if len(history) == 0:
        assert states_equal(weights, before)  # nothing finished: the weights from before training


def _oom_once(monkeypatch):
    real_step = Trainer._train_step
    calls = {"n": 0}

    def step(self, x, y):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, x, y)

    monkeypatch.setattr(Trainer, "_train_step", step)


def test_out_of_memory_says_use_a_smaller_batch(mobilenet_2, tiny_datasets, monkeypatch):
    train, val = tiny_datasets
    _oom_once(monkeypatch)
    with pytest.raises(RuntimeError, match="smaller batch size") as info:
        run(mobilenet_2, train, val, batch_size=8)
    assert "batch_size=4" in str(info.value)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_out_of_memory_retry_halves_the_batch(mobilenet_2, tiny_datasets, monkeypatch):
    train, val = tiny_datasets
    _oom_once(monkeypatch)
    trainer = Trainer(mobilenet_2, train, val, epochs=2, batch_size=8, image_size=32, num_workers=0,
                      progress=False, oom_retry=True)
    with pytest.warns(RuntimeWarning, match="retrying this epoch with batch_size=4"):
        history = trainer.fit()
    assert trainer.config.batch_size == 4 and len(history) == 2 and history.stop_reason is None
    assert history["epoch"] == [1, 2]


def test_out_of_memory_at_batch_one_gives_up(mobilenet_2, tiny_datasets, monkeypatch):
    train, _ = tiny_datasets
    monkeypatch.setattr(Trainer, "_train_step", lambda self, x, y: (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(RuntimeError, match="batch_size=1"):
        run(mobilenet_2, train, batch_size=1, oom_retry=True)


# ---------------------------------------------------------------- BatchNorm and freezing
def test_partial_finetuning_leaves_frozen_groups_and_their_bn_untouched(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    freeze_to(mobilenet_2, -2)  # stage5 and head train
    frozen_before = {k: v.clone() for k, v in frozen_state(mobilenet_2).items()}
    stage5_before = {k: v.clone() for k, v in mobilenet_2.groups["stage5"].state_dict().items()}
    run(mobilenet_2, train, epochs=1, lr=1e-2)
    frozen_after = frozen_state(mobilenet_2)
    assert any("running_mean" in k for k in frozen_before) and len(frozen_before) == len(frozen_after)
    assert states_equal(frozen_before, frozen_after)  # weights AND running statistics
    stage5_after = mobilenet_2.groups["stage5"].state_dict()
    changed = [k for k in stage5_before if not torch.equal(stage5_before[k], stage5_after[k])]
    assert any(k.endswith("weight") for k in changed) and any(k.endswith("running_mean") for k in changed)


# ---------------------------------------------------------------- checkpoints
class Sneaky:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_checkpoint_loads_with_weights_only(mobilenet_2, tiny_datasets, tmp_path):
    train, val = tiny_datasets
    run(mobilenet_2, train, val, epochs=1, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["format"] == TRAIN_FORMAT and state["epoch"] == 1
    for key in ("model", "optimizer", "optimizer_groups", "scheduler", "scaler", "freeze", "history", "rng",
                "best"):
        assert key in state
    assert set(state["freeze"]) == {"frozen_groups", "bn_policy", "requires_grad"}
    assert len(state["history"]["rows"]) == 1
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed


def test_checkpoint_with_pickled_object_is_refused(mobilenet_2, tiny_datasets, tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": TRAIN_FORMAT, "payload": Sneaky()}, evil)
    with pytest.raises(CheckpointError, match="Refusing to load") as info:
        load_training_state(evil)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    train, _ = tiny_datasets
    with pytest.raises(CheckpointError):
        run(mobilenet_2, train, resume=evil)
    assert "this ran" not in capsys.readouterr().out
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a tlkit training checkpoint"):
        load_training_state(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_training_state(tmp_path / "missing")


# ---------------------------------------------------------------- output, data problems, options
def test_progress_false_prints_nothing(mobilenet_2, make_model, tiny_datasets, capsys):
    train, val = tiny_datasets
    run(mobilenet_2, train, val, epochs=1, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    run(make_model("mobilenet_v3_small"), train, val, epochs=1, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_unreadable_image_is_skipped_with_one_warning_per_epoch(mobilenet_2, tiny_images):
    from tlkit.data import image_folder

    bad = tiny_images / "train" / "cats" / "cats_00.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[:-100])  # header intact (the scan keeps it), pixels cut off (decoding fails)
    train, val = image_folder(tiny_images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = run(mobilenet_2, train, val, epochs=2)
    skipped = [w for w in caught if "Skipped 1 unreadable image" in str(w.message)]
    assert len(history) == 2 and len(skipped) == 2


@pytest.mark.parametrize("bad, match", [(dict(scheduler="linear"), "onecycle"), (dict(optimizer="lamb"), "adamw"),
                                        (dict(epochs=0), "positive")])
def test_invalid_options_name_the_valid_ones(mobilenet_2, tiny_datasets, bad, match):
    train, _ = tiny_datasets
    with pytest.raises(ValueError, match=match):
        run(mobilenet_2, train, **bad)


def test_everything_frozen_is_an_error(mobilenet_2, tiny_datasets):
    freeze_to(mobilenet_2, len(mobilenet_2.group_names))
    with pytest.raises(ValueError, match="unfreeze"):
        run(mobilenet_2, tiny_datasets[0])


# ---------------------------------------------------------------- strategies
@pytest.mark.parametrize("strategy, trained", [
    ("features", ["head"]), ("partial", ["stage4", "stage5", "head"]),
    ("finetune", ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "head"])])
def test_train_strategy_trains_the_right_groups(mobilenet_2, tiny_datasets, strategy, trained):
    train, val = tiny_datasets
    history = train_strategy(mobilenet_2, strategy, train, val, epochs=1, lr=1e-4, scheduler=None,
                             batch_size=8, image_size=32, num_workers=0, progress=False, seed=0)
    lrs = history[0]["lr"]
    assert list(lrs) == trained
    assert lrs["head"] == pytest.approx(1e-3)  # head_lr defaults to 10 x lr
    if "stem" in lrs:
        assert lrs["stem"] == pytest.approx(1e-5) and lrs["stage5"] == pytest.approx(1e-4)


def test_train_strategy_keeps_every_bn_statistic_by_default(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    stats = {k: v.clone() for k, v in mobilenet_2.state_dict().items() if "running" in k}
    weights = {k: v.clone() for k, v in mobilenet_2.state_dict().items() if k.endswith("weight")}
    train_strategy(mobilenet_2, "finetune", train, epochs=1, batch_size=8, image_size=32, num_workers=0,
                   progress=False)
    after = mobilenet_2.state_dict()
    assert mobilenet_2.bn_policy == "eval_all" and mobilenet_2.frozen_groups == set()
    assert states_equal(stats, {k: after[k] for k in stats})  # running statistics kept ...
    assert not torch.equal(weights["groups.stem.1.weight"], after["groups.stem.1.weight"])  # ... BN scale learned


def test_train_strategy_gradual_unfreezing(mobilenet_2, tiny_datasets):
    train, val = tiny_datasets
    history = train_strategy(mobilenet_2, "finetune", train, val, epochs=2, unfreeze_at=2, lr=1e-4,
                             scheduler=None, batch_size=8, image_size=32, num_workers=0, progress=False)
    assert list(history[0]["lr"]) == ["head"]
    assert set(history[1]["lr"]) == set(mobilenet_2.group_names)
    assert history[1]["lr"]["stem"] == pytest.approx(1e-5)  # the body's lower rates
    assert mobilenet_2.frozen_groups == set()
    with pytest.raises(ValueError, match="strategy"):
        train_strategy(mobilenet_2, "everything", train, val)
    with pytest.raises(ValueError, match="unfreeze_at"):
        train_strategy(mobilenet_2, "partial", train, val, epochs=2, unfreeze_at=5)


# ---------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_channels_last(mobilenet_2, tiny_datasets):
    train, val = tiny_datasets
    history = run(mobilenet_2, train, val, epochs=2, device="cuda", amp=True, channels_last=True)
    assert len(history) == 2 and next(mobilenet_2.parameters()).is_cuda
    conv = next(m for m in mobilenet_2.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_last_batch_of_one_image_is_dropped_instead_of_crashing_batchnorm(make_model, tiny_datasets):
    train, val = tiny_datasets  # 24 training images: batch 23 leaves one alone
    model = make_model("mobilenet_v3_small", seed=0)
    set_bn_policy(model, "train")  # every BN uses batch statistics: a batch of 1 cannot be normalised
    seen = []

    class Count(Callback):
        def on_batch_end(self, state, step, logs):
            seen.append(logs["seen"])

    history = fit(model, train, val, epochs=2, lr=1e-3, batch_size=23, image_size=48, seed=0, progress=False,
                  num_workers=0, callbacks=[Count()])
    assert len(history) == 2 and history.stop_reason is None
    assert seen == [23, 23]  # one step per epoch, of 23 images
    fit(model, train, val, epochs=1, batch_size=12, image_size=48, progress=False, num_workers=0,
        callbacks=[Count()])
    assert seen[2:] == [12, 24]  # 24 % 12 == 0: nothing dropped
