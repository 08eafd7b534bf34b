"""ToTensor + Normalize by table lookup (tlkit.tensorize): bit for bit torchvision's result, and when it applies."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import tlkit.tensorize as tz
from tlkit.data import ImageDataset, transforms_for
from tlkit.tensorize import apply_transform


def _photo(seed: int, size=(97, 61), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    return img.convert(mode)


class _Model:
    input_size, mean, std = 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("train", [False, True])
def test_the_table_gives_torchvisions_floats_bit_for_bit(train):
    tf = transforms_for(_Model(), train=train)
    for seed in range(6):
        torch.manual_seed(seed)
        want = tf(_photo(seed))
        torch.manual_seed(seed)  # the same random crop and flip for the table path
        got = apply_transform(tf, _photo(seed))
        assert got.dtype == torch.float32 and got.shape == want.shape == (3, 64, 64)
        assert torch.equal(got, want)
    every_value = Image.fromarray((np.arange(256 * 3) % 256).astype(np.uint8).reshape(16, 16, 3), "RGB")  # all 256 levels
    plain = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.25, 0.125), (0.3, 0.7, 1.1))])
    assert torch.equal(apply_transform(plain, every_value), plain(every_value))
    one = T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.2,))])  # one mean for all channels broadcasts
    assert torch.equal(apply_transform(one, every_value), one(every_value))
    tensors = T.Compose([T.ToTensor(), T.Normalize(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
                                                   torch.tensor([0.7, 0.8, 0.9]))])  # mean and std as tensors
    assert torch.equal(apply_transform(tensors, every_value), tensors(every_value))


def test_the_table_path_is_taken_for_rgb_and_not_for_other_images(monkeypatch):
    tf = transforms_for(_Model(), train=False)
    calls = []
    real = T.ToTensor.__call__
    monkeypatch.setattr(T.ToTensor, "__call__", lambda self, pic: calls.append(pic.mode) or real(self, pic))
    apply_transform(tf, _photo(0))
    assert calls == []  # RGB: no ToTensor call at all
    grey = apply_transform(T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.2,))]), _photo(1, mode="L"))
    assert calls == ["L"] and grey.shape == (1, 61, 97)  # other modes: torchvision's own path
    custom = apply_transform(lambda im: torch.ones(2), _photo(2))
    assert torch.equal(custom, torch.ones(2))  # not a Compose: called as it is


def test_a_zero_std_still_raises_torchvisions_error():
    with pytest.raises(ValueError, match="std evaluated to zero"):
        apply_transform(T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.2, 0.0, 0.2))]), _photo(0))


def test_datasets_use_it(tmp_path):
    path = tmp_path / "a.png"
    _photo(3).save(path)
    tf = transforms_for(_Model(), train=False)
    x, y = ImageDataset([str(path)], [0], ["a"], tf)[0]
    assert torch.equal(x, tf(Image.open(path).convert("RGB"))) and y == 0
    assert tz._tables.cache_info().currsize >= 1  # the dataset went through the table
