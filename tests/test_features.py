"""Feature extraction, the on-disk cache, and head training on cached features."""
import os
import time

import pytest
import torch

from imagegen import make_dataset, write_image
from tlkit import freeze, load_backbone
from tlkit.data import image_folder, transforms_for
from tlkit.feature_cache import cache_key
from tlkit.features import Features, extract_features, train_head


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = load_backbone("mobilenet_v3_small", pretrained=False, num_classes=2)
    freeze(model, model.group_names[:-1])
    train, val = image_folder(make_dataset(tmp_path / "data", train=5, val=3))
    tf = transforms_for(model, image_size=48)
    return model, train.with_transform(tf), val.with_transform(tf), tmp_path / "cache"


def test_cached_features_equal_fresh_ones_and_skip_the_backbone(setup, monkeypatch):
    model, train, _, cache = setup
    fresh = extract_features(model, train, cache=False, progress=False)
    assert fresh.features.shape == (10, model.num_features) and fresh.labels.tolist() == [0] * 5 + [1] * 5
    first = extract_features(model, train, cache_dir=cache, progress=False)
    assert not first.from_cache and len(list(cache.glob("*.pt"))) == 1
    calls = []
    monkeypatch.setattr(model, "forward_pooled", lambda x: calls.append(x) or 1 / 0)
    second = extract_features(model, train, cache_dir=cache, progress=False)
    assert second.from_cache and calls == []
    assert torch.equal(second.features, fresh.features) and torch.equal(second.labels, fresh.labels)
    assert second.files == train.files


def test_a_changed_image_invalidates_the_cache(setup):
    model, train, _, cache = setup
    key = cache_key(model, train)
    path = train.files[0]
    write_image(type(cache)(path), (0, 255, 0), size=40, seed=99)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache_key(model, train) != key
    extract_features(model, train, cache_dir=cache, progress=False)
    again = extract_features(model, train, cache_dir=cache, progress=False)
    assert again.from_cache


def test_changed_weights_or_transform_change_the_key(setup):
    model, train, _, _ = setup
    key = cache_key(model, train)
    assert cache_key(model, train.with_transform(transforms_for(model, image_size=64))) != key
    model.replace_head(2)  # the head is not part of the key
    assert cache_key(model, train) == key
    with torch.no_grad():
        next(model.groups["stem"].parameters()).add_(1.0)
    assert cache_key(model, train) != key


def test_a_corrupted_cache_file_is_detected_and_rebuilt(setup):
    model, train, _, cache = setup
    good = extract_features(model, train, cache_dir=cache, progress=False)
    (path,) = cache.glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = extract_features(model, train, cache_dir=cache, progress=False)
    assert not rebuilt.from_cache and torch.equal(rebuilt.features, good.features)
    assert extract_features(model, train, cache_dir=cache, progress=False).from_cache


def test_dataset_without_transform_is_refused(setup):
    model, train, _, _ = setup
    with pytest.raises(ValueError, match="transforms_for"):
        extract_features(model, train.with_transform(None))


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 16, generator=g) + (y[:, None] * 2 - 1) * 1.5
    return Features(x, y, [f"f{i}" for i in range(n)], ["cats", "dogs"])


def test_train_head_learns_and_keeps_the_best_epoch():
    head, hist = train_head(_blobs(200, 0), _blobs(100, 1), epochs=15, lr=1e-2)
    assert len(hist) == 15 and hist.keys()[:4] == ["epoch", "train_loss", "train_acc", "lr"]
    best = hist.best("val_acc")
    assert best["val_acc"] > 0.95
    with torch.no_grad():
        acc = (head(_blobs(100, 1).features).argmax(1) == _blobs(100, 1).labels).float().mean().item()
    assert acc == pytest.approx(best["val_acc"])
    h1 = train_head(_blobs(200, 0), _blobs(100, 1), epochs=3, seed=3)[1]
    h2 = train_head(_blobs(200, 0), _blobs(100, 1), epochs=3, seed=3)[1]
    assert h1["train_loss"] == h2["train_loss"]


def test_train_head_with_hidden_layer_and_stop_event():
    import threading
    stop = threading.Event()
    stop.set()
    head, hist = train_head(_blobs(50, 0), epochs=10, hidden=(8,), dropout=0.1, stop=stop)
    assert len(hist) == 1 and head[-1].out_features == 2
    with pytest.raises(ValueError, match="No training features"):
        train_head(Features(torch.empty(0, 4), torch.empty(0, dtype=torch.long), [], ["a", "b"]))


