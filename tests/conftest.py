"""Shared fixtures: a tiny learnable image dataset and small untrained backbones.

Everything here runs on CPU in well under a second, so any test can use it.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from tlkit.backbones import load_backbone

# The suite runs the frozen pass in PyTorch: engine="auto" would export an ONNX graph and time both
# engines on every new tiny model. tests/test_ort_features.py unsets this to test the engine choice.
os.environ.setdefault("TLKIT_ENGINE", "torch")

@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a busy shared CPU.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CLASSES = ("cats", "dogs")
# Class 0 is reddish, class 1 bluish: a tiny network separates them in a few steps.
BASE_COLOURS = {"cats": (200, 60, 50), "dogs": (50, 70, 200)}


def write_class_folders(root: Path, per_class: int = 12, seed: int = 0,
                        splits: tuple[str, ...] = ("train", "val")) -> Path:
    """Writes ``root/<split>/<class>/<i>.jpg``: noisy solid-colour JPEGs of 32-48 px."""
    rng = random.Random(seed)
    for split in splits:
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                size = (rng.randint(32, 48), rng.randint(32, 48))
                colour = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in BASE_COLOURS[cls])
                img = Image.new("RGB", size, colour)
                # A darker square at a random place, so images are not all flat.
                x, y = rng.randint(0, size[0] - 12), rng.randint(0, size[1] - 12)
                img.paste(tuple(c // 2 for c in colour), (x, y, x + 12, y + 12))
                img.save(folder / f"{cls}_{i:02d}.jpg", quality=90)
    return root


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    """A class-folder dataset (train/ and val/, 2 classes, 12 images each) under tmp_path."""
    return write_class_folders(tmp_path / "tiny_images")


@pytest.fixture
def tiny_datasets(tiny_images: Path):
    """``(train, val)`` ImageDatasets of :func:`tiny_images` (no transform set)."""
    from tlkit.data import image_folder
    return image_folder(tiny_images)


@pytest.fixture
def resnet18_2() -> torch.nn.Module:
    """Untrained ResNet-18 with a 2-way head (seeded, so every test gets the same weights)."""
    torch.manual_seed(0)
    return load_backbone("resnet18", pretrained=False, num_classes=2)


@pytest.fixture
def mobilenet_2() -> torch.nn.Module:
    """Untrained MobileNetV3-Small with a 2-way head (seeded)."""
    torch.manual_seed(0)
    return load_backbone("mobilenet_v3_small", pretrained=False, num_classes=2)


@pytest.fixture
def make_model():
    """Factory: ``make_model("resnet18", seed=1)`` -> a fresh untrained 2-class backbone."""
    def make(name: str = "resnet18", seed: int = 0, num_classes: int = 2):
        torch.manual_seed(seed)
        return load_backbone(name, pretrained=False, num_classes=num_classes)
    return make


@pytest.fixture
def lite0_64() -> torch.nn.Module:
    """A random-weight Lite0 with a 2-class head that works on 64 px images."""
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", pretrained=False, num_classes=2, class_names=list(CLASSES))
    model.input_size = 64  # transforms_for(model) then resizes to 64 px: fast on a CPU
    return model


@pytest.fixture
def noisy_val(tmp_path: Path):
    """Six noisy one-colour photos (3 cats, 3 dogs) as an ImageDataset without a transform."""
    from imagegen import noisy_split
    from tlkit.data import ImageDataset

    files = sorted(str(p) for p in noisy_split(tmp_path / "val").rglob("*.jpg"))
    return ImageDataset(files, [0 if "/cats/" in f else 1 for f in files], list(CLASSES), name="synthetic")


@pytest.fixture(scope="session")
def cats_dogs_dir() -> Path:
    """The real ``cats_and_dogs_filtered`` folder, found the way the library finds it.

    :func:`tlkit.data.cats_vs_dogs` looks in ``$TLKIT_DATA_DIR``, then the user
    cache; it never downloads here. Without the data the test is skipped, and
    the reason says how to provide it.
    """
    from tlkit.data import cats_vs_dogs

    try:
        train, _ = cats_vs_dogs(download=False)
    except FileNotFoundError:
        pytest.skip("setup incomplete: the cats_and_dogs_filtered photos were not found. Set TLKIT_DATA_DIR to "
                    "the folder that holds cats_and_dogs_filtered/, or run `python tools/prefetch.py` online")
    return Path(train.files[0]).parents[2]  # <root>/train/cats/cat.0.jpg -> <root>
