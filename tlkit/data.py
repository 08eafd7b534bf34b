"""Datasets of class folders, the dog-vs-cat data, and transforms that follow the backbone.

* ``cats_vs_dogs()`` finds or downloads ``cats_and_dogs_filtered`` and returns
  ``(train, val)`` datasets with classes ``["cats", "dogs"]``.
* ``image_folder(root)`` does the same for any ``train/`` + ``val/`` (or
  ``validation/``) tree of class folders.
* ``subset(ds, per_class=10)`` keeps a few images per class, for
  data-scarcity experiments.
* ``transforms_for(model, train=True)`` builds the preprocessing the
  backbone's weights expect (size, mean, std), with or without augmentation.

Folders holding ``tlkit.outputs.OUTPUT_MARKER`` (a run's output folder) are
never read, so tlkit never trains on the files it wrote itself.

Bad images never crash a run. Files that cannot even be opened (zero bytes,
text named ``.jpg``, decompression bombs) are dropped when the dataset is
built; files that fail to decode later (a truncated JPEG) are skipped by the
loader. Either way one warning gives the count and the first paths. Opening
and checking single images is :mod:`tlkit.images`; its names are re-exported
here.

Example:
    >>> train, val = cats_vs_dogs()
    >>> len(train), len(val), train.classes
    (2000, 1000, ['cats', 'dogs'])
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from tlkit.env import env_flag, env_folder, env_int
from tlkit.outputs import OUTPUT_MARKER
from tlkit.images import (MAX_ASPECT, MAX_PIXELS, ImageReadError, _header_ok, check_image_size, open_image,
                          warn_skipped)

__all__ = ["DATASET_COUNTS", "DATASET_NAME", "DATASET_URL", "IMAGE_EXTENSIONS", "MAX_ASPECT", "MAX_PIXELS",
           "DatasetLayoutError", "ImageDataset", "ImageReadError", "cats_vs_dogs", "collate_skip",
           "default_data_dir", "eval_resize", "image_folder", "leaves_one_image", "make_loader",
           "num_workers_default", "open_image", "scan_class_folders", "subset", "transforms_for", "warn_skipped", "with_files"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DATASET_NAME = "cats_and_dogs_filtered"
DATASET_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
DATASET_COUNTS = {"train": 2000, "validation": 1000}


class DatasetLayoutError(ValueError):
    """A folder that does not look like ``split/class/image`` (message says how to fix it)."""


class ImageDataset(Dataset):
    """Images with integer labels. ``dataset[i]`` is ``(image_tensor, label)``.

    An image that fails to decode yields ``(None, path)``; the loaders of
    tlkit drop it and report the path. ``files``, ``targets`` and ``classes`` are
    plain lists so that subsets and caches can use them.
    """

    def __init__(self, files: list[str], targets: list[int], classes: list[str],
                 transform: Callable | None = None, name: str = ""):
        if len(files) != len(targets):
            raise ValueError("files and targets must have the same length.")
        self.files, self.targets, self.classes = list(files), list(targets), list(classes)
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            img = open_image(self.files[i])
        except ImageReadError:
            return None, self.files[i]
        return (self.transform(img) if self.transform else img), self.targets[i]

    def with_transform(self, transform: Callable | None) -> "ImageDataset":
        """The same files and labels with another transform."""
        return ImageDataset(self.files, self.targets, self.classes, transform, self.name)

    def class_counts(self) -> dict[str, int]:
        return {c: self.targets.count(i) for i, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in self.class_counts().items())
        return f"ImageDataset({self.name or 'images'}: {len(self)} images; {counts})"


def scan_class_folders(root: str | os.PathLike, classes: list[str] | None = None,
                       name: str = "") -> ImageDataset:
    """An ImageDataset from ``root/<class>/**/<image>`` (nested folders allowed).

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are
    ignored. Files whose header cannot be read are dropped with one warning.

    Example:
        >>> scan_class_folders("data/train").classes
        ['cats', 'dogs']
    """
    root = Path(root)
    classes = _class_names(root, classes)
    files, targets, bad, reasons = [], [], [], []
    for label, cls in enumerate(classes):
        good, unreadable = _scan_class(root / cls)
        if not good:
            raise DatasetLayoutError(_empty_class_message(root / cls, unreadable))
        files += good
        targets += [label] * len(good)
        bad += [path for path, _ in unreadable]
        reasons += [reason for _, reason in unreadable]
    warn_skipped(bad, reasons, where=f" in {root}")
    return ImageDataset(files, targets, classes, name=name or root.name)


def _class_names(root: Path, classes: list[str] | None) -> list[str]:
    """``classes``, or the sub-folders of ``root``; DatasetLayoutError unless there are at least 2."""
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder. Expected {root}/<class name>/<images>.")
    found = sorted(d.name for d in root.iterdir()
                   if d.is_dir() and not d.name.startswith(".") and not (d / OUTPUT_MARKER).exists())
    classes = classes if classes is not None else found
    if len(classes) < 2:
        raise DatasetLayoutError(
            f"{root} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a classifier "
            "needs at least 2. Put each class's images in its own sub-folder, e.g. train/cats, train/dogs.")
    return classes


def _scan_class(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """``(usable paths, [(unreadable path, reason)])`` of one class folder, checking headers only."""
    good, unreadable = [], []
    for path in sorted(_walk_images(folder)):
        reason = _header_ok(path)
        if reason:
            unreadable.append((str(path), reason))
        else:
            good.append(str(path))
    return good, unreadable


def _empty_class_message(folder: Path, unreadable: list[tuple[str, str]]) -> str:
    """What to tell the user about a class folder without a single usable image."""
    why = (f"{len(unreadable)} unreadable file(s), e.g. {unreadable[0][0]}" if unreadable
           else f"looked for {', '.join(IMAGE_EXTENSIONS)}")
    return (f"Class folder {folder} holds no readable images ({why}). "
            "Add images to it or remove the folder.")


def _walk_images(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(folder):
        if OUTPUT_MARKER in filenames:  # a run's output folder: never train on tlkit's own files
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                yield Path(dirpath) / f


def image_folder(root: str | os.PathLike) -> tuple[ImageDataset, ImageDataset]:
    """``(train, val)`` from ``root/train/<class>`` and ``root/val|validation/<class>``.

    Example:
        >>> train, val = image_folder("my_photos")
    """
    root = Path(root)
    if root.is_file():
        raise DatasetLayoutError(f"{root} is a file, not a folder. Pass a folder holding "
                                 "train/<class>/ and val/<class>/ (unzip an archive first).")
    if not root.is_dir():
        raise DatasetLayoutError(f"Data folder {root} does not exist. Pass a folder holding "
                                 "train/<class>/ and val/<class>/ (or validation/<class>/).")
    if not (root / "train").is_dir():
        raise DatasetLayoutError(f"{root} has no train/ folder. Expected {root}/train/<class>/ and "
                                 f"{root}/val/<class>/ (or validation/).")
    val_dir = next((root / d for d in ("val", "validation", "valid") if (root / d).is_dir()), None)
    if val_dir is None:
        raise DatasetLayoutError(f"{root} has no val/ or validation/ folder next to train/.")
    train = scan_class_folders(root / "train", name=f"{root.name}/train")
    val_classes = sorted(d.name for d in val_dir.iterdir()
                         if d.is_dir() and not d.name.startswith(".") and not (d / OUTPUT_MARKER).exists())
    if val_classes != train.classes:
        missing = sorted(set(train.classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(train.classes))
        raise DatasetLayoutError(f"Validation classes {val_classes} in {val_dir} differ from train classes "
                                 f"{train.classes} (missing: {missing or 'none'}, extra: {extra or 'none'}). "
                                 "Both splits need the same class folders.")
    val = scan_class_folders(val_dir, classes=train.classes, name=f"{root.name}/{val_dir.name}")
    return train, val


def default_data_dir() -> Path:
    """``$TLKIT_DATA_DIR`` if set, else the user cache (``~/.cache/tlkit/data``)."""
    env = env_folder("TLKIT_DATA_DIR")  # EnvironmentSettingError if it names a file
    if env is not None:
        return env
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tlkit" / "data"


def cats_vs_dogs(root: str | os.PathLike | None = None, download: bool = True,
                 url: str = DATASET_URL) -> tuple[ImageDataset, ImageDataset]:
    """The 2,000 + 1,000 image dog-vs-cat dataset as ``(train, val)``.

    Looks in ``root``, then ``$TLKIT_DATA_DIR``, then the user cache; if the
    data is in none of them it downloads the public zip into the cache.

    Example:
        >>> train, val = cats_vs_dogs()
        >>> train.classes
        ['cats', 'dogs']
    """
    candidates = [Path(root)] if root is not None else []
    if env_folder("TLKIT_DATA_DIR") is not None:  # EnvironmentSettingError if it names a file
        candidates.append(env_folder("TLKIT_DATA_DIR"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tlkit" / "data"
    candidates.append(cache)
    for base in candidates:
        for folder in (base / DATASET_NAME, base):
            if (folder / "train" / "cats").is_dir() and (folder / "validation" / "dogs").is_dir():
                return image_folder(folder)
    if not download:
        raise FileNotFoundError(_missing_message(candidates))
    from tlkit.download import download_dataset  # only needed when the data is missing

    target = Path(root) if root is not None else cache
    folder = download_dataset(url, target, DATASET_NAME, expected_counts=DATASET_COUNTS,
                              hint=_missing_message(candidates))
    return image_folder(folder)


def _missing_message(searched: list[Path]) -> str:
    where = ", ".join(str(p) for p in searched)
    return (f"The {DATASET_NAME} dataset was not found (looked in {where}) and could not be downloaded. "
            f"Either connect to the internet and run again (it downloads {DATASET_URL}, 68 MB), or "
            f"unzip that file yourself and set TLKIT_DATA_DIR to the folder that holds {DATASET_NAME}/.")


def subset(dataset: ImageDataset, per_class: int, seed: int = 0) -> ImageDataset:
    """At most ``per_class`` random images of each class (same seed, same images).

    Example:
        >>> len(subset(train, per_class=10))
        20
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}.")
    rng = random.Random(seed)
    keep: list[int] = []
    for label in range(len(dataset.classes)):
        idx = [i for i, t in enumerate(dataset.targets) if t == label]
        keep += sorted(rng.sample(idx, min(per_class, len(idx))))
    keep.sort()
    return ImageDataset([dataset.files[i] for i in keep], [dataset.targets[i] for i in keep],
                        dataset.classes, dataset.transform, f"{dataset.name}[{per_class}/class]")


