"""Train a classifier on a :class:`tlkit.own_data.PhotoStore` in seconds on a CPU.

The backbone stays frozen: each photo's pooled features are computed once
and kept (:class:`FeatureBank`, in memory and in the store's hidden
``.features/`` folder), so after new uploads only the new photos cost time.
Then a head trains on the features (:func:`tlkit.features.train_head`).

How the accuracy is judged depends on how many photos there are:

* every class has at least ``HOLDOUT_MIN`` photos: a seeded, stratified
  validation part (``val_fraction``, at least ``MIN_VAL_PER_CLASS`` per class)
  is held back;
* fewer: stratified k-fold cross-validation, every photo judged once by a
  head that did not see it; the returned head then trains on all photos;
* a class with fewer than ``MIN_PER_CLASS`` photos: :class:`NotEnoughPhotosError`.

The accuracy comes with a 95% interval (Wilson), a confusion matrix and the
misclassified photos, and plain notes when the data are too few to judge or
the classes are unbalanced.

Example:
    >>> model = load_backbone("efficientnet_lite0")
    >>> result = train_on_store(model, PhotoStore("runs/own-data"))
    >>> round(result.accuracy, 2), result.method
    (0.95, 'cross-validation (5 folds)')
    >>> predict_bytes(result.model, open("new.jpg", "rb").read(), "new.jpg")
    {'mugs': 0.97, 'plants': 0.03}
"""
from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tlkit.backbones import Backbone
from tlkit.checkpoint import load_head
from tlkit.data import ImageDataset, transforms_for
from tlkit.evaluate import binomial_interval
from tlkit.explain import classify_image
from tlkit.feature_cache import body_fingerprint
from tlkit.features import Features, extract_features, train_head
from tlkit.own_data import PhotoStore, decode_upload
from tlkit.storage import atomic_save, safe_load

MIN_PER_CLASS = 3  # below this nothing can be judged, not even by cross-validation
HOLDOUT_MIN = 50  # from this many per class, a held-back validation part; fewer: cross-validation, which
# judges every photo (a 20% holdout of 20 photos per class would judge only 8, too few to mean much)
MIN_VAL_PER_CLASS = 2
RELIABLE = 10  # photos per class suggested in the messages
JUDGE_MIN = 20  # fewer judged photos than this: "too little data to judge"
IMBALANCE_RATIO = 3.0
CHUNK = 16  # photos per extraction step: the stop button and the progress bar act between steps


class NotEnoughPhotosError(ValueError):
    """Too few classes or photos to train and judge a classifier."""


@dataclass
class OwnDataResult:
    """A trained model and how well it did."""

    model: Backbone
    classes: list[str]
    accuracy: float
    interval: tuple[float, float]  # 95% Wilson interval of the accuracy
    judged: int  # photos the accuracy was measured on
    method: str  # "holdout" or "cross-validation (k folds)"
    confusion: list[list[int]]  # [true][predicted]
    mistakes: list[tuple[str, str, str]]  # (file, true class, predicted class)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    new_photos: int = 0  # photos whose features had to be computed (the rest came from the bank)


def check_enough(counts: dict[str, int]) -> None:
    """NotEnoughPhotosError saying what to add, unless there are 2+ classes with ``MIN_PER_CLASS``+ photos.

    Example:
        >>> check_enough({"mugs": 1, "plants": 12})
        NotEnoughPhotosError: Too few photos in mugs (1): each class needs at least 3 (10 or more for a ...
    """
    if len(counts) < 2:
        raise NotEnoughPhotosError(f"A classifier needs at least 2 classes; there {'is' if len(counts) == 1 else 'are'} "
                                   f"{len(counts)} ({', '.join(counts) or 'none'}). Add a class.")
    low = {c: n for c, n in counts.items() if n < MIN_PER_CLASS}
    if low:
        which = ", ".join(f"{c} ({n})" for c, n in low.items())
        raise NotEnoughPhotosError(f"Too few photos in {which}: each class needs at least {MIN_PER_CLASS} "
                                   f"({RELIABLE} or more for a reliable accuracy). Add photos to {', '.join(low)}.")


