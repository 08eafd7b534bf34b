"""Small models for tests that need real, varied features without pretrained weights."""
from __future__ import annotations

import torch

from tlkit.backbones import load_backbone


def noise_stat_resnet(seed: int = 0):
    """ResNet-18 (random weights) with BatchNorm statistics from one noise batch, so different images
    give different features (with the default statistics every feature is nearly the same)."""
    torch.manual_seed(seed)
    model = load_backbone("resnet18", pretrained=False, num_classes=2)
    for bn in model.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    return model.eval()
