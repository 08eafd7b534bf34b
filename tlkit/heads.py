"""Classifier heads: the part of the network that is new for every task.

Example:
    >>> head = make_head(1280, 2, hidden=(256,), dropout=0.2)
    >>> head(torch.zeros(4, 1280)).shape
    torch.Size([4, 2])
"""
from __future__ import annotations

import math

import torch
from torch import nn


def make_head(num_features: int, num_classes: int, hidden: tuple[int, ...] | list[int] = (),
              dropout: float = 0.0, generator: torch.Generator | None = None) -> nn.Sequential:
    """A linear head, or a small MLP when ``hidden`` is given.

    Args:
        num_features: size of the pooled feature vector (the backbone's ``num_features``).
        num_classes: number of output classes (2 for dogs vs cats).
        hidden: widths of hidden layers, each followed by ReLU.
        dropout: dropout before every Linear layer (0 disables it).
        generator: draw the initial weights from this generator instead of torch's
            global one, which is then neither drawn from nor reseeded (safe in a
            worker thread). The same seed gives the same weights as
            ``torch.manual_seed(seed); make_head(...)``.

    Example:
        >>> make_head(512, 2)
        Sequential(
          (0): Linear(in_features=512, out_features=2, bias=True)
        )
    """
    _check_head_args(num_features, num_classes, dropout)
    if generator is not None:
        with torch.device("meta"):  # shapes only: nothing is drawn from the global generator
            head = make_head(num_features, num_classes, hidden, dropout)
        return init_linear_(head.to_empty(device="cpu"), generator)
    layers: list[nn.Module] = []
    width = num_features
    for h in hidden:
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
        width = int(h)
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def init_linear_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialises every ``nn.Linear`` in ``module`` as PyTorch does, drawing from ``generator``.

    Example:
        >>> init_linear_(head, torch.Generator().manual_seed(0))
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):  # nn.Linear.reset_parameters, with a generator
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1 / math.sqrt(m.in_features) if m.in_features > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    return module


def _check_head_args(num_features: int, num_classes: int, dropout: float) -> None:
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}.")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")


def replace_head(model: nn.Module, num_classes: int, hidden: tuple[int, ...] = (),
                 dropout: float = 0.0, class_names: list[str] | None = None) -> nn.Module:
    """Replaces the classifier of a tlkit Backbone in place and returns it.

    Works for every registered architecture, whatever the original attribute
    was called (``fc``, ``classifier``, ``_fc``): the backbone contract keeps it
    in ``model.groups["head"]``.

    Example:
        >>> model = replace_head(load_backbone("resnet18", pretrained=False), 2)
        >>> model.num_classes
        2
    """
    if not hasattr(model, "replace_head"):
        raise TypeError(f"replace_head needs a tlkit Backbone (from load_backbone), got {type(model).__name__}.")
    return model.replace_head(num_classes, hidden=hidden, dropout=dropout, class_names=class_names)
