"""Activations cached at the freeze boundary: equal to live training, invalidated, atomic, rebuilt."""
import os
import warnings

import pytest
import torch

from tlkit.boundary import (TopModel, activation_key, bottom_forward, boundary_for, extract_activations,
                            plan)
from tlkit.callbacks import Callback, GradualUnfreezing
from tlkit.data import transforms_for
from tlkit.freezing import freeze_to, set_bn_policy
from tlkit.train import Trainer

SIZE = 32  # ResNet-18 at 32 px: stage3 sees 2x2 maps, fast on a CPU


def _run(make_model, data, cache, epochs=3, callbacks=(), start=-3, **options):
    """A seeded run of ResNet-18 (stage3, stage4, head train); returns (trainer, model)."""
    model = make_model("resnet18", seed=0)
    freeze_to(model, start)
    train, val = data
    trainer = Trainer(model, train, val, epochs=epochs, lr=1e-3, batch_size=8, seed=0, amp=False,
                      progress=False, image_size=SIZE, augment="none", num_workers=0,
                      callbacks=list(callbacks), cache_boundary=cache, **options)
    trainer.fit()
    return trainer, model


def _assert_same_run(a, b, atol):
    (ta, ma), (tb, mb) = a, b
    for col in ("train_loss", "val_loss", "val_acc"):
        assert ta.state.history[col] == pytest.approx(tb.state.history[col], abs=atol), col
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=atol * 10, rtol=atol), k


class _CountStem:
    """Counts the SIZE-px images that pass through the stem (the frozen bottom); BatchNorm folding
    checks itself on two 64-px images, which are not counted."""

    def __init__(self, model):
        self.n = 0
        model.groups["stem"].register_forward_hook(self.count)

    def count(self, module, inputs, out):
        if inputs[0].shape[-1] == SIZE:
            self.n += len(out)


def test_cached_training_equals_live_training_without_augmentation(make_model, tiny_datasets, tmp_path):
    live = _run(make_model, tiny_datasets, False)
    cached = _run(make_model, tiny_datasets, {"dtype": "fp32", "cache_dir": tmp_path})
    assert cached[0]._boundary.boundary == "stage3" and live[0]._boundary is None
    assert len(list(tmp_path.glob("resnet18-stage3-*.act.pt"))) == 2  # train and val
    _assert_same_run(cached, live, atol=1e-5)
    # fp16 storage (the default): the first epoch agrees to fp16 rounding (later ones drift apart, as two
    # runs on different hardware do; accuracy on real data: docs/API.md)
    half = _run(make_model, tiny_datasets, {"cache_dir": tmp_path / "fp16"})
    assert half[0].state.history["train_loss"][0] == pytest.approx(live[0].state.history["train_loss"][0], rel=1e-2)
    assert half[0].state.history["train_loss"][0] != live[0].state.history["train_loss"][0]  # it really was fp16


def test_the_frozen_bottom_runs_once_and_a_second_run_reads_the_cache(make_model, tiny_datasets, tmp_path):
    model = make_model("resnet18", seed=0)
    freeze_to(model, -3)
    counter = _CountStem(model)
    train, val = tiny_datasets
    opts = dict(epochs=4, lr=1e-3, batch_size=8, seed=0, progress=False, image_size=SIZE, augment="none",
                num_workers=0, cache_boundary={"cache_dir": tmp_path})
    Trainer(model, train, val, **opts).fit()
    assert counter.n == len(train) + len(val)  # once, not 4 epochs x (train + val)
    Trainer(model, train, val, **opts).fit()  # the weights above the boundary changed, those below did not
    assert counter.n == len(train) + len(val)


