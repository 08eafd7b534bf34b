"""The backbone contract, checked across the whole registry."""

import pytest
import torch

from tlkit import list_backbones, load_backbone
from tlkit.data import open_image, transforms_for

REGISTERED = ["efficientnet_lite0", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small",
              "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]


def test_registry_lists_every_required_backbone():
    assert set(REGISTERED) <= set(list_backbones())


@pytest.mark.parametrize("name", REGISTERED)
def test_backbone_contract(name):
    model = load_backbone(name, pretrained=False)
    names = model.group_names
    assert names[0] == "stem" and names[-1] == "head"
    assert names[1:-1] == [f"stage{i}" for i in range(1, len(names) - 1)]
    # Groups cover every parameter exactly once.
    in_groups = [id(p) for g in model.groups.values() for p in g.parameters()]
    assert len(in_groups) == len(set(in_groups)) == len(list(model.parameters()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.eval().forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.num_features)
    assert logits.shape == (2, 1000) and model.num_classes == 1000
    assert model.input_size == 224 and len(model.mean) == len(model.std) == 3
    model.replace_head(2, class_names=["cats", "dogs"])
    assert model(x).shape == (2, 2) and model.num_classes == 2
    assert model.class_names == ["cats", "dogs"]
    assert model.head[-1].in_features == model.num_features


def test_unknown_backbone_names_the_options():
    with pytest.raises(KeyError, match="efficientnet_lite0"):
        load_backbone("resnet1000")


def test_load_backbone_with_num_classes_and_hidden_head():
    model = load_backbone("resnet18", pretrained=False, num_classes=3)
    assert model.num_classes == 3
    model.replace_head(5, hidden=(16,), dropout=0.1)
    assert model.head_config == {"num_classes": 5, "hidden": [16], "dropout": 0.1}
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def _top1(model, path):
    x = transforms_for(model)(open_image(path)).unsqueeze(0)
    with torch.no_grad():
        return model(x).argmax(1).item()


def test_lite0_imagenet_weights_recognise_a_cat_and_a_dog(cats_dogs_dir):
    val = cats_dogs_dir / "validation"
    model = load_backbone("efficientnet_lite0")
    assert model.weights == "imagenet"
    cats = [_top1(model, val / "cats" / f"cat.{i}.jpg") for i in range(4001, 4006)]
    dogs = [_top1(model, val / "dogs" / f"dog.{i}.jpg") for i in range(4001, 4006)]
    assert sum(281 <= c <= 285 for c in cats) >= 3, cats
    assert sum(151 <= d <= 268 for d in dogs) >= 4, dogs
