"""Training that is interrupted or goes wrong: ``tlkit.train.fit`` on a tiny untrained network.

Whatever stops a run (Ctrl-C, a stop button, a NaN loss), ``fit`` returns
normally with a History of every *finished* epoch, and the model holds the
weights of the best finished epoch (or the weights from before training when
none finished). CUDA running out of memory says which batch size to use, and
``oom_retry=True`` halves the batch instead.
"""
from __future__ import annotations

import math
import threading
import warnings

import pytest
import torch

from imagegen import make_dataset
from tlkit.backbones import load_backbone
from tlkit.callbacks import Callback
from tlkit.data import image_folder
from tlkit.train import Trainer, fit

FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "img_per_s")
OPTS = dict(batch_size=8, image_size=32, num_workers=0, progress=False, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # several helpers share two cores: one thread is faster here
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("train") / "data", train=12, val=6, size=36)
    return image_folder(root)  # 24 train images -> 3 batches of 8


@pytest.fixture
def model():
    torch.manual_seed(0)
    return load_backbone("mobilenet_v3_small", pretrained=False, num_classes=2)


def copy_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Snapshots(Callback):
    """Keeps the weights at the end of every finished epoch, and runs ``action`` after each batch."""

    def __init__(self, action=None):
        self.action, self.states = action, {}

    def on_batch_end(self, state, step, logs):
        if self.action:
            self.action(state, logs["epoch"], step)

    def on_epoch_end(self, state, epoch, row):
        self.states[epoch] = copy_state(state.model)


def best_epoch(history) -> int:
    accs = history["val_acc"]
    return accs.index(max(accs)) + 1  # the first epoch with the highest accuracy


def assert_complete(history, epochs: int) -> None:
    assert history["epoch"] == list(range(1, epochs + 1))
    for row in history.rows:
        assert all(row.get(k) is not None for k in FIELDS), row
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])


def assert_finite(model) -> None:
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


# ---------------------------------------------------------------- Ctrl-C and the stop button

@pytest.mark.parametrize("where", ["training_batch", "validation"])
def test_keyboard_interrupt_mid_epoch_keeps_best_weights_and_full_epochs(model, datasets, monkeypatch, where):
    train, val = datasets

    def ctrl_c(trainer, epoch, step):
        if where == "training_batch" and epoch == 3 and step == 1:
            raise KeyboardInterrupt

    if where == "validation":  # Ctrl-C while epoch 3 is being validated
        real_evaluate, calls = Trainer._evaluate, []

        def evaluate(self):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real_evaluate(self)

        monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    snaps = Snapshots(ctrl_c)
    history = fit(model, train, val, epochs=5, lr=3e-3, callbacks=[snaps], **OPTS)  # returns, no raise
    assert "KeyboardInterrupt" in history.stop_reason
    assert_complete(history, 2)  # epoch 3 never finished, so it has no row
    assert same_state(model.state_dict(), snaps.states[best_epoch(history)])
    assert not model.training


def test_keyboard_interrupt_in_the_first_epoch_restores_the_starting_weights(model, datasets):
    train, val = datasets
    before = copy_state(model)

    def ctrl_c(trainer, epoch, step):
        if step == 1:
            raise KeyboardInterrupt

    history = fit(model, train, val, epochs=3, callbacks=[Snapshots(ctrl_c)], **OPTS)
    assert len(history) == 0 and "KeyboardInterrupt" in history.stop_reason
    assert same_state(model.state_dict(), before)  # one optimizer step happened, and was undone


def test_stop_event_from_another_thread_keeps_best_weights(model, datasets):
    """What the dashboard's Stop button does: fit runs in a worker thread, the UI sets the event."""
    train, val = datasets
    stop, in_epoch_2 = threading.Event(), threading.Event()

    def wait_for_stop(trainer, epoch, step):
        if epoch == 2 and step == 0:
            in_epoch_2.set()
            assert stop.wait(timeout=60)  # the "user" clicks Stop while epoch 2 runs

    snaps, result = Snapshots(wait_for_stop), {}
    worker = threading.Thread(target=lambda: result.update(h=fit(model, train, val, epochs=4, stop_event=stop,
                                                                 callbacks=[snaps], **OPTS)))
    worker.start()
    assert in_epoch_2.wait(timeout=120)
    stop.set()
    worker.join(timeout=120)
    assert not worker.is_alive()
    history = result["h"]
    assert history.stop_reason == "stop_event was set"
    assert_complete(history, 1)
    assert same_state(model.state_dict(), snaps.states[1])


def test_stop_event_already_set_trains_nothing(model, datasets):
    train, val = datasets
    before = copy_state(model)
    stop = threading.Event()
    stop.set()
    history = fit(model, train, val, epochs=3, stop_event=stop, **OPTS)
    assert len(history) == 0 and history.stop_reason == "stop_event was set"
    assert same_state(model.state_dict(), before)


# ---------------------------------------------------------------- NaN loss

