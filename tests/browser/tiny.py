"""A tiny tlkit Backbone (about 1,000 parameters) for widget tests: trains in milliseconds.

It is a real :class:`tlkit.backbones.Backbone` (layer groups stem, stage1,
stage2, head, BatchNorm in every body group), so freezing, the BN policy,
``fit``, ``predict`` and Grad-CAM all work on it as on a pretrained network.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from tlkit.backbones import Backbone


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def tiny_backbone(num_classes: int = 2, seed: int = 0, class_names=("cats", "dogs")) -> Backbone:
    """stem (3->8), stage1 (8->16), stage2 (16->16), head Linear(16, num_classes); 32 px input."""
    torch.manual_seed(seed)
    groups = OrderedDict(stem=_block(3, 8, 2), stage1=_block(8, 16, 2), stage2=_block(16, 16, 1))
    names = list(class_names) if class_names and len(class_names) == num_classes else None
    model = Backbone("tiny", groups, nn.Linear(16, num_classes), 16, input_size=32, weights=None,
                     class_names=names)
    model.head_config = {"num_classes": num_classes, "hidden": [], "dropout": 0.0}
    return model
