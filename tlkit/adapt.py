"""BatchNorm adaptation (AdaBN): re-estimate the running statistics on unlabelled images.

A BatchNorm layer in eval mode normalises with the mean and variance it stored
while it was trained. When the images shift (darker, blurred, sketched), the
activations drift away from those statistics. AdaBN (Li et al., 2016)
recomputes them on the new images: no label, no gradient, no weight changes.

Whether that helps depends on the head. A head trained on features computed
with the *ImageNet* statistics (tlkit's feature extraction) expects those
features; re-estimated statistics give it other features and can break it.
A head trained on features computed after re-estimating the statistics on
the *source* photos (``adapt_batchnorm(model, train)`` first) is the case
AdaBN is made for. Notebook 06 measures both.

``adapt_batchnorm`` changes only the BatchNorm buffers (``running_mean``,
``running_var``, ``num_batches_tracked``), so :func:`tlkit.feature_cache.body_fingerprint`
changes with them and cached features or ONNX graphs of the old statistics
are never reused. It runs on the plain (unfolded) modules: BatchNorm in
training mode is never folded (:mod:`tlkit.fold`).

Example:
    >>> report = adapt_batchnorm(model, shifted(val, "dark:3"))
    >>> report.images, report.layers
    (1000, 49)
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tlkit.data import ImageDataset, transforms_for
from tlkit.device import memory_format, pick_device, to_device
from tlkit.loaders import make_loader

log = logging.getLogger(__name__)

STATS_IMAGENET = "imagenet"  # the statistics the pretrained weights came with
STATS_SOURCE = "source"      # re-estimated on the training photos (adapt_batchnorm(model, train))
STATS_TRAINED = "trained"    # learned while fine-tuning with BatchNorm in training mode


@dataclass
class Adaptation:
    """What :func:`adapt_batchnorm` did: BatchNorm layers re-estimated, images seen, seconds taken."""

    layers: int
    images: int
    seconds: float


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics.

    Example:
        >>> len(batchnorm_layers(load_backbone("efficientnet_lite0", pretrained=False)))
        49
    """
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def require_batchnorm(model: nn.Module) -> list[_BatchNorm]:
    """:func:`batchnorm_layers`, or ValueError saying the model has none and which backbones have some.

    Example:
        >>> require_batchnorm(load_backbone("convnext_tiny", pretrained=False))
        ValueError: convnext_tiny has no BatchNorm layer with running statistics, ...
    """
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no BatchNorm layer with running "
                         "statistics, so there is nothing to adapt (AdaBN re-estimates BatchNorm statistics). "
                         "Use a backbone with BatchNorm, such as efficientnet_lite0, resnet18 or "
                         "mobilenet_v3_small; LayerNorm (convnext_tiny) has no running statistics.")
    return layers


