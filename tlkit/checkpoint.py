"""Saving and loading trained models safely.

A model file is a plain dict of tensors, strings and numbers, so it loads
with ``torch.load(weights_only=True)``: a file that hides code in a pickle is
refused instead of run. Writes go to a temporary file that is renamed only
when complete, so a crash mid-write never leaves a half file under the real
name.

Example:
    >>> save_model(model, "runs/demo/model.pt", val_accuracy=0.98)
    >>> model = load_model("runs/demo/model.pt")
    >>> model.class_names
    ['cats', 'dogs']
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import torch
from torch import nn

from tlkit.backbones import Backbone, is_text_backbone, list_backbones, load_backbone
from tlkit.errors import CheckpointError
from tlkit.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from tlkit.storage import atomic_save, safe_load

FORMAT = "tlkit-model/1"


def non_finite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors in ``state`` holding NaN or inf (a diverged training run).

    Example:
        >>> non_finite_tensors(model.state_dict())
        []
    """
    return [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


def save_model(model: Backbone, path: str | os.PathLike, image_size: int | None = None, **extra) -> Path:
    """Writes the model, its backbone name, class names and image size to ``path``.

    ``extra`` values (numbers, strings, lists, dicts of those) are stored too.
    A text model also stores ``text = {"tokenizer": name, "max_length": tokens}``
    (``image_size`` then means tokens); :func:`load_model` rebuilds its tokenizer from them.

    Example:
        >>> save_model(model, "model.pt", image_size=224)
    """
    if not isinstance(model, Backbone):
        raise TypeError(f"save_model needs a tlkit Backbone, got {type(model).__name__}.")
    bad = non_finite_tensors(model.state_dict())
    if bad:
        raise ValueError(f"Not saving {path}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}); "
                         "training diverged. Train again with a lower learning rate.")
    blob = {
        "format": FORMAT,
        "backbone": model.name,
        "class_names": list(model.class_names or []),
        "num_classes": model.num_classes,
        "image_size": int(image_size or model.input_size),
        "head_config": model.head_config,
        "mean": list(model.mean),
        "std": list(model.std),
        "frozen_groups": sorted(model.frozen_groups),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    if model.input_kind == "text":  # what rebuilds the tokenizer: names and numbers, never a pickled object
        blob["text"] = {"tokenizer": model.name, "max_length": int(image_size or model.input_size)}
    return atomic_save(blob, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a tlkit file with ``weights_only=True``; CheckpointError on anything wrong."""
    path = Path(path)
    _check_is_file(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): saving or copying it did not finish. "
                              "Save or copy the model again.")
    blob = safe_load(path, "model file")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tlkit model file (expected format {FORMAT!r}). "
                              "Train one with `python -m tlkit train` or save it with tlkit.save_model.")
    _check_fields(blob, path)
    return blob


def _check_is_file(path: Path) -> None:
    """CheckpointError unless ``path`` is a regular file: a folder, a FIFO, a symlink loop or a
    dangling link each get their own message (a FIFO would block ``torch.load`` forever)."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"{path} is a symbolic link loop (it points back at itself). Point it at "
                                  "a real model file, or pass the model.pt itself.") from None
        if path.is_symlink():
            raise CheckpointError(f"{path} is a broken symbolic link to {os.readlink(path)}, which does not "
                                  "exist. Pass the model.pt itself.") from None
        if exc.errno == errno.EACCES:
            raise CheckpointError(f"{path} cannot be read (permission denied). Fix its permissions.") from None
        raise CheckpointError(f"Model file {path} does not exist.") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path} is a folder, not a model file. Pass the model.pt inside it "
                              f"(e.g. {path / 'model.pt'}).")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "not a regular file (a device or socket)"
        raise CheckpointError(f"{path} is {kind}, not a model file. Pass the model.pt written by "
                              "`python -m tlkit train` or tlkit.save_model.")


