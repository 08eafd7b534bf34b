"""Freeze and unfreeze layer groups, and the BatchNorm policy that goes with it.

Plain functions on a :class:`tlkit.backbones.Backbone` (in the spirit of
Lightning's ``BaseFinetuning``):

* ``freeze(model, ["stem", "stage1"])`` stops gradients for those groups.
* ``unfreeze(model, "stage7", optimizer=opt, lr=1e-4)`` lets them train again
  and, given an optimizer, adds their parameters as a new parameter group.
* ``freeze_to(model, k)`` freezes the first ``k`` groups and trains the rest.
* ``trainable_summary(model)`` says, per group, what is frozen.

BatchNorm: a frozen group stays in eval mode through ``model.train()``
(policy ``"eval"``), so its BN running statistics keep the ImageNet values and
its dropout and stochastic depth stay off: a frozen group is a fixed function.
``set_bn_policy(model, "train")`` lets frozen BN statistics update instead.

Example:
    >>> freeze(model, model.group_names[:-1])   # feature extraction
    >>> trainable_summary(model)[-1]["trainable"]
    True
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from tlkit.backbones import BN_TYPES

BN_POLICIES = ("eval", "train", "eval_all")


def _names(model: nn.Module, groups: str | Iterable[str]) -> list[str]:
    names = [groups] if isinstance(groups, str) else list(groups)
    valid = list(model.groups.keys())
    bad = [g for g in names if g not in valid]
    if bad:
        raise KeyError(f"Unknown layer group(s) {bad}. This model's groups are: {', '.join(valid)}.")
    return names


def group_parameters(model: nn.Module, group: str) -> list[nn.Parameter]:
    """Parameters of one group, deduplicated by identity (shared weights count once)."""
    seen: set[int] = set()
    out = []
    for p in model.groups[_names(model, group)[0]].parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def freeze(model: nn.Module, groups: str | Iterable[str]) -> nn.Module:
    """Stops training the given groups (``requires_grad=False``, BN policy applies).

    Example:
        >>> freeze(model, ["stem", "stage1"])
    """
    for name in _names(model, groups):
        for p in group_parameters(model, name):
            p.requires_grad_(False)
        model.frozen_groups.add(name)
    model.train(model.training)  # re-apply the BN policy right away
    return model


def unfreeze(model: nn.Module, groups: str | Iterable[str], optimizer: torch.optim.Optimizer | None = None,
             lr: float | None = None) -> nn.Module:
    """Lets the given groups train again.

    With an ``optimizer``, parameters it does not hold yet are added as a new
    parameter group (named after the layer group) with learning rate ``lr``
    (default: :func:`unfrozen_group_lr`).

    Example:
        >>> unfreeze(model, "stage7", optimizer=opt, lr=1e-4)
    """
    names = _names(model, groups)
    for name in names:
        for p in group_parameters(model, name):
            p.requires_grad_(True)
        model.frozen_groups.discard(name)
    model.train(model.training)
    if optimizer is not None:
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if lr is None:
            lr = unfrozen_group_lr(optimizer)
        for name in names:
            new = [p for p in group_parameters(model, name) if id(p) not in held]
            if new:
                optimizer.add_param_group({"params": new, "lr": lr, "name": name})
                held.update(id(p) for p in new)
    return model


def unfrozen_group_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of a newly unfrozen group: the lowest peak rate already in ``optimizer``.

    New groups start gently: pretrained layers near the input need smaller
    steps than the head. The peak (``group["peak_lr"]``, set by
    :class:`tlkit.schedule.LRSchedule`) is used, not the current rate, since the
    schedule then scales the new group along with the others.

    Example:
        >>> unfrozen_group_lr(optimizer)   # groups at peaks 1e-4 and 1e-3
        0.0001
    """
    return min(g.get("peak_lr", g["lr"]) for g in optimizer.param_groups)


def freeze_to(model: nn.Module, k: int) -> nn.Module:
    """Freezes the first ``k`` groups (input side) and unfreezes the rest.

    ``freeze_to(model, -1)`` is feature extraction (only the head trains);
    ``freeze_to(model, 0)`` is full fine-tuning.

    Example:
        >>> freeze_to(model, -3)   # train the last two stages and the head
    """
    names = list(model.groups.keys())
    if not isinstance(k, int) or not -len(names) <= k <= len(names):
        raise ValueError(f"k must be an int between {-len(names)} and {len(names)}, got {k!r}.")
    cut = k % len(names) if k < 0 else k
    unfreeze(model, names[cut:])
    if cut:
        freeze(model, names[:cut])
    return model


def set_bn_policy(model: nn.Module, policy: str) -> nn.Module:
    """``"eval"``: frozen groups stay in eval mode (BN keeps its running stats); ``"train"``: they update.

    ``"eval_all"``: every BN layer keeps its pretrained running statistics,
    also in groups that train (their scale and shift still learn). Short
    fine-tuning with small batches is more accurate this way (see
    ``tlkit.strategy.train_strategy``).
    """
    if policy not in BN_POLICIES:
        raise ValueError(f"BN policy must be one of {BN_POLICIES}, got {policy!r}.")
    model.bn_policy = policy
    model.train(model.training)
    return model