def eval_resize(image_size: int) -> int:
    """Shorter side an image is resized to before the centre crop of ``image_size`` (256 for 224)."""
    return round(image_size * 256 / 224)


def transforms_for(model, train: bool = False, image_size: int | None = None,
                   augment: str = "standard") -> Callable:
    """Preprocessing matched to the backbone's weights: size, mean and std.

    ``train=True`` adds augmentation (random resized crop and horizontal flip;
    ``augment="none"`` turns it off, ``"strong"`` adds colour jitter).

    Example:
        >>> transforms_for(model, train=False, image_size=160)
    """
    from torchvision import transforms as T

    size = check_image_size(image_size if image_size is not None else int(model.input_size))
    norm = [T.ToTensor(), T.Normalize(model.mean, model.std)]
    if not train or augment == "none":
        return T.Compose([T.Resize(eval_resize(size)), T.CenterCrop(size), *norm])
    if augment not in ("standard", "strong"):
        raise ValueError(f"augment must be 'none', 'standard' or 'strong', got {augment!r}.")
    aug = [T.RandomResizedCrop(size, scale=(0.35, 1.0)), T.RandomHorizontalFlip()]
    if augment == "strong":
        aug.append(T.ColorJitter(0.3, 0.3, 0.3, 0.05))
    return T.Compose([*aug, *norm])


