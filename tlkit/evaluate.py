"""How good is the model, and where does it look? Predictions, errors and Grad-CAM.

* ``predict(model, dataset)`` runs the whole network once over a dataset and
  returns :class:`Predictions` (probabilities, labels, files).
  ``predictions_from_features(head, feats)`` does the same from cached
  features, so evaluating a feature-extraction model never reruns the body.
* ``confusion_matrix`` and ``top_losses`` say which mistakes it makes.
* ``classify_image`` names the top classes of one photo (ImageNet names for
  the original 1000-way head).
* ``grad_cam`` shows which pixels pushed a class score up.

Example:
    >>> preds = predict(model, val)
    >>> preds.accuracy, confusion_matrix(preds.labels, preds.preds, 2)
    (0.975, tensor([[489, 11], [14, 486]]))
    >>> top_losses(preds, k=1)[0]["file"]
    '.../cats/cat.2090.jpg'
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image
from torch import nn

from tlkit.data import (DatasetLayoutError, ImageDataset, make_loader, open_image, scan_class_folders,
                        transforms_for, warn_skipped)
from tlkit.device import autocast, default_batch_size, pick_device, to_device
from tlkit.features import Features
from tlkit.fold import evaluating

log = logging.getLogger(__name__)

# Modules that end the spatial part of a group (MobileNetV3's and ConvNeXt's last
# group pools to 1x1, normalises and flattens inside the body; see backbones.py).
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)


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


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, in the index order of every ImageNet head.

    They ship inside torchvision (no download). EfficientNet-Lite0's output
    uses the same order (index 281 is "tabby", 151 "Chihuahua").

    Example:
        >>> imagenet_classes()[281]
        'tabby'
    """
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_names_of(model: nn.Module) -> list[str]:
    """The model's class names: its own, ImageNet's for an original head, else ``class 0..``.

    Example:
        >>> class_names_of(load_backbone("resnet18", pretrained=False))[151]
        'Chihuahua'
    """
    n = model.num_classes
    names = getattr(model, "class_names", None)
    if names and len(names) == n:
        return list(names)
    if getattr(model, "head_config", None) is None and n == 1000:
        return imagenet_classes()
    return [f"class {i}" for i in range(n)]


@torch.no_grad()  # not inference_mode: .to(memory_format) in it would turn the weights into inference tensors
def predict(model: nn.Module, dataset: ImageDataset, batch_size: int | None = None,
            device: str | torch.device | None = None, progress: bool = False,
            num_workers: int | None = None) -> Predictions:
    """Probabilities of the whole network for every readable image of ``dataset``.

    Eval mode, no gradients, channels_last, BatchNorm folded into the
    convolutions (:mod:`tlkit.fold`, exact) and autocast on CUDA; fp32 on a
    CPU, so the numbers match the trainer's validation. The model's
    train/eval mode is restored afterwards. ``batch_size`` None: 16 on a CPU,
    128 on a GPU. A dataset without a transform gets ``transforms_for(model)``.
    Unreadable images are skipped with one warning.

    Example:
        >>> preds = predict(model, val)
        >>> preds.probs.shape, preds.accuracy
        (torch.Size([1000, 2]), 0.975)
    """
    if dataset.transform is None:
        dataset = dataset.with_transform(transforms_for(model))
    device = pick_device(device)
    with evaluating(model, device):
        probs, labels, kept = _predict_pass(model, dataset, batch_size or default_batch_size(device), device,
                                            progress, num_workers)
    n_classes = model.num_classes
    return Predictions(torch.cat(probs) if probs else torch.empty(0, n_classes),
                       torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
                       kept, list(dataset.classes))


