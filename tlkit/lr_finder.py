"""The learning-rate range test: which learning rate should I use?

Train for a few dozen batches while the learning rate grows exponentially
from tiny to huge, and watch the loss. Where it falls fastest is a good rate;
where it shoots up the rate is too high. The test trains a *copy* of the
model, so the model, its optimizer, its BatchNorm statistics, its freeze
state and the random number generators are exactly as they were before.

Example:
    >>> result = lr_find(model, train, image_size=160)
    >>> result.suggestion
    0.0012
    >>> plot_lr_find(result)   # tlkit.viz
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from tlkit.backbones import BN_TYPES
from tlkit.data import transforms_for
from tlkit.device import autocast, memory_format, needs_grad_scaler, pick_device, to_device
from tlkit.freezing import param_groups
from tlkit.loaders import leaves_one_image, make_loader


@dataclass
class LRFinderResult:
    """Learning rates tried, smoothed losses, raw losses, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    raw_losses: list[float] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"LRFinderResult({len(self.lrs)} steps, {self.lrs[0]:.0e}..{self.lrs[-1]:.0e}, " \
               f"suggestion={self.suggestion:.1e})"


def lr_find(model: nn.Module, data, start_lr: float = 1e-7, end_lr: float = 1.0, num_steps: int = 100,
            batch_size: int = 32, *, optimizer: torch.optim.Optimizer | None = None, weight_decay: float = 0.01,
            device: str | torch.device | None = None, amp: bool = True, image_size: int | None = None,
            diverge: float = 4.0, beta: float = 0.98, seed: int = 0,
            num_workers: int | None = None) -> LRFinderResult:
    """Runs the learning-rate range test on a copy of ``model``.

    Args:
        model: a Backbone; only its trainable groups train, as in ``fit``.
        data: an ImageDataset (gets the backbone's training transform if it has none).
        start_lr, end_lr, num_steps: the exponential ramp, one batch per step.
        batch_size: images per step. A last batch of one image is skipped
            (BatchNorm cannot train on one image, and its loss is noise).
        optimizer: if given, its class and its groups' rate *ratios* are used
            (e.g. discriminative rates); it is not changed. Default: AdamW.
        diverge: stop once the smoothed loss exceeds ``diverge`` x its minimum.
        beta: smoothing of the loss (exponential moving average, bias-corrected).

    Returns:
        LRFinderResult with ``lrs``, smoothed ``losses`` and ``suggestion``:
        where the smoothed loss falls steepest (or a tenth of the rate at its
        minimum, but at least ``start_lr``, when the curve is too short to tell).

    Raises:
        ValueError: a bad ramp, nothing trainable, or batches of one image
            (``batch_size=1`` or a one-image dataset) while BatchNorm trains.

    Example:
        >>> lr_find(model, train, num_steps=60).suggestion
        0.0008
    """
    _check_ramp(start_lr, end_lr, num_steps)
    dev = pick_device(device)
    amp = amp and not needs_grad_scaler(dev)  # fp16 would need a gradient scaler: use fp32 there
    if getattr(data, "transform", True) is None:
        data = data.with_transform(transforms_for(model, train=True, image_size=image_size))
    # fork_rng: whatever the test draws (data order, dropout) leaves the global generators untouched.
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        probe = copy.deepcopy(model).to(dev, memory_format=memory_format(dev)).train()
        opt = _probe_optimizer(model, probe, optimizer, weight_decay)
        loader = _probe_loader(probe, data, batch_size, seed, num_workers, dev)
        lrs, raw, smooth = _ramp(probe, opt, loader, dev, amp, start_lr, end_lr, num_steps, diverge, beta)
        del probe, opt
    return LRFinderResult(lrs, smooth, _suggest(lrs, smooth), raw)


def _check_ramp(start_lr: float, end_lr: float, num_steps: int) -> None:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}.")
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}.")


