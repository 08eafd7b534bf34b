"""Training on several processes or GPUs with PyTorch's DistributedDataParallel (DDP).

tlkit does not write its own data parallelism: ``torchrun`` starts one process
per GPU (or several CPU processes) and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR``. Each process runs the same program. This
module holds the few places where the processes ("ranks") must cooperate:

* :func:`session` starts the process group (NCCL on CUDA, gloo on CPU) and
  always tears it down, also after an error; :func:`init_from_env` starts one
  that lives until the process exits. ``fit`` never starts a group itself: a
  script under torchrun opts in with one of these (the command line does).
* :func:`wrap_model` wraps the Backbone in DDP, which averages the gradients
  during ``backward()``. It wraps again when the set of trainable parameters
  changes (gradual unfreezing), because DDP only ever syncs the parameters
  that required a gradient when it was built.
* :func:`sampler_for` gives each rank its own share of the images: a
  ``DistributedSampler`` (reshuffled every epoch with ``set_epoch``) for
  training, and an unpadded stride for evaluation, so summed counts are exact.
* :class:`DistContext` sums metrics over ranks and makes every rank take the
  same decision (skip a batch, stop on a NaN loss), so none waits forever;
  that costs two one-number all-reduces per training step.
* :func:`shard_dataset` and :func:`gather_rows` split feature extraction over
  the ranks and put the rows back in file order on every rank.

Outside torchrun all of this is a no-op: one process, no collectives.

Example:
    >>> # torchrun --nproc_per_node=2 train.py, where train.py says:
    >>> with session() as ctx:
    ...     history = fit(model, train, val, epochs=2)
    ...     if ctx.is_main:
    ...         save_model(model, "model.pt")
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from tlkit.data import ImageDataset

log = logging.getLogger(__name__)
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
__all__ = ["DistContext", "context", "launched_by_torchrun", "init_from_env", "warn_without_group", "session", "wrap_model",
           "sampler_for", "broadcast_buffers", "shard_dataset", "gather_rows"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes.

    The default, ``DistContext()``, is a single process; every method then
    returns its input without communicating.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, logs and progress bars."""
        return self.rank == 0

    def all_sum(self, *values: float) -> list:
        """Each value summed over all ranks (ints stay ints), e.g. loss sums and counts.

        Example:
            >>> loss_sum, correct, seen = ctx.all_sum(loss_sum, correct, seen)
        """
        if not self.enabled:
            return list(values)
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return [type(v)(round(s)) if isinstance(v, int) else s for v, s in zip(values, t.tolist())]

    def every_rank_has(self, n: int) -> bool:
        """True when every rank has ``n > 0`` images in its batch; else all ranks skip it together.

        DDP needs every rank to run each backward pass, so a batch that is
        empty on one rank (all its images unreadable) is skipped everywhere.
        """
        if not self.enabled:
            return n > 0
        t = torch.tensor([n], dtype=torch.int64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item()) > 0

    def shared_finite(self, value: float) -> float:
        """``value``, or NaN when the loss is not finite on any rank, so every rank stops together."""
        if not self.enabled:
            return value
        bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=self._device())
        dist.all_reduce(bad)
        return value if bad.item() == 0 else float("nan")

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (any picklable value, tensors included) on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shard_size(self, n: int) -> int:
        """Images one rank sees per training epoch (the DistributedSampler pads to equal shares)."""
        return -(-n // self.world_size)

    def _device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo moves CPU tensors.
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


def context() -> DistContext:
    """The current process's :class:`DistContext` (read from ``torch.distributed``).

    Example:
        >>> context().is_main      # True outside torchrun
        True
    """
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                       str(dist.get_backend()))


