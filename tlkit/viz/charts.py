"""Confusion matrices and bar charts (with intervals)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from tlkit.viz.figures import _color, _subplots


CM_CELL_LABELS_UP_TO = 25  # classes; beyond this the cells are too small for their counts
CM_TICK_LABELS_UP_TO = 50  # classes; beyond this every class name would overlap the next
CM_MAX_INCHES = 12.0  # the figure stops growing here (1200 px at dpi 100), whatever the class count


def plot_confusion_matrix(cm, classes: Sequence[str], title: str = "confusion matrix"):
    """The confusion matrix (rows: true class, columns: predicted) with counts in the cells.

    The figure grows with the classes up to ``CM_MAX_INCHES``. Beyond
    ``CM_CELL_LABELS_UP_TO`` classes the cells carry no counts, and beyond
    ``CM_TICK_LABELS_UP_TO`` the axes show class indices and the title lists the
    top confusions instead, so 500 classes draw as fast as 5.

    Example:
        >>> plot_confusion_matrix(confusion_matrix(p.labels, p.preds, 2), ["cats", "dogs"])
    """
    cm = np.asarray(torch.as_tensor(cm).cpu(), dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"cm must be (C, C) with C = len(classes) = {len(classes)}, got shape {cm.shape}.")
    n = len(classes)
    size = min(CM_MAX_INCHES, max(3.2, 0.6 * n + 1.6))
    fig, axes = _subplots(1, 1, (size + 0.8, size))
    ax = axes[0, 0]
    im = ax.imshow(cm, cmap="Blues", vmin=0, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8)
    if n <= CM_TICK_LABELS_UP_TO:
        ax.set_xticks(range(n), classes, rotation=45 if n > 3 else 0)
        ax.set_yticks(range(n), classes)
    else:
        top = "; ".join(f"{classes[i]} as {classes[j]} ({c})" for i, j, c in top_confusions(cm, 5))
        title = f"{title} ({n} classes; by index)\ntop confusions: {top or 'none'}"
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10 if n <= CM_TICK_LABELS_UP_TO else 8, wrap=True)
    if n <= CM_CELL_LABELS_UP_TO:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > threshold else "black")
    return fig


def top_confusions(cm, k: int = 10) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells as ``(true, predicted, count)``, largest first.

    Example:
        >>> top_confusions([[5, 2], [0, 3]])
        [(0, 1, 2)]
    """
    cm = np.asarray(cm, dtype=np.int64).copy()
    np.fill_diagonal(cm, 0)
    flat = np.argsort(cm, axis=None)[::-1][:k]
    return [(int(i), int(j), int(cm[i, j])) for i, j in zip(*np.unravel_index(flat, cm.shape)) if cm[i, j] > 0]


def plot_bar(rows: Sequence[dict], x: str, y: str, title: str = "", interval: str | None = None):
    """A bar per row (e.g. one per strategy) with the value written on it.

    ``interval``: the key of a ``(low, high)`` pair per row (e.g. a 95% binomial
    interval), drawn as an error bar.

    Example:
        >>> plot_bar([{"strategy": "frozen", "val_acc": 0.97, "ci": (0.96, 0.98)}], "strategy", "val_acc",
        ...          interval="ci")
    """
    if not rows:
        raise ValueError("rows is empty.")
    fig, axes = _subplots(1, 1, (max(4.0, 1.1 * len(rows)), 3.2))
    ax = axes[0, 0]
    names, values = [str(r[x]) for r in rows], [float(r[y]) for r in rows]
    yerr = None
    if interval is not None:
        yerr = [[v - float(r[interval][0]) for v, r in zip(values, rows)],
                [float(r[interval][1]) - v for v, r in zip(values, rows)]]
    bars = ax.bar(names, values, color=[_color(name, i) for i, name in enumerate(names)], yerr=yerr, capsize=4)
    ax.bar_label(bars, fmt="%.3g", fontsize=8, label_type="center" if yerr else "edge")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=20 if len(rows) > 4 else 0)
    return fig


# --------------------------------------------------------------------------
# Images


FREEZE_COLORS = {"trainable": "#c7e9c0", "frozen": "#e0e0e0"}  # cell fills: light green, light grey


def plot_freeze_state(rows: Sequence[dict], title: str = "layer groups: trainable or frozen"):
    """A table figure, one row per layer group (input to output): state, parameters, BatchNorm mode.

    ``rows`` are :func:`tlkit.freezing.trainable_summary` rows (``group``,
    ``trainable``, ``params``, ``bn_mode``; an optional ``state`` text
    overrides "trainable"/"frozen", e.g. for a queued change). Trainable rows
    are green, frozen rows grey, so the freeze state reads at a glance.

    Example:
        >>> plot_freeze_state(trainable_summary(model), title="feature extraction")
    """
    if not rows:
        raise ValueError("rows is empty; pass trainable_summary(model).")
    cells, colours = [], []
    for r in rows:
        state = "trainable" if r["trainable"] else "frozen"
        cells.append([r["group"], r.get("state", state), f"{r['params']:,}", str(r.get("bn_mode", ""))])
        colours.append([FREEZE_COLORS[state]] * 4)
    fig, axes = _subplots(1, 1, (6.4, 0.26 * (len(rows) + 1) + 0.35))
    ax = axes[0, 0]
    ax.set_axis_off()
    table = ax.table(cellText=cells, cellColours=colours, loc="upper center", cellLoc="left",
                     colLabels=["group", "state", "parameters", "BatchNorm in training"],
                     colWidths=[0.16, 0.36, 0.18, 0.3])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.2)
    ax.set_title(title, fontsize=10)
    return fig
