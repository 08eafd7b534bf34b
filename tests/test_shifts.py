"""Image shifts (tlkit.shifts): the edge sketch and datasets that apply a shift before their transform."""
import pickle

import pytest
import torch
from PIL import Image, ImageDraw

from tlkit.data import transforms_for
from tlkit.features import extract_features
from tlkit.shift_kinds import SEVERITIES, SHIFTS, ImageShift, ShiftChain, all_shifts, make_shift
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
    assert isinstance(with_tf, ShiftedDataset) and repr(with_tf.transform).startswith("tlkit.shifts.EdgeSketch[edge_sketch] -> ")
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
        shifted(train, 3)
    with pytest.raises(ValueError, match="Unknown shift|unknown shift 'edge_sketch'.*greyscale, blur"):
        shifted(train, "edge_sketch")


def _photo(seed: int = 0, size=(60, 44)) -> Image.Image:
    import numpy as np
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 200 + 30).astype("uint8"), "RGB")


def test_every_shift_and_severity_keeps_size_changes_pixels_and_grows_with_severity():
    import numpy as np
    img = _square("orange", "teal").resize((60, 44))
    img.paste(_photo(size=(30, 22)), (0, 0, 30, 22))
    assert len(all_shifts()) == len(SHIFTS) * len(SEVERITIES) == 35
    base = np.asarray(img, dtype=np.float32)
    for name in SHIFTS:
        moved = []
        for s in SEVERITIES:
            out = ImageShift(name, s)(img)
            assert out.mode == "RGB" and out.size == img.size, (name, s)
            moved.append(float(np.abs(np.asarray(out, dtype=np.float32) - base).mean()))
        assert moved[0] > 0, name
        assert moved[-1] > moved[0], (name, moved)  # severity 5 moves the image more than severity 1
    assert ImageShift("sketch", 5)(img).tobytes() == edge_sketch(img).tobytes()
    grey = ImageShift("greyscale", 5)(img)
    r, g, b = grey.split()
    assert max(abs(a - c) for a, c in zip(r.tobytes(), b.tobytes())) <= 1  # no colour left
    assert ImageShift("dark", 5)(img).convert("L").getextrema()[1] < 0.1 * 255


def test_random_shifts_are_deterministic_per_seed_and_image_not_order():
    a, b = _photo(1), _photo(2)
    noise = make_shift("noise:3", seed=7)
    first = [noise(a).tobytes(), noise(b).tobytes()]
    assert [noise(b).tobytes(), noise(a).tobytes()] == first[::-1]          # order does not matter
    assert pickle.loads(pickle.dumps(noise))(a).tobytes() == first[0]        # nor the worker process
    assert make_shift("noise:3", seed=8)(a).tobytes() != first[0]            # the seed does
    assert repr(make_shift("noise:3", seed=8)) == "noise:3@8" and repr(make_shift("noise:3")) == "noise:3"
    assert repr(make_shift("blur:3", seed=8)) == "blur:3"                    # no randomness, no seed in the key


def test_shifts_compose_left_to_right_with_a_stable_repr():
    img = _photo()
    chain = make_shift("dark:2 + noise:4", seed=1)
    assert isinstance(chain, ShiftChain) and repr(chain) == "dark:2+noise:4@1"
    expected = ImageShift("noise", 4, seed=1)(ImageShift("dark", 2)(img))
    assert chain(img).tobytes() == expected.tobytes()
    assert make_shift("BLUR:2") == ImageShift("blur", 2)


@pytest.mark.parametrize("spec, message", [
    ("blur", "no severity"), ("blurr:3", "unknown shift 'blurr'.*greyscale, blur, jpeg"),
    ("blur:x", "not a whole number"), ("blur:0", "from 1 to 5"), ("jpeg:6", "from 1 to 5"), ("", "unknown shift"),
])
def test_make_shift_names_the_valid_choices(spec, message):
    with pytest.raises(ValueError, match=message):
        make_shift(spec)


def test_image_shift_rejects_bad_arguments():
    with pytest.raises(ValueError, match="from 1 to 5"):
        ImageShift("blur", 2.0)
    with pytest.raises(TypeError, match="seed"):
        ImageShift("noise", 2, seed="a")
    with pytest.raises(TypeError, match="before ToTensor"):
        ImageShift("blur", 2)(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="text"):
        make_shift(3)


def test_shifted_by_name_is_deterministic_across_subsets_and_keys_the_cache(tiny_datasets, lite0_64, tmp_path):
    from tlkit.data import ImageDataset
    train, _ = tiny_datasets
    noisy = shifted(train, "noise:2", seed=3)
    assert noisy.name.endswith("(noise:2@3)")
    reversed_ = ImageDataset(train.files[::-1], train.targets[::-1], train.classes)
    assert shifted(reversed_, "noise:2", seed=3)[0][0].tobytes() == noisy[len(train) - 1][0].tobytes()
    assert noisy[0][0].tobytes() != noisy[1][0].tobytes()
    tf = transforms_for(lite0_64, image_size=32)
    one = extract_features(lite0_64, noisy.with_transform(tf), cache_dir=tmp_path, progress=False)
    other = extract_features(lite0_64, shifted(train, "noise:2", seed=4).with_transform(tf), cache_dir=tmp_path,
                             progress=False)
    again = extract_features(lite0_64, shifted(train, "noise:2", seed=3).with_transform(tf), cache_dir=tmp_path,
                             progress=False)
    assert not other.from_cache and again.from_cache and torch.equal(one.features, again.features)


def test_cache_key_names_the_shift_class_so_a_lookalike_never_reuses_its_features():
    """A user's callable whose repr reads like a built-in shift keys differently (it broke a build once)."""
    from tlkit.shift_kinds import make_shift
    from tlkit.shifts import Then

    class Lookalike:
        def __call__(self, img):
            return img

        def __repr__(self):
            return "sketch:1"

    builtin, fake = repr(Then(make_shift("sketch:1"), None)), repr(Then(Lookalike(), None))
    assert "sketch:1" in builtin and "sketch:1" in fake
    assert builtin != fake
    assert "ImageShift/v1" in builtin
