"""Where tensors run and in which precision: the one place that decides.

Example:
    >>> dev = pick_device()            # cuda, then mps, then cpu
    >>> with autocast(dev):            # bf16 on CUDA (fp16 where bf16 is missing)
    ...     logits = model(x)
"""
from __future__ import annotations

import contextlib
import os

import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA if present, then Apple MPS, then CPU; or the one asked for.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but no CUDA GPU is visible. Use device='cpu'.")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 on CUDA when supported, else fp16; None on CPU/MPS."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA; a no-op context elsewhere (CPU stays fp32 for exact results)."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 autocast needs a gradient scaler; bf16 and fp32 do not."""
    return amp_dtype(device) == torch.float16


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last where it is faster: CUDA and x86 CPUs (1.6x for Lite0 here); not on MPS."""
    if os.environ.get("TLKIT_CHANNELS_LAST", "1") == "0" or device.type == "mps":
        return torch.contiguous_format
    return torch.channels_last


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copies an image batch to ``device`` (non-blocking from pinned memory) in the fast layout."""
    x = x.to(device, non_blocking=device.type == "cuda")
    return x.contiguous(memory_format=memory_format(device)) if x.ndim == 4 else x
