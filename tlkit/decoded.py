"""Decode every image once, keep the pixels as one uint8 tensor, augment whole batches there.

On a fast GPU the model is no longer the bottleneck when fine-tuning: decoding
JPEGs and cropping them on the CPU is. (On an H100, Lite0 trains at about
5,000 img/s on tensors already on the GPU, but a DataLoader with 14 workers
decoding JPEGs delivers about 1,800.) This module moves that work out of the
loop:

1. ``DecodedImages(dataset, image_size, device)`` opens each image once (in
   DataLoader workers where there are cores to spare), with
   the same resize and centre crop as :func:`tlkit.data.transforms_for`'s
   evaluation preset but a larger square (``round(image_size * 256 / 224)``),
   and stores all of them as one ``(N, 3, S, S)`` uint8 tensor on ``device``
   (2,000 photos at 256 px: 393 MB).
2. ``.loader(batch_size, train=True, seed=...)`` yields ``(x, y, [])`` batches
   like :func:`tlkit.loaders.make_loader`: for training a random resized crop
   (area 35-100%, aspect 3/4-4/3, as the standard preset) and a random flip,
   done for the whole batch at once with ``affine_grid``/``grid_sample`` on the
   device; for evaluation the centre crop. Then the backbone's normalisation.

``fit(..., decode_once=True)`` uses it. Measured so far on CPUs only (where it
mainly saves the decoding); the GPU figure is for ``bench/gpu_check.py``.

:func:`training_loaders` is where the training loop's batches come from: it
chooses, once before the loop, between these decoded batches and a DataLoader
that decodes every epoch (under torchrun, each rank's share of the images).

Example:
    >>> cache = DecodedImages(train, image_size=224, mean=model.mean, std=model.std, device="cuda")
    >>> for x, y, _ in cache.loader(256, train=True, seed=0): ...
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from tlkit import distributed
from tlkit.data import ImageDataset, eval_resize
from tlkit.device import releasing_memory
from tlkit.loaders import leaves_one_image, make_loader, num_workers_default, with_files
from tlkit.images import check_image_size, warn_skipped

CROP_SCALE = (0.35, 1.0)  # as transforms_for(train=True)
CROP_RATIO = (3 / 4, 4 / 3)


class DecodedImages:
    """Every readable image of ``dataset`` as ``images`` (N, 3, S, S) uint8 and ``labels`` (N,)."""

    def __init__(self, dataset: ImageDataset, image_size: int, mean: Sequence[float], std: Sequence[float],
                 device: str | torch.device = "cpu", progress: bool = False, num_workers: int | None = None):
        from torchvision import transforms as T
        from tqdm.auto import tqdm

        self.image_size, self.classes, self.name = check_image_size(int(image_size)), list(dataset.classes), dataset.name
        self.side = eval_resize(self.image_size)  # the evaluation preset's resize, kept square
        prepare = T.Compose([T.Resize(self.side), T.CenterCrop(self.side), T.PILToTensor()])
        # Decoded in DataLoader workers where the machine has cores to spare (a GPU host usually does).
        device = torch.device(device)
        if num_workers is None:
            num_workers = num_workers_default(gpu=device.type == "cuda")
        loader = make_loader(dataset.with_transform(prepare), batch_size=32, num_workers=num_workers)
        images = torch.empty(len(dataset), 3, self.side, self.side, dtype=torch.uint8)
        labels, self.files, skipped, n = [], [], [], 0
        with tqdm(total=len(dataset), desc=f"decode {dataset.name}", unit="img", disable=not progress) as bar:
            # x: (B, 3, S, S) uint8; releasing_memory: the decoding happens here, on the CPU
            for x, y, kept, dropped in with_files(releasing_memory(loader, torch.device("cpu")), dataset.files):
                images[n:n + len(y)] = x
                labels += y.tolist()
                self.files += kept
                skipped += dropped
                n += len(y)
                bar.update(len(kept) + len(dropped))
        warn_skipped(skipped, where=f" while decoding {dataset.name}")
        self.images = images[:n].to(device)
        self.labels = torch.tensor(labels, dtype=torch.long, device=device)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(shape) * 255

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int, train: bool, seed: int | None = None, drop_last: bool = False,
               augment: bool | None = None) -> "DecodedLoader":
        """Batches ``(x, y, [])``: shuffled and augmented when ``train`` (``augment=False``: shuffled
        only), in file order with the centre crop otherwise."""
        return DecodedLoader(self, batch_size, train, train if augment is None else augment, seed, drop_last)

    def batch(self, index: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        """Normalised float images ``(B, 3, image_size, image_size)``, channels_last, on the device."""
        src = self.images[index].float()  # (B, 3, S, S), 0-255
        if train:
            grid = F.affine_grid(_crop_thetas(len(index), gen).to(src.device), [len(index), 3, self.image_size,
                                                                                self.image_size], align_corners=False)
            x = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        else:
            top = int(round((self.side - self.image_size) / 2))
            x = src[:, :, top:top + self.image_size, top:top + self.image_size]
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


class DecodedLoader:
    """What :meth:`DecodedImages.loader` returns: ``len()`` batches of ``(x, y, [])``."""

    def __init__(self, cache: DecodedImages, batch_size: int, shuffle: bool, augment: bool, seed: int | None,
                 drop_last: bool):
        self.cache, self.batch_size, self.drop_last = cache, batch_size, drop_last
        self.shuffle, self.augment = shuffle, augment
        if seed is None:  # unseeded: a fresh order each time, like a DataLoader
            seed = int(torch.randint(2**31 - 1, ())) if shuffle or augment else 0
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.cache)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        n = len(self.cache)
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        order = order.to(self.cache.labels.device)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.cache.batch(index, self.augment, self.gen), self.cache.labels[index], []


def _crop_thetas(n: int, gen: torch.Generator | None) -> torch.Tensor:
    """(n, 2, 3) affine maps: a random resized crop of the source square, flipped half the time.

    In ``affine_grid``'s coordinates the source spans [-1, 1]; a crop of width
    ``w`` (a fraction of the side) centred at ``cx`` is ``x_src = w * x_out + cx``.
    """
    u = torch.rand(n, 5, generator=gen)
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, 0]
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])  # width / height
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * u[:, 2] - 1) * (1 - w)
    cy = (2 * u[:, 3] - 1) * (1 - h)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def training_loaders(config: Any, model: Any, device: torch.device, ctx: distributed.DistContext,
                     data_seed: int) -> "DataLoaders | DecodedLoaders":
    """The loaders of one :func:`tlkit.train.fit` run: decode-once batches, or DataLoaders.

    ``config`` is a :class:`tlkit.train.TrainConfig`; its ``batch_size`` is read
    at every call, so a batch halved after an out-of-memory error takes effect.
    Decode-once serves one process only; under torchrun the DataLoaders do.

    Example:
        >>> loaders = training_loaders(config, model, device, ctx, data_seed=0)
        >>> for x, y, dropped in loaders(train, train=True, epoch=1): ...
    """
    if config.decode_once and not ctx.enabled:
        return DecodedLoaders(config, model, device, ctx, data_seed)
    return DataLoaders(config, device, ctx, data_seed)


class DataLoaders:
    """Batches ``(x, y, dropped)`` from a DataLoader that decodes the JPEGs every epoch."""

    def __init__(self, config: Any, device: torch.device, ctx: distributed.DistContext, data_seed: int):
        self.config, self.device, self.ctx, self.data_seed = config, device, ctx, data_seed

    def __call__(self, data, train: bool, epoch: int = 0) -> Iterable:
        """Training (``train=True``): shuffled with the seed ``data_seed + epoch``; else in file order."""
        batch_size = self.config.batch_size
        sampler = distributed.sampler_for(data, self.ctx, train, self.data_seed, epoch)  # None in one process
        return make_loader(data, batch_size=batch_size, shuffle=train, seed=self.data_seed + epoch if train else None,
                           num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
                           sampler=sampler, drop_last=train and lone_last_image(data, batch_size, self.ctx))


class DecodedLoaders(DataLoaders):
    """Batches from :class:`DecodedImages`, each dataset decoded on first use and kept for the run."""

    def __init__(self, config: Any, model: Any, device: torch.device, ctx: distributed.DistContext,
                 data_seed: int):
        super().__init__(config, device, ctx, data_seed)
        self.image_size = int(config.image_size or getattr(model, "input_size", 224))
        self.mean, self.std = model.mean, model.std
        self._decoded: dict[int, DecodedImages] = {}  # id(dataset) -> its decoded images

    def __call__(self, data, train: bool, epoch: int = 0) -> "DecodedLoader":
        if id(data) not in self._decoded:  # once per dataset and run: the point is not to decode again
            self._decoded[id(data)] = DecodedImages(data, self.image_size, self.mean, self.std, self.device,
                                                    progress=self.config.progress and self.ctx.is_main,
                                                    num_workers=self.config.num_workers)
        batch_size = self.config.batch_size
        return self._decoded[id(data)].loader(batch_size, train=train, seed=self.data_seed + epoch if train else None,
                                              augment=train and self.config.augment != "none",
                                              drop_last=train and lone_last_image(data, batch_size, self.ctx))


def lone_last_image(data, batch_size: int, ctx: distributed.DistContext) -> bool:
    """True when this rank's last training batch would hold one image, which is then dropped
    (a different one each epoch: the data is shuffled). See :func:`tlkit.loaders.leaves_one_image`."""
    return leaves_one_image(ctx.shard_size(len(data)), batch_size)
