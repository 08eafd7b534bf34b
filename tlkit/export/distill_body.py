"""Distilling into a student's body, not only its head.

:func:`tlkit.export.distill` with ``train_body=True`` lands here. The teacher's
logits come from the cache (it runs once over the data); the student runs on
every batch at its own resolution and trains every group that is not frozen
(``tlkit.freeze_to`` picks which), with :func:`distillation_loss` at a
temperature. The student sees the images as the teacher saw them (the eval
transform at the student's size, no augmentation), so each cached soft target
belongs to the picture the student is looking at.

Example:
    >>> freeze_to(student, -3)                       # stage7, stage8 and the head train
    >>> distill(teacher, student, train, val=val, train_body=True, student_size=160, epochs=3)
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from tlkit.data import ImageDataset
from tlkit.features import Features
from tlkit.freezing import param_groups
from tlkit.history import History
from tlkit.loaders import make_loader


class _WithTeacher:
    """The images the teacher could read (``data``) and its logits for them, row by row (``logits``)."""

    def __init__(self, data: ImageDataset, soft: Features):
        row = {f: i for i, f in enumerate(soft.files)}
        keep = [i for i, f in enumerate(data.files) if f in row]
        if not keep:
            raise ValueError(f"No image of {data.name} was readable by the teacher.")
        self.data = ImageDataset([data.files[i] for i in keep], [data.targets[i] for i in keep], data.classes,
                                 data.transform, data.name)
        self.logits = soft.features[[row[data.files[i]] for i in keep]]  # (N, C)

    def __len__(self) -> int:
        return len(self.data)


def train_body(student: nn.Module, data: ImageDataset, soft: Features, val: ImageDataset | None,
               temperature: float, alpha: float, epochs: int, lr: float, batch_size: int,
               seed: int) -> tuple[nn.Module, History]:
    """AdamW on the student's trainable groups; the epoch with the best validation accuracy is kept.

    ``data`` and ``val`` carry the student's transform. Returns the student
    (changed in place) and a History with ``train_loss`` (and ``val_acc``).
    """
    from tlkit.export.distill import distillation_loss

    pairs = _WithTeacher(data, soft)
    groups = param_groups(student, lr)
    if not groups:
        raise ValueError("Every group of the student is frozen; unfreeze some (tlkit.freeze_to(student, -3)) "
                         "or use train_body=False to train a fresh head on cached features.")
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    torch.manual_seed(seed)
    history, best, best_acc = History(), None, -1.0
    for epoch in range(1, epochs + 1):
        student.train()
        total, n = 0.0, 0
        for x, y, idx in _batches(pairs, batch_size, seed + epoch):
            loss = distillation_loss(student(x), pairs.logits[idx], y, temperature, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(y), n + len(y)
        row = {"epoch": epoch, "train_loss": total / max(n, 1)}
        if val is not None and len(val):
            row["val_acc"] = accuracy(student, val, batch_size)
        history.append(**row)
        if row.get("val_acc", epoch) > best_acc:
            best_acc, best = row.get("val_acc", epoch), copy.deepcopy(student.state_dict())
    student.load_state_dict(best)
    return student.eval(), history


def _batches(pairs: _WithTeacher, batch_size: int, seed: int):
    """Shuffled ``(x, labels, rows of the teacher logits)``; unreadable images are dropped."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    for start in range(0, len(order), batch_size):
        items = [(pairs.data[i], i) for i in order[start:start + batch_size]]
        good = [(x, y, i) for (x, y), i in items if x is not None]
        if good:
            xs, ys, rows = zip(*good)
            yield torch.stack(xs), torch.tensor(ys), torch.tensor(rows)


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageDataset, batch_size: int = 64) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``data`` (which carries the model's transform)."""
    was = model.training
    model.eval()
    right = seen = 0
    for x, y, _ in make_loader(data, batch_size=batch_size, num_workers=0):
        if len(y):
            right += (model(x).argmax(1) == y).sum().item()
            seen += len(y)
    model.train(was)
    return right / max(seen, 1)
