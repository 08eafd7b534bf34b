"""Bad and unusual image files, through the user's path: image_folder -> loader -> extract_features.

Every case ends one of two ways: the image is converted and used, or it is
skipped with exactly one warning that gives the count and the path. Nothing
else is lost, and nothing is written into the data folder.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from faultkit import snapshot, write_png
from imagegen import make_dataset, write_image
from tlkit.backbones import load_backbone
from tlkit.data import image_folder, transforms_for
from tlkit.errors import ImageReadError
from tlkit.images import MAX_PIXELS, open_image
from tlkit.features import extract_features

SIZE = 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_backbone("resnet18", pretrained=False, num_classes=2).eval()


def run_pipeline(model, root: Path, cache: Path):
    """What a learner does: scan the folder, then extract features (warnings recorded, not raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, _ = image_folder(root)
        feats = extract_features(model, train.with_transform(transforms_for(model, image_size=SIZE)),
                                 cache_dir=cache, progress=False, num_workers=0)
    caught = [w for w in caught if issubclass(w.category, UserWarning)]  # not a stray ResourceWarning
    skipped = [str(w.message) for w in caught if "Skipped" in str(w.message)]
    others = [str(w.message) for w in caught if "Skipped" not in str(w.message)]
    return train, feats, skipped, others


def good_files(root: Path) -> list[str]:
    return sorted(str(p) for p in (root / "train").rglob("*.jpg") if not p.name.startswith("."))


# ---------------------------------------------------------------- files that must be skipped

def _zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text_named_jpg(path: Path) -> Path:
    path.write_text("<html>404 Not Found</html>\n")
    return path


def _truncated_jpeg(path: Path) -> Path:
    write_image(path, (1, 2, 3), size=200, seed=5)  # noisy, so the data is long
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact: passes the scan, fails to decode
    return path


def _thin_strip(path: Path) -> Path:
    Image.new("RGB", (3000, 1), (9, 9, 9)).save(path, format="JPEG")  # 224 px short side -> 670k x 224
    return path


@pytest.mark.parametrize("make_bad", [_zero_byte, _text_named_jpg, _truncated_jpeg, _thin_strip],
                         ids=["zero_byte", "text_named_jpg", "truncated_jpeg", "thin_strip"])
def test_unreadable_image_is_skipped_with_one_warning(model, tmp_path, make_bad):
    root = make_dataset(tmp_path / "data", train=4, val=2, size=40)
    expected = good_files(root)
    bad = make_bad(root / "train" / "cats" / "zz_bad.jpg")
    before = snapshot(root)
    train, feats, skipped, others = run_pipeline(model, root, tmp_path / "cache")
    assert len(skipped) == 1, skipped
    assert skipped[0].startswith("Skipped 1 unreadable image(s)") and str(bad) in skipped[0]
    assert others == []
    assert sorted(feats.files) == expected and feats.features.shape == (8, model.num_features)
    assert torch.isfinite(feats.features).all()
    assert feats.labels.tolist() == [0] * 4 + [1] * 4
    assert snapshot(root) == before  # nothing written into the data folder
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".pt"]  # one cache file, no temp


def test_image_deleted_after_the_scan_is_skipped_not_a_crash(model, tmp_path):
    root = make_dataset(tmp_path / "data", train=3, val=2, size=40)
    train, _ = image_folder(root)
    gone = train.files[1]
    os.remove(gone)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image\(s\)") as rec:
        feats = extract_features(model, train.with_transform(transforms_for(model, image_size=SIZE)),
                                 cache_dir=tmp_path / "cache", progress=False, num_workers=0)
    assert gone in str(rec[0].message)
    assert len(feats) == 5 and gone not in feats.files


# ---------------------------------------------------------------- decompression bombs

@pytest.mark.parametrize("width,bits,colour", [(20000, 1, 0), (8100, 8, 3)],
                         ids=["20000px_1bit_pil_limit", "8100px_palette_tlkit_limit"])
def test_decompression_bomb_is_skipped_without_decoding(model, tmp_path, monkeypatch, width, bits, colour):
    """A ~50-80 KB PNG whose header promises 400M (or 66M) pixels: refused from the header alone."""
    root = make_dataset(tmp_path / "data", train=3, val=2, size=40)
    bomb = write_png(root / "train" / "dogs" / "bomb.png", width, width, bit_depth=bits, color_type=colour)
    assert bomb.stat().st_size < 200_000 and width * width > MAX_PIXELS
    decoded = []
    real_load = ImageFile.ImageFile.load

    def spy_load(self):  # records every full decode, so a decoded bomb fails the test
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    train, feats, skipped, others = run_pipeline(model, root, tmp_path / "cache")
    assert len(skipped) == 1 and str(bomb) in skipped[0] and "pixels" in skipped[0]
    assert str(bomb) not in train.files and len(feats) == 6
    assert decoded and max(w * h for w, h in decoded) <= 48 * 48  # only the small images were decoded


# ---------------------------------------------------------------- unusual but valid images

def _cmyk(p):
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(p.with_suffix(".jpg"), quality=95)
    return p.with_suffix(".jpg"), (255, 0, 0)


