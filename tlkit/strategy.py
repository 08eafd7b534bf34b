"""The course's three training strategies, as one call: which groups train, at which rates.

Feature extraction, partial fine-tuning and full fine-tuning differ only in
which layer groups are frozen and how fast each trainable group learns; the
loop is the same :func:`tlkit.train.fit`. ``python -m tlkit train --strategy``
and the strategy board widget run this.

Example:
    >>> history = train_strategy(model, "partial", train, val, epochs=2, image_size=160)
    >>> sorted(model.frozen_groups)
    ['stage1', 'stage2', 'stage3', 'stage4', 'stage5', 'stage6', 'stem']
"""
from __future__ import annotations

from typing import Any

from torch import nn

from tlkit.callbacks import GradualUnfreezing
from tlkit.freezing import freeze_to, set_bn_policy
from tlkit.history import History
from tlkit.train import fit

# The course's strategies and their names in prose (the CLI's --strategy and the widgets use these).
STRATEGIES = {"features": "feature extraction", "partial": "partial fine-tuning", "finetune": "full fine-tuning"}


def train_strategy(model: nn.Module, strategy: str, train_data, val_data=None, epochs: int = 5,
                   lr: float = 1e-4, head_lr: float | None = None, unfreeze_at: int | None = None,
                   bn_policy: str = "eval_all", **options: Any) -> History:
    """Trains with one of the course's strategies (what ``python -m tlkit train --strategy`` runs).

    Each body group has a fixed rate whatever the strategy: log-evenly spread
    from ``lr / 10`` (stem) to ``lr`` (last body group), because early layers
    hold generic features that need little change. The new head learns
    fastest, at ``head_lr`` (default ``10 * lr``).

    * ``"features"``: feature extraction; only the head trains.
    * ``"partial"``: the last two body groups and the head train.
    * ``"finetune"``: every group trains (discriminative rates as above).
    * ``unfreeze_at=k``: gradual unfreezing. ``"finetune"`` starts as
      ``"features"``, ``"partial"`` as itself, and every frozen group joins
      at the start of epoch ``k`` (1-based) with its (lower) body rate.

    ``bn_policy="eval_all"`` (the default here) keeps every BatchNorm layer's
    ImageNet running statistics, also in groups that train; their scale and
    shift still learn. With batches of 32 and a couple of epochs, letting the
    statistics follow the batches costs accuracy: Lite0 at 160 px, 2 epochs
    of ``"finetune"`` reached 0.95-0.96 validation accuracy on dogs vs cats
    with ``"eval"`` and 0.98 with ``"eval_all"``. See
    :func:`tlkit.freezing.set_bn_policy`.

    Other keywords go to :func:`fit`. Returns the History.

    Example:
        >>> train_strategy(model, "finetune", train, val, epochs=2, image_size=160)
        >>> train_strategy(model, "finetune", train, val, epochs=4, unfreeze_at=2)  # head first
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}.")
    if unfreeze_at is not None and not (isinstance(unfreeze_at, int) and 2 <= unfreeze_at <= epochs):
        raise ValueError(f"unfreeze_at must be an epoch between 2 and epochs={epochs}, got {unfreeze_at!r}.")
    body = model.group_names[:-1]
    rates = {g: lr / 10 * 10 ** (i / max(len(body) - 1, 1)) for i, g in enumerate(body)}
    rates["head"] = head_lr if head_lr is not None else 10 * lr
    start = {"features": -1, "partial": -3, "finetune": 0}[strategy]
    if unfreeze_at is not None and strategy == "finetune":
        start = -1
    freeze_to(model, start)
    set_bn_policy(model, bn_policy)
    if unfreeze_at is not None:
        later = sorted(model.frozen_groups, key=model.group_names.index)
        later_rates = {g: rates[g] for g in later}
        options["callbacks"] = [*options.get("callbacks", ()), GradualUnfreezing({unfreeze_at: later}, later_rates)]
    trainable = {g: r for g, r in rates.items() if g not in model.frozen_groups}
    return fit(model, train_data, val_data, epochs=epochs, lr=trainable, **options)
