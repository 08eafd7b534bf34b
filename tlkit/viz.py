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
from __future__ import annotations

import io
import math
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from tlkit.images import open_image
from tlkit.evaluate import Predictions, top_losses
from tlkit.explain import as_batch, capture_activations
from tlkit.history import History
from tlkit.modes import eval_mode


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

def _to_array(item, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Path, PIL image, (H, W, 3) array or (3, H, W) tensor -> (H, W, 3) floats in [0, 1]."""
    if isinstance(item, (str, os.PathLike)):
        item = open_image(item)
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(item, torch.Tensor):
        t = item.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"An image tensor must be (3, H, W), got {tuple(item.shape)}.")
        if mean is not None and std is not None:
            t = t * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
        elif t.min() < 0 or t.max() > 1:  # normalised but no statistics given: stretch to be visible
            t = (t - t.min()) / (t.max() - t.min() + 1e-12)
        return t.clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy()
    if isinstance(item, np.ndarray) and item.ndim == 3:
        return item.astype(np.float32) / (255.0 if item.dtype == np.uint8 else 1.0)
    raise TypeError(f"Cannot show {type(item).__name__}; pass a path, a PIL image or a (3, H, W) tensor.")


def _grid(n: int, ncols: int, size: float = 2.4):
    """A figure with exactly ``n`` image axes (unused grid cells removed)."""
    if n < 1:
        raise ValueError("Nothing to show: the list of images is empty.")
    ncols = max(1, min(ncols, n))
    fig, axes = _subplots(math.ceil(n / ncols), ncols, (size, size))
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    for ax in flat[:n]:
        ax.set_axis_off()
    return fig, flat[:n]


def show_images(items, titles: Sequence[str] | None = None, ncols: int = 4,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """A grid of images: file paths, PIL images or tensors (a batch ``(B, 3, H, W)`` works too).

    Pass the backbone's ``mean`` and ``std`` to undo the normalisation of tensors.

    Example:
        >>> x, y, _ = next(iter(make_loader(train, batch_size=8)))
        >>> show_images(x, titles=[train.classes[i] for i in y], mean=model.mean, std=model.std)
    """
    items = list(items.unbind(0)) if isinstance(items, torch.Tensor) and items.ndim == 4 else list(items)
    if titles is not None and len(titles) != len(items):
        raise ValueError(f"{len(titles)} titles for {len(items)} images.")
    fig, axes = _grid(len(items), ncols)
    for i, (ax, item) in enumerate(zip(axes, items)):
        ax.imshow(_to_array(item, mean, std))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    return fig


def show_predictions(predictions: Predictions, rows=None, ncols: int = 4, k: int = 8):
    """Photos titled "true / pred (prob)", mistakes in red.

    ``rows`` is a list of indices into ``predictions`` or of ``top_losses``
    rows; by default the ``k`` top losses.

    Example:
        >>> show_predictions(preds, top_losses(preds, k=8))
    """
    rows = top_losses(predictions, k=k) if rows is None else list(rows)
    indices = [r["index"] if isinstance(r, dict) else int(r) for r in rows]
    fig, axes = _grid(len(indices), ncols, size=2.6)
    preds = predictions.preds
    for ax, i in zip(axes, indices):
        true, pred = int(predictions.labels[i]), int(preds[i])
        ax.imshow(_to_array(predictions.files[i]))
        ax.set_title(f"{predictions.classes[true]} / {predictions.classes[pred]} "
                     f"({float(predictions.probs[i, pred]):.2f})", fontsize=9,
                     color="black" if true == pred else "red")
    return fig


def _crop_like(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize + centre-crop a photo the way the eval transform did, so it lines up with a heatmap."""
    h, w = shape
    if img.shape[:2] == (h, w):
        return img
    pil = Image.fromarray((img * 255).astype(np.uint8))
    scale = round(min(h, w) * 256 / 224) / min(pil.size)
    pil = pil.resize((max(w, round(pil.width * scale)), max(h, round(pil.height * scale))), Image.BILINEAR)
    left, top = (pil.width - w) // 2, (pil.height - h) // 2
    return np.asarray(pil.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0


def show_grad_cam(image, heatmap, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  alpha: float = 0.45, title: str | None = None):
    """The photo and the photo overlaid with a Grad-CAM heatmap, side by side.

    ``image`` is the tensor given to ``grad_cam`` (pass mean/std) or the
    original photo, which is resized and centre-cropped to match.

    Example:
        >>> x = transforms_for(model)(open_image(path))
        >>> show_grad_cam(x, grad_cam(model, x), mean=model.mean, std=model.std)
    """
    heat = np.asarray(torch.as_tensor(heatmap).detach().float().cpu())
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {heat.shape}.")
    img = _crop_like(_to_array(image, mean, std), heat.shape)
    fig, axes = _subplots(1, 2, (3.2, 3.4))
    axes[0, 0].imshow(img)
    axes[0, 0].set_title("input", fontsize=10)
    axes[0, 1].imshow(img)
    axes[0, 1].imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    axes[0, 1].set_title(title or "Grad-CAM", fontsize=10)
    for ax in axes[0]:
        ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------
# Inside the network

def plot_filters(model: torch.nn.Module, ncols: int = 8, max_filters: int = 64, title: str | None = None):
    """The first convolution's filters as small colour patches: what the first layer looks for.

    Each filter is scaled to [0, 1] on its own, so the pattern (edge
    direction, colour contrast) shows, not its strength. The default title
    says whose weights they are (``model.weights``: pretrained or random).

    Example:
        >>> plot_filters(load_backbone("resnet18"))   # 64 filters, 7x7
    """
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        raise ValueError("The model has no Conv2d layer to show.")
    w = conv.weight.detach().float().cpu()[:max_filters]  # (O, I, k, k)
    w = w[:, :3] if w.shape[1] >= 3 else w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo + 1e-12)).permute(0, 2, 3, 1).numpy()  # (O, k, k, 3)
    n, k = len(w), w.shape[1]
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    mosaic = np.ones((rows * (k + 1) - 1, cols * (k + 1) - 1, 3), dtype=np.float32)  # white gaps
    for i in range(n):
        r, c = divmod(i, cols)
        mosaic[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = w[i]
    fig, axes = _subplots(1, 1, (0.5 * cols + 0.5, 0.5 * rows + 0.6))
    ax = axes[0, 0]
    ax.imshow(mosaic, interpolation="nearest")
    if title is None:
        weights = getattr(model, "weights", None)
        title = (f"{getattr(model, 'name', type(model).__name__)}, "
                 f"{f'pretrained ({weights})' if weights else 'random weights'}:\n"
                 f"first conv layer, {conv.out_channels} filters, {k}x{k}")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    return fig


def _default_groups(model) -> list[str]:
    body = [g for g in model.group_names if g != "head"]
    if len(body) <= 4:
        return body
    picks = sorted({round(i * (len(body) - 1) / 3) for i in range(4)})
    return [body[i] for i in picks]


def plot_feature_maps(model: torch.nn.Module, image, groups: Sequence[str] | None = None, channels: int = 6):
    """A few channels of the activation after several groups for one photo.

    Early groups respond to edges and colours at full resolution; late ones
    are coarse and abstract. For each group the most active channels are
    shown (one row per group).

    Example:
        >>> plot_feature_maps(model, "cat.4001.jpg", groups=("stem", "stage2", "stage4", "stage8"))
    """
    groups = list(groups) if groups is not None else _default_groups(model)
    acts = _activations(model, image, groups)
    shown = [g for g in groups if g in acts]
    if not shown:
        raise ValueError(f"None of the groups {groups} produced a spatial (B, C, h, w) map.")
    fig, axes = _subplots(len(shown), channels, (1.5, 1.5))
    for row, g in zip(axes, shown):
        a = acts[g][0].float().cpu()  # (C, h, w)
        top = a.mean(dim=(1, 2)).argsort(descending=True)[:channels]
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(top):
                ax.imshow(a[top[j]].numpy(), cmap="viridis")
        row[0].set_ylabel(f"{g}\n{a.shape[0]} ch, {a.shape[1]}x{a.shape[2]}", fontsize=8)
    return fig


def _activations(model: torch.nn.Module, image, groups: list[str]) -> dict[str, torch.Tensor]:
    """``{group: (1, C, h, w)}`` for one photo, in eval mode; every module's mode is restored."""
    x = as_batch(model, image)  # (1, 3, H, W)
    param = next(model.parameters())
    with eval_mode(model), torch.no_grad(), capture_activations(model, groups) as acts:
        model(x.to(param.device, param.dtype))
    return acts
