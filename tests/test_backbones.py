"""The registry, loading options and pretrained predictions (the contract itself: test_backbone_contract.py)."""
from pathlib import Path

import pytest
import torch

from tlkit import list_backbones, load_backbone
from tlkit.data import transforms_for
from tlkit.images import open_image

VAL = Path(__file__).resolve().parents[2] / "shared/data/cats_and_dogs_filtered/validation"
REGISTERED = ["efficientnet_lite0", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small",
              "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]


def test_registry_lists_every_required_backbone():
    assert set(REGISTERED) <= set(list_backbones())


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


@pytest.mark.skipif(not VAL.is_dir(), reason="needs ../shared/data")
def test_lite0_imagenet_weights_recognise_a_cat_and_a_dog():
    model = load_backbone("efficientnet_lite0")
    assert model.weights == "imagenet"
    cats = [_top1(model, VAL / "cats" / f"cat.{i}.jpg") for i in range(4001, 4006)]
    dogs = [_top1(model, VAL / "dogs" / f"dog.{i}.jpg") for i in range(4001, 4006)]
    assert sum(281 <= c <= 285 for c in cats) >= 3, cats
    assert sum(151 <= d <= 268 for d in dogs) >= 4, dogs