class NaNAfter:
    """A transform wrapper that returns NaN pixels from the ``n``-th image on (num_workers=0)."""

    def __init__(self, transform, n: int):
        self.transform, self.n, self.calls = transform, n, 0

    def __call__(self, img):
        self.calls += 1
        x = self.transform(img)
        return torch.full_like(x, float("nan")) if self.calls >= self.n else x


@pytest.mark.parametrize("cause", ["nan_in_the_data", "learning_rate_1e9"])
def test_nan_loss_stops_with_a_lower_lr_hint_and_keeps_best(model, datasets, cause):
    from tlkit.data import transforms_for

    train, val = datasets
    before = copy_state(model)
    opts = dict(OPTS, epochs=4, lr=3e-3)
    if cause == "nan_in_the_data":  # epoch 1 and 2 are clean (2 x (24 + 12) images), then NaN
        train = train.with_transform(NaNAfter(transforms_for(model, train=True, image_size=32), 2 * 24 + 12 + 9))
        opts.update(scheduler=None)
    else:
        opts.update(lr=1e9, optimizer="sgd", scheduler=None)
    snaps = Snapshots()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, train, val, callbacks=[snaps], **opts)
    advice = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(advice) == 1 and "too high" in advice[0] and "lower" in advice[0] and "lr=" in advice[0]
    assert history.stop_reason == "non-finite loss"
    assert_finite(model)
    if cause == "nan_in_the_data":
        assert_complete(history, 2)
        assert same_state(model.state_dict(), snaps.states[best_epoch(history)])
        assert f"weights of epoch {best_epoch(history)}" in advice[0]
    elif len(history) == 0:  # the usual outcome: the very first updates blow up
        assert same_state(model.state_dict(), before) and "weights of epoch 0" in advice[0]
    else:
        assert same_state(model.state_dict(), snaps.states[best_epoch(history)])


# ---------------------------------------------------------------- CUDA out of memory (simulated)

def oom_above(monkeypatch, model, limit: int) -> list[int]:
    """The model's forward raises CUDA's OutOfMemoryError for batches larger than ``limit``."""
    sizes = []
    real_forward = type(model).forward

    def forward(self, x):
        if self.training:  # training batches only (not validation, nor tlkit.fold's eval-mode check)
            sizes.append(len(x))
        if self.training and len(x) > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x) * 64} MiB")
        return real_forward(self, x)

    monkeypatch.setattr(type(model), "forward", forward)
    return sizes


def test_cuda_out_of_memory_names_a_smaller_batch_size(model, datasets, monkeypatch):
    train, val = datasets
    oom_above(monkeypatch, model, 4)
    trainer = Trainer(model, train, val, epochs=2, **OPTS)
    with pytest.raises(RuntimeError) as err:
        trainer.fit()
    msg = str(err.value)
    assert "ran out of memory with batch_size=8" in msg and "batch_size=4" in msg and "oom_retry=True" in msg
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)
    assert len(trainer.state.history) == 0


def test_cuda_out_of_memory_mid_run_still_leaves_the_best_weights(model, datasets, monkeypatch):
    train, val = datasets
    real_step, calls = Trainer._train_step, []

    def step(self, x, y):  # epoch 1 runs 3 batches; the 2nd batch of epoch 2 runs out of memory
        calls.append(1)
        if len(calls) == 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, x, y)

    monkeypatch.setattr(Trainer, "_train_step", step)
    snaps = Snapshots()
    trainer = Trainer(model, train, val, epochs=3, callbacks=[snaps], **OPTS)
    with pytest.raises(RuntimeError, match="smaller batch size"):
        trainer.fit()
    assert_complete(trainer.state.history, 1)
    assert same_state(model.state_dict(), snaps.states[1])  # not the one update made in epoch 2


def test_cuda_out_of_memory_with_retry_halves_the_batch_until_it_fits(model, datasets, monkeypatch):
    train, val = datasets
    sizes = oom_above(monkeypatch, model, 3)
    trainer = Trainer(model, train, val, epochs=2, oom_retry=True, **dict(OPTS, batch_size=12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit()
    retries = [str(w.message) for w in caught if "out of memory" in str(w.message)]
    assert retries == [f"CUDA ran out of memory with batch_size={b}; retrying this epoch with batch_size={b // 2}."
                       for b in (12, 6)]
    assert trainer.config.batch_size == 3 and sizes[:3] == [12, 6, 3] and max(sizes[2:]) == 3
    assert_complete(history, 2) and history.stop_reason is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_out_of_memory_retry_on_gpu(tmp_path):
    """A real OOM: 2 GiB allowed, 256 images of 384 px in one batch; oom_retry halves until it fits."""
    root = make_dataset(tmp_path / "data", train=128, val=8, size=40)
    train, val = image_folder(root)
    torch.manual_seed(0)
    net = load_backbone("resnet18", pretrained=False, num_classes=2)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2 * 2**30 / total))
    try:
        with pytest.raises(RuntimeError, match="smaller batch size"):
            fit(net, train, val, epochs=1, batch_size=256, image_size=384, num_workers=0, progress=False,
                device="cuda")
        torch.cuda.empty_cache()
        trainer = Trainer(net, train, val, epochs=1, batch_size=256, image_size=384, num_workers=0,
                          progress=False, device="cuda", oom_retry=True)
        with pytest.warns(RuntimeWarning, match="retrying this epoch"):
            history = trainer.fit()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert trainer.config.batch_size < 256 and len(history) == 1 and history.stop_reason is None


