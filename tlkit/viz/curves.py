"""Curves over epochs and learning rates: training histories, LR comparisons, the LR range test."""
from __future__ import annotations

import math
from typing import Sequence


from tlkit.history import History
from tlkit.viz.figures import _color, _epoch_axis, _legend_outside, _subplots


def _as_history(h) -> History:
    if isinstance(h, History):
        return h
    if isinstance(h, dict):  # columns: {"train_loss": [...], ...}
        n = max((len(v) for v in h.values()), default=0)
        return History([{k: v[i] for k, v in h.items() if i < len(v)} for i in range(n)])
    if isinstance(h, (list, tuple)):  # rows
        return History(list(h))
    raise TypeError(f"Expected a History, a list of row dicts or a dict of columns, got {type(h).__name__}.")


def _runs(history_or_runs) -> dict[str, History]:
    """One History -> {"": h}; {label: History} -> {label: History}."""
    if isinstance(history_or_runs, dict) and history_or_runs and all(
            isinstance(v, History) or (isinstance(v, list) and v and isinstance(v[0], dict))
            for v in history_or_runs.values()):
        return {str(k): _as_history(v) for k, v in history_or_runs.items()}
    return {"": _as_history(history_or_runs)}


def _column(h: History, key: str) -> tuple[list, list]:
    """(epochs, values) for the rows that have a number in ``key``."""
    xs, ys = [], []
    for i, row in enumerate(h.rows):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):  # NaN, inf: a gap
            xs.append(row.get("epoch", i + 1))
            ys.append(float(v))
    return xs, ys


def plot_history(history, metrics: Sequence[str] = ("loss", "acc"), *,
                 batch_losses: Sequence[tuple[float, float]] = (), total_epochs: int | None = None):
    """Train (solid) vs validation (dashed) curves, one axis per metric.

    ``history`` is a History, or ``{label: History}`` to overlay several runs
    (one colour per run). ``"loss"`` plots ``train_loss`` and ``val_loss``; a
    full column name such as ``"val_acc"`` plots just that column. One legend
    sits right of the axes. The live plot of ``widgets.TrainingDashboard``
    is this figure too:

    Args:
        batch_losses: ``(fractional epoch, loss)`` points of the running
            training loss, drawn thin on the loss axis.
        total_epochs: the length of a run still going: for up to 30 epochs the
            x axis is fixed to it, and accuracy axes to 0..1, so the plot does not
            rescale as it grows.

    Example:
        >>> plot_history({"frozen": h1, "fine-tuned": h2}, metrics=("acc",))
    """
    runs = _runs(history)
    fig, axes = _subplots(1, len(metrics), (4.2, 3.2))
    for ax, metric in zip(axes[0], metrics):
        if batch_losses and metric in ("loss", "train_loss"):
            points = [(x, y) for x, y in batch_losses if math.isfinite(y)]  # a NaN batch loss: a gap
            ax.plot([x for x, _ in points], [y for _, y in points], color="#9ecae1", lw=0.8, label="train (running)")
        drawn = _draw_metric(ax, runs, metric)
        if not drawn and any(len(h) for h in runs.values()):
            have = sorted({k for h in runs.values() for k in h.keys()})
            raise KeyError(f"No column for metric {metric!r}. The history has: {', '.join(have)}.")
        ax.set_xlabel("epoch")
        _epoch_axis(ax, [y for line in ax.lines for y in line.get_ydata()] if "loss" in metric else ())
        ax.set_ylabel(metric + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.grid(alpha=0.3)
        if total_epochs and total_epochs <= 30:
            ax.set_xlim(0, total_epochs + 0.2)
            if metric.endswith("acc"):
                ax.set_ylim(0, 1.02)
    _legend_outside(fig, axes[0])
    return fig


def _draw_metric(ax, runs: dict[str, History], metric: str) -> int:
    """Draws ``metric``'s train (solid) and val (dashed) columns, one colour per run; returns the line count."""
    keys = [metric] if metric.startswith(("train_", "val_")) else [f"train_{metric}", f"val_{metric}"]
    drawn = 0
    for i, (label, h) in enumerate(runs.items()):
        for key in keys:
            xs, ys = _column(h, key)
            if xs:
                style = "--" if key.startswith("val_") else "-"
                split = key.split("_", 1)[0]  # "train" or "val"
                ax.plot(xs, ys, style, color=_color(label, i), marker="o", markersize=3,
                        label=f"{label} ({split})" if label else split)
                drawn += 1
    return drawn


def format_rate(lr: float) -> str:
    """A learning rate as people write it, to two significant digits: ``1e-03``, ``1.7e-03``.

    Example:
        >>> format_rate(0.001), format_rate(0.0017)
        ('1e-03', '1.7e-03')
    """
    return f"{float(lr):.1e}".replace(".0e", "e")


def plot_lr_curves(runs: dict, metrics: Sequence[str] = ("val_acc", "val_loss")):
    """One line per learning rate (``{lr: History}``), in rate order.

    Colours come from a qualitative palette by rank, not from a colour scale
    over the rates: two neighbouring rates (1e-3 and the slider's 2e-3) still
    look different. The legend sits right of the axes. A loss that spans decades gets
    a log axis.

    Example:
        >>> plot_lr_curves({1e-4: h1, 1e-3: h2, 1e-2: h3})
    """
    if not runs:
        raise ValueError("runs is empty; pass {learning_rate: History}.")
    lrs = sorted(runs, key=float)
    markers = "osD^v<>ph*"
    fig, axes = _subplots(1, len(metrics), (4.2, 3.2))
    for ax, metric in zip(axes[0], metrics):
        for i, lr in enumerate(lrs):
            xs, ys = _column(_as_history(runs[lr]), metric)
            ax.plot(xs, ys, color=f"C{i % 10}", marker=markers[i % len(markers)], markersize=4,
                    label=f"lr {format_rate(lr)}")
        ax.set_xlabel("epoch")
        _epoch_axis(ax, [y for line in ax.lines for y in line.get_ydata()] if "loss" in metric else ())
        ax.set_ylabel(metric + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.grid(alpha=0.3)
    _legend_outside(fig, axes[0])
    return fig


def plot_lr_find(result):
    """Loss against learning rate (log x) with the suggested rate marked.

    ``result`` has ``lrs``, ``losses`` and ``suggestion`` (attributes or keys).

    Example:
        >>> plot_lr_find(lr_find(model, train))
    """
    get = (lambda k: result[k]) if isinstance(result, dict) else (lambda k: getattr(result, k))
    lrs, losses, suggestion = list(get("lrs")), list(get("losses")), get("suggestion")
    fig, axes = _subplots(1, 1, (5.0, 3.4))
    ax = axes[0, 0]
    ax.plot(lrs, losses, color="C0", label="loss")
    ax.set_xscale("log")
    if suggestion:
        ax.axvline(suggestion, color="C3", linestyle="--", label=f"suggestion {format_rate(suggestion)}")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    _legend_outside(fig, [ax])
    return fig