def bn_mode(model: nn.Module, group: str) -> str:
    """What the BatchNorm layers of ``group`` do in ``model.train()``, from the freeze state and policy.

    Computed, never probed: it reads ``frozen_groups`` and ``bn_policy`` and
    does not touch any module's ``training`` flag, so a panel may call it
    from the UI thread while another thread is in the middle of a batch. It
    follows the rule of ``Backbone.train``: ``"eval"`` keeps frozen groups in
    eval mode, ``"eval_all"`` every BN layer, ``"train"`` none.

    Returns:
        ``"eval"`` (running statistics kept), ``"train"`` (updated) or
        ``"none"`` (the group has no BatchNorm layer).

    Example:
        >>> freeze(model, "stem"); bn_mode(model, "stem"), bn_mode(model, "stage1")
        ('eval', 'train')
    """
    if not any(isinstance(m, BN_TYPES) for m in model.groups[_names(model, group)[0]].modules()):
        return "none"
    policy = getattr(model, "bn_policy", "eval")
    frozen = group in getattr(model, "frozen_groups", ())
    keeps = policy == "eval_all" or (policy == "eval" and frozen)
    return "eval" if keeps else "train"


def trainable_summary(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[dict]:
    """Per group, input to output: frozen or trainable, parameter count, BN mode, learning rate.

    ``bn_mode`` is what the BN layers do in ``model.train()`` ("eval" means
    their running statistics are kept); see :func:`bn_mode`. The summary only
    reads the model, so it is safe while another thread trains it. ``lr``
    comes from ``optimizer`` when given, else None.

    Example:
        >>> [row["group"] for row in trainable_summary(model)][:2]
        ['stem', 'stage1']
    """
    lrs = _lr_by_parameter(optimizer)
    return [_summary_row(model, name, lrs) for name in model.groups.keys()]


def _lr_by_parameter(optimizer: torch.optim.Optimizer | None) -> dict[int, float]:
    """``{id(parameter): lr}`` of its first parameter group; empty without an optimizer."""
    lrs: dict[int, float] = {}
    if optimizer is not None:
        for g in optimizer.param_groups:
            for p in g["params"]:
                lrs.setdefault(id(p), g["lr"])
    return lrs


def _summary_row(model: nn.Module, name: str, lrs: dict[int, float]) -> dict:
    """One row of :func:`trainable_summary`; ``lr`` is the highest rate among the group's trainable parameters."""
    params = group_parameters(model, name)
    n_train = sum(p.numel() for p in params if p.requires_grad)
    group_lrs = {lrs[id(p)] for p in params if id(p) in lrs and p.requires_grad}
    return {
        "group": name,
        "trainable": n_train > 0,
        "params": sum(p.numel() for p in params),
        "trainable_params": n_train,
        "bn_mode": bn_mode(model, name),
        "lr": max(group_lrs) if group_lrs else None,
    }


def format_summary(rows: list[dict]) -> str:
    """The rows of :func:`trainable_summary` as an aligned text table."""
    w = max([8, *(len(r["group"]) for r in rows)])  # text models have a group called "embeddings"
    lines = [f"{'group':<{w}} {'state':<9} {'params':>11} {'BN':<5} {'lr':>8}"]
    for r in rows:
        lr = f"{r['lr']:.0e}" if r["lr"] else "-"
        state = "trainable" if r["trainable"] else "frozen"
        lines.append(f"{r['group']:<{w}} {state:<9} {r['params']:>11,} {r['bn_mode']:<5} {lr:>8}")
    total = sum(r["params"] for r in rows)
    train = sum(r["trainable_params"] for r in rows)
    lines.append(f"trainable {train:,} of {total:,} parameters ({100 * train / max(total, 1):.1f}%)")
    return "\n".join(lines)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, deduplicated by identity."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    return sum(p.numel() for p in seen.values() if p.requires_grad), total


def param_groups(model: nn.Module, lr: float | dict[str, float] | tuple[float, float],
                 weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups built from the layer groups (trainable ones only).

    ``lr`` is one float for all, a ``{group: lr}`` dict (missing groups get the
    head's rate), or a ``(low, high)`` tuple spread log-evenly from the first to
    the last trainable group (discriminative learning rates). Norm weights and
    biases get no weight decay.

    Example:
        >>> opt = torch.optim.AdamW(param_groups(model, (1e-5, 1e-3), weight_decay=0.01))
    """
    names = [n for n in model.groups.keys() if any(p.requires_grad for p in group_parameters(model, n))]
    rates = _spread(names, lr)
    groups = []
    for name in names:
        decay, no_decay = _split_decay(model.groups[name])
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, ".no_decay")):
            if params:
                groups.append({"params": params, "lr": rates[name], "weight_decay": wd, "name": name + suffix})
    return groups


def _spread(names: list[str], lr) -> dict[str, float]:
    if isinstance(lr, dict):
        bad = [k for k in lr if k not in names]
        if bad:
            raise KeyError(f"Learning rates given for group(s) {bad} that are frozen or unknown; trainable: {names}.")
        default = lr.get("head", max(lr.values()))
        return {n: float(lr.get(n, default)) for n in names}
    if isinstance(lr, tuple):
        low, high = lr
        if len(names) == 1:
            return {names[0]: float(high)}
        ratio = (high / low) ** (1 / (len(names) - 1))
        return {n: float(low * ratio ** i) for i, n in enumerate(names)}
    return {n: float(lr) for n in names}


def _split_decay(module: nn.Module) -> tuple[list, list]:
    decay, no_decay, seen = [], [], set()
    for sub in module.modules():
        for pname, p in sub.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_norm = isinstance(sub, (*BN_TYPES, nn.LayerNorm, nn.GroupNorm)) or "norm" in type(sub).__name__.lower()
            (no_decay if is_norm or pname.endswith("bias") or p.ndim <= 1 else decay).append(p)
    return decay, no_decay

