"""tlkit.own_data (the photo store) and tlkit.own_model (training on it), without widgets."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from imagegen import COLOURS, write_image
from tlkit.backbones import load_backbone
from tlkit.checkpoint import load_model, save_model
from tlkit.own_data import PhotoStore, check_class_name, safe_stem
from tlkit.own_model import (NotEnoughPhotosError, check_enough, predict_bytes, split_indices, train_on_store,
                             wilson_interval)
from zipgen import make_zip


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def photo(cls: str, i: int, tmp: Path, size: int = 40) -> bytes:
    """A noisy one-colour JPEG of class ``cls`` (red cats, blue dogs, green birds) as bytes."""
    return write_image(tmp / "gen" / cls / f"{i}.jpg", COLOURS[cls], size, seed=1000 * sorted(COLOURS).index(cls) + i).read_bytes()


def photos(cls: str, n: int, tmp: Path, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"IMG_{cls}_{i}.jpg", photo(cls, i, tmp)) for i in range(start, start + n)]


def bomb_png() -> bytes:
    """81 million pixels in a few kB: refused from its header, never decoded."""
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")
    return buf.getvalue()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def small_model(seed: int = 0):
    torch.manual_seed(seed)
    return load_backbone("resnet18", pretrained=False)


# ---------------------------------------------------------------- the store
def test_own_data_store_writes_photos_and_reopening_restores_classes(tmp_path):
    store = PhotoStore(tmp_path / "own")
    report = store.add_images("cats", photos("cats", 3, tmp_path))
    store.add_images("dogs", photos("dogs", 2, tmp_path))
    assert len(report.added) == 3 and report.refused == [] and report.duplicates == []
    assert all(p.parent == tmp_path / "own" / "cats" and p.suffix == ".jpg" for p in report.added)
    assert report.added[0].name.startswith("IMG_cats_0-")  # sanitised name plus a content hash
    reopened = PhotoStore(tmp_path / "own")
    assert reopened.classes == ["cats", "dogs"] and reopened.counts() == {"cats": 3, "dogs": 2}
    ds = reopened.dataset()
    assert ds.classes == ["cats", "dogs"] and ds.targets == [0, 0, 0, 1, 1]
    assert list((tmp_path / "own" / ".incoming").iterdir()) == []  # no temp file left behind


def test_own_data_bad_files_and_hostile_zip_are_refused_by_name_and_the_rest_kept(tmp_path):
    store = PhotoStore(tmp_path / "own")
    good = photos("cats", 2, tmp_path)
    hostile = make_zip({"cats/../../evil.jpg": photo("cats", 9, tmp_path)})
    upload = good + [("broken.jpg", photo("cats", 5, tmp_path)[:200]), ("notes.txt", b"just some text"),
                     ("bomb.png", bomb_png()), ("hostile.zip", hostile), ("empty.jpg", b"")]
    before_outside = tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith("own")}
    report = store.add_images("cats", upload)
    refused = dict(report.refused)
    assert len(report.added) == 2 and store.counts() == {"cats": 2}
    assert set(refused) == {"broken.jpg", "notes.txt", "bomb.png", "hostile.zip", "empty.jpg"}
    assert "decompression bomb" in refused["bomb.png"] and "zip refused" in refused["hostile.zip"]
    assert "0 bytes" in refused["empty.jpg"]
    text = " ".join(report.messages())
    assert "tlkit-upload" not in text and ".part" not in text and str(tmp_path) not in text
    after_outside = tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith("own")}
    assert after_outside == before_outside  # nothing written outside the store
    assert not list(tmp_path.rglob("evil*"))


def test_own_data_duplicate_upload_is_detected_by_content(tmp_path):
    store = PhotoStore(tmp_path / "own")
    first = store.add_images("cats", photos("cats", 2, tmp_path))
    again = store.add_images("dogs", [("renamed copy.jpg", first.added[0].read_bytes())])
    assert again.added == [] and again.duplicates == [("renamed copy.jpg", f"cats/{first.added[0].name}")]
    assert PhotoStore(tmp_path / "own").add_images("cats", photos("cats", 1, tmp_path)).duplicates  # after reopen too
    assert store.counts() == {"cats": 2, "dogs": 0}


def test_own_data_zip_of_class_folders_and_a_server_folder(tmp_path):
    store = PhotoStore(tmp_path / "own")
    z = make_zip({"my photos/cats/a.jpg": photo("cats", 1, tmp_path), "my photos/birds/b.jpg": photo("birds", 1, tmp_path),
                  "my photos/birds/c.png": photo("birds", 2, tmp_path)})
    report = store.add_zip(z, "holiday.zip")
    assert report.refused == [] and store.counts() == {"birds": 2, "cats": 1}
    assert {p.suffix for p in store.files("birds")} == {".jpg"}  # named by content (a JPEG called .png)
    for cls in ("dogs", "cats"):
        for i in range(3):
            write_image(tmp_path / "server" / cls / f"{i}.jpg", COLOURS[cls], 40, seed=50 + i)
    (tmp_path / "server" / "dogs" / "readme.txt").write_text("hi")
    report = store.add_folder(tmp_path / "server")
    assert store.counts() == {"birds": 2, "cats": 4, "dogs": 3}
    assert [n for n, _ in report.refused] == ["dogs/readme.txt"]
    with pytest.raises(ValueError, match="not a folder"):
        store.add_folder(tmp_path / "nowhere")


def test_own_data_class_names_file_names_and_removal(tmp_path):
    assert check_class_name("  red apples ") == "red apples"
    for bad in ("", "..", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="cannot be a class name"):
            check_class_name(bad)
    assert safe_stem("../../My Photo (1).JPG") == "My_Photo_1" and safe_stem("???.jpg") == "photo"
    store = PhotoStore(tmp_path / "own")
    store.add_images("cats", photos("cats", 1, tmp_path))
    moved = store.remove_class("cats")
    assert store.classes == [] and len(list(moved.iterdir())) == 1  # moved aside, not deleted
    with pytest.raises(KeyError, match="No class"):
        store.remove_class("cats")


def test_own_data_exif_rotated_photo_is_kept_as_is_and_opened_upright(tmp_path):
    img = Image.new("RGB", (60, 30), (200, 60, 40))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    store = PhotoStore(tmp_path / "own")
    kept = store.add_images("cats", [("phone.jpg", buf.getvalue())]).added[0]
    from tlkit.images import open_image
    assert Image.open(kept).size == (60, 30) and open_image(kept).size == (30, 60)


# ---------------------------------------------------------------- split and judgement
def test_own_data_split_is_seeded_stratified_with_a_minimum_per_class():
    targets = [0] * 60 + [1] * 50
    (tr, va), = split_indices(targets, 0.2, seed=1)
    assert sorted(tr + va) == list(range(110)) and not set(tr) & set(va)
    assert sum(targets[i] == 0 for i in va) == 12 and sum(targets[i] == 1 for i in va) == 10
    (_, tiny_val), = split_indices([0] * 50 + [1] * 60, 0.01, seed=0)
    assert len(tiny_val) == 4  # at least MIN_VAL_PER_CLASS = 2 of each class
    assert split_indices(targets, 0.2, seed=1) == [(tr, va)] and split_indices(targets, 0.2, seed=2) != [(tr, va)]
    folds = split_indices([0] * 4 + [1] * 6, seed=0)  # fewer than 10 in a class: cross-validation
    assert len(folds) == 4 and sorted(i for _, v in folds for i in v) == list(range(10))
    assert all({0, 1} <= {([0] * 4 + [1] * 6)[i] for i in v} for _, v in folds)
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(targets, 1.5)


def test_own_data_too_few_photos_says_what_to_add(tmp_path):
    with pytest.raises(NotEnoughPhotosError, match="at least 2 classes"):
        check_enough({"cats": 10})
    with pytest.raises(NotEnoughPhotosError, match=r"Too few photos in dogs \(1\).*Add photos to dogs"):
        check_enough({"cats": 10, "dogs": 1})
    store = PhotoStore(tmp_path / "own")
    store.add_images("cats", photos("cats", 5, tmp_path))
    store.add_images("dogs", photos("dogs", 2, tmp_path))
    model = small_model()
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    with pytest.raises(NotEnoughPhotosError, match="dogs"):
        train_on_store(model, store, image_size=32)
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())


def test_own_data_wilson_interval():
    lo, hi = wilson_interval(9, 10)
    assert 0.55 < lo < 0.6 and 0.98 < hi < 0.99
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 0) == (0.0, 1.0)


# ---------------------------------------------------------------- training
def test_own_data_two_classes_train_save_reload_predict_same(tmp_path):
    store = PhotoStore(tmp_path / "own")
    store.add_images("cats", photos("cats", 12, tmp_path))
    store.add_images("dogs", photos("dogs", 12, tmp_path))
    model = small_model()
    result = train_on_store(model, store, image_size=32)
    assert result.method == "cross-validation (5 folds)" and result.judged == 24 and result.accuracy >= 0.9
    assert result.new_photos == 24 and sum(map(sum, result.confusion)) == 24
    assert result.interval[0] < result.accuracy <= result.interval[1]
    assert model.class_names == ["cats", "dogs"]
    new_red = photo("cats", 100, tmp_path)
    probs = predict_bytes(model, new_red, "new.jpg")
    assert max(probs, key=probs.get) == "cats" and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    path = save_model(model, tmp_path / "model.pt", image_size=32)
    again = predict_bytes(load_model(path, expect_classes=["cats", "dogs"]), new_red, "new.jpg")
    assert again == pytest.approx(probs, abs=1e-5)
    from tlkit.__main__ import build_parser, cmd_evaluate  # what `python -m tlkit evaluate` runs
    evaluated = cmd_evaluate(build_parser().parse_args(["evaluate", str(path), str(store.folder), "--quiet"]))
    assert evaluated["n"] == 24 and evaluated["accuracy"] >= 0.9
    warm = train_on_store(model, store, image_size=32)  # features come from the bank
    assert warm.new_photos == 0 and warm.accuracy == result.accuracy
    store.add_images("dogs", photos("dogs", 1, tmp_path, start=50))
    assert train_on_store(small_model(), store, image_size=32).new_photos == 1  # a fresh model, the bank on disk


def test_own_data_holdout_with_many_photos(tmp_path):
    store = PhotoStore(tmp_path / "own")
    store.add_images("cats", photos("cats", 50, tmp_path))
    store.add_images("dogs", photos("dogs", 50, tmp_path))
    result = train_on_store(small_model(), store, image_size=32)
    assert result.method == "holdout" and result.judged == 20 and result.accuracy >= 0.9
    assert not any("Too little data" in n for n in result.notes)


def test_own_data_three_classes_cross_validation_and_imbalance_note(tmp_path):
    store = PhotoStore(tmp_path / "own")
    for cls, n in (("cats", 5), ("dogs", 5), ("birds", 15)):
        store.add_images(cls, photos(cls, n, tmp_path))
    result = train_on_store(small_model(), store, image_size=32)
    assert result.method == "cross-validation (5 folds)" and result.judged == 25
    assert result.accuracy >= 0.8 and result.classes == ["birds", "cats", "dogs"]
    assert any("Unbalanced classes: birds has 15 photos" in n for n in result.notes)
    small = PhotoStore(tmp_path / "few")
    for cls in ("cats", "dogs"):
        small.add_images(cls, photos(cls, 3, tmp_path))
    few = train_on_store(small_model(), small, image_size=32)
    assert few.method == "cross-validation (3 folds)" and few.judged == 6
    assert any("Too little data to judge: the accuracy was measured on only 6 photos" in n for n in few.notes)


def test_own_data_stop_leaves_the_model_unchanged(tmp_path):
    store = PhotoStore(tmp_path / "own")
    store.add_images("cats", photos("cats", 4, tmp_path))
    store.add_images("dogs", photos("dogs", 4, tmp_path))
    model = small_model()
    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError, match="not changed"):
        train_on_store(model, store, image_size=32, stop=stop)
    assert model.num_classes == 1000 and model.class_names is None


def test_own_data_a_broken_photo_put_there_by_hand_is_named(tmp_path):
    store = PhotoStore(tmp_path / "own")
    store.add_images("cats", photos("cats", 3, tmp_path))
    store.add_images("dogs", photos("dogs", 3, tmp_path))
    (tmp_path / "own" / "dogs" / "by_hand.jpg").write_bytes(photo("dogs", 7, tmp_path)[:120])
    with pytest.raises(ValueError, match=r"cannot be read, e\.g\. .*by_hand\.jpg"), \
            pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        train_on_store(small_model(), store, image_size=32)
