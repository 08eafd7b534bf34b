"""How good is the model on a dataset? Predictions, mistakes and per-class accuracy.

* ``predict(model, dataset)`` runs the whole network once over a dataset and
  returns :class:`Predictions` (probabilities, labels, files).
  ``predictions_from_features(head, feats)`` does the same from cached
  features, so evaluating a feature-extraction model never reruns the body.
* ``confusion_matrix`` and ``top_losses`` say which mistakes it makes.
* ``evaluate_split`` is what ``tlkit evaluate`` prints for a folder.

One photo at a time (``classify_image``, ``grad_cam``, ``capture_activations``)
is :mod:`tlkit.explain`.

Example:
    >>> preds = predict(model, val)
    >>> preds.accuracy, confusion_matrix(preds.labels, preds.preds, 2)
    (0.975, tensor([[489, 11], [14, 486]]))
    >>> top_losses(preds, k=1)[0]["file"]
    '.../cats/cat.2090.jpg'
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlkit.data import ImageDataset, class_folders, scan_class_folders, transforms_for
from tlkit.device import default_batch_size, pick_device
from tlkit.errors import DatasetLayoutError
from tlkit.boundary.cache import boundary_for
from tlkit.engine import resolve_engine
from tlkit.engine_choice import plan_engine
from tlkit.feature_cache import body_fingerprint, default_cache_dir
from tlkit.features import Features
from tlkit.inference import run_inference
from tlkit.modes import eval_mode


@dataclass
class Predictions:
    """Class probabilities ``(N, C)``, true labels ``(N,)`` and the files they belong to."""

    probs: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def preds(self) -> torch.Tensor:
        """Predicted class index per image, ``(N,)`` long."""
        return self.probs.argmax(1) if len(self.probs) else torch.empty(0, dtype=torch.long)

    @property
    def accuracy(self) -> float:
        """Fraction of images whose top class is the true one (NaN when there are none)."""
        return float((self.preds == self.labels).float().mean()) if len(self) else float("nan")


def binomial_interval(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% for ``z=1.96``) of an accuracy measured on ``n`` images.

    Example:
        >>> [round(v, 3) for v in binomial_interval(0.9, 400)]
        [0.867, 0.926]
    """
    if n < 1:
        raise ValueError(f"n must be the number of images the accuracy was measured on (>= 1), got {n}.")
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"acc must be a fraction between 0 and 1, got {acc}.")
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(acc_a: float, acc_b: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of ``acc_a - acc_b``, both measured on ``n`` images (normal approximation).

    Zero inside the interval means a tie: this validation set cannot tell the two apart.

    Example:
        >>> [round(v, 3) for v in difference_interval(0.925, 0.855, 400)]
        [0.027, 0.113]
    """
    if n < 1:
        raise ValueError(f"n must be the number of images the accuracies were measured on (>= 1), got {n}.")
    se = math.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / n)
    diff = acc_a - acc_b
    return diff - z * se, diff + z * se


def compare_accuracies(acc_a: float, acc_b: float, n: int) -> str:
    """``"a"``, ``"b"`` or ``"tie"``: who is ahead by more than the 95% interval on ``n`` images.

    Example:
        >>> compare_accuracies(0.985, 0.98, 1000)
        'tie'
    """
    low, high = difference_interval(acc_a, acc_b, n)
    return "a" if low > 0 else "b" if high < 0 else "tie"


def predict(model: nn.Module, dataset: ImageDataset, batch_size: int | None = None,
            device: str | torch.device | None = None, progress: bool = False,
            num_workers: int | None = None, engine: str = "auto") -> Predictions:
    """Probabilities of the whole network for every readable image of ``dataset``.

    Eval mode, no gradients, channels_last, BatchNorm folded into the
    convolutions (:mod:`tlkit.fold`, exact) and autocast on CUDA; fp32 on a
    CPU, so the numbers match the trainer's validation
    (:func:`tlkit.inference.run_inference`). The model's train/eval modes are
    restored afterwards. ``batch_size`` None: 16 on a CPU, 128 on a GPU. A
    dataset without a transform gets ``transforms_for(model)``. Unreadable
    images are skipped with one warning. ``engine``: for a model whose
    body is frozen (only the head trains), ``"auto"`` runs the body with ONNX
    Runtime on a CPU where it matches PyTorch and is faster, and the head in
    PyTorch (:mod:`tlkit.engine`); ``"torch"`` keeps PyTorch throughout.

    Example:
        >>> preds = predict(model, val)
        >>> preds.probs.shape, preds.accuracy
        (torch.Size([1000, 2]), 0.975)
    """
    if dataset.transform is None:
        dataset = dataset.with_transform(transforms_for(model))
    device = pick_device(device)
    precision = "auto" if device.type == "cuda" else "fp32"  # AMP on CUDA only, as the trainer
    forward = _frozen_body_forward(model, dataset, device, engine) or model
    probs, labels, kept = run_inference(model, dataset, lambda x: forward(x).float().softmax(1), model.num_classes,
                                        batch_size or default_batch_size(device), device, precision, progress,
                                        num_workers, desc="predicting",
                                        engine="torch" if forward is model else "onnxruntime")
    return Predictions(probs, labels, kept, list(dataset.classes))


def _frozen_body_forward(model: nn.Module, dataset: ImageDataset, device: torch.device, engine: str):
    """``x -> head(ORT body(x))`` when the body is frozen and ONNX Runtime is chosen for it, else None."""
    if not hasattr(model, "groups") or boundary_for(model) != "head":
        resolve_engine(engine, device)  # still rejects an unknown engine
        return None
    _, runner = plan_engine(engine, model, "head", dataset, body_fingerprint(model), "fp32", device,
                            default_cache_dir())
    return None if runner is None else (lambda x: model.head(runner(x)))


@torch.no_grad()
def predictions_from_features(head: nn.Module, feats: Features) -> Predictions:
    """Predictions of a head on cached features (no backbone run).

    ``head`` is a head module, or a Backbone whose ``head`` is used.

    Example:
        >>> head, _ = train_head(train_feats, val_feats)
        >>> predictions_from_features(head, val_feats).accuracy
        0.975
    """
    head = head.head if hasattr(head, "groups") else head
    device = next(head.parameters()).device
    with eval_mode(head):
        logits = head(feats.features.to(device)).float().cpu()  # (N, C)
    if logits.shape[1] != len(feats.classes):
        raise ValueError(f"The head has {logits.shape[1]} outputs but the features have "
                         f"{len(feats.classes)} classes ({feats.classes}).")
    return Predictions(logits.softmax(1), feats.labels.clone(), list(feats.files), list(feats.classes))


def confusion_matrix(labels, preds, num_classes: int) -> torch.Tensor:
    """Counts ``(C, C)``: row = true class, column = predicted class.

    Example:
        >>> confusion_matrix([0, 0, 1], [0, 1, 1], 2)
        tensor([[1, 1],
                [0, 1]])
    """
    labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
    preds = torch.as_tensor(preds, dtype=torch.long).flatten().cpu()
    if labels.shape != preds.shape:
        raise ValueError(f"labels and preds differ in length ({len(labels)} vs {len(preds)}).")
    for name, t in (("labels", labels), ("preds", preds)):
        if len(t) and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1} for num_classes={num_classes}; "
                             f"got values {int(t.min())}..{int(t.max())}.")
    counts = torch.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def top_losses(predictions: Predictions, k: int = 8) -> list[dict]:
    """The ``k`` images with the highest loss: the most confident mistakes come first.

    Each row has ``index`` (into ``predictions``), ``file``, ``label`` and
    ``pred`` (class names), ``prob`` (probability of the predicted class) and
    ``loss`` (cross-entropy, ``-log p(true class)``).

    Example:
        >>> top_losses(preds, k=1)
        [{'index': 90, 'file': '.../cat.2090.jpg', 'label': 'cats', 'pred': 'dogs', 'prob': 0.99, 'loss': 4.7}]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    p = predictions.probs
    p_true = p.gather(1, predictions.labels.view(-1, 1)).squeeze(1)  # (N,)
    losses = -p_true.clamp_min(1e-12).log()
    order = torch.argsort(losses, descending=True, stable=True)[:k]
    preds, names = predictions.preds, predictions.classes
    return [{"index": int(i), "file": predictions.files[i], "label": names[int(predictions.labels[i])],
             "pred": names[int(preds[i])], "prob": float(p[i, preds[i]]), "loss": float(losses[i])}
            for i in order.tolist()]


def evaluate_split(model: nn.Module, split_dir: str | os.PathLike, batch_size: int = 64,
                   device: str | torch.device | None = None, progress: bool = False) -> dict:
    """Accuracy of a trained model on a folder of class folders (what ``tlkit evaluate`` prints).

    For a text model ``split_dir`` is a ``.tsv``/``.csv`` file (columns ``sentence`` or
    ``text``, and ``label``), a folder holding ``val.tsv``/``dev.tsv``, or ``<class>/*.txt``
    (:func:`tlkit.text.load_text_split`).

    Returns ``{"accuracy", "n", "per_class": {class: accuracy}, "confusion":
    [[...]], "classes"}``, all JSON-ready. The folder's classes must be the
    model's ``class_names``.

    Example:
        >>> evaluate_split(load_model("runs/mine/model.pt"), "data/val")["accuracy"]
        0.975
    """
    preds = predict(model, split_dataset(model, split_dir), batch_size=batch_size, device=device, progress=progress)
    return split_report(preds)


def split_dataset(model: nn.Module, split_dir: str | os.PathLike) -> ImageDataset:
    """The images of ``split_dir/<class>/``, checked against the model's ``class_names`` (no transform).

    For a text model, the sentences of a ``.tsv``/``.csv`` file or folder (:func:`tlkit.text.load_text_split`).

    Example:
        >>> split_dataset(model, "data/val").classes
        ['cats', 'dogs']
    """
    classes = getattr(model, "class_names", None)
    if not classes:
        raise ValueError("The model has no class_names, so its outputs cannot be matched to folders. "
                         "Give them when replacing the head: model.replace_head(2, class_names=[...]).")
    if getattr(model, "input_kind", "image") == "text":  # a .tsv/.csv, or a folder of <class>/*.txt
        from tlkit.text.folders import load_text_split

        return load_text_split(split_dir, classes=list(classes))
    root = Path(split_dir)
    found = class_folders(root)
    if sorted(classes) != found:
        raise DatasetLayoutError(f"The class folders in {root} are {found}, but the model was trained on "
                                 f"{list(classes)}. Point it at a folder with exactly those class folders.")
    return scan_class_folders(root, classes=list(classes))


def split_report(preds: Predictions) -> dict:
    """``{"accuracy", "n", "per_class", "confusion", "classes"}`` of predictions, JSON-ready."""
    classes = preds.classes
    cm = confusion_matrix(preds.labels, preds.preds, len(classes))
    per_class = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan")
                 for i, c in enumerate(classes)}
    return {"accuracy": preds.accuracy, "n": len(preds), "per_class": per_class,
            "confusion": cm.tolist(), "classes": list(classes)}
