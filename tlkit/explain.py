"""What does the model see in one photo, and where does it look?

* ``classify_image`` names the top classes of one photo (ImageNet names for
  the original 1000-way head; ``class_names_of`` says which names apply).
* ``capture_activations`` records the feature maps of chosen layer groups,
  and ``spatial_module`` says which module produces each of them.
* ``grad_cam`` shows which pixels pushed a class score up.

Example:
    >>> classify_image(model, "cat.4006.jpg", topk=1)
    [('tabby', 0.70)]
    >>> grad_cam(model, transforms_for(model)(open_image("cat.4006.jpg"))).shape
    torch.Size([224, 224])
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterator

import torch
from PIL import Image
from torch import nn

from tlkit.data import transforms_for
from tlkit.images import open_image
from tlkit.modes import eval_mode

log = logging.getLogger(__name__)

# Modules that end the spatial part of a group (MobileNetV3's and ConvNeXt's last
# group pools to 1x1, normalises and flattens inside the body; see backbones.py).
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, in the index order of every ImageNet head.

    They ship inside torchvision (no download). EfficientNet-Lite0's output
    uses the same order (index 281 is "tabby", 151 "Chihuahua").

    Example:
        >>> imagenet_classes()[281]
        'tabby'
    """
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_names_of(model: nn.Module) -> list[str]:
    """The model's class names: its own, ImageNet's for an original head, else ``class 0..``.

    Example:
        >>> class_names_of(load_backbone("resnet18", pretrained=False))[151]
        'Chihuahua'
    """
    n = model.num_classes
    names = getattr(model, "class_names", None)
    if names and len(names) == n:
        return list(names)
    if getattr(model, "head_config", None) is None and n == 1000:
        return imagenet_classes()
    return [f"class {i}" for i in range(n)]


def as_batch(model: nn.Module, image, transform: Callable | None = None) -> torch.Tensor:
    """Path, PIL image or tensor -> one preprocessed batch ``(1, 3, H, W)``.

    A path or PIL image goes through ``transform`` (default ``transforms_for(model)``).

    Example:
        >>> as_batch(model, "cat.4006.jpg").shape
        torch.Size([1, 3, 224, 224])
    """
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        image = (transform or transforms_for(model))(image.convert("RGB"))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a path, a PIL image or a tensor, got {type(image).__name__}.")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"Expected one image (3, H, W) or (1, 3, H, W), got shape {tuple(image.shape)}.")
    return image