def launched_by_torchrun() -> bool:
    """True when torchrun (or ``python -m torch.distributed.run``) started this process."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def init_from_env(backend: str | None = None) -> DistContext:
    """Under torchrun, joins the process group unless this process already has one.

    A script under torchrun calls this (or uses :func:`session`) before
    :func:`tlkit.train.fit`, which never starts a group itself. A group started here lives until
    the process exits (an ``atexit`` hook destroys it, also after an uncaught
    error): starting a second group in the same torchrun process is not
    reliable, so one group serves every ``fit`` of the script. ``backend``
    defaults to ``"nccl"`` when CUDA is visible, else ``"gloo"``.

    Example:
        >>> ctx = init_from_env()    # DistContext(rank=1, world_size=2, ...) under torchrun
    """
    if launched_by_torchrun() and dist.is_available() and not dist.is_initialized():
        _init_process_group(backend)
        atexit.register(_destroy_at_exit)
    return context()


def warn_without_group() -> None:
    """Warns when torchrun started this process but no process group exists (each rank would train alone)."""
    if launched_by_torchrun() and not (dist.is_available() and dist.is_initialized()):
        warnings.warn("torchrun started this process, but there is no process group, so every process trains "
                      "alone on all the data. Start one first: `with tlkit.distributed.session(): fit(...)`.",
                      RuntimeWarning, stacklevel=4)


@contextlib.contextmanager
def session(backend: str | None = None) -> Iterator[DistContext]:
    """Starts the process group under torchrun and destroys it on exit, also after an error.

    Use one session per process, around everything distributed (the command
    line wraps each command in one). Outside torchrun, or when a group
    already exists, it only yields :func:`context` and tears nothing down.

    Example:
        >>> with session() as ctx:
        ...     print(ctx.rank, ctx.world_size)
        0 1
    """
    started = launched_by_torchrun() and dist.is_available() and not dist.is_initialized()
    if started:
        _init_process_group(backend)
    try:
        yield context()
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def _destroy_at_exit() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _init_process_group(backend: str | None) -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"torchrun started local rank {local_rank}, but this machine has "
                             f"{torch.cuda.device_count()} visible GPU(s). Use --nproc_per_node="
                             f"{torch.cuda.device_count()} (one process per GPU).")
        torch.cuda.set_device(local_rank)  # "cuda" now means this process's own GPU
    dist.init_process_group(backend)
    log.info("process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device,
               current: nn.Module | None = None) -> nn.Module:
    """``model`` wrapped in DDP (``model`` itself in one process); call it for the training forward.

    ``find_unused_parameters=False``: frozen parameters (``requires_grad``
    False) are left out by DDP anyway, and every trainable parameter of a
    Backbone takes part in each forward pass, so DDP need not search the
    graph. DDP fixes its list of parameters to sync when it is built, so when
    the trainable set differs from ``current``'s (a group was unfrozen or
    frozen, or a resume restored another freeze state), a new wrapper is
    built; building one also copies rank 0's weights and buffers to every rank.
    Pass the previous result as ``current`` before each epoch.

    Example:
        >>> net = wrap_model(model, ctx, device)
        >>> net = wrap_model(model, ctx, device, current=net)  # after GradualUnfreezing
    """
    if not ctx.enabled:
        return model
    trainable = tuple(p.requires_grad for p in model.parameters())
    if current is not None and getattr(current, "tlkit_trainable", None) == trainable:
        return current
    gpu = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else None
    # broadcast_buffers (the default) copies rank 0's BN statistics at every training forward.
    net = nn.parallel.DistributedDataParallel(model, device_ids=gpu, find_unused_parameters=False)
    net.tlkit_trainable = trainable
    if current is not None:
        log.info("trainable parameters changed: DDP wrapper rebuilt")
    return net


def sampler_for(dataset, ctx: DistContext, shuffle: bool, seed: int = 0, epoch: int = 0):
    """This rank's share of ``dataset`` for a DataLoader's ``sampler`` (None in one process).

    Training (``shuffle=True``): a ``DistributedSampler``, reshuffled with
    ``set_epoch(epoch)``; it pads with repeated images so every rank runs the
    same number of batches, which DDP needs. Evaluation: every
    ``world_size``-th image from ``rank`` on, without padding, so that summed
    counts equal a single-process evaluation exactly.

    Example:
        >>> loader = make_loader(train, 32, sampler=sampler_for(train, ctx, True, seed=0, epoch=3))
    """
    if not ctx.enabled:
        return None
    if not shuffle:
        return list(range(ctx.rank, len(dataset), ctx.world_size))
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                                  shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)  # a new order every epoch, the same on every rank
    return sampler


def broadcast_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copies rank 0's buffers (BN running statistics) to every rank.

    BN layers that train update their statistics from each rank's own batches
    after DDP's last broadcast, so ranks differ slightly at the end of an
    epoch. After this call every rank validates (and saves) the same model.
    """
    if ctx.enabled:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def shard_dataset(dataset: ImageDataset, ctx: DistContext) -> ImageDataset:
    """Every ``world_size``-th image from ``rank`` on (``dataset`` itself in one process).

    Example:
        >>> part = shard_dataset(val, ctx)   # rank 1 of 2: images 1, 3, 5, ...
    """
    if not ctx.enabled:
        return dataset
    step = ctx.world_size
    return ImageDataset(dataset.files[ctx.rank::step], dataset.targets[ctx.rank::step], dataset.classes,
                        dataset.transform, dataset.name)


def gather_rows(ctx: DistContext, dataset: ImageDataset, kept: list[str], features: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every rank's rows of :func:`shard_dataset`, in ``dataset``'s file order, on every rank.

    ``kept`` are the shard's readable files in shard order (unreadable ones
    are missing), ``features`` ``(len(kept), F)`` and ``labels`` their rows.

    Example:
        >>> feats, labels, files = gather_rows(ctx, dataset, kept, feats, labels)
    """
    if not ctx.enabled:
        return features, labels, kept
    shard_files = dataset.files[ctx.rank::ctx.world_size]
    index = [ctx.rank + p * ctx.world_size for p in _positions(kept, shard_files)]
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, (index, features.cpu(), labels.cpu(), kept))
    order = torch.tensor([i for part in parts for i in part[0]], dtype=torch.long).argsort()
    files = [f for part in parts for f in part[3]]
    return (torch.cat([p[1] for p in parts])[order], torch.cat([p[2] for p in parts])[order],
            [files[i] for i in order.tolist()])


def _positions(kept: list[str], files: list[str]) -> list[int]:
    """Positions in ``files`` of ``kept``, an in-order subsequence of it (duplicates allowed)."""
    out, pos = [], 0
    for f in kept:
        while files[pos] != f:
            pos += 1
        out.append(pos)
        pos += 1
    return out
