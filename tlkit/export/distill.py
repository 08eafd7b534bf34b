"""Knowledge distillation: a small student learns from a big teacher's soft targets.

The loss (Hinton et al., 2015) mixes two terms:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross_entropy(student, labels)

A temperature ``T > 1`` softens both distributions, so the student also
learns how much the teacher prefers the wrong classes ("this cat looks a bit
like a dog"). ``T^2`` keeps the gradient of the soft term on the scale of the
hard one. ``alpha=0`` is plain training on hard labels: the baseline to beat.

The teacher is frozen, so its logits are cached like features: it runs once
per (weights, transform, file list), and the student's head trains on its own
cached features. A student at a lower resolution (``student_size``) or a
truncated backbone both work this way.

Example:
    >>> student, history = distill(teacher, student, train, val=val, temperature=4.0, alpha=0.7)
    >>> history.best("val_acc")["val_acc"]
    0.96
"""
from __future__ import annotations

import os

import torch
from torch import nn

from tlkit.data import ImageDataset, transforms_for
from tlkit.features import Features, evaluate_head, extract_features
from tlkit.heads import make_head
from tlkit.history import History


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.5) -> torch.Tensor:
    """Soft-target loss at ``temperature`` weighted by ``alpha``, plus hard-label cross-entropy.

    Shapes: logits ``(B, C)``, labels ``(B,)``. Returns a scalar (mean over the batch).

    Example:
        >>> distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), alpha=0.0)
        tensor(0.6931)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (typically 2-8), got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (0: hard labels only, 1: teacher only), got {alpha}.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; both need (batch, classes) for the same classes.")
    t = temperature
    soft = nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, dim=1),
                                nn.functional.log_softmax(teacher_logits / t, dim=1),
                                reduction="batchmean", log_target=True) * t * t
    hard = nn.functional.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


class _Logits(nn.Module):
    """The whole teacher behind ``forward_pooled``, so ``extract_features`` caches its logits.

    Its state_dict keys start with ``teacher.``, so the cache key covers the
    head too (the feature cache hashes everything outside ``groups.head.``).
    """

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher
        self.name = f"{getattr(teacher, 'name', type(teacher).__name__)}-logits"
        self.weights = getattr(teacher, "weights", None)
        self.num_features = teacher.num_classes

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)  # (B, C) logits


def teacher_logits(teacher: nn.Module, data: ImageDataset, image_size: int | None = None, cache: bool = True,
                   cache_dir: str | os.PathLike | None = None, progress: bool = False) -> Features:
    """The teacher's logits ``(N, C)`` for every readable image, cached on disk like features.

    Example:
        >>> teacher_logits(teacher, train).features.shape
        torch.Size([2000, 2])
    """
    ds = data.with_transform(transforms_for(teacher, train=False, image_size=image_size))
    return extract_features(_Logits(teacher), ds, cache=cache, cache_dir=cache_dir, progress=progress,
                            precision="fp32")


def distill(teacher: nn.Module, student: nn.Module, data: ImageDataset, temperature: float = 4.0,
            alpha: float = 0.5, epochs: int = 30, lr: float = 1e-3, batch_size: int = 64,
            val: ImageDataset | None = None, teacher_size: int | None = None, student_size: int | None = None,
            seed: int = 0, cache_dir: str | os.PathLike | None = None,
            progress: bool = False, train_body: bool = False) -> tuple[nn.Module, History]:
    """Trains ``student`` on ``data`` with the teacher's soft targets (its head, or its body too).

    The teacher runs once over ``data`` (its logits are cached like
    features). ``train_body=False``: the student's body runs once (cached
    features) and a fresh head trains for ``epochs``. ``train_body=True``: the
    student runs on every batch and every group it has unfrozen trains (choose
    them with ``tlkit.freeze_to``; its current head is kept and trained), see
    :mod:`tlkit.export.distill_body`. Both use :func:`distillation_loss`;
    with ``val``, the epoch with the best validation accuracy is kept. The
    student is changed in place and returned with the History. ``alpha=0``
    gives the hard-label baseline with the same budget.

    Example:
        >>> student, hist = distill(teacher, student, train, val=val, student_size=128)
        >>> freeze_to(student, -3)
        >>> student, hist = distill(teacher, student, train, val=val, student_size=128, train_body=True)
    """
    if student.num_classes != teacher.num_classes:
        raise ValueError(f"The student has {student.num_classes} outputs and the teacher {teacher.num_classes}; "
                         "give the student the teacher's head: student.replace_head(teacher.num_classes).")
    soft = teacher_logits(teacher, data, teacher_size, cache_dir=cache_dir, progress=progress)
    tf = transforms_for(student, train=False, image_size=student_size)
    if train_body:
        from tlkit.export.distill_body import train_body as fit_body
        if student.class_names is None:
            student.class_names = teacher.class_names
        return fit_body(student, data.with_transform(tf), soft, val.with_transform(tf) if val is not None else None,
                        temperature, alpha, epochs, lr, batch_size, seed)
    feats = extract_features(student, data.with_transform(tf), cache_dir=cache_dir, progress=progress)
    row = {f: i for i, f in enumerate(soft.files)}
    keep = [i for i, f in enumerate(feats.files) if f in row]  # images both runs could read
    x, y = feats.features[keep], feats.labels[keep]
    if not keep:
        raise ValueError(f"No image of {data.name} was readable by both the teacher and the student.")
    t = soft.features[[row[feats.files[i]] for i in keep]]  # (N, C), aligned with x
    val_feats = extract_features(student, val.with_transform(tf), cache_dir=cache_dir, progress=progress) \
        if val is not None else None
    head, history = _train(x, t, y, val_feats, student.num_classes, temperature, alpha, epochs, lr, batch_size, seed)
    student.replace_head(student.num_classes, class_names=student.class_names or teacher.class_names)
    student.groups["head"].load_state_dict(head.state_dict())
    return student, history


def _train(x, t, y, val, n_classes, temperature, alpha, epochs, lr, batch_size, seed) -> tuple[nn.Module, History]:
    """Adam on the head, shuffled mini-batches of cached (features, teacher logits, labels)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = make_head(x.shape[1], n_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    history, best, best_acc = History(), None, -1.0
    for epoch in range(1, epochs + 1):
        head.train()
        perm, total = torch.randperm(len(y), generator=gen), 0.0
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            loss = distillation_loss(head(x[idx]), t[idx], y[idx], temperature, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / len(y)}
        if val is not None and len(val):
            row["val_loss"], row["val_acc"] = evaluate_head(head, val)
        history.append(**row)
        if row.get("val_acc", epoch) > best_acc:
            best_acc, best = row.get("val_acc", epoch), {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best)
    return head.eval(), history