def _predict_pass(model, dataset, batch_size, device, progress, num_workers):
    from tqdm.auto import tqdm

    probs, labels, kept, skipped, pos = [], [], [], [], 0
    bar = tqdm(total=len(dataset), desc=f"predict {dataset.name}", unit="img", disable=not progress)
    for x, y, dropped in make_loader(dataset, batch_size=batch_size, num_workers=num_workers,
                                     pin_memory=device.type == "cuda"):
        n_in = len(y) + len(dropped)
        gone = set(dropped)
        kept += [f for f in dataset.files[pos:pos + n_in] if f not in gone]  # unshuffled: file order
        pos, skipped = pos + n_in, skipped + list(dropped)
        if len(y):
            with autocast(device):
                logits = model(to_device(x, device))  # (B, C)
            probs.append(logits.float().softmax(1).cpu())
            labels.append(y)
        bar.update(n_in)
    bar.close()
    warn_skipped(skipped, where=f" while predicting {dataset.name}")
    return probs, labels, kept


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
    was_training = head.training
    device = next(head.parameters()).device
    logits = head.eval()(feats.features.to(device)).float().cpu()  # (N, C)
    head.train(was_training)
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


def _as_input(model: nn.Module, image, transform: Callable | None) -> torch.Tensor:
    """Path, PIL image or tensor -> one preprocessed batch ``(1, 3, H, W)``."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        image = (transform or transforms_for(model))(image.convert("RGB"))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a path, a PIL image or a tensor, got {type(image).__name__}.")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"Expected one image (3, H, W) or (1, 3, H, W), got shape {tuple(image.shape)}.")
    return image


@torch.no_grad()
def classify_image(model: nn.Module, image, transform: Callable | None = None,
                   topk: int = 5) -> list[tuple[str, float]]:
    """The ``topk`` classes of one photo with their probabilities, best first.

    Example:
        >>> classify_image(load_backbone("efficientnet_lite0"), "cat.4006.jpg", topk=2)
        [('tabby', 0.70), ('Egyptian cat', 0.15)]
    """
    x = _as_input(model, image, transform)
    param = next(model.parameters())
    was_training = model.training
    probs = model.eval()(x.to(param.device, param.dtype)).float().softmax(1)[0].cpu()  # (C,)
    model.train(was_training)
    names = class_names_of(model)
    values, idx = probs.topk(min(topk, len(probs)))
    return [(names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def spatial_module(model: nn.Module, group: str) -> nn.Module | None:
    """The module whose output is ``group``'s last spatial map ``(B, C, h, w)``.

    Usually the group itself. MobileNetV3's and ConvNeXt's last group also
    pools and flattens (tlkit keeps their pretrained pre-classifier layers in
    the body), so there it is the sub-module just before the pooling.
    None when the group has no spatial output at all.

    Example:
        >>> spatial_module(load_backbone("convnext_tiny", pretrained=False), "stage4")
        Sequential(...)   # the ConvNeXt blocks, before avgpool
    """
    if group not in model.groups or group == "head":
        body = [g for g in model.group_names if g != "head"]
        raise KeyError(f"Unknown group {group!r}. Choose one of: {', '.join(body)}.")
    module = model.groups[group]
    if isinstance(module, nn.Sequential):
        for i, child in enumerate(module):
            if isinstance(child, _POOLING):
                return module[i - 1] if i > 0 else None
    return module


@contextlib.contextmanager
def capture_activations(model: nn.Module, groups: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Records each group's spatial output during a forward pass (hooks removed on exit).

    The hook hands a copy downstream, so a later in-place op cannot change
    (or break the gradient of) the tensor recorded here.

    Example:
        >>> with capture_activations(model, ["stem", "stage4"]) as acts:
        ...     model(x)
        >>> acts["stem"].shape
        torch.Size([1, 32, 112, 112])
    """
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                acts[name] = output
                return output.clone()
            return None
        return hook

    try:
        for name in groups:
            module = spatial_module(model, name)
            if module is not None:
                handles.append(module.register_forward_hook(hook_for(name)))
        yield acts
    finally:
        for h in handles:
            h.remove()


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | str | None = None,
             group: str | None = None) -> torch.Tensor:
    """Grad-CAM heatmap ``(H, W)`` in [0, 1]: where the image raised the ``target`` score.

    The activation ``A`` (C, h, w) of ``group`` (default: the last group with a
    spatial map) is weighted by the mean gradient of the target logit per
    channel, summed, passed through ReLU, resized to the input and scaled to
    [0, 1] (all zeros if nothing raised the score).

    Works on frozen models: gradients flow from the input, not the weights,
    and parameters' ``requires_grad`` and ``.grad`` are left untouched. Every
    module's train/eval mode is restored, and the hooks are removed.

    Example:
        >>> x = transforms_for(model)(open_image("cat.jpg"))
        >>> heat = grad_cam(model, x)            # target: the predicted class
        >>> heat.shape, float(heat.max())
        (torch.Size([224, 224]), 1.0)
    """
    param = next(model.parameters())
    x = _as_input(model, x, None)
    body = [g for g in model.group_names if g != "head"]
    groups = body if group is None else [group]
    modes = {m: m.training for m in model.modules()}
    model.eval()  # BN running stats, no dropout: explain the model as it predicts
    try:
        with torch.inference_mode(False), torch.enable_grad(), capture_activations(model, groups) as acts:
            x = x.detach().clone().to(param.device, param.dtype).requires_grad_(True)
            logits = model(x)  # (1, C)
        if not acts:
            raise ValueError(f"Group {group!r} has no spatial (B, C, h, w) output; choose an earlier one.")
        name = [g for g in groups if g in acts][-1]
        index = _target_index(model, logits, target)
        with torch.inference_mode(False):
            grads = torch.autograd.grad(logits[0, index], acts[name])[0][0]  # (C, h, w)
            act = acts[name].detach()[0]
            cam = torch.relu((grads.mean(dim=(1, 2))[:, None, None] * act).sum(0))  # (h, w)
            cam = nn.functional.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear",
                                            align_corners=False)[0, 0]
    finally:
        for m, mode in modes.items():
            m.training = mode
    log.debug("grad_cam: group %s, target %d", name, index)
    lo, hi = cam.min(), cam.max()
    return ((cam - lo) / (hi - lo) if hi > lo else torch.zeros_like(cam)).detach().float().cpu()