@torch.no_grad()
def classify_image(model: nn.Module, image, transform: Callable | None = None,
                   topk: int = 5) -> list[tuple[str, float]]:
    """The ``topk`` classes of one photo with their probabilities, best first.

    Example:
        >>> classify_image(load_backbone("efficientnet_lite0"), "cat.4006.jpg", topk=2)
        [('tabby', 0.70), ('Egyptian cat', 0.15)]
    """
    x = as_batch(model, image, transform)
    param = next(model.parameters())
    with eval_mode(model):
        probs = model(x.to(param.device, param.dtype)).float().softmax(1)[0].cpu()  # (C,)
    names = class_names_of(model)
    values, idx = probs.topk(min(topk, len(probs)))
    return [(names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def spatial_module(model: nn.Module, group: str) -> nn.Module | None:
    """The module whose output is ``group``'s last spatial map ``(B, C, h, w)``.

    Usually the group itself. MobileNetV3's and ConvNeXt's last group also
    pools and flattens (tlkit keeps their pretrained pre-classifier layers in
    the body), so there it is the sub-module just before the pooling.
    None when the group has no spatial output at all.

    Example:
        >>> spatial_module(load_backbone("convnext_tiny", pretrained=False), "stage4")
        Sequential(...)   # the ConvNeXt blocks, before avgpool
    """
    if group not in model.groups or group == "head":
        body = [g for g in model.group_names if g != "head"]
        raise KeyError(f"Unknown group {group!r}. Choose one of: {', '.join(body)}.")
    module = model.groups[group]
    if isinstance(module, nn.Sequential):
        for i, child in enumerate(module):
            if isinstance(child, _POOLING):
                return module[i - 1] if i > 0 else None
    return module


@contextlib.contextmanager
def capture_activations(model: nn.Module, groups: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Records each group's spatial output during a forward pass (hooks removed on exit).

    The hook hands a copy downstream, so a later in-place op cannot change
    (or break the gradient of) the tensor recorded here.

    Example:
        >>> with capture_activations(model, ["stem", "stage4"]) as acts:
        ...     model(x)
        >>> acts["stem"].shape
        torch.Size([1, 32, 112, 112])
    """
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                acts[name] = output
                return output.clone()
            return None
        return hook

    try:
        for name in groups:
            module = spatial_module(model, name)
            if module is not None:
                handles.append(module.register_forward_hook(hook_for(name)))
        yield acts
    finally:
        for h in handles:
            h.remove()


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | str | None = None,
             group: str | None = None) -> torch.Tensor:
    """Grad-CAM heatmap ``(H, W)`` in [0, 1]: where the image raised the ``target`` score.

    The activation ``A`` (C, h, w) of ``group`` (default: the last group with a
    spatial map) is weighted by the mean gradient of the target logit per
    channel, summed, passed through ReLU, resized to the input and scaled to
    [0, 1] (all zeros if nothing raised the score).

    Works on frozen models: gradients flow from the input, not the weights,
    and parameters' ``requires_grad`` and ``.grad`` are left untouched. Every
    module's train/eval mode is restored, and the hooks are removed.

    Example:
        >>> x = transforms_for(model)(open_image("cat.jpg"))
        >>> heat = grad_cam(model, x)            # target: the predicted class
        >>> heat.shape, float(heat.max())
        (torch.Size([224, 224]), 1.0)
    """
    x = as_batch(model, x, None)  # (1, 3, H, W)
    with eval_mode(model):  # BN running stats, no dropout: explain the model as it predicts
        cam = _unscaled_cam(model, x, target, group)  # (H, W), >= 0
    lo, hi = cam.min(), cam.max()
    return ((cam - lo) / (hi - lo) if hi > lo else torch.zeros_like(cam)).detach().float().cpu()


def _unscaled_cam(model: nn.Module, x: torch.Tensor, target: int | str | None, group: str | None) -> torch.Tensor:
    """Grad-CAM ``(H, W)`` of ``group`` (None: the last one with a spatial map), before scaling.

    Inference mode is switched off because the caller (a notebook cell, a
    widget) may be inside it, and the gradient must reach the activations.
    """
    param = next(model.parameters())
    groups = [g for g in model.group_names if g != "head"] if group is None else [group]
    with torch.inference_mode(False), torch.enable_grad(), capture_activations(model, groups) as acts:
        # The gradient flows from the input, so frozen weights need none.
        x = x.detach().clone().to(param.device, param.dtype).requires_grad_(True)
        logits = model(x)  # (1, C)
    if not acts:
        raise ValueError(f"Group {group!r} has no spatial (B, C, h, w) output; choose an earlier one.")
    name = [g for g in groups if g in acts][-1]
    index = _target_index(model, logits, target)
    log.debug("grad_cam: group %s, target %d", name, index)
    with torch.inference_mode(False):
        grads = torch.autograd.grad(logits[0, index], acts[name])[0][0]  # (C, h, w)
        act = acts[name].detach()[0]  # (C, h, w)
        cam = torch.relu((grads.mean(dim=(1, 2))[:, None, None] * act).sum(0))  # (h, w)
        return nn.functional.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear",
                                         align_corners=False)[0, 0]  # (H, W)


def _target_index(model: nn.Module, logits: torch.Tensor, target: int | str | None) -> int:
    """The class index to explain: the predicted one, a class name, or an index (checked)."""
    n = logits.shape[1]
    if target is None:
        return int(logits.argmax(1))
    if isinstance(target, str):
        names = class_names_of(model)
        if target not in names:
            raise ValueError(f"Unknown class {target!r}. The model's classes start with: {names[:10]}.")
        return names.index(target)
    if not 0 <= int(target) < n:
        raise ValueError(f"target must be a class index in 0..{n - 1}, got {target}.")
    return int(target)