def adapt_batchnorm(model: nn.Module, unlabeled_data: "ImageDataset | torch.Tensor | Iterable",
                    *, batch_size: int = 32, max_images: int | None = None, progress: bool = True,
                    device: "str | torch.device | None" = None, image_size: int | None = None) -> Adaptation:
    """Replaces every BatchNorm's running mean and variance with those of ``unlabeled_data``.

    The statistics are a cumulative average over the batches (``momentum=None``
    during the pass), so every image counts the same. Labels are ignored and no
    gradient is computed; parameters stay bit-identical, the momenta and every
    module's train/eval mode come back afterwards, and on an error (or Ctrl-C)
    the old statistics come back too. Dropout is off during the pass. A batch
    of a single image (e.g. the last one) is left out: it has no variance.

    Args:
        model: a network with BatchNorm, e.g. a tlkit Backbone.
        unlabeled_data: an ImageDataset (without a transform it gets
            ``transforms_for(model, train=False, image_size=image_size)``), a tensor
            of images ``(N, 3, H, W)``, or an iterable of such tensors or of ``(x, y)`` batches.
        batch_size: images per forward pass (larger batches give steadier variances).
        max_images: use at most this many images (the first ones), None for all.
        progress: show a progress bar.
        device: where to run (None: where the model's parameters are); the model stays there.
        image_size: input size for an ImageDataset without a transform (None: the backbone's).

    Raises:
        ValueError: the model has no BatchNorm with running statistics, or no image was read.

    Example:
        >>> adapt_batchnorm(model, shifted(val, "contrast:4"), max_images=500).images
        500
    """
    layers = require_batchnorm(model)
    _check_count("batch_size", batch_size)
    if max_images is not None:
        _check_count("max_images", max_images)
    param = next(model.parameters(), None)
    dev = pick_device(device) if device is not None or param is None else param.device
    start, seen = time.perf_counter(), 0
    with _adapting(model, layers), torch.no_grad():
        model.to(dev, memory_format=memory_format(dev))
        for x in _batches(model, unlabeled_data, batch_size, max_images, progress, image_size):
            if len(x) < 2:  # one image has no batch variance (and fails at a 1x1 BatchNorm): left out
                log.info("adapt_batchnorm: a batch of one image left out")
                continue
            model(to_device(x, dev))
            seen += len(x)
        if seen == 0:
            raise ValueError("adapt_batchnorm read no batch of at least 2 images from unlabeled_data; give it "
                             "images (a batch of one image has no variance to estimate).")
    took = time.perf_counter() - start
    log.info("BatchNorm statistics of %d layers re-estimated on %d images in %.1f s", len(layers), seen, took)
    return Adaptation(len(layers), seen, took)


def adapted_copy(model: nn.Module, unlabeled_data: "ImageDataset | torch.Tensor | Iterable",
                 **options) -> nn.Module:
    """A deep copy of ``model`` whose BatchNorm statistics are re-estimated on ``unlabeled_data``.

    ``model`` itself is not changed. ``options`` go to :func:`adapt_batchnorm`.
    This is how to train a head on *source-re-estimated* statistics: adapt on
    the training photos, extract features with the copy, train the head on them.

    Example:
        >>> source = adapted_copy(model, train.with_transform(tf), progress=False)
        >>> head, _ = train_head(extract_features(source, train.with_transform(tf)),
        ...                      extract_features(source, val.with_transform(tf)))
    """
    copied = copy.deepcopy(model)
    adapt_batchnorm(copied, unlabeled_data, **options)
    return copied


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}.")


@contextlib.contextmanager
def _adapting(model: nn.Module, layers: list[_BatchNorm]) -> Iterator[None]:
    """Eval mode except BatchNorm (training mode, reset, cumulative average); modes and momenta come back.

    On an error the previous statistics come back as well.
    """
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in layers]
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()) for bn in layers]
    model.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
        bn.train()
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for bn, (mean, var, count) in zip(layers, saved):
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.num_batches_tracked.copy_(count)
        raise
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
        for m, mode in modes.items():
            m.training = mode


def _batches(model: nn.Module, data, batch_size: int, max_images: int | None, progress: bool,
             image_size: int | None) -> Iterator[torch.Tensor]:
    """Image batches ``(B, 3, H, W)`` from any of the accepted inputs, at most ``max_images`` in all."""
    from tqdm.auto import tqdm

    if isinstance(data, ImageDataset):
        if data.transform is None:
            data = data.with_transform(transforms_for(model, train=False, image_size=image_size))
        total = len(data) if max_images is None else min(len(data), max_images)
        source = (x for x, _, _ in make_loader(data, batch_size=batch_size))
    elif isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"A tensor of images must be (N, 3, H, W), got shape {tuple(data.shape)}.")
        total = len(data) if max_images is None else min(len(data), max_images)
        source = iter(data.split(batch_size))
    elif isinstance(data, Iterable):
        total = max_images
        source = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
    else:
        raise TypeError(f"unlabeled_data must be an ImageDataset, a tensor (N, 3, H, W) or an iterable of "
                        f"batches, got {type(data).__name__}.")
    left = max_images
    with tqdm(total=total, desc="adapting BatchNorm", unit="img", disable=not progress) as bar:
        for x in source:
            if left is not None:
                x = x[:left]
                left -= len(x)
            if len(x):
                bar.update(len(x))
                yield x
            if left == 0:
                return