def _grey16(p):
    Image.fromarray(np.full((40, 40), 32896, np.uint16)).save(p.with_suffix(".png"))  # 0x8080
    return p.with_suffix(".png"), (128, 128, 128)


def _rgb16(p):
    row = bytes([255, 255, 0, 0, 128, 0]) * 40  # 16-bit big-endian (65535, 0, 32768)
    return write_png(p.with_suffix(".png"), 40, 40, bit_depth=16, color_type=2, row=row), (255, 0, 128)


def _grey(p):
    Image.new("L", (40, 40), 100).save(p.with_suffix(".jpg"), quality=95)
    return p.with_suffix(".jpg"), (100, 100, 100)


def _palette(p):
    im = Image.new("P", (40, 40), 0)
    im.putpalette([10, 200, 30, 0, 0, 255])
    im.save(p.with_suffix(".png"))
    return p.with_suffix(".png"), (10, 200, 30)


def _palette_transparent(p):
    im = Image.new("P", (40, 40), 0)  # index 0 is transparent; the pixel at (0, 0) too
    im.putpalette([10, 200, 30, 0, 0, 255])
    im.save(p.with_suffix(".png"), transparency=0)
    return p.with_suffix(".png"), (255, 255, 255)


def _gif_transparent(p):
    im = Image.new("P", (40, 40), 0)
    im.putpalette([10, 200, 30, 0, 0, 255])
    im.save(p.with_suffix(".gif"), transparency=0)
    return p.with_suffix(".gif"), (255, 255, 255)


def _rgba(p):
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(p.with_suffix(".png"))  # fully transparent red
    return p.with_suffix(".png"), (255, 255, 255)


def _rgba_opaque(p):
    Image.new("RGBA", (40, 40), (0, 0, 255, 255)).save(p.with_suffix(".png"))
    return p.with_suffix(".png"), (0, 0, 255)


def _grey_alpha(p):
    Image.new("LA", (40, 40), (50, 0)).save(p.with_suffix(".png"))
    return p.with_suffix(".png"), (255, 255, 255)


def _one_bit(p):
    Image.new("1", (40, 40), 1).save(p.with_suffix(".png"))
    return p.with_suffix(".png"), (255, 255, 255)


def _one_pixel(p):
    Image.new("RGB", (1, 1), (0, 255, 0)).save(p.with_suffix(".png"))
    return p.with_suffix(".png"), (0, 255, 0)


MODES = {"cmyk_jpeg": _cmyk, "png_16bit_grey": _grey16, "png_16bit_rgb": _rgb16, "grayscale_jpeg": _grey,
         "palette_png": _palette, "palette_png_transparent": _palette_transparent,
         "palette_gif_transparent": _gif_transparent, "rgba_png_transparent": _rgba,
         "rgba_png_opaque": _rgba_opaque, "grey_alpha_png": _grey_alpha, "one_bit_png": _one_bit,
         "one_by_one_png": _one_pixel}


@pytest.mark.parametrize("kind", list(MODES))
def test_unusual_image_is_converted_and_used(model, tmp_path, kind):
    root = make_dataset(tmp_path / "data", train=3, val=2, size=40)
    odd, rgb = MODES[kind](root / "train" / "cats" / "odd")
    train, feats, skipped, others = run_pipeline(model, root, tmp_path / "cache")
    assert skipped == [] and others == []
    assert str(odd) in train.files and str(odd) in feats.files and len(feats) == 7
    i = train.files.index(str(odd))
    img, label = train[i]  # no transform: the decoded PIL image
    assert img.mode == "RGB" and label == 0
    got = img.getpixel((0, 0))
    assert all(abs(a - b) <= 3 for a, b in zip(got, rgb)), (got, rgb)  # transparency -> white
    x, _ = train.with_transform(transforms_for(model, image_size=SIZE))[i]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    assert torch.isfinite(feats.features).all()


# ---------------------------------------------------------------- names and folders

def test_unicode_and_spaces_in_file_and_class_names(model, tmp_path):
    root = tmp_path / "données d'images"
    names = ["chat été.jpg", "猫 の 写真.jpg", "emoji 🐱.jpg", "caf\udce9 latin1.jpg"]  # last: not UTF-8 bytes
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("big cats", "chiens à poil")):
            folder = root / split / cls
            for i, name in enumerate(names[:n]):
                write_image(folder / f"{i}_{name}", (200 * (1 - c), 50, 200 * c),
                            size=40, seed=i + 10 * c)
    train, feats, skipped, others = run_pipeline(model, root, tmp_path / "cache")
    assert skipped == [] and others == []
    assert train.classes == ["big cats", "chiens à poil"] and len(train) == 8 and len(feats) == 8
    assert any("\udce9" in f for f in feats.files)
    again = extract_features(model, train.with_transform(transforms_for(model, image_size=SIZE)),
                             cache_dir=tmp_path / "cache", progress=False, num_workers=0)
    assert again.from_cache and again.files == feats.files and torch.equal(again.features, feats.features)