def _target_index(model: nn.Module, logits: torch.Tensor, target: int | str | None) -> int:
    n = logits.shape[1]
    if target is None:
        return int(logits.argmax(1))
    if isinstance(target, str):
        names = class_names_of(model)
        if target not in names:
            raise ValueError(f"Unknown class {target!r}. The model's classes start with: {names[:10]}.")
        return names.index(target)
    if not 0 <= int(target) < n:
        raise ValueError(f"target must be a class index in 0..{n - 1}, got {target}.")
    return int(target)


def evaluate_split(model: nn.Module, split_dir: str | os.PathLike, batch_size: int = 64,
                   device: str | torch.device | None = None, progress: bool = False) -> dict:
    """Accuracy of a trained model on a folder of class folders (what ``tlkit evaluate`` prints).

    Returns ``{"accuracy", "n", "per_class": {class: accuracy}, "confusion":
    [[...]], "classes"}``, all JSON-ready. The folder's classes must be the
    model's ``class_names``.

    Example:
        >>> evaluate_split(load_model("runs/mine/model.pt"), "data/val")["accuracy"]
        0.975
    """
    classes = getattr(model, "class_names", None)
    if not classes:
        raise ValueError("The model has no class_names, so its outputs cannot be matched to folders. "
                         "Give them when replacing the head: model.replace_head(2, class_names=[...]).")
    root = Path(split_dir)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder. Expected {root}/<class name>/<images>.")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if sorted(classes) != found:
        raise DatasetLayoutError(f"The class folders in {root} are {found}, but the model was trained on "
                                 f"{list(classes)}. Point it at a folder with exactly those class folders.")
    preds = predict(model, scan_class_folders(root, classes=list(classes)), batch_size=batch_size,
                    device=device, progress=progress)
    cm = confusion_matrix(preds.labels, preds.preds, len(classes))
    per_class = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan")
                 for i, c in enumerate(classes)}
    return {"accuracy": preds.accuracy, "n": len(preds), "per_class": per_class,
            "confusion": cm.tolist(), "classes": list(classes)}
