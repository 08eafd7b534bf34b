"""lr_find: the range test ramps, stops on divergence, suggests a rate, and leaves no trace."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from tlkit.data import ImageDataset, transforms_for
from tlkit.freezing import freeze_to, param_groups
from tlkit.lr_finder import _suggest, lr_find


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def snapshot(model, optimizer):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},  # weights and BN running stats
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "frozen": set(model.frozen_groups), "bn_policy": model.bn_policy, "training": model.training,
        "bn_modes": [m.training for m in model.modules()],
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "rng": torch.get_rng_state(),
    }


def assert_same(before, after):
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    for key in ("requires_grad", "frozen", "bn_policy", "training", "bn_modes"):
        assert before[key] == after[key], key
    opt_a, opt_b = before["optimizer"], after["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for i in opt_a["state"]:
        assert all(torch.equal(opt_a["state"][i][k], opt_b["state"][i][k]) for k in opt_a["state"][i])
    assert torch.equal(before["rng"], after["rng"])


def test_lr_find_leaves_no_trace(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    model = mobilenet_2
    freeze_to(model, -2)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, (1e-4, 1e-3), 0.01))
    x = torch.randn(4, 3, 32, 32)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1])).backward()
    opt.step()  # the optimizer now has moment estimates that must survive
    before = snapshot(model, opt)
    result = lr_find(model, train, num_steps=20, batch_size=8, optimizer=opt, image_size=32, num_workers=0)
    assert_same(before, snapshot(model, opt))
    assert 2 <= len(result.lrs) == len(result.losses) == len(result.raw_losses) <= 20
    assert result.lrs[0] == pytest.approx(1e-7)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))  # exponential ramp
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1]


def test_lr_find_stops_when_the_loss_diverges(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    data = train.with_transform(transforms_for(mobilenet_2, train=False, image_size=32))
    result = lr_find(mobilenet_2, data, start_lr=1e-4, end_lr=1e4, num_steps=40, batch_size=24,
                     image_size=32, num_workers=0)
    assert len(result.lrs) < 40  # stopped early
    last = result.losses[-1]
    assert not math.isfinite(last) or last > 4 * min(result.losses[:-1])


def test_suggestion_is_the_steepest_descent():
    lrs = [10 ** (-6 + 5 * i / 99) for i in range(100)]  # 1e-6 .. 1e-1
    # Loss falls fastest (in log lr) at 1e-3 and blows up after 1e-2.
    losses = [1 / (1 + math.exp(4 * (math.log10(lr) + 3))) + max(0.0, math.log10(lr) + 2) ** 2 for lr in lrs]
    assert _suggest(lrs, losses) == pytest.approx(1e-3, rel=0.15)
    short = [1e-5, 1e-4, 1e-3, 1e-2]
    assert _suggest(short, [1.0, 0.9, 0.8, 0.7]) == pytest.approx(1e-3)  # too short: a tenth of the minimum
    assert _suggest(short, [0.7, 0.8, 0.9, 1.0]) == pytest.approx(1e-5)  # only rising: never below the range


def test_lr_find_rejects_bad_ranges(mobilenet_2, tiny_datasets):
    with pytest.raises(ValueError, match="start_lr"):
        lr_find(mobilenet_2, tiny_datasets[0], start_lr=1.0, end_lr=1e-3)
    freeze_to(mobilenet_2, len(mobilenet_2.group_names))
    with pytest.raises(ValueError, match="Unfreeze"):
        lr_find(mobilenet_2, tiny_datasets[0], num_steps=5, image_size=32, num_workers=0)


def test_lr_find_drops_a_lone_last_image(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets  # 24 images: batches of 23 leave one image, which BatchNorm cannot train on
    opt = torch.optim.AdamW(param_groups(mobilenet_2, 1e-3, 0.01))
    before = snapshot(mobilenet_2, opt)
    result = lr_find(mobilenet_2, train, num_steps=4, batch_size=23, image_size=32, num_workers=0)
    assert len(result.lrs) == 4 and all(math.isfinite(v) for v in result.raw_losses)
    assert_same(before, snapshot(mobilenet_2, opt))


def test_lr_find_batches_of_one_need_batchnorm_frozen(mobilenet_2, tiny_datasets):
    train, _ = tiny_datasets
    opt = torch.optim.AdamW(param_groups(mobilenet_2, 1e-3, 0.01))
    before = snapshot(mobilenet_2, opt)
    with pytest.raises(ValueError, match="BatchNorm.*batch_size=1"):
        lr_find(mobilenet_2, train, num_steps=3, batch_size=1, image_size=32, num_workers=0)
    with pytest.raises(ValueError, match="BatchNorm.*1 image"):
        lr_find(mobilenet_2, ImageDataset(train.files[:1], train.targets[:1], train.classes), num_steps=3,
                image_size=32, num_workers=0)
    assert_same(before, snapshot(mobilenet_2, opt))  # no trace after the error either
    freeze_to(mobilenet_2, -1)  # only the head (no BatchNorm) trains: one image per batch is fine
    assert len(lr_find(mobilenet_2, train, num_steps=3, batch_size=1, image_size=32, num_workers=0).lrs) == 3
