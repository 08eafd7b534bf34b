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
and checking single images is :mod:`tlkit.images`; batches come from
:mod:`tlkit.loaders`.

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
from typing import Callable, Iterator

from torch.utils.data import Dataset

from tlkit.env import env_folder
from tlkit.errors import DatasetLayoutError, ImageReadError
from tlkit.images import (IMAGE_EXTENSIONS, check_image_size, draft_side, header_problem, is_image_file, open_image,
                          warn_skipped)
from tlkit.outputs import OUTPUT_MARKER
from tlkit.storage import cache_root
from tlkit.tensorize import apply_transform

log = logging.getLogger(__name__)

DATASET_NAME = "cats_and_dogs_filtered"
DATASET_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
DATASET_COUNTS = {"train": 2000, "validation": 1000}


class ImageDataset(Dataset):
    """Images with integer labels. ``dataset[i]`` is ``(image_tensor, label)``.

    An image that fails to decode yields ``(None, path)``; the loaders of
    tlkit drop it and report the path. ``files``, ``targets`` and ``classes`` are
    plain lists so that subsets and caches can use them. With an evaluation
    transform (a resize of the shorter side first), large JPEGs decode at a
    reduced scale (:func:`tlkit.images.draft_side`).
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
            # an evaluation transform: large JPEGs decode at reduced scale; random crops get every pixel
            img = open_image(self.files[i], min_side=draft_side(self.transform))
        except ImageReadError:
            return None, self.files[i]
        return (apply_transform(self.transform, img) if self.transform else img), self.targets[i]

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


def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the visible sub-folders of ``root`` (not hidden, not a run's output folder): its classes.

    Raises DatasetLayoutError when ``root`` is not a folder.

    Example:
        >>> class_folders("data/train")
        ['cats', 'dogs']
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder. Expected {root}/<class name>/<images>.")
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and not (d / OUTPUT_MARKER).exists())


def _class_names(root: Path, classes: list[str] | None) -> list[str]:
    """``classes``, or the sub-folders of ``root``; DatasetLayoutError unless there are at least 2."""
    found = class_folders(root)
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
        reason = header_problem(path)
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
            if is_image_file(f):
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
    val_classes = class_folders(val_dir)
    if val_classes != train.classes:
        missing = sorted(set(train.classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(train.classes))
        raise DatasetLayoutError(f"Validation classes {val_classes} in {val_dir} differ from train classes "
                                 f"{train.classes} (missing: {missing or 'none'}, extra: {extra or 'none'}). "
                                 "Both splits need the same class folders.")
    val = scan_class_folders(val_dir, classes=train.classes, name=f"{root.name}/{val_dir.name}")
    return train, val


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
    data_dir = env_folder("TLKIT_DATA_DIR")  # EnvironmentSettingError if it names a file
    if data_dir is not None:
        candidates.append(data_dir)
    cache = cache_root() / "data"
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
    if hasattr(dataset, "take"):  # a dataset that subsets itself (tlkit.text.TextDataset)
        return dataset.take(keep, f"{dataset.name}[{per_class}/class]")
    return ImageDataset([dataset.files[i] for i in keep], [dataset.targets[i] for i in keep],
                        dataset.classes, dataset.transform, f"{dataset.name}[{per_class}/class]")


def eval_resize(image_size: int) -> int:
    """Shorter side an image is resized to before the centre crop of ``image_size`` (256 for 224)."""
    return round(image_size * 256 / 224)


def transforms_for(model, train: bool = False, image_size: int | None = None,
                   augment: str = "standard") -> Callable:
    """Preprocessing matched to the backbone's weights: size, mean and std.

    For a text encoder (:class:`tlkit.text.backbone.TextBackbone`) this is its
    tokenizer, with ``image_size`` as the maximum number of tokens; text gets no
    augmentation. ``train=True`` adds augmentation (random resized crop and horizontal flip;
    ``augment="none"`` turns it off, ``"strong"`` adds colour jitter).

    Example:
        >>> transforms_for(model, train=False, image_size=160)
    """
    if getattr(model, "input_kind", "image") == "text":  # a text encoder: its tokenizer, image_size = max tokens
        return model.tokenizer(image_size)
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
