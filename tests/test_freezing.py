"""Freezing, unfreezing, the trainable summary, and the BatchNorm policy."""
import pytest
import torch
from torch import nn

from tlkit import (count_parameters, format_summary, freeze, freeze_to, load_backbone, param_groups,
                   set_bn_policy, trainable_summary, unfreeze)
from tlkit.freezing import unfrozen_group_lr
from tlkit.heads import make_head


@pytest.fixture
def model():
    torch.manual_seed(0)
    return load_backbone("mobilenet_v3_small", pretrained=False, num_classes=2)


def test_freeze_all_but_head_counts(model):
    freeze(model, model.group_names[:-1])
    trainable, total = count_parameters(model)
    assert trainable == sum(p.numel() for p in model.head.parameters()) == 1024 * 2 + 2
    assert total == sum(p.numel() for p in model.parameters())
    rows = trainable_summary(model)
    assert [r["group"] for r in rows] == model.group_names
    assert [r["trainable"] for r in rows] == [False] * (len(rows) - 1) + [True]
    assert sum(r["params"] for r in rows) == total
    assert all(r["bn_mode"] == "eval" for r in rows[:-1]) and rows[-1]["bn_mode"] == "none"
    assert "trainable 2,050 of" in format_summary(rows)


def test_freeze_to_and_unfreeze(model):
    freeze_to(model, -2)  # last body group + head train
    assert model.frozen_groups == set(model.group_names[:-2])
    freeze_to(model, 0)
    assert model.frozen_groups == set()
    assert count_parameters(model)[0] == count_parameters(model)[1]
    freeze_to(model, len(model.group_names))
    assert count_parameters(model)[0] == 0
    with pytest.raises(ValueError, match="between"):
        freeze_to(model, 99)
    with pytest.raises(KeyError, match="stem"):
        freeze(model, ["stage99"])


def test_bn_policy_survives_model_train(model):
    freeze(model, ["stem", "stage1"])
    model.train()
    bns = lambda g: [m for m in model.groups[g].modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns("stem") and all(not m.training for m in bns("stem") + bns("stage1"))
    assert all(m.training for m in bns("stage2"))
    set_bn_policy(model, "train")
    assert all(m.training for m in bns("stem"))
    assert trainable_summary(model)[0]["bn_mode"] == "train"
    with pytest.raises(ValueError, match="eval"):
        set_bn_policy(model, "frozen")


def test_unfreeze_adds_a_param_group_with_its_own_lr(model):
    freeze(model, model.group_names[:-1])
    opt = torch.optim.SGD(param_groups(model, 1e-2), lr=1e-2)
    n_before = len(opt.param_groups)
    unfreeze(model, "stage5", optimizer=opt, lr=1e-4)
    assert len(opt.param_groups) == n_before + 1
    new = opt.param_groups[-1]
    assert new["lr"] == 1e-4 and new["name"] == "stage5"
    assert {id(p) for p in new["params"]} == {id(p) for p in model.groups["stage5"].parameters()}
    unfreeze(model, "stage5", optimizer=opt, lr=1e-4)  # already held: nothing added twice
    assert len(opt.param_groups) == n_before + 1
    assert trainable_summary(model, opt)[-2]["lr"] == 1e-4


def test_a_newly_unfrozen_group_starts_at_the_lowest_peak_rate(model):
    freeze(model, model.group_names[:-2])  # the last body group and the head train
    body = model.group_names[-2]
    opt = torch.optim.SGD(param_groups(model, {body: 1e-3, "head": 1e-2}), lr=1e-2)
    for g in opt.param_groups:  # mid-run: the schedule has lowered every rate to a tenth of its peak
        g["peak_lr"], g["lr"] = g["lr"], g["lr"] / 10
    assert unfrozen_group_lr(opt) == pytest.approx(1e-3)  # the peak, not the current 1e-4
    unfreeze(model, model.group_names[-3], optimizer=opt)
    assert opt.param_groups[-1]["name"] == model.group_names[-3] and opt.param_groups[-1]["lr"] == pytest.approx(1e-3)
    assert "initial_lr" not in opt.param_groups[-1]


def test_parameters_are_deduplicated_by_identity():
    head = make_head(8, 2)
    shared = nn.Linear(8, 8)
    model = load_backbone("resnet18", pretrained=False, num_classes=2)
    model.groups["stage4"] = nn.Sequential(model.groups["stage4"], nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                           nn.Linear(512, 8), shared, shared)
    model.num_features = 8
    model.groups["head"] = head
    rows = trainable_summary(model)
    assert rows[-2]["params"] == sum(p.numel() for p in {id(p): p for p in model.groups["stage4"].parameters()}.values())
    assert sum(r["params"] for r in rows) == count_parameters(model)[1]


def test_discriminative_lrs_and_no_decay_on_norms(model):
    freeze_to(model, -3)
    groups = param_groups(model, (1e-5, 1e-3), weight_decay=0.05)
    lrs = {g["name"].split(".")[0]: g["lr"] for g in groups}
    assert list(lrs) == model.group_names[-3:]
    assert lrs["head"] == pytest.approx(1e-3) and lrs[model.group_names[-3]] == pytest.approx(1e-5)
    for g in groups:
        if g["name"].endswith(".no_decay"):
            assert g["weight_decay"] == 0 and all(p.ndim <= 1 for p in g["params"])
        else:
            assert g["weight_decay"] == 0.05 and all(p.ndim > 1 for p in g["params"])
    by_name = param_groups(model, {"head": 1e-2})
    assert {g["lr"] for g in by_name} == {1e-2}
    with pytest.raises(KeyError, match="frozen or unknown"):
        param_groups(model, {"stem": 1e-3})


def test_frozen_backbone_is_bit_identical_after_an_epoch(model):
    """The headline BatchNorm test: a training epoch must not touch a frozen body."""
    freeze(model, model.group_names[:-1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    model.train()
    torch.manual_seed(1)
    for _ in range(5):  # batches of very different statistics than ImageNet
        x = torch.randn(8, 3, 64, 64) * 3 + 2
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 2, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    body = [k for k in before if not k.startswith("groups.head.")]
    assert any("running_mean" in k for k in body)
    for k in body:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["groups.head.0.weight"], after["groups.head.0.weight"])


def test_bn_policy_train_does_update_running_stats(model):
    freeze(model, model.group_names[:-1])
    set_bn_policy(model, "train")
    key = next(k for k in model.state_dict() if k.startswith("groups.stem") and "running_mean" in k)
    before = model.state_dict()[key].clone()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64) + 3)
    assert not torch.equal(before, model.state_dict()[key])


