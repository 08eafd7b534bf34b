"""Small synthetic image datasets for tests (never the real photos)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"cats": (200, 60, 40), "dogs": (40, 80, 200), "birds": (40, 180, 60)}


def write_image(path: Path, colour: tuple[int, int, int], size: int = 40, seed: int = 0) -> Path:
    """A JPEG of one dominant colour plus noise, so classes are learnable."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def make_split(root: Path, classes=("cats", "dogs"), per_class: int = 6, size: int = 40, seed: int = 0) -> Path:
    for c_i, cls in enumerate(classes):
        for i in range(per_class):
            write_image(root / cls / f"{cls[:-1]}.{i}.jpg", COLOURS[cls], size, seed * 1000 + c_i * 100 + i)
    return root


def make_dataset(root: Path, classes=("cats", "dogs"), train: int = 6, val: int = 4, size: int = 40,
                 val_name: str = "val") -> Path:
    """root/train/<class>/*.jpg and root/<val_name>/<class>/*.jpg."""
    make_split(root / "train", classes, train, size, seed=1)
    make_split(root / val_name, classes, val, size, seed=2)
    return root


def noisy_split(root: Path, classes=("cats", "dogs"), per_class: int = 3) -> Path:
    """root/<class>/<i>.jpg: 48 px, stronger noise than make_split (for the evaluate/explain tests)."""
    for c, cls in enumerate(classes):
        for i in range(per_class):
            rng = np.random.default_rng(10 * c + i)
            arr = np.clip(np.array(COLOURS[cls])[None, None] + rng.normal(0, 30, (48, 48, 3)), 0, 255)
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / cls / f"{i}.jpg")
    return root


def library_photos() -> list[Path]:
    """Real photos that ship with installed libraries: matplotlib's portrait, scikit-learn's two photos (427-640 px)."""
    found = []
    for mod, rel in (("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
                     ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg")):
        try:
            path = Path(__import__(mod).__file__).parent / rel
        except ImportError:
            continue
        if path.exists():
            found.append(path)
    return found


def phone_sized(photos: list[Path], folder: Path) -> list[Path]:
    """Each photo resampled to 4032x3024 (a phone camera's size), JPEG quality 90, written to ``folder``."""
    out = []
    for p in photos:
        target = Path(folder) / f"{p.stem}_4032.jpg"
        with Image.open(p) as im:
            im.convert("RGB").resize((4032, 3024), Image.BICUBIC).save(target, quality=90)
        out.append(target)
    return out
