"""The on-disk feature cache when its file is damaged, hostile, stale or cannot be written.

A bad cache file is never trusted: one warning says it is being rebuilt, the
features are computed afresh (equal to a run without cache), and the next call
hits the rebuilt file. A changed image gives a new key, so its new features
are used, never the stale ones.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest
import torch

from faultkit import snapshot
from imagegen import make_dataset, write_image
from tlkit.backbones import load_backbone
from tlkit.data import image_folder, transforms_for
from tlkit.features import extract_features
from tlkit.freezing import freeze


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = load_backbone("resnet18", pretrained=False, num_classes=2)
    freeze(m, m.group_names[:-1])
    return m.eval()


@pytest.fixture
def setup(model, tmp_path):
    train, _ = image_folder(make_dataset(tmp_path / "data", train=4, val=2, size=40))
    ds = train.with_transform(transforms_for(model, image_size=32))
    fresh = extract_features(model, ds, cache=False, progress=False, num_workers=0)
    return ds, fresh, tmp_path / "cache"


def extract(model, ds, cache: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats = extract_features(model, ds, cache_dir=cache, progress=False, num_workers=0)
    return feats, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _truncate(path: Path, marker: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _random_bytes(path: Path, marker: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _empty(path: Path, marker: Path) -> None:
    path.write_bytes(b"")


def _nan_features(path: Path, marker: Path) -> None:
    blob = torch.load(path, weights_only=True)
    blob["features"][2, 5] = float("nan")
    torch.save(blob, path)


def _wrong_rows(path: Path, marker: Path) -> None:
    blob = torch.load(path, weights_only=True)
    blob["features"] = blob["features"][:-1]  # one row lost
    torch.save(blob, path)


def _other_key(path: Path, marker: Path) -> None:
    blob = torch.load(path, weights_only=True)
    blob["key"] = "0" * 64  # e.g. a file copied from another machine or dataset
    blob["features"] = torch.zeros_like(blob["features"])
    torch.save(blob, path)


def _malicious(path: Path, marker: Path) -> None:
    blob = torch.load(path, weights_only=True)
    torch.save({**blob, "files": RunsCode(marker)}, path)


DAMAGE = {"truncated": _truncate, "random_bytes": _random_bytes, "empty_file": _empty,
          "nan_in_features": _nan_features, "row_count_mismatch": _wrong_rows, "stale_key": _other_key,
          "malicious_pickle": _malicious}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_file_is_detected_and_rebuilt(model, setup, tmp_path, damage):
    ds, fresh, cache = setup
    first, _ = extract(model, ds, cache)
    (path,) = cache.glob("*.pt")
    marker = tmp_path / "pwned"
    DAMAGE[damage](path, marker)
    rebuilt, messages = extract(model, ds, cache)
    assert len(messages) == 1 and "damaged" in messages[0] and "rebuilding" in messages[0] and str(path) in messages[0]
    assert not rebuilt.from_cache
    assert torch.equal(rebuilt.features, fresh.features) and rebuilt.files == fresh.files
    assert not marker.exists()
    again, messages = extract(model, ds, cache)
    assert again.from_cache and messages == [] and torch.equal(again.features, fresh.features)
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # rebuilt in place, no temp files


def test_a_changed_image_gets_new_features_not_stale_ones(model, setup):
    ds, fresh, cache = setup
    stale, _ = extract(model, ds, cache)
    i = 2
    path = Path(ds.files[i])
    write_image(path, (0, 255, 0), size=40, seed=99)  # a different photo under the same name
    later = time.time_ns() + 10**9
    os.utime(path, ns=(later, later))  # even on a file system with a coarse clock
    updated, messages = extract(model, ds, cache)
    assert not updated.from_cache and messages == []
    assert not torch.allclose(updated.features[i], stale.features[i])  # the changed row is new...
    expected = extract_features(model, ds, cache=False, progress=False, num_workers=0)
    assert torch.equal(updated.features, expected.features)  # ...and equals a fresh run
    others = [j for j in range(len(ds)) if j != i]
    assert torch.equal(updated.features[others], stale.features[others])
    assert len(list(cache.glob("*.pt"))) == 2  # one file per key; the old one is harmless


def test_a_removed_or_added_image_changes_the_cache(model, setup):
    ds, _, cache = setup
    before, _ = extract(model, ds, cache)
    fewer = ds.with_transform(ds.transform)
    fewer.files, fewer.targets = ds.files[1:], ds.targets[1:]
    after, _ = extract(model, fewer, cache)
    assert not after.from_cache and len(after) == len(before) - 1 and after.files == ds.files[1:]
    assert torch.equal(after.features, before.features[1:])


def test_unwritable_cache_folder_warns_and_still_returns_features(model, setup, tmp_path):
    ds, fresh, _ = setup
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    before = snapshot(tmp_path / "data")
    feats, messages = extract(model, ds, blocker / "features")
    assert len(messages) == 1 and "Could not write the feature cache" in messages[0]
    assert "continuing without it" in messages[0]
    assert torch.equal(feats.features, fresh.features) and not feats.from_cache
    assert blocker.read_text() == "a file where the cache folder should be"
    assert snapshot(tmp_path / "data") == before


def test_damaged_entry_in_a_read_only_cache_degrades_to_no_cache_with_one_warning(model, setup, monkeypatch):
    """A damaged file in a cache folder that cannot be written (read-only, immutable): one warning, the
    features computed without the cache, no attempt to write, and the damaged file left as it was."""
    ds, fresh, cache = setup
    extract(model, ds, cache)
    (cached,) = cache.glob("*.pt")
    cached.write_bytes(b"damaged")
    if os.geteuid() == 0:  # root writes anywhere: make this folder refuse like a read-only one would
        real_unlink, real_save = Path.unlink, torch.save

        def unlink(self, *a, **k):
            if self.parent == cache:
                raise PermissionError(1, "Operation not permitted", str(self))
            return real_unlink(self, *a, **k)

        def save(obj, f, *a, **k):
            if Path(str(f)).parent == cache:
                raise RuntimeError(f"File {f} cannot be opened.")
            return real_save(obj, f, *a, **k)

        monkeypatch.setattr(Path, "unlink", unlink)
        monkeypatch.setattr(torch, "save", save)
    else:
        cache.chmod(0o555)
    try:
        before = snapshot(cache)
        feats, messages = extract(model, ds, cache)
    finally:
        os.chmod(cache, 0o755)
    assert len(messages) == 1, messages
    assert "damaged" in messages[0] and "cannot be removed" in messages[0]
    assert "continuing without the cache" in messages[0] and "TLKIT_CACHE_DIR" in messages[0]
    assert torch.equal(feats.features, fresh.features) and not feats.from_cache
    assert snapshot(cache) == before and cached.read_bytes() == b"damaged"