# ---------------------------------------------------------------- round two: weights that stop being finite

def test_update_that_makes_the_weights_nan_after_a_finite_loss_is_not_kept(model, datasets):
    """The last update of epoch 2 turns a weight into NaN while every loss was finite: fit stops there,
    and the model keeps the best finite epoch's weights (it used to keep the NaN ones)."""
    train, val = datasets

    def poison(state, epoch, step):
        if epoch == 2 and step == 2:  # the last of 3 batches: no later loss would show the NaN
            with torch.no_grad():
                next(state.model.groups["head"].parameters()).fill_(float("nan"))

    snaps = Snapshots(poison)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, train, val, epochs=3, lr=3e-3, callbacks=[snaps], **OPTS)
    advice = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(advice) == 1 and "NaN" in advice[0] and "lower" in advice[0]
    assert history.stop_reason == "non-finite loss" and history["epoch"] == [1]
    assert_finite(model)
    assert same_state(model.state_dict(), snaps.states[1])


def _features(n: int = 40, dim: int = 16, seed: int = 0):
    from tlkit.features import Features

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    return Features(x, (x[:, 0] > 0).long(), [f"{i}.jpg" for i in range(n)], ["a", "b"])


def test_head_training_with_an_absurd_lr_stops_and_keeps_finite_weights():
    """`--lr 1e38` with the features strategy: the first update overflows; the head keeps its starting
    weights, history.stop_reason says why, one RuntimeWarning suggests a lower lr."""
    from tlkit.features import train_head

    feats = _features()
    torch.manual_seed(0)
    start, _ = train_head(feats, feats, epochs=1, lr=1e-30)  # (almost) the starting weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head, history = train_head(feats, feats, epochs=5, lr=1e38)
    advice = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(advice) == 1 and "lr=1e+38 is too high" in advice[0] and "weights of epoch 0" in advice[0]
    assert history.stop_reason in ("non-finite weights", "non-finite loss") and len(history) == 0
    assert all(bool(torch.isfinite(p).all()) for p in head.parameters())
    assert all(torch.allclose(a, b) for a, b in zip(head.state_dict().values(), start.state_dict().values()))


def test_head_update_that_makes_weights_nan_keeps_the_best_finite_epoch(monkeypatch):
    """The old bookkeeping judged an epoch by the loss *before* its updates, so NaN weights were kept."""
    import tlkit.features as features

    feats = _features()
    real, calls = features._head_epoch, []

    def epoch_then_poison(head, opt, *a):
        calls.append(1)
        row = real(head, opt, *a)
        if len(calls) == 3:  # epoch 3's updates leave a NaN weight: that must be noticed
            with torch.no_grad():
                head[-1].weight.fill_(float("nan"))
            raise features.NonFiniteLossError("an update made the weight 0.weight NaN or inf", "non-finite weights")
        return row

    monkeypatch.setattr(features, "_head_epoch", epoch_then_poison)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        head, history = features.train_head(feats, feats, epochs=5, lr=1e-2)
    assert history.stop_reason == "non-finite weights" and history["epoch"] == [1, 2]
    assert all(bool(torch.isfinite(p).all()) for p in head.parameters())


def test_head_epoch_notices_nan_weights_after_an_update():
    """_head_epoch checks the weights after every step, not only the loss before it."""
    from tlkit.features import NonFiniteLossError, _head_epoch
    from tlkit.heads import make_head

    feats = _features()
    head = make_head(16, 2)

    class NaNStep(torch.optim.SGD):
        def step(self, closure=None):
            with torch.no_grad():
                head[-1].weight[0, 0] = float("nan")

    opt = NaNStep(head.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match="weight .* NaN") as err:
        _head_epoch(head, opt, feats, feats, 8, (torch.Generator().manual_seed(0), torch.Generator()), 1, 0.1)
    assert err.value.reason == "non-finite weights"


@pytest.mark.parametrize("epochs", [0, -1, 2.5, True])
def test_head_training_with_no_epochs_is_an_error_not_an_untrained_head(epochs):
    from tlkit.features import train_head

    with pytest.raises(ValueError, match=r"epochs must be a whole number of at least 1, got"):
        train_head(_features(), epochs=epochs)


def test_ctrl_c_during_head_training_keeps_the_best_epoch(monkeypatch):
    import tlkit.features as features

    feats = _features()
    real, calls = features._head_epoch, []

    def interrupted_in_epoch_3(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(features, "_head_epoch", interrupted_in_epoch_3)
    head, history = features.train_head(feats, feats, epochs=5, lr=1e-2)
    assert history.stop_reason == "interrupted (KeyboardInterrupt)" and history["epoch"] == [1, 2]
    assert all(bool(torch.isfinite(p).all()) for p in head.parameters()) and not head.training
