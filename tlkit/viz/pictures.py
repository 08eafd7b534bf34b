"""Pictures: image grids, predictions, Grad-CAM overlays, filters and feature maps."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from tlkit.images import open_image
from tlkit.evaluate import Predictions, top_losses
from tlkit.explain import as_batch, capture_activations
from tlkit.modes import eval_mode
from tlkit.viz.figures import _subplots


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
