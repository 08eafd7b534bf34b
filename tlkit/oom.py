"""Running out of GPU memory: say which batch size to use, or halve the batch and try again.

Example:
    >>> train, val = retry_on_oom(lambda: run_epoch(epoch), config, optimizer, device)
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, TypeVar

import torch

T = TypeVar("T")


def retry_on_oom(run: Callable[[], T], config: Any, optimizer: torch.optim.Optimizer, device: torch.device) -> T:
    """``run()``; on CUDA out-of-memory, halves ``config.batch_size`` and runs again if ``config.oom_retry``.

    Without ``oom_retry`` (or at batch size 1) it raises a RuntimeError that
    names a smaller batch size, from the ``torch.cuda.OutOfMemoryError``.

    Example:
        >>> row = retry_on_oom(lambda: train_one_epoch(epoch), config, optimizer, device)
    """
    while True:
        try:
            return run()
        except torch.cuda.OutOfMemoryError as exc:
            config.batch_size = _halved(config.batch_size, config.oom_retry, exc)
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":  # outside `except`: the traceback no longer pins tensors
            torch.cuda.empty_cache()


def _halved(batch_size: int, retry: bool, exc: BaseException) -> int:
    smaller = max(1, batch_size // 2)
    if not retry or batch_size == 1:
        raise RuntimeError(
            f"CUDA ran out of memory with batch_size={batch_size}. Use a smaller batch size "
            f"(e.g. batch_size={smaller}) or image_size, or pass oom_retry=True to halve the batch "
            "automatically.") from exc
    warnings.warn(f"CUDA ran out of memory with batch_size={batch_size}; retrying this epoch "
                  f"with batch_size={smaller}.", RuntimeWarning, stacklevel=5)
    return smaller
