"""ipywidgets panels for the course: freeze layers, explore learning rates, watch training.

Every panel holds its root widget in ``.widget`` and displays itself when it
is the last expression of a cell. Only core ipywidgets are used, so the panels
work in JupyterLab, Jupyter Notebook, Binder and Colab (ipywidgets 7.7.1 and
8.x). Logic lives in plain methods, so they can be driven from code and tests.

Example:
    >>> from widgets import FreezePanel, TrainingDashboard
    >>> dash = TrainingDashboard(model, train, val, epochs=3)
    >>> FreezePanel(model, dashboard=dash)
    >>> dash
"""
from widgets.dashboard import TrainingDashboard
from widgets.freeze_panel import FreezePanel
from widgets.lr_explorer import LRExplorer
from widgets.own_data_panel import OwnDataPanel
from widgets.predict_panel import PredictPanel
from widgets.shift_lab import ShiftLab
from widgets.strategy_board import StrategyBoard

__all__ = ["FreezePanel", "LRExplorer", "OwnDataPanel", "PredictPanel", "ShiftLab", "StrategyBoard", "TrainingDashboard"]