def _check_fields(blob: dict, path: Path) -> None:
    """Checks the types load_model relies on, without printing any value (a hand-made file
    can hold a nested list whose repr would never finish)."""
    bad = [k for k, t in (("backbone", str), ("class_names", list), ("image_size", int), ("state_dict", dict))
           if not isinstance(blob.get(k), t)]
    if "class_names" not in bad and not all(isinstance(c, str) for c in blob["class_names"]):
        bad.append("class_names")
    if "state_dict" not in bad and not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in blob["state_dict"].items()):
        bad.append("state_dict")
    cfg = blob.get("head_config")
    if cfg is not None and not (isinstance(cfg, dict) and isinstance(cfg.get("num_classes"), int)
                                and isinstance(cfg.get("hidden"), (list, tuple))
                                and all(isinstance(h, int) for h in cfg["hidden"])
                                and isinstance(cfg.get("dropout"), (int, float))):
        bad.append("head_config")
    if bad:
        raise CheckpointError(f"{path} is a damaged or hand-made model file: {', '.join(bad)} "
                              "has the wrong type. Save the model again with tlkit.save_model.")
    text = blob.get("text")
    if text is not None:  # a text model: image_size holds max_length (tokens)
        if not (isinstance(text, dict) and text.get("tokenizer") == blob["backbone"]
                and isinstance(text.get("max_length"), int) and 4 <= text["max_length"] <= 512):
            raise CheckpointError(f"{path} is a damaged or hand-made text model file: its 'text' settings "
                                  "(tokenizer name, max_length 4..512) are wrong. Save the model again.")
    elif not MIN_IMAGE_SIZE <= blob["image_size"] <= MAX_IMAGE_SIZE:
        raise CheckpointError(f"{path} declares image_size {blob['image_size']}, outside the valid range "
                              f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels: the file is damaged or hand-made. "
                              "Save the model again with tlkit.save_model.")
    nan = non_finite_tensors(blob["state_dict"])
    if nan:
        raise CheckpointError(f"{path} has NaN or inf in {len(nan)} weight tensor(s) (first: {nan[0]}), so its "
                              "predictions would be meaningless: the training run that wrote it diverged. "
                              "Train again with a lower learning rate.")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", expect_backbone: str | None = None,
               expect_classes: list[str] | None = None) -> Backbone:
    """Rebuilds the model saved by :func:`save_model` (no download needed).

    Raises CheckpointError naming both sides when the file was made for
    another backbone or another set of classes than ``expect_*``.

    Example:
        >>> model = load_model("runs/demo/model.pt", expect_classes=["cats", "dogs"])
    """
    blob = read_checkpoint(path)
    name, classes = blob["backbone"], blob["class_names"]
    if expect_backbone is not None and name != expect_backbone:
        raise CheckpointError(f"{path} was trained with backbone {name!r}, but {expect_backbone!r} was expected.")
    if expect_classes is not None and list(expect_classes) != list(classes):
        raise CheckpointError(f"{path} predicts classes {classes} ({len(classes)}), but the data has "
                              f"{list(expect_classes)} ({len(expect_classes)}).")
    if name not in list_backbones("all") and not is_text_backbone(name):
        raise CheckpointError(f"{path} uses backbone {name!r}, which this tlkit does not know "
                              f"({', '.join(list_backbones('all'))}).")
    model = load_backbone(name, pretrained=False)
    cfg = blob.get("head_config")
    if cfg:
        model.replace_head(cfg["num_classes"], hidden=tuple(cfg["hidden"]), dropout=cfg["dropout"],
                           class_names=classes or None)
    apply_state_dict(model, blob["state_dict"], path)
    model.input_size = blob["text"]["max_length"] if "text" in blob else blob["image_size"]
    model.weights = "finetuned"
    return model.to(device).eval()


def apply_state_dict(model: nn.Module, state: dict, path: str | os.PathLike = "checkpoint") -> None:
    """``load_state_dict`` with a message that names the mismatching tensors."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path} does not fit this model: {len(missing)} missing, {len(unexpected)} "
                              f"unexpected, {len(wrong)} wrong-shaped tensors (first: "
                              f"{(missing + unexpected + wrong)[:3]}).")
    model.load_state_dict(state)


def load_head(model: Backbone, source: nn.Module | dict | str | os.PathLike) -> Backbone:
    """Copies trained head weights into ``model``'s head (in place) and returns the model.

    ``source`` is the head :func:`tlkit.features.train_head` returned, its
    ``state_dict()``, a file holding such a state dict, or a tlkit model file
    (its head is taken). The model's head must have the same layout, so give
    it the same number of classes (and hidden sizes) first, e.g. with
    ``load_backbone(name, num_classes=2)``; a mismatch raises CheckpointError
    naming the tensors. Files load with ``weights_only=True``.

    Example:
        >>> head, history = train_head(train_feats, val_feats)
        >>> model = load_head(load_backbone("efficientnet_lite0", num_classes=2), head)
        >>> model(x).shape
        torch.Size([8, 2])
    """
    if not isinstance(model, Backbone):
        raise TypeError(f"load_head needs a tlkit Backbone (from load_backbone), got {type(model).__name__}.")
    if isinstance(source, nn.Module):
        state, where = source.state_dict(), "the given head"
    elif isinstance(source, dict):
        state, where = source, "the given state dict"
    elif isinstance(source, (str, os.PathLike)):
        blob = safe_load(source, "head file")
        state = read_checkpoint(source)["state_dict"] if isinstance(blob, dict) and "format" in blob else blob
        where = str(source)
    else:
        raise TypeError(f"load_head takes a head module, a state dict or a file path, got {type(source).__name__}.")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where} holds no head weights (expected a state dict of tensors, as "
                              "head.state_dict() gives, or a tlkit model file).")
    prefix = "groups.head."  # a whole model's state dict: keep its head
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        apply_state_dict(model.head, state, where)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} Give the model a head of the same shape first, e.g. "
                              "model.replace_head(num_classes, hidden=...).") from None
    return model