def test_precision_is_part_of_the_cache_key_and_bf16_features_are_close(setup):
    _, train, _, cache = setup
    model = load_backbone("efficientnet_lite0")  # real weights: an untrained net's features are noise
    train = train.with_transform(transforms_for(model, image_size=64))
    assert cache_key(model, train, "bf16") != cache_key(model, train, "fp32")
    f32 = extract_features(model, train, cache_dir=cache, progress=False, precision="fp32")
    b16 = extract_features(model, train, cache_dir=cache, progress=False, precision="bf16")
    assert not b16.from_cache and len(list(cache.glob("*.pt"))) == 2  # one file per precision
    assert b16.features.dtype == torch.float32 and b16.features.shape == f32.features.shape
    assert not torch.equal(b16.features, f32.features)  # it really ran in bf16 ...
    cos = torch.nn.functional.cosine_similarity(b16.features, f32.features)
    assert cos.min() > 0.99  # ... and bf16 (8 mantissa bits) keeps the features' direction
    assert extract_features(model, train, cache_dir=cache, progress=False, precision="bf16").from_cache


def test_auto_precision_follows_the_cpu(monkeypatch):
    from tlkit import device as dev
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert dev.inference_precision(cpu) == "bf16"
    monkeypatch.setenv("TLKIT_CPU_BF16", "0")
    assert dev.inference_precision(cpu) == "fp32"
    monkeypatch.delenv("TLKIT_CPU_BF16")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.inference_precision(cpu) == "fp32" and dev.inference_precision(cpu, "bf16") == "bf16"
    assert dev.inference_precision(torch.device("mps")) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        dev.inference_precision(cpu, "half")
    assert dev.default_batch_size(cpu) == 16 and dev.default_batch_size(torch.device("cuda")) == 128


def test_stale_temporary_cache_file_of_a_killed_run_is_removed(setup):
    model, train, _, cache = setup
    first = extract_features(model, train, cache_dir=cache, progress=False)
    final = next(cache.glob("*.pt"))
    # what a run killed while saving leaves behind: atomic_save's temp file, and an older version's
    stale = [cache / f".{final.name}.k1ll3d.tmp", cache / f"{final.stem}.tmp99991"]
    old = time.time() - 2 * 3600
    for p in stale:
        p.write_bytes(b"half a cache file")
        os.utime(p, (old, old))
    final.unlink()
    again = extract_features(model, train, cache_dir=cache, progress=False)
    assert not again.from_cache and torch.equal(again.features, first.features)
    assert not any(p.exists() for p in stale) and [p.name for p in cache.iterdir()] == [final.name]


def test_train_head_leaves_the_global_rng_alone_and_is_seeded_locally():
    """Widget threads call train_head: it must neither reseed nor draw from torch's global generator."""
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    runs = [train_head(_blobs(64, 0), _blobs(32, 1), epochs=3, hidden=(8,), dropout=0.3, seed=s)[1]
            for s in (5, 5, 6)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert runs[0]["train_loss"] == runs[1]["train_loss"]  # same seed, same numbers (dropout included)
    assert runs[0]["train_loss"] != runs[2]["train_loss"]


def test_body_fingerprint_is_remembered_until_a_weight_changes_in_place():
    """The hash is kept per model, and any in-place change (optimizer step, load_state_dict) renews it."""
    import torch
    from torch import nn

    from tlkit import feature_cache as F

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.groups = nn.ModuleDict({"body": nn.Linear(4, 4), "head": nn.Linear(4, 2)})

    model = Tiny()
    first = F.body_fingerprint(model)
    assert F._FINGERPRINTS[model][1] == first and F.body_fingerprint(model) == first
    with torch.no_grad():
        model.groups["head"].weight.add_(1.0)           # the head is not part of the body
    assert F.body_fingerprint(model) == first
    with torch.no_grad():
        model.groups["body"].weight[0, 0] += 1e-3        # in place: the version counter moves
    changed = F.body_fingerprint(model)
    assert changed != first
    model.load_state_dict({k: v.clone() for k, v in Tiny().state_dict().items()})
    assert F.body_fingerprint(model) not in (first, changed)
    twin = Tiny()
    twin.load_state_dict(model.state_dict())
    assert F.body_fingerprint(twin) == F.body_fingerprint(model)   # same weights, same hash
