"""Class-folder datasets, subsets, transforms, and skipping unreadable images (decoding: test_images.py)."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from imagegen import make_dataset, write_image
from tlkit import load_backbone
from tlkit.data import cats_vs_dogs, image_folder, subset, transforms_for
from tlkit.errors import DatasetLayoutError
from tlkit.loaders import make_loader

SHARED = Path(__file__).resolve().parents[2] / "shared/data"


def test_image_folder_reads_train_and_val(tmp_path):
    make_dataset(tmp_path, train=5, val=3)
    train, val = image_folder(tmp_path)
    assert train.classes == val.classes == ["cats", "dogs"]
    assert len(train) == 10 and len(val) == 6
    assert train.class_counts() == {"cats": 5, "dogs": 5}
    assert "10 images" in repr(train)


def test_validation_folder_name_is_accepted(tmp_path):
    make_dataset(tmp_path, val_name="validation")
    assert len(image_folder(tmp_path)[1]) == 8


@pytest.mark.parametrize("layout,match", [("missing", "does not exist"), ("no_train", "no train/"),
                                          ("no_val", "no val/"), ("one_class", "at least 2")])
def test_bad_layouts_say_how_to_fix(tmp_path, layout, match):
    root = tmp_path / "d"
    if layout != "missing":
        make_dataset(root)
    if layout == "no_train":
        (root / "train").rename(root / "training")
    elif layout == "no_val":
        (root / "val").rename(root / "other")
    elif layout == "one_class":
        import shutil
        shutil.rmtree(root / "train" / "dogs")
        shutil.rmtree(root / "val" / "dogs")
    with pytest.raises(DatasetLayoutError, match=match):
        image_folder(root)


def test_unreadable_images_are_skipped_with_one_warning(tmp_path):
    make_dataset(tmp_path, train=4, val=2)
    (tmp_path / "train/cats/empty.jpg").write_bytes(b"")
    (tmp_path / "train/cats/text.jpg").write_text("not an image")
    (tmp_path / "train/cats/.DS_Store").write_bytes(b"\0\1")
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable image\(s\)") as rec:
        train, _ = image_folder(tmp_path)
    assert len([w for w in rec if "Skipped" in str(w.message)]) == 1
    assert len(train) == 8 and not any(".DS_Store" in f for f in train.files)


def test_truncated_image_is_dropped_by_the_loader(tmp_path):
    make_dataset(tmp_path, train=3, val=2)
    good = tmp_path / "train/dogs/dog.0.jpg"
    bad = write_image(tmp_path / "train/dogs/big.jpg", (1, 2, 3), size=200)
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])  # header intact, data cut short
    train, _ = image_folder(tmp_path)
    assert str(bad) in train.files and good.exists()
    model = load_backbone("resnet18", pretrained=False)
    batches = list(make_loader(train.with_transform(transforms_for(model, image_size=32)), batch_size=16,
                               num_workers=0))
    x, y, dropped = batches[0]
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 0, 1, 1, 1] and dropped == [str(bad)]


def test_subset_is_per_class_and_seeded(tmp_path):
    make_dataset(tmp_path, train=6)
    train, _ = image_folder(tmp_path)
    a, b, c = subset(train, 2, seed=0), subset(train, 2, seed=0), subset(train, 2, seed=5)
    assert len(a) == 4 and a.class_counts() == {"cats": 2, "dogs": 2}
    assert a.files == b.files  # same seed, same images
    assert a.files != c.files  # another seed, other images (random.Random(5) picks others here)
    assert c.class_counts() == {"cats": 2, "dogs": 2} and len(set(c.files)) == 4 and set(c.files) <= set(train.files)
    assert len(subset(train, 100)) == 12
    with pytest.raises(ValueError):
        subset(train, 0)


def test_transforms_follow_the_backbone():
    lite = load_backbone("efficientnet_lite0", pretrained=False)
    img = Image.new("RGB", (300, 200), (127, 127, 127))
    x = transforms_for(lite)(img)
    assert x.shape == (3, 224, 224)
    assert x.abs().max() < 0.01  # (127/255 - mean) / std == 0 for Lite0's (x - 127) / 128
    r = load_backbone("resnet18", pretrained=False)
    y = transforms_for(r, image_size=160)(img)
    assert y.shape == (3, 160, 160)
    assert torch.allclose(y[0], torch.full((160, 160), (127 / 255 - 0.485) / 0.229), atol=1e-4)
    t = transforms_for(r, train=True, image_size=96)
    assert t(img).shape == (3, 96, 96) and "RandomResizedCrop" in repr(t)
    with pytest.raises(ValueError, match="augment"):
        transforms_for(r, train=True, augment="heavy")


@pytest.mark.skipif(not (SHARED / "cats_and_dogs_filtered").is_dir(), reason="needs ../shared/data")
def test_cats_vs_dogs_finds_the_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("TLKIT_DATA_DIR", str(SHARED))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    train, val = cats_vs_dogs(download=False)
    assert (len(train), len(val)) == (2000, 1000)
    assert train.classes == ["cats", "dogs"] and val.class_counts() == {"cats": 500, "dogs": 500}


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # it counts this machine's real cores
@pytest.mark.parametrize("cpus, expected, on_gpu", [(1, 0, 0), (2, 0, 1), (3, 2, 2), (8, 4, 7), (16, 4, 15),
                                                    (64, 4, 16), (None, 0, 0)])
def test_worker_processes_follow_the_core_count(monkeypatch, cpus, expected, on_gpu):
    from tlkit.loaders import make_loader, num_workers_default
    for var in ("TLKIT_NUM_WORKERS", "BINDER_SERVICE_HOST", "TLKIT_BINDER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert num_workers_default() == expected
    assert num_workers_default(gpu=True) == on_gpu  # on a GPU the cores only decode
    assert make_loader([], pin_memory=True).num_workers == on_gpu  # pinned batches are bound for a GPU
    assert make_loader([]).num_workers == expected
    monkeypatch.setenv("TLKIT_BINDER", "1")
    assert num_workers_default() == num_workers_default(gpu=True) == 0
    monkeypatch.setenv("TLKIT_NUM_WORKERS", "3")
    assert num_workers_default() == num_workers_default(gpu=True) == 3


def test_with_files_names_the_rows_of_each_batch_and_the_dropped_files(tiny_images, tmp_path):
    from tlkit.data import ImageDataset, image_folder
    from tlkit.loaders import make_loader, with_files

    train = image_folder(tiny_images)[0]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    files = [*train.files[:5], str(bad), *train.files[5:9]]  # the bad file is the 6th: in the 2nd batch of 4
    ds = ImageDataset(files, [0] * len(files), train.classes).with_transform(lambda im: torch.zeros(1))
    batches = list(with_files(make_loader(ds, batch_size=4, num_workers=0), files))
    assert [len(kept) for _, _, kept, _ in batches] == [4, 3, 2]
    assert [f for _, _, kept, _ in batches for f in kept] == [*train.files[:9]]
    assert [d for *_, dropped in batches for d in dropped] == [str(bad)]
    assert all(len(x) == len(kept) for x, _, kept, _ in batches)


@pytest.mark.parametrize("n, batch, expected", [(2001, 40, True), (2000, 32, False), (1, 32, False),
                                                (33, 32, True), (24, 23, True), (5, 1, False)])
def test_leaves_one_image(n, batch, expected):
    from tlkit.loaders import leaves_one_image

    assert leaves_one_image(n, batch) is expected
