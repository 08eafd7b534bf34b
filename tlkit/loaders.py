"""Loading batches: a DataLoader that skips unreadable images, and how many workers it gets.

* ``make_loader(dataset, batch_size)`` yields ``(x, y, dropped_paths)``: the
  images that decoded, their labels, and the files that did not (see
  :func:`collate_skip`), so one bad JPEG never stops a run.
* ``with_files(batches, files)`` names the file of every row of an
  unshuffled loader's batches.
* ``num_workers_default()`` picks DataLoader worker processes for this
  machine (none on Binder or on 1-2 cores).
* ``prefetched(batches)`` decodes the next batches in a background thread
  while the caller computes on this one (for loaders without worker
  processes: JPEG decoding and resizing release the GIL).

Example:
    >>> for x, y, dropped in make_loader(train.with_transform(transforms_for(model)), batch_size=32):
    ...     logits = model(x)     # x: (B, 3, H, W), y: (B,)
"""
from __future__ import annotations

import os
import queue
import threading
import time
from typing import Iterable, Iterator, Sequence, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from tlkit.env import env_flag, env_int

T = TypeVar("T")
_END = object()


def collate_skip(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stacks ``(tensor, label)`` pairs, dropping unreadable ones.

    Returns ``(x (B, 3, H, W), y (B,), paths of the dropped images)``.
    """
    good = [(x, y) for x, y in batch if x is not None]
    dropped = [y for x, y in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), dropped
    xs, ys = zip(*good)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long), dropped


def with_files(batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[str]]],
               files: Sequence[str]) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str], list[str]]]:
    """``(x, y, kept, dropped)`` for the batches of an *unshuffled* loader over ``files``.

    ``kept`` names the file of each row of ``x``, in order; ``dropped`` the unreadable ones that
    :func:`collate_skip` left out. Feature extraction, prediction and the decode-once cache use it.

    Example:
        >>> for x, y, kept, dropped in with_files(make_loader(val), val.files): ...
    """
    pos = 0
    for x, y, dropped in batches:
        batch_files = files[pos:pos + len(y) + len(dropped)]  # unshuffled: file order
        pos += len(batch_files)
        gone = set(dropped)
        yield x, y, [f for f in batch_files if f not in gone], dropped


def leaves_one_image(n: int, batch_size: int) -> bool:
    """True when ``n`` images in batches of ``batch_size`` end with a batch of one image.

    In training mode BatchNorm cannot normalise a batch of one ("Expected more than 1 value
    per channel"), so the trainer and lr_find drop that image (``make_loader(drop_last=True)``).

    Example:
        >>> leaves_one_image(2001, 40), leaves_one_image(2000, 32)
        (True, False)
    """
    return n > 1 and n % batch_size == 1


def num_workers_default(gpu: bool = False) -> int:
    """DataLoader worker processes: ``$TLKIT_NUM_WORKERS`` if set; 0 on Binder (its shared memory
    kills worker processes).

    When the model runs on the CPU (``gpu=False``): 0 on machines with 1-2 cores, where a worker
    only takes a core from the model (fine-tuning Lite0 on 2 cores: 19.9 img/s with 0 workers,
    14.7 with 1), else up to 4. When it runs on a GPU, the CPU's only job is decoding and
    augmenting JPEGs, which is then the bottleneck: every core but one (a standard DataLoader on
    an H100 machine needed 14 workers for about 1,800 img/s), at most 16.

    Example:
        >>> num_workers_default(), num_workers_default(gpu=True)  # on 16 cores
        (4, 15)
    """
    workers = env_int("TLKIT_NUM_WORKERS")  # EnvironmentSettingError naming it if not a count
    if workers is not None:
        return workers
    if os.environ.get("BINDER_SERVICE_HOST") or env_flag("TLKIT_BINDER", default=False):
        return 0
    cpus = os.cpu_count() or 1
    if gpu:
        return min(16, cpus - 1)
    return 0 if cpus <= 2 else min(4, cpus - 1)


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = False, seed: int | None = None,
                num_workers: int | None = None, pin_memory: bool = False,
                sampler=None, drop_last: bool = False) -> DataLoader:
    """A DataLoader that skips unreadable images (see :func:`collate_skip`).

    ``num_workers=None`` means :func:`num_workers_default`, with ``gpu=pin_memory``: pinned
    batches are bound for a GPU, so the CPU cores are free to decode.
    """
    workers = num_workers_default(gpu=pin_memory) if num_workers is None else num_workers
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=collate_skip, pin_memory=pin_memory,
                      generator=gen, persistent_workers=False, drop_last=drop_last)


def prefetched(batches: Iterable[T], depth: int = 2, timing: dict | None = None) -> Iterator[T]:
    """Yields ``batches`` in order, produced up to ``depth`` ahead by a background thread.

    Decoding a JPEG and resizing it release the GIL, so on a CPU the next
    batch decodes while the caller's forward pass runs (ONNX Runtime and
    PyTorch release it too). An exception in the producer is raised here, at
    the batch it concerns; when the caller stops early (``break``, an
    error, Ctrl-C) the producer stops after its current batch. ``timing``
    gets ``decode_seconds``: the producer's time making batches (overlapped
    with the caller's work, so not part of the caller's wall time).

    Example:
        >>> for x, y, dropped in prefetched(make_loader(val, batch_size=16, num_workers=0)):
        ...     feats = body(x)       # the next batch decodes meanwhile
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    timing = {} if timing is None else timing
    timing.setdefault("decode_seconds", 0.0)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        # One torch thread here: ToTensor and Normalize would otherwise start an OpenMP team for this
        # thread whose spinning workers take the cores from the caller's forward pass (Lite0 int8 on
        # ONNX Runtime over 2,000 photos, 2 cores: 6.24 s, 5.79 s with one thread). The caller's threads
        # keep theirs; threads started meanwhile inherit 1, so the setting is put back at the end.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            it = iter(batches)
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                timing["decode_seconds"] += time.perf_counter() - start
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((False, exc))
        finally:
            torch.set_num_threads(threads)

    thread = threading.Thread(target=produce, name="tlkit-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
