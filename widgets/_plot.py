"""Live training curves as PNG bytes, drawn off the main thread.

The figures are ``matplotlib.figure.Figure`` objects on an Agg canvas, never
pyplot ones: pyplot keeps global state that is not thread-safe, and the
notebook's inline backend would also print every pyplot figure under the cell
that happens to run next. The PNG goes into a core ``widgets.Image``, which
renders the same way on JupyterLab, Colab (ipywidgets 7) and Binder.
"""
from __future__ import annotations

import io
import math
from typing import Sequence


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """PNG of a Figure (Agg, no pyplot)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def message_png(text: str, width: float = 8, height: float = 2.6) -> bytes:
    """A placeholder image that says ``text`` (e.g. "press Start")."""
    fig = _figure(width, height)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, color="#666")
    return png_bytes(fig)


def _finite(xs: Sequence, ys: Sequence) -> tuple[list, list]:
    pairs = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float)) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves_png(rows: Sequence[dict], batch_losses: Sequence[tuple[float, float]] = (),
               total_epochs: int | None = None) -> bytes:
    """Loss and accuracy, train and validation, per epoch; plus the running batch loss.

    Args:
        rows: History rows (``epoch``, ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``).
        batch_losses: ``(fractional epoch, loss)`` points, drawn as a thin line.
        total_epochs: for short runs (up to 30 epochs) fixes the x axis, so the
            plot does not rescale as it grows; longer runs zoom on the epochs so far.
    """
    fig = _figure(8, 2.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    if batch_losses:
        xs, ys = _finite(*zip(*batch_losses))
        ax_loss.plot(xs, ys, color="#9ecae1", lw=0.8, label="train (running)")
    epochs = [r.get("epoch") for r in rows]
    for ax, key, colour, label in ((ax_loss, "train_loss", "#1f77b4", "train"),
                                   (ax_loss, "val_loss", "#ff7f0e", "validation"),
                                   (ax_acc, "train_acc", "#1f77b4", "train"),
                                   (ax_acc, "val_acc", "#ff7f0e", "validation")):
        xs, ys = _finite(epochs, [r.get(key) for r in rows])
        if xs:
            ax.plot(xs, ys, "o-", color=colour, label=label, ms=4)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        if total_epochs and total_epochs <= 30:
            ax.set_xlim(0, total_epochs + 0.2)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
    return png_bytes(fig)