def test_auto_caches_only_when_enough_epochs(make_model, tiny_datasets):
    model = make_model("resnet18", seed=0)
    train, val = tiny_datasets
    train = train.with_transform(transforms_for(model, train=True, image_size=SIZE))
    freeze_to(model, -3)
    assert plan(model, train, val, "auto", epochs=1) is None
    assert plan(model, train, val, "auto", epochs=2, views=2).boundary == "stage3"
    assert plan(model, train, val, "auto", epochs=3, views=4) is None
    assert plan(model, train, val, False, epochs=10) is None
    freeze_to(model, 0)  # everything trains: no frozen bottom
    assert boundary_for(model) is None and plan(model, train, val, True, epochs=10) is None
    freeze_to(model, -3)
    model.groups["stage1"][0].conv1.weight.requires_grad_(True)  # trainable by hand: stage1 is not frozen
    assert boundary_for(model) == "stage1"
    freeze_to(model, -3)
    set_bn_policy(model, "train")  # frozen BN updates its statistics: the bottom is not a fixed function
    assert boundary_for(model) is None
    with pytest.raises(ValueError, match="cache_boundary must be"):
        plan(model, train, val, "always", epochs=5)


def test_the_key_follows_data_transform_boundary_and_weights_below(make_model, tiny_datasets):
    model = make_model("resnet18", seed=0)
    train = tiny_datasets[0].with_transform(transforms_for(model, image_size=SIZE))
    key = activation_key(model, train, "stage3")
    assert activation_key(model, train, "stage3") == key
    assert activation_key(model, train.with_transform(transforms_for(model, image_size=40)), "stage3") != key
    assert activation_key(model, train, "stage2") != key
    assert activation_key(model, train, "stage3", views=2) != key
    st = os.stat(train.files[0])
    os.utime(train.files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # one photo changed
    changed = activation_key(model, train, "stage3")
    assert changed != key
    with torch.no_grad():
        model.groups["stage3"][0].conv1.weight.add_(1.0)  # above the boundary: same key
        model.groups["head"][0].weight.add_(1.0)
        assert activation_key(model, train, "stage3") == changed
        model.groups["stage2"][0].bn1.running_mean.add_(0.1)  # below it: a new key
    assert activation_key(model, train, "stage3") != changed


def test_a_changed_photo_or_bottom_weight_rebuilds_the_cache(make_model, tiny_datasets, tmp_path):
    model = make_model("resnet18", seed=0)
    train = tiny_datasets[0].with_transform(transforms_for(model, image_size=SIZE))
    first = extract_activations(model, train, "stage3", cache_dir=tmp_path, progress=False)
    assert not first.from_cache and extract_activations(model, train, "stage3", cache_dir=tmp_path,
                                                        progress=False).from_cache
    with torch.no_grad():
        model.groups["stem"][0].weight.mul_(2.0)
    again = extract_activations(model, train, "stage3", cache_dir=tmp_path, progress=False)
    assert not again.from_cache and not torch.equal(again.activations, first.activations)


def test_top_model_runs_the_rest_of_the_network_with_the_same_parameters(make_model):
    model = make_model("resnet18", seed=0).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    for b in ("stage1", "stage4", "head"):
        top = TopModel(model, b)
        assert torch.allclose(top(bottom_forward(model, b, x)), model(x), atol=1e-5), b
    assert bottom_forward(model, "head", x).shape == (3, model.num_features)
    top = TopModel(model, "stage4")
    with torch.no_grad():
        a = bottom_forward(model, "stage4", x)
    top(a).sum().backward()
    assert model.groups["stage4"][0].conv1.weight.grad is not None and model.groups["stem"][0].weight.grad is None
    with pytest.raises(ValueError, match="boundary must be one of"):
        TopModel(model, "stem")


def test_augmented_views_differ_and_each_epoch_draws_one_per_photo(make_model, tiny_datasets, tmp_path):
    model = make_model("resnet18", seed=0)
    train = tiny_datasets[0].with_transform(transforms_for(model, train=True, image_size=SIZE))
    acts = extract_activations(model, train, "stage4", views=3, cache_dir=tmp_path, progress=False)
    assert acts.activations.shape[:2] == (3, len(train))
    assert not torch.equal(acts.activations[0], acts.activations[1])  # different random crops
    again = extract_activations(model, train, "stage4", views=3, cache=False, progress=False)
    assert torch.equal(again.activations, acts.activations)  # seeded: the same views every time
    epochs = [torch.cat([x for x, _, _ in acts.batches(8, shuffle=True, seed=s)]) for s in (1, 2)]
    assert epochs[0].shape == (len(train), *acts.activations.shape[2:]) and not torch.equal(*epochs)
    rows = acts.activations.float()
    for x in epochs[0][:5]:  # every row is one of the views of some photo
        assert any(torch.equal(x, rows[v, i]) for v in range(3) for i in range(len(train)))


def test_gradual_unfreezing_across_the_boundary_equals_live(make_model, tiny_datasets, tmp_path):
    unfreeze = [GradualUnfreezing({3: ["stage2"]}, lr=1e-4)]
    live = _run(make_model, tiny_datasets, False, epochs=4, callbacks=unfreeze)
    cached = _run(make_model, tiny_datasets, {"dtype": "fp32", "cache_dir": tmp_path}, epochs=4,
                  callbacks=[GradualUnfreezing({3: ["stage2"]}, lr=1e-4)])
    assert "unfrozen" in cached[0]._boundary.dropped and "before epoch 3" in cached[0]._boundary.dropped
    _assert_same_run(cached, live, atol=1e-5)
    # unfreezing above the boundary keeps the cache
    above = _run(make_model, tiny_datasets, {"dtype": "fp32", "cache_dir": tmp_path}, epochs=3, start=-2,
                 callbacks=[GradualUnfreezing({2: ["head"]})])
    assert above[0]._boundary.dropped is None


class _NudgeStem(Callback):
    """Changes a frozen weight below the boundary before epoch 2 (e.g. loaded from elsewhere)."""

    def on_epoch_begin(self, state, epoch):
        if epoch == 2:
            with torch.no_grad():
                state.model.groups["stem"][0].weight.mul_(1.5)


def test_changed_weights_below_the_boundary_drop_the_cache(make_model, tiny_datasets, tmp_path):
    live = _run(make_model, tiny_datasets, False, callbacks=[_NudgeStem()])
    cached = _run(make_model, tiny_datasets, {"dtype": "fp32", "cache_dir": tmp_path}, callbacks=[_NudgeStem()])
    assert "weights below the boundary changed" in cached[0]._boundary.dropped
    _assert_same_run(cached, live, atol=1e-5)


def test_cache_files_are_written_atomically_and_a_corrupt_one_is_rebuilt(make_model, tiny_datasets, tmp_path,
                                                                         monkeypatch):
    model = make_model("resnet18", seed=0)
    train = tiny_datasets[0].with_transform(transforms_for(model, image_size=SIZE))
    tmp_path = tmp_path / "cache"
    real_replace = os.replace

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # the process dies between writing and renaming
    with pytest.warns(UserWarning, match="Could not write the activation cache"):
        fresh = extract_activations(model, train, "stage3", cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # no half-written file under any name
    monkeypatch.setattr(os, "replace", real_replace)
    extract_activations(model, train, "stage3", cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.act.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = extract_activations(model, train, "stage3", cache_dir=tmp_path, progress=False)
    assert not rebuilt.from_cache and torch.equal(rebuilt.activations, fresh.activations)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extract_activations(model, train, "stage3", cache_dir=tmp_path, progress=False).from_cache


def test_the_stop_button_works_while_the_cache_fills(make_model, tiny_datasets, tmp_path):
    import threading

    stop = threading.Event()

    class _StopInside(Callback):  # pressed just before the first epoch fills the cache
        def on_epoch_begin(self, state, epoch):
            stop.set()

    trainer, model = _run(make_model, tiny_datasets, {"cache_dir": tmp_path}, callbacks=[_StopInside()],
                          stop_event=stop)
    assert trainer.state.stop_reason == "stop_event was set" and len(trainer.state.history) == 0
    assert list(tmp_path.glob("*.act.pt")) == []  # the extraction stopped at its first batch: no file
