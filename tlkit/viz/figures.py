"""The figure basics every plot shares: a pyplot-free Figure, the PNG path, colours and axes."""
from __future__ import annotations

import io
import math
from typing import Sequence


def new_figure(width: float, height: float):
    """A ``matplotlib.figure.Figure`` (constrained layout) that pyplot never sees.

    pyplot keeps global state that is not thread-safe, so every figure here,
    also those the widgets draw in worker threads, is built directly. A
    notebook still shows one returned as a cell's value (IPython's inline
    formatter handles any Figure).

    Example:
        >>> new_figure(4, 3).axes
        []
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# One colour per strategy in every figure of the course (matplotlib's C0..C9 cycle).
STRATEGY_COLORS = {"feature extraction": "C0", "partial fine-tuning": "C1", "full fine-tuning": "C2",
                   "discriminative rates": "C3", "layer-wise learning rates": "C3", "gradual unfreezing": "C4"}


def _color(label: str, i: int) -> str:
    """The fixed colour of a strategy label, else the i-th of the cycle."""
    return STRATEGY_COLORS.get(str(label).lower(), f"C{i % 10}")


def _epoch_axis(ax, values: Sequence[float] = ()) -> None:
    """Integer epoch ticks; a log y axis when the (positive) values span more than a decade."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if positive and len(positive) == len(values) and max(positive) > 10 * min(positive):
        ax.set_yscale("log")


def _subplots(nrows: int, ncols: int, size: tuple[float, float]):
    """A figure with a ``(nrows, ncols)`` array of axes, ``size`` inches each."""
    fig = new_figure(size[0] * ncols, size[1] * nrows)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def figure_to_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of ``fig`` (for ``widgets.Image``): ``figsize x dpi`` pixels exactly.

    A figure that pyplot manages (from ``plt.figure()``) is closed as well;
    the figures of this module never touch pyplot.

    Example:
        >>> figure_to_png(plot_history(h))[:4]
        b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if getattr(fig.canvas, "manager", None) is not None:  # registered with pyplot: release it there too
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


def _legend_outside(fig, axes) -> None:
    """One legend for the figure, right of the axes, so it never covers a curve (labels deduplicated)."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=8)


# --------------------------------------------------------------------------
# Curves