def test_a_frozen_group_is_a_fixed_function_in_train_mode():
    """Frozen groups: no dropout or stochastic depth either (Lite0's drop-connect), so two
    training-mode passes give the same features; trainable groups keep theirs."""
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", pretrained=False, num_classes=2)
    x = torch.randn(2, 3, 64, 64)
    model.train()  # nothing frozen: drop-connect makes two passes differ
    with torch.no_grad():
        assert not torch.equal(model.forward_pooled(x), model.forward_pooled(x))
    freeze(model, model.group_names[:-1])
    model.train()
    assert all(not m.training for g in model.group_names[:-1] for m in model.groups[g].modules())
    assert model.groups["head"].training and model.training
    with torch.no_grad():
        assert torch.equal(model.forward_pooled(x), model.forward_pooled(x))
    unfreeze(model, "stage7")
    set_bn_policy(model, "eval_all")  # trainable stage7: blocks train, its BN keeps its statistics
    blocks = [m for m in model.groups["stage7"].modules() if not isinstance(m, nn.BatchNorm2d)]
    assert all(m.training for m in blocks)
    assert all(not m.training for m in model.groups["stage7"].modules() if isinstance(m, nn.BatchNorm2d))
    assert all(not m.training for m in model.groups["stage6"].modules())


@pytest.mark.parametrize("policy", ["eval", "train", "eval_all"])
def test_summary_bn_mode_is_computed_and_matches_what_train_does(model, policy):
    """The summary reads the freeze state and the policy; it never calls ``model.train()``
    (another thread may be inside a forward pass), yet agrees with what ``train()`` does."""
    freeze(model, model.group_names[:3])
    set_bn_policy(model, policy)
    model.eval()
    model.train = lambda mode=True: pytest.fail("trainable_summary toggled the live model's mode")
    rows = trainable_summary(model)
    del model.train  # the instance attribute: back to Backbone.train
    assert all(not m.training for m in model.modules())  # untouched: still in eval mode
    model.train()
    for r in rows:
        bns = [m for m in model.groups[r["group"]].modules() if isinstance(m, nn.BatchNorm2d)]
        probed = {"train" if m.training else "eval" for m in bns} or {"none"}
        assert probed == {r["bn_mode"]}, (policy, r["group"])
    modes = [r["bn_mode"] for r in rows]
    expected_frozen = {"eval": "eval", "train": "train", "eval_all": "eval"}[policy]
    assert modes[:3] == [expected_frozen] * 3 and modes[-1] == "none"
    assert modes[3] == ("eval" if policy == "eval_all" else "train")
