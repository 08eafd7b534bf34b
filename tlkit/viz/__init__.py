"""Figures for the notebooks and widgets: curves, image grids, heatmaps, filters.

matplotlib is imported inside the functions only, so ``import tlkit`` stays
light and works without it. Every function returns a matplotlib ``Figure``
built directly as ``matplotlib.figure.Figure``, never through pyplot, whose
global state is not thread-safe: the widgets draw these same figures in
worker threads. A notebook shows a returned figure exactly once, and a widget
redrawing at 1-2 Hz does not pile up open figures. ``figure_to_png`` turns
one into PNG bytes for ``widgets.Image`` (the one PNG path of the project).

Example:
    >>> fig = plot_history(history)                    # loss and accuracy, train vs val
    >>> png = figure_to_png(plot_confusion_matrix(cm, ["cats", "dogs"]))
"""
from tlkit.viz.charts import (CM_CELL_LABELS_UP_TO, CM_MAX_INCHES, CM_TICK_LABELS_UP_TO, plot_bar,
                              plot_confusion_matrix, plot_freeze_state, top_confusions)
from tlkit.viz.curves import format_rate, plot_history, plot_lr_curves, plot_lr_find
from tlkit.viz.figures import STRATEGY_COLORS, figure_to_png, new_figure
from tlkit.viz.pictures import plot_feature_maps, plot_filters, show_grad_cam, show_images, show_predictions

__all__ = ["CM_CELL_LABELS_UP_TO", "CM_MAX_INCHES", "CM_TICK_LABELS_UP_TO", "STRATEGY_COLORS", "figure_to_png",
           "format_rate", "new_figure", "plot_bar", "plot_confusion_matrix", "plot_feature_maps", "plot_filters",
           "plot_freeze_state",
           "plot_history", "plot_lr_curves", "plot_lr_find", "show_grad_cam", "show_images", "show_predictions",
           "top_confusions"]