def collate_skip(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stacks ``(tensor, label)`` pairs, dropping unreadable ones.

    Returns ``(x (B, 3, H, W), y (B,), paths of the dropped images)``.
    """
    good = [(x, y) for x, y in batch if x is not None]
    dropped = [y for x, y in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), dropped
    xs, ys = zip(*good)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long), dropped


def with_files(batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[str]]],
               files: Sequence[str]) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str], list[str]]]:
    """``(x, y, kept, dropped)`` for the batches of an *unshuffled* loader over ``files``.

    ``kept`` names the file of each row of ``x``, in order; ``dropped`` the unreadable ones that
    :func:`collate_skip` left out. Feature extraction, prediction and the decode-once cache use it.

    Example:
        >>> for x, y, kept, dropped in with_files(make_loader(val), val.files): ...
    """
    pos = 0
    for x, y, dropped in batches:
        batch_files = files[pos:pos + len(y) + len(dropped)]  # unshuffled: file order
        pos += len(batch_files)
        gone = set(dropped)
        yield x, y, [f for f in batch_files if f not in gone], dropped


def leaves_one_image(n: int, batch_size: int) -> bool:
    """True when ``n`` images in batches of ``batch_size`` end with a batch of one image.

    In training mode BatchNorm cannot normalise a batch of one ("Expected more than 1 value
    per channel"), so the trainer and lr_find drop that image (``make_loader(drop_last=True)``).

    Example:
        >>> leaves_one_image(2001, 40), leaves_one_image(2000, 32)
        (True, False)
    """
    return n > 1 and n % batch_size == 1


def num_workers_default(gpu: bool = False) -> int:
    """DataLoader worker processes: ``$TLKIT_NUM_WORKERS`` if set; 0 on Binder (its shared memory
    kills worker processes).

    When the model runs on the CPU (``gpu=False``): 0 on machines with 1-2 cores, where a worker
    only takes a core from the model (fine-tuning Lite0 on 2 cores: 19.9 img/s with 0 workers,
    14.7 with 1), else up to 4. When it runs on a GPU, the CPU's only job is decoding and
    augmenting JPEGs, which is then the bottleneck: every core but one (a standard DataLoader on
    an H100 machine needed 14 workers for about 1,800 img/s), at most 16.

    Example:
        >>> num_workers_default(), num_workers_default(gpu=True)  # on 16 cores
        (4, 15)
    """
    workers = env_int("TLKIT_NUM_WORKERS")  # EnvironmentSettingError naming it if not a count
    if workers is not None:
        return workers
    if os.environ.get("BINDER_SERVICE_HOST") or env_flag("TLKIT_BINDER", default=False):
        return 0
    cpus = os.cpu_count() or 1
    if gpu:
        return min(16, cpus - 1)
    return 0 if cpus <= 2 else min(4, cpus - 1)


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = False, seed: int | None = None,
                num_workers: int | None = None, pin_memory: bool = False,
                sampler=None, drop_last: bool = False) -> DataLoader:
    """A DataLoader that skips unreadable images (see :func:`collate_skip`).

    ``num_workers=None`` means :func:`num_workers_default`, with ``gpu=pin_memory``: pinned
    batches are bound for a GPU, so the CPU cores are free to decode.
    """
    workers = num_workers_default(gpu=pin_memory) if num_workers is None else num_workers
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=collate_skip, pin_memory=pin_memory,
                      generator=gen, persistent_workers=False, drop_last=drop_last)
