"""The registry, loading options and pretrained predictions (the contract itself: test_backbone_contract.py)."""

import pytest
import torch

from tlkit import list_backbones, load_backbone
from tlkit.data import transforms_for
from tlkit.images import open_image

REGISTERED = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet34", "resnet50",
              "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]


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


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_imagenet_weights_recognise_a_cat_and_a_dog(cats_dogs_dir, name):
    val = cats_dogs_dir / "validation"
    model = load_backbone(name)
    assert model.weights == "imagenet"
    cats = [_top1(model, val / "cats" / f"cat.{i}.jpg") for i in range(4001, 4006)]
    dogs = [_top1(model, val / "dogs" / f"dog.{i}.jpg") for i in range(4001, 4006)]
    assert sum(281 <= c <= 285 for c in cats) >= 3, cats
    assert sum(151 <= d <= 268 for d in dogs) >= 4, dogs


@pytest.mark.parametrize("variant, size", [(1, 240), (2, 260)])
def test_lite1_lite2_groups_compute_what_the_package_network_computes(variant, size):
    """The groups (stages cut with the package's depth scaling) equal the package's own forward."""
    from efficientnet_lite_pytorch import EfficientNet

    from tlkit.lite import _weights_path
    from tlkit.storage import safe_load
    model = load_backbone(f"efficientnet_lite{variant}")
    ref = EfficientNet.from_name(f"efficientnet-lite{variant}")
    ref.load_state_dict(safe_load(_weights_path(variant), "weights file"))
    ref.eval()
    assert model.input_size == size and model.group_names == ["stem", *[f"stage{i}" for i in range(1, 9)], "head"]
    assert [len(model.groups[f"stage{i}"].blocks) for i in range(1, 8)] == [1, 3, 3, 4, 4, 5, 1]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)


def test_lite_variant_without_a_package_is_refused():
    from tlkit.lite import lite_groups
    with pytest.raises(ValueError, match=r"\[0, 1, 2\]"):
        lite_groups(3, pretrained=False)
