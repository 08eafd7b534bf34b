"""classify_image, class names, capture_activations and Grad-CAM: one photo at a time."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from tlkit.backbones import load_backbone
from tlkit.data import transforms_for
from tlkit.explain import (capture_activations, class_names_of, classify_image, grad_cam, imagenet_classes,
                           spatial_module)
from tlkit.images import open_image

VAL = Path(__file__).resolve().parents[2] / "shared/data/cats_and_dogs_filtered/validation"
CLASSES = ["cats", "dogs"]


def _modes(model):
    return [m.training for m in model.modules()]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# ---------------------------------------------------------------- classify_image

def test_imagenet_classes_match_lite0_order():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) >= 998
    assert names[281] == "tabby" and names[151] == "Chihuahua"


def test_classify_image_uses_class_names(lite0_64, noisy_val):
    lite0_64.train()
    result = classify_image(lite0_64, noisy_val.files[0])
    assert [name for name, _ in result] in (CLASSES, CLASSES[::-1])  # topk clipped to 2 classes
    assert result[0][1] >= result[1][1] and sum(p for _, p in result) == pytest.approx(1.0, abs=1e-5)
    assert lite0_64.training
    assert classify_image(lite0_64, Image.open(noisy_val.files[0]), topk=1)[0][0] in CLASSES


def test_classify_image_imagenet_head_gets_imagenet_names(noisy_val):
    model = load_backbone("efficientnet_lite0", pretrained=False)
    model.input_size = 64
    result = classify_image(model, noisy_val.files[0], topk=5)
    assert len(result) == 5 and all(name in imagenet_classes() for name, _ in result)
    model.replace_head(3)
    assert class_names_of(model) == ["class 0", "class 1", "class 2"]
    with pytest.raises(TypeError):
        classify_image(model, 42)


# ---------------------------------------------------------------- capture_activations

def test_capture_activations_records_maps_hands_on_a_copy_and_removes_hooks():
    model = load_backbone("efficientnet_lite0", pretrained=False).eval()
    hooks = _hook_count(model)
    seen = {}
    pre = model.groups["stage1"].register_forward_pre_hook(lambda m, inputs: seen.setdefault("x", inputs[0]))
    with torch.no_grad(), capture_activations(model, ["stem", "stage2"]) as acts:
        assert _hook_count(model) == hooks + 3  # ours: one per group, plus the pre-hook above
        model(torch.randn(1, 3, 32, 32))
    pre.remove()
    assert acts["stem"].shape == (1, 32, 16, 16) and acts["stage2"].shape == (1, 24, 8, 8)
    assert seen["x"] is not acts["stem"] and torch.equal(seen["x"], acts["stem"])  # downstream gets a copy
    assert _hook_count(model) == hooks
    with pytest.raises(KeyError, match="stage8"):
        with capture_activations(model, ["stem", "head"]):  # the head has no spatial map
            pass
    assert _hook_count(model) == hooks  # the stem's hook is removed after the error too


# ---------------------------------------------------------------- Grad-CAM

@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return load_backbone("resnet18", pretrained=False, num_classes=2, class_names=CLASSES)


def test_grad_cam_frozen_model_shape_range_and_restores_state(resnet):
    for p in resnet.parameters():
        p.requires_grad_(False)
    for p in resnet.head.parameters():  # a mix: only the head trainable
        p.requires_grad_(True)
    resnet.frozen_groups = {"stem", "stage1"}
    resnet.train()  # frozen groups' BN are in eval mode inside a training model
    modes, flags, hooks = _modes(resnet), [p.requires_grad for p in resnet.parameters()], _hook_count(resnet)
    x = torch.randn(3, 64, 48)
    heat = grad_cam(resnet, x)
    assert heat.shape == (64, 48) and heat.dtype == torch.float32
    assert float(heat.min()) == 0.0 and float(heat.max()) == pytest.approx(1.0)
    assert heat.std() > 0.01  # a real map, not a constant
    assert _modes(resnet) == modes and resnet.training
    assert [p.requires_grad for p in resnet.parameters()] == flags
    assert all(p.grad is None for p in resnet.parameters())  # weights' gradients untouched
    assert _hook_count(resnet) == hooks
    assert not x.requires_grad


def test_grad_cam_targets_groups_and_errors(resnet):
    x = torch.randn(1, 3, 64, 64)
    assert not torch.equal(grad_cam(resnet, x, target=0), grad_cam(resnet, x, target=1))
    assert torch.equal(grad_cam(resnet, x, target="dogs"), grad_cam(resnet, x, target=1))
    assert grad_cam(resnet, x, group="stage2").shape == (64, 64)
    with torch.inference_mode():  # works even when called inside inference mode
        assert grad_cam(resnet, x).shape == (64, 64)
    hooks = _hook_count(resnet)
    resnet.train()
    with pytest.raises(ValueError, match="0..1"):
        grad_cam(resnet, x, target=5)
    with pytest.raises(KeyError, match="stage4"):
        grad_cam(resnet, x, group="stage9")
    assert _hook_count(resnet) == hooks and resnet.training  # restored after an error too


@pytest.mark.parametrize("name,group", [("mobilenet_v3_small", "stage5"), ("convnext_tiny", "stage4"),
                                        ("efficientnet_lite0", "stage8")])
def test_grad_cam_default_layer_is_last_spatial_map(name, group):
    model = load_backbone(name, pretrained=False, num_classes=2)
    last = spatial_module(model, group)
    assert not isinstance(last, (torch.nn.AdaptiveAvgPool2d, torch.nn.Flatten))
    with torch.no_grad():
        out = {}
        h = last.register_forward_hook(lambda m, i, o: out.setdefault("y", o))
        model.eval()(torch.randn(1, 3, 64, 64))
        h.remove()
    assert out["y"].ndim == 4 and out["y"].shape[-1] == 2  # 64 px / 32
    heat = grad_cam(model, torch.randn(1, 3, 64, 64))
    assert heat.shape == (64, 64) and torch.isfinite(heat).all() and 0 <= heat.min() <= heat.max() <= 1


# ---------------------------------------------------------------- real weights

@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def _top1_index(model, path) -> int:
    name = classify_image(model, path, topk=1)[0][0]
    return imagenet_classes().index(name)


@pytest.mark.skipif(not VAL.is_dir(), reason="needs the cats_and_dogs_filtered data in ../shared/data")
def test_pretrained_lite0_knows_cats_and_dogs(lite0):
    cats = [_top1_index(lite0, VAL / "cats" / f"cat.{i}.jpg") for i in range(4001, 4009)]
    dogs = [_top1_index(lite0, VAL / "dogs" / f"dog.{i}.jpg") for i in range(4001, 4009)]
    assert sum(281 <= c <= 285 for c in cats) >= 5, cats  # domestic cat classes
    assert sum(151 <= d <= 268 for d in dogs) >= 7, dogs  # dog breeds


@pytest.mark.skipif(not VAL.is_dir(), reason="needs the cats_and_dogs_filtered data in ../shared/data")
def test_pretrained_grad_cam_on_a_cat_is_a_real_map(lite0):
    x = transforms_for(lite0)(open_image(VAL / "cats" / "cat.4006.jpg"))
    heat = grad_cam(lite0, x)
    assert heat.shape == (224, 224)
    assert heat.std() > 0.1
    hot = float((heat > 0.5).float().mean())
    assert 0.02 < hot < 0.8  # the map highlights a region, not everything or a single pixel
