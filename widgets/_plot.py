"""The widgets' figures as PNG bytes: tlkit.viz's figures, and a placeholder.

Every figure is a ``matplotlib.figure.Figure`` built by :mod:`tlkit.viz`,
never a pyplot one: pyplot keeps global state that is not thread-safe, and
the notebook's inline backend would also print every pyplot figure under the
cell that happens to run next. The PNG goes into a core ``widgets.Image``,
which renders the same way on JupyterLab, Colab (ipywidgets 7) and Binder.
:func:`show_png` gives the Image the PNG's own width, so the browser shows
it pixel for pixel instead of stretching it across the cell (blurry).
"""
from __future__ import annotations

from typing import Sequence

from tlkit import viz
from tlkit.history import History


def png_width(png: bytes) -> int:
    """Width in pixels, from the PNG header (IHDR, bytes 16-20)."""
    return int.from_bytes(bytes(png[16:20]), "big")


def show_png(image, png: bytes) -> None:
    """Puts ``png`` into a ``widgets.Image`` at its own pixel width (no upscaling)."""
    image.value = png
    image.layout.width = f"{png_width(png)}px"


def message_png(text: str, width: float = 8, height: float = 2.6) -> bytes:
    """A placeholder image that says ``text`` (e.g. "press Start")."""
    fig = viz.new_figure(width, height)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, color="#666")
    return viz.figure_to_png(fig)


def curves_png(rows: Sequence[dict], batch_losses: Sequence[tuple[float, float]] = (),
               total_epochs: int | None = None) -> bytes:
    """Loss and accuracy per epoch plus the running batch loss: ``viz.plot_history``'s live form.

    Args:
        rows: History rows (``epoch``, ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``).
        batch_losses: ``(fractional epoch, loss)`` points, drawn as a thin line.
        total_epochs: for short runs (up to 30 epochs) fixes the x axis, so the
            plot does not rescale as it grows; longer runs zoom on the epochs so far.
    """
    fig = viz.plot_history(History(list(rows)), batch_losses=batch_losses, total_epochs=total_epochs)
    return viz.figure_to_png(fig)