def test_hidden_files_and_folders_are_ignored(model, tmp_path):
    root = make_dataset(tmp_path / "data", train=3, val=2, size=40)
    expected = good_files(root)
    cats = root / "train" / "cats"
    (cats / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (cats / "._cat.0.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(60))
    (cats / "Thumbs.db").write_bytes(bytes(64))
    shutil.copy(cats / "cat.0.jpg", root / "train" / "dogs" / ".hidden_copy.jpg")
    (cats / ".ipynb_checkpoints").mkdir()
    shutil.copy(cats / "cat.1.jpg", cats / ".ipynb_checkpoints" / "cat.1-checkpoint.jpg")
    (root / "train" / ".ipynb_checkpoints").mkdir()  # a hidden folder is not a class
    (root / "val" / ".ipynb_checkpoints").mkdir()
    train, feats, skipped, others = run_pipeline(model, root, tmp_path / "cache")
    assert skipped == [] and others == []
    assert train.classes == ["cats", "dogs"] and sorted(train.files) == expected and len(feats) == 6


def test_nested_folders_inside_a_class_belong_to_that_class(model, tmp_path):
    root = make_dataset(tmp_path / "data", train=2, val=2, size=40)
    deep = [write_image(root / "train" / "cats" / "indoor" / "a.jpg", (200, 60, 40), 40, 1),
            write_image(root / "train" / "cats" / "outdoor" / "2019" / "b.jpg", (200, 60, 40), 40, 2),
            write_image(root / "train" / "dogs" / "puppies" / "c.jpg", (40, 80, 200), 40, 3)]
    train, feats, skipped, _ = run_pipeline(model, root, tmp_path / "cache")
    assert skipped == [] and train.classes == ["cats", "dogs"]  # sub-folders are not classes
    labels = dict(zip(train.files, train.targets))
    assert [labels[str(p)] for p in deep] == [0, 0, 1]
    assert len(feats) == 7 and feats.labels.tolist().count(0) == 4



# ---------------------------------------------------------------- round two: phone photos

def _sideways_and_upright(folder: Path, name: str) -> tuple[Path, Path]:
    """The same photo twice: stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise to
    view"), and stored upright without a tag. Top half red, bottom half blue, when seen upright."""
    import numpy as np

    upright = np.zeros((60, 30, 3), np.uint8)  # (H, W): portrait
    upright[:30] = (255, 0, 0)
    upright[30:] = (0, 0, 255)
    stored = Image.fromarray(np.rot90(upright, k=1).copy())  # as a phone sensor stores it: landscape
    exif = Image.Exif()
    exif[0x0112] = 6
    folder.mkdir(parents=True, exist_ok=True)
    tagged, plain = folder / f"{name}.tagged.png", folder / f"{name}.plain.png"
    stored.save(tagged, exif=exif)
    Image.fromarray(upright).save(plain)
    return tagged, plain


def test_exif_orientation_is_applied_everywhere_images_are_opened(model, tmp_path):
    """Phone photos carry their rotation as an EXIF tag: every path that opens an image sees it upright."""
    from tlkit.data import ImageDataset
    from tlkit.explain import as_batch
    from tlkit.viz.pictures import _to_array

    tagged, plain = _sideways_and_upright(tmp_path / "photos", "phone")
    assert Image.open(tagged).size == (60, 30)  # stored sideways
    im = open_image(tagged)
    assert im.size == (30, 60)  # opened upright
    assert im.getpixel((15, 5)) == (255, 0, 0) and im.getpixel((15, 55)) == (0, 0, 255)
    assert np_equal(im, open_image(plain))
    tf = transforms_for(model, image_size=SIZE)
    ds = ImageDataset([str(tagged), str(plain)], [0, 0], ["a", "b"], tf)
    feats = extract_features(model, ds, cache=False, progress=False, num_workers=0)  # training, features
    assert torch.equal(feats.features[0], feats.features[1])
    assert torch.equal(as_batch(model, tagged, tf), as_batch(model, plain, tf))  # Grad-CAM, predict
    assert (_to_array(tagged) == _to_array(plain)).all()  # thumbnails, image grids


def np_equal(a: Image.Image, b: Image.Image) -> bool:
    import numpy as np

    return a.size == b.size and bool((np.asarray(a) == np.asarray(b)).all())


def test_heic_named_jpg_says_heic_is_not_supported_and_how_to_convert(model, tmp_path):
    """An iPhone photo (HEIC) renamed .jpg: skipped with one warning that says HEIC and how to convert."""
    root = make_dataset(tmp_path / "data", train=4, val=2, size=40)
    heic = root / "train" / "cats" / "IMG_0001.jpg"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))  # an ISO-BMFF header
    before = snapshot(root)
    train, feats, skipped, others = run_pipeline(model, root, tmp_path / "cache")
    assert len(skipped) == 1 and "IMG_0001.jpg" in skipped[0]
    assert "HEIC" in skipped[0] and "not supported" in skipped[0] and "convert" in skipped[0]
    assert str(heic) not in train.files and len(feats) == len(train.files) == 8 and others == []
    with pytest.raises(ImageReadError, match="HEIC/HEIF images .* not supported; convert it to JPEG"):
        open_image(heic)
    assert snapshot(root) == before
