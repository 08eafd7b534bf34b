"""The backbone contract, checked for every name in ``list_backbones()`` (timm's registry-wide test).

Random weights (``pretrained=False``), so nothing downloads and it runs in CI.
Inputs are tiny (batch 2, 64 px); each backbone is built once per module and
copied for each test. The whole file takes about 30 s on a 2-core CPU, most of
it resnet50 and convnext_tiny (25-29M parameters).
"""
from __future__ import annotations

import copy

import pytest
import torch

from tlkit import freeze_to, list_backbones, load_backbone
from tlkit.checkpoint import load_head, load_model, save_model
from tlkit.freezing import param_groups

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # (B, 3, H, W)


@pytest.fixture(scope="module", params=list_backbones())
def pristine(request):
    torch.manual_seed(0)
    return load_backbone(request.param, pretrained=False)


@pytest.fixture
def model(pristine):
    return copy.deepcopy(pristine)


def body_state(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BatchNorm running statistics included) outside the head."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("groups.head.")}


def test_group_names_run_from_stem_to_head(model):
    names = model.group_names
    assert names[0] == "stem" and names[-1] == "head"
    assert names[1:-1] == [f"stage{i}" for i in range(1, len(names) - 1)]
    assert model.input_size > 0 and len(model.mean) == len(model.std) == 3


def test_groups_cover_every_parameter_exactly_once(model):
    owners: dict[int, list[str]] = {}
    for name, group in model.groups.items():
        for p in {id(p): p for p in group.parameters()}.values():  # shared weights count once per group
            owners.setdefault(id(p), []).append(name)
    every = {id(p) for p in model.parameters()}
    assert set(owners) == every, "some parameters belong to no group"
    assert all(len(groups) == 1 for groups in owners.values()), \
        {g for groups in owners.values() if len(groups) > 1 for g in groups}


def test_backward_gives_every_trainable_parameter_a_gradient(model):
    model.train()
    model(X).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen: every one was checked


def test_feature_extraction_step_leaves_body_weights_and_bn_statistics_bit_identical(model):
    freeze_to(model, -1)
    before, head_before = body_state(model), copy.deepcopy(model.head.state_dict())
    assert any("running_mean" in k for k in before) or model.name == "convnext_tiny"  # ConvNeXt: LayerNorm only
    opt = torch.optim.SGD(param_groups(model, 0.1), lr=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(X), torch.tensor([0, 1]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = body_state(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed[:5]
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())  # the head learned


def test_replace_head_sets_the_output_size(model):
    model.replace_head(3, class_names=["a", "b", "c"])
    assert model.num_classes == 3 and model.class_names == ["a", "b", "c"]
    assert model.eval()(X).shape == (2, 3)
    model.replace_head(5, hidden=(16,), dropout=0.1)
    assert model(X).shape == (2, 5)


def test_pooled_features_have_num_features_columns(model):
    with torch.no_grad():
        feats = model.eval().forward_pooled(X)
    assert feats.shape == (2, model.num_features)
    assert torch.equal(model.head(feats), model(X))  # forward is the head on the pooled features


def test_weights_only_save_and_load_give_the_same_outputs(model, tmp_path):
    model.replace_head(2, class_names=["cats", "dogs"])
    freeze_to(model, -2)
    with torch.no_grad():
        expected = model.eval()(X)
    save_model(model, tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)  # plain tensors and data: no pickle of objects
    assert state["backbone"] == model.name
    loaded = load_model(tmp_path / "model.pt")
    with torch.no_grad():
        assert torch.equal(loaded(X), expected)
    assert loaded.class_names == ["cats", "dogs"]


def test_load_head_puts_a_trained_head_into_a_fresh_model(model, tmp_path):
    model.replace_head(2)
    trained = torch.nn.Sequential(torch.nn.Linear(model.num_features, 2))
    torch.nn.init.normal_(trained[0].weight)
    load_head(model, trained)
    with torch.no_grad():
        feats = model.eval().forward_pooled(X)
        assert torch.equal(model(X), trained(feats))
    torch.save(trained.state_dict(), tmp_path / "head.pt")
    fresh = copy.deepcopy(model)
    torch.nn.init.zeros_(fresh.head[-1].weight)
    load_head(fresh, tmp_path / "head.pt")
    assert torch.equal(fresh.head[-1].weight, trained[0].weight)