def _probe_loader(probe: nn.Module, data, batch_size: int, seed: int, num_workers: int | None,
                  dev: torch.device):
    """Shuffled batches for the ramp, never one of a single image (as in ``Trainer``)."""
    n = len(data)
    if any(isinstance(m, BN_TYPES) and m.training for m in probe.modules()) and (batch_size == 1 or n == 1):
        # In training mode BatchNorm normalises over the batch: one image raises
        # "Expected more than 1 value per channel" deep inside the network.
        got = "batch_size=1" if batch_size == 1 else "a dataset of 1 image"
        raise ValueError(f"BatchNorm layers train, and they need at least 2 images per batch; got {got}. "
                         f"Use batch_size >= 2 and at least 2 images, or keep BatchNorm statistics fixed "
                         f"with set_bn_policy(model, 'eval_all') or by freezing the groups that have them.")
    return make_loader(data, batch_size=batch_size, shuffle=True, seed=seed, num_workers=num_workers,
                       pin_memory=dev.type == "cuda", drop_last=leaves_one_image(n, batch_size))


def _probe_optimizer(model: nn.Module, probe: nn.Module, optimizer, weight_decay: float):
    """An optimizer for the copy; ``ratio`` = each group's rate relative to the highest one."""
    if optimizer is None:
        groups = param_groups(probe, 1.0, weight_decay)
        if not groups:
            raise ValueError("Nothing to train: every layer group is frozen. Unfreeze at least the head.")
        for g in groups:
            g["ratio"] = 1.0
        return torch.optim.AdamW(groups)
    names = {id(p): n for n, p in model.named_parameters()}
    probe_params = dict(probe.named_parameters())
    top = max(g["lr"] for g in optimizer.param_groups)
    groups = []
    for g in optimizer.param_groups:
        hyper = {k: v for k, v in g.items() if k != "params"}
        groups.append({**hyper, "params": [probe_params[names[id(p)]] for p in g["params"]],
                       "ratio": g["lr"] / top})
    return type(optimizer)(groups)  # every hyper-parameter is already in the groups


def _ramp(probe, opt, loader, dev, amp, start_lr, end_lr, num_steps, diverge,
          beta) -> tuple[list[float], list[float], list[float]]:
    """One batch per step at exponentially growing rates; stops when the loss diverges."""
    batches = iter(loader)
    lrs, raw, smooth, avg, best = [], [], [], 0.0, math.inf
    for step in range(num_steps):
        lr = start_lr * (end_lr / start_lr) ** (step / (num_steps - 1))
        for g in opt.param_groups:
            g["lr"] = lr * g["ratio"]
        x, y = _next_batch(batches, loader)
        if x is None:
            batches = iter(loader)  # start another pass over the data
            x, y = _next_batch(batches, loader)
        with autocast(dev, enabled=amp):
            loss = nn.functional.cross_entropy(probe(to_device(x, dev)), y.to(dev))  # scalar
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        value = loss.item()
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** (step + 1))  # bias correction: early values are not pulled to 0
        lrs.append(lr), raw.append(value), smooth.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > diverge * best:
            break
        best = min(best, smoothed)
    return lrs, raw, smooth


def _next_batch(batches, loader):
    """The next batch with at least one readable image, or (None, None) at the end of a pass."""
    for x, y, _dropped in batches:
        if len(y):
            return x, y
    return None, None


def _suggest(lrs: list[float], losses: list[float]) -> float:
    """The rate where the smoothed loss falls fastest per unit of log(lr), before its minimum."""
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    if not finite:
        return lrs[0]
    lrs, losses = [lr for lr, _ in finite], [loss for _, loss in finite]
    i_min = min(range(len(losses)), key=losses.__getitem__)
    skip = max(1, len(losses) // 10)  # the first steps are dominated by smoothing noise
    if i_min - skip < 3:  # too short to see a slope (or the loss only rose)
        return max(lrs[i_min] / 10, lrs[0])
    slopes = [(losses[i + 1] - losses[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1]) for i in range(skip, i_min)]
    return lrs[skip + min(range(len(slopes)), key=slopes.__getitem__)]
