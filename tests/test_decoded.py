"""Decode-once pixel cache (tlkit.decoded) and fit(decode_once=True), on the CPU."""
import pytest
import torch

from tlkit import data as tdata
from tlkit.data import ImageDataset, image_folder, transforms_for
from tlkit.decoded import DecodedImages, _crop_thetas
from tlkit.loaders import make_loader
from tlkit.train import fit

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def train_set(tiny_images):
    return image_folder(tiny_images)[0]  # 24 images, 32-48 px


def test_images_are_decoded_once_into_one_uint8_tensor_and_bad_files_skipped(train_set, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    files, targets = list(train_set.files), list(train_set.targets)
    files.insert(5, str(bad))  # in the middle: the rows after it must keep their files and labels
    targets.insert(5, 1 - targets[5])
    ds = ImageDataset(files, targets, train_set.classes, name="t")
    caches = []
    for workers in (0, 2):  # decoded in this process, or in two DataLoader workers: the same result
        with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
            caches.append(DecodedImages(ds, image_size=56, mean=MEAN, std=STD, num_workers=workers))
    cache = caches[0]
    assert cache.side == 64 and cache.images.shape == (24, 3, 64, 64) and cache.images.dtype == torch.uint8
    assert cache.labels.tolist() == train_set.targets and cache.files == train_set.files
    assert torch.equal(caches[1].images, cache.images) and caches[1].files == cache.files


def test_evaluation_batches_match_the_standard_preprocessing(train_set):
    cache = DecodedImages(train_set, image_size=56, mean=MEAN, std=STD)
    x, y, dropped = next(iter(cache.loader(24, train=False)))
    standard = train_set.with_transform(transforms_for(_Stats(), train=False, image_size=56))
    ref, ref_y, _ = next(iter(make_loader(standard, batch_size=24, num_workers=0)))
    assert x.shape == ref.shape == (24, 3, 56, 56) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, ref_y) and dropped == []
    assert (x - ref).abs().mean() < 0.02  # same resize and crop; uint8 storage rounds to 1/255


def test_training_batches_are_random_crops_repeatable_with_a_seed(train_set):
    cache = DecodedImages(train_set, image_size=56, mean=MEAN, std=STD)
    a = [x for x, _, _ in cache.loader(8, train=True, seed=1)]
    b = [x for x, _, _ in cache.loader(8, train=True, seed=1)]
    c = [x for x, _, _ in cache.loader(8, train=True, seed=2)]
    assert len(a) == 3 and a[0].shape == (8, 3, 56, 56)
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and not torch.equal(a[0], c[0])
    labels = torch.cat([y for _, y, _ in cache.loader(8, train=True, seed=1)])
    assert sorted(labels.tolist()) == sorted(train_set.targets)  # every image once per epoch
    assert len(cache.loader(10, train=True, drop_last=True)) == 2


def test_crop_parameters_stay_inside_the_image_and_flip_half_the_time():
    theta = _crop_thetas(4000, torch.Generator().manual_seed(0))
    w, h, cx, cy = theta[:, 0, 0].abs(), theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2]
    assert (w <= 1).all() and (h <= 1).all() and ((cx.abs() + w) <= 1 + 1e-6).all()
    assert ((cy.abs() + h) <= 1 + 1e-6).all()
    area = w * h
    assert area.min() > 0.3 and area.max() <= 1.0  # CROP_SCALE (0.35, 1), a little less where clamped
    assert 0.45 < (theta[:, 0, 0] < 0).float().mean() < 0.55


def test_fit_with_decode_once_decodes_each_image_once_and_learns(make_model, tiny_datasets, monkeypatch):
    train, val = tiny_datasets
    opened = []
    real_open = tdata.open_image
    monkeypatch.setattr(tdata, "open_image", lambda p, **kw: opened.append(p) or real_open(p, **kw))
    model = make_model("resnet18", seed=0)
    history = fit(model, train, val, epochs=3, lr=1e-3, batch_size=8, image_size=32, seed=0, progress=False,
                  decode_once=True, num_workers=0)  # in-process, so the patched open_image sees every call
    assert len(history) == 3 and history.stop_reason is None
    assert len(opened) == len(train) + len(val)  # decoded once, not once per epoch
    assert history.best("val_acc")["val_acc"] >= 0.9  # reddish vs bluish squares
    with pytest.raises(ValueError, match="strong"):
        fit(model, train, val, epochs=1, decode_once=True, augment="strong")


class _Stats:
    """Just what transforms_for reads from a backbone."""
    input_size, mean, std = 56, MEAN, STD
