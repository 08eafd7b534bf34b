"""Image shifts (tlkit.shifts): the edge sketch and datasets that apply a shift before their transform."""
import pickle

import pytest
import torch
from PIL import Image, ImageDraw

from tlkit.data import transforms_for
from tlkit.features import extract_features
from tlkit.shifts import ShiftedDataset, edge_sketch, shifted


def _square(colour="red", background="blue") -> Image.Image:
    img = Image.new("RGB", (40, 40), background)
    ImageDraw.Draw(img).rectangle((10, 10, 29, 29), fill=colour)
    return img


def test_edge_sketch_draws_dark_edges_on_white():
    sketch = edge_sketch(_square())
    assert sketch.mode == "RGB" and sketch.size == (40, 40)
    grey = sketch.convert("L")
    assert grey.getpixel((20, 20)) == 255 and grey.getpixel((3, 20)) == 255  # flat areas: white
    row = [grey.getpixel((x, 20)) for x in range(40)]
    assert min(row[8:12]) < 128 and min(row[27:32]) < 128  # the square's left and right borders: dark
    assert sum(v < 255 for v in row[1:39]) == 2              # and nothing else inside the frame
    r, g, b = sketch.split()
    assert r.tobytes() == g.tobytes() == b.tobytes()                  # no colour left
    # A photo that differs only in its colours gives the same lines.
    other = edge_sketch(_square("green", "white")).convert("L")
    assert sum(other.getpixel((x, 20)) < 255 for x in range(1, 39)) == 2


def test_edge_sketch_rejects_tensors():
    with pytest.raises(TypeError, match="before ToTensor"):
        edge_sketch(torch.zeros(3, 8, 8))


def test_shifted_dataset_applies_shift_before_any_transform(tiny_datasets, lite0_64):
    train, _ = tiny_datasets
    sketches = shifted(train, edge_sketch)
    assert isinstance(sketches, ShiftedDataset) and len(sketches) == len(train)
    assert sketches.transform is None                      # fit still picks the transform
    img, label = sketches[0]
    assert label == train[0][1]
    assert img.tobytes() == edge_sketch(train[0][0]).tobytes()
    tf = transforms_for(lite0_64, image_size=32)
    with_tf = sketches.with_transform(tf)
    assert isinstance(with_tf, ShiftedDataset) and repr(with_tf.transform).startswith("edge_sketch -> ")
    x, _ = with_tf[0]
    assert torch.equal(x, tf(edge_sketch(train[0][0])))
    assert not torch.equal(x, train.with_transform(tf)[0][0])
    assert pickle.loads(pickle.dumps(with_tf))[0][0].shape == x.shape  # worker processes can load it


def test_feature_cache_tells_sketches_from_photos(tiny_datasets, lite0_64, tmp_path):
    train, _ = tiny_datasets
    tf = transforms_for(lite0_64, image_size=32)
    photos = extract_features(lite0_64, train.with_transform(tf), cache_dir=tmp_path, progress=False)
    sketches = extract_features(lite0_64, shifted(train, edge_sketch).with_transform(tf), cache_dir=tmp_path,
                                progress=False)
    assert not sketches.from_cache                          # a different key, not the photos' features
    assert not torch.equal(photos.features, sketches.features)


def test_shifted_rejects_bad_arguments(tiny_datasets):
    train, _ = tiny_datasets
    with pytest.raises(TypeError, match="ImageDataset"):
        shifted([1, 2], edge_sketch)
    with pytest.raises(TypeError, match="callable"):
        shifted(train, "edge_sketch")