def split_indices(targets: list[int], val_fraction: float = 0.2, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Seeded, stratified ``[(train_idx, val_idx), ...]``: one holdout split, or k cross-validation folds.

    Holdout when every class has ``HOLDOUT_MIN``+ photos: ``max(MIN_VAL_PER_CLASS,
    round(val_fraction * n))`` of each class go to validation. Otherwise k =
    min(5, smallest class) folds, each class spread evenly over them.

    Example:
        >>> [len(v) for _, v in split_indices([0] * 50 + [1] * 50)]
        [20]
        >>> [len(v) for _, v in split_indices([0] * 12 + [1] * 12)]
        [6, 6, 4, 4, 4]
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (e.g. 0.2), got {val_fraction!r}.")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    for idx in by_class.values():
        rng.shuffle(idx)
    smallest = min(len(v) for v in by_class.values())
    if smallest >= HOLDOUT_MIN:
        val = sorted(i for idx in by_class.values()
                     for i in idx[:max(MIN_VAL_PER_CLASS, round(val_fraction * len(idx)))])
        chosen = set(val)
        return [([i for i in range(len(targets)) if i not in chosen], val)]
    k = max(2, min(5, smallest))
    fold_of = {i: pos % k for idx in by_class.values() for pos, i in enumerate(idx)}
    return [([i for i in range(len(targets)) if fold_of[i] != f], [i for i in range(len(targets)) if fold_of[i] == f])
            for f in range(k)]


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of an accuracy ``correct / n`` (sensible for small n and 0 or 100%).

    Example:
        >>> tuple(round(v, 2) for v in wilson_interval(9, 10))
        (0.6, 0.98)
    """
    if n == 0:
        return 0.0, 1.0
    return binomial_interval(correct / n, n, z)


class FeatureBank:
    """Pooled features per photo for one backbone and transform, in memory and on disk.

    Stored photos never change (their names carry a content hash), so a
    photo's name and size identify its features.

    Example:
        >>> bank = FeatureBank(model, transforms_for(model), "runs/own-data/.features")
        >>> bank.features(["runs/own-data/mugs/a-1f2e3d4c.jpg"]).shape
        torch.Size([1, 1280])
    """

    def __init__(self, model: Backbone, transform: Callable, folder: str | Path):
        self.model, self.transform = model, transform
        recipe = hashlib.sha1(f"{body_fingerprint(model)}|{transform!r}".encode()).hexdigest()[:16]
        tag = f"{model.name}-{recipe}"
        self.path = Path(folder) / f"{tag}.pt"
        self._rows: dict[str, torch.Tensor] = {}
        if self.path.exists():
            try:
                blob = safe_load(self.path, "feature bank")
                self._rows = dict(zip(blob["keys"], blob["features"]))
            except Exception:  # noqa: BLE001 - a damaged bank is rebuilt from the photos
                self._rows = {}

    @staticmethod
    def _key(path: str) -> str:
        p = Path(path)
        return f"{p.parent.name}/{p.name}|{p.stat().st_size}"

    def missing(self, files: list[str]) -> list[str]:
        return [f for f in files if self._key(f) not in self._rows]

    def features(self, files: list[str], stop: threading.Event | None = None,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """``(N, F)`` features of ``files``, computing only the missing ones (in chunks of ``CHUNK``)."""
        todo = self.missing(files)
        for start in range(0, len(todo), CHUNK):
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped while computing features; the model was not changed")
            chunk = todo[start:start + CHUNK]
            ds = ImageDataset(chunk, [0] * len(chunk), ["photo"], self.transform, name="own photos")
            got = extract_features(self.model, ds, cache=False, progress=False, num_workers=0)
            for f, row in zip(got.files, got.features):
                self._rows[self._key(f)] = row.clone()
            if progress is not None:
                progress(min(start + CHUNK, len(todo)), len(todo))
        unreadable = [f for f in todo if self._key(f) not in self._rows]
        if unreadable:  # put there by hand and broken: the store itself only keeps photos that open
            raise ValueError(f"{len(unreadable)} photo(s) in the folder cannot be read, e.g. {unreadable[0]}. "
                             "Remove them (or replace them with JPEG or PNG copies) and train again.")
        if todo:
            keys = sorted(self._rows)
            atomic_save({"keys": keys, "features": torch.stack([self._rows[k] for k in keys])}, self.path)
        return torch.stack([self._rows[self._key(f)] for f in files])


def train_on_store(model: Backbone, store: PhotoStore, image_size: int | None = None, epochs: int = 50,
                   lr: float = 1e-2, val_fraction: float = 0.2, seed: int = 0, stop: threading.Event | None = None,
                   progress: Callable[[int, int], None] | None = None, bank: FeatureBank | None = None) -> OwnDataResult:
    """Trains ``model``'s head (in place, body frozen) on the store's photos and judges it.

    Raises NotEnoughPhotosError (what to add) before any work when the data are too few, and
    InterruptedError, with the model unchanged, when ``stop`` is set.

    Example:
        >>> result = train_on_store(load_backbone("efficientnet_lite0"), PhotoStore("runs/own-data"))
        >>> result.accuracy, result.interval
        (0.95, (0.76, 0.99))
    """
    start = time.perf_counter()
    check_enough(store.counts())
    ds = store.dataset()
    bank = bank or FeatureBank(model, transforms_for(model, image_size=image_size), store.folder / ".features")
    new = len(bank.missing(ds.files))
    x = bank.features(ds.files, stop, progress)  # (N, F)
    y = torch.tensor(ds.targets)
    feats = Features(x, y, ds.files, ds.classes)
    folds = split_indices(ds.targets, val_fraction, seed)
    pred = torch.full_like(y, -1)
    head = None
    for tr, va in folds:
        _check_stop(stop)
        head, _ = train_head(_rows(feats, tr), _rows(feats, va) if len(folds) == 1 else None,
                                epochs=epochs, lr=lr, seed=seed, stop=stop)
        with torch.no_grad():
            pred[va] = head(x[va]).argmax(1)
    if len(folds) > 1:  # every photo judged once; the model keeps a head that saw all of them
        head, _ = train_head(feats, None, epochs=epochs, lr=lr, seed=seed, stop=stop)
    _check_stop(stop)  # a stopped run changes nothing: the model keeps its previous head
    model.replace_head(len(ds.classes), class_names=ds.classes)
    load_head(model, head)
    if image_size:
        model.input_size = image_size
    model.eval()
    result = _judge(model, ds, y, pred, folds)
    result.seconds, result.new_photos = time.perf_counter() - start, new
    return result


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise InterruptedError("stopped during training; the model was not changed")


def _rows(f: Features, idx: list[int]) -> Features:
    return Features(f.features[idx], f.labels[idx], [f.files[i] for i in idx], f.classes)


def _judge(model: Backbone, ds: ImageDataset, y: torch.Tensor, pred: torch.Tensor,
           folds: list[tuple[list[int], list[int]]]) -> OwnDataResult:
    """Accuracy, interval, confusion, mistakes and notes from the out-of-sample predictions ``pred``."""
    judged = pred >= 0
    n, correct = int(judged.sum()), int((pred[judged] == y[judged]).sum())
    c = len(ds.classes)
    confusion = [[int(((y == t) & (pred == p)).sum()) for p in range(c)] for t in range(c)]
    mistakes = [(ds.files[i], ds.classes[int(y[i])], ds.classes[int(pred[i])])
                for i in range(len(y)) if judged[i] and pred[i] != y[i]]
    low, high = wilson_interval(correct, n)
    method = "holdout" if len(folds) == 1 else f"cross-validation ({len(folds)} folds)"
    return OwnDataResult(model, list(ds.classes), correct / max(n, 1), (low, high), n, method, confusion,
                         mistakes, notes=_notes(ds, n, low, high))


def _notes(ds: ImageDataset, judged: int, low: float, high: float) -> list[str]:
    counts = ds.class_counts()
    notes = []
    if judged < JUDGE_MIN:
        notes.append(f"Too little data to judge: the accuracy was measured on only {judged} photos, so the true "
                     f"value could be anywhere from {low:.0%} to {high:.0%}. Add photos ({RELIABLE}+ per "
                     "class) for a firmer number.")
    big, small = max(counts, key=counts.get), min(counts, key=counts.get)
    if counts[small] and counts[big] / counts[small] >= IMBALANCE_RATIO:
        notes.append(f"Unbalanced classes: {big} has {counts[big]} photos, {small} only {counts[small]}. "
                     f"The model will lean towards {big}; add photos to {small}.")
    return notes


def predict_bytes(model: nn.Module, data: bytes, name: str = "upload") -> dict[str, float]:
    """``{class: probability}`` for one photo given as bytes (ImageReadError naming ``name`` if unusable).

    Example:
        >>> predict_bytes(model, open("mug.jpg", "rb").read(), "mug.jpg")
        {'mugs': 0.97, 'plants': 0.03}
    """
    image = decode_upload(data, name)
    return dict(classify_image(model, image, topk=10**6))
