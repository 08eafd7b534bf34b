"""Train/eval modes: switch a model to eval mode for a while, then put every module back.

``model.train(was_training)`` is not enough to undo ``model.eval()``: a
Backbone in training keeps its frozen groups (and, with ``bn_policy="eval_all"``,
every BatchNorm) in eval mode, and a caller may have set single modules by
hand. So this records each module's own flag and restores exactly that.

Example:
    >>> with eval_mode(model):
    ...     logits = model(x)          # dropout off, BatchNorm uses running statistics
    >>> model.training                 # as before
    True
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every module's train/eval flag as before afterwards, also on errors.

    Example:
        >>> with eval_mode(head):
        ...     probs = head(feats).softmax(1)
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
