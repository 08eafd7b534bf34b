"""LRSchedule: the curves, per-group peaks, and groups that join mid-run."""
from __future__ import annotations

import pytest
import torch

from tlkit.schedule import LRSchedule


def optimizer(*lrs):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def test_onecycle_shape():
    s = LRSchedule(optimizer(1.0), "onecycle", epochs=4)
    assert s.factor(0) == pytest.approx(1 / 25)
    assert s.factor(1.0) == pytest.approx(1.0)  # peak after 25% of the run
    assert s.factor(4.0) == pytest.approx(1 / 25 / 1e4)
    xs = [s.factor(i / 10) for i in range(41)]
    assert xs.index(max(xs)) == 10
    assert all(a < b for a, b in zip(xs[:10], xs[1:11])) and all(a > b for a, b in zip(xs[10:], xs[11:]))


def test_cosine_and_step_and_constant():
    cos = LRSchedule(optimizer(1.0), "cosine", epochs=2)
    assert cos.factor(0) == 1.0 and cos.factor(1.0) == pytest.approx(0.5) and cos.factor(2.0) == pytest.approx(0)
    step = LRSchedule(optimizer(1.0), "step", epochs=6)  # step_size = 6 // 3 = 2 epochs
    assert [step.factor(e) for e in (0, 1.9, 2.0, 3.5, 4.0)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert LRSchedule(optimizer(1.0), None, epochs=3).factor(2.5) == 1.0
    with pytest.raises(ValueError, match="onecycle"):
        LRSchedule(optimizer(1.0), "exp", epochs=3)


def test_every_group_keeps_its_own_peak_and_new_groups_join():
    opt = optimizer(1e-4, 1e-2)
    s = LRSchedule(opt, "cosine", epochs=2)
    s.update(1.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5e-4, 0.5e-2])
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-3})  # e.g. unfreeze()
    s.update(1.5)
    factor = s.factor(1.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4 * factor, 1e-2 * factor, 1e-3 * factor])
    assert [g["peak_lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-2, 1e-3])
