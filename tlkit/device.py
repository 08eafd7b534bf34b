"""Where tensors run and in which precision: the one place that decides.

Example:
    >>> dev = pick_device()            # cuda, then mps, then cpu
    >>> with autocast(dev):            # bf16 on CUDA (fp16 where bf16 is missing)
    ...     logits = model(x)
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
from typing import Iterable, Iterator, TypeVar

import torch

from tlkit.env import env_flag

T = TypeVar("T")


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


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute bfloat16 in hardware (AVX512-BF16 or AMX): bf16 inference ~2x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def inference_precision(device: torch.device, precision: str = "auto") -> str:
    """The precision a forward pass without gradients runs in: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``"auto"``: the AMP dtype on CUDA; bf16 on CPUs with native bf16 (set
    ``TLKIT_CPU_BF16=0`` to keep fp32 there); fp32 elsewhere. Pooled features
    in bf16 train a head to the same accuracy (0.990 vs 0.991 on dogs vs cats).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if amp_dtype(device) == torch.bfloat16 else "fp16"
    if device.type == "cpu" and env_flag("TLKIT_CPU_BF16", default=True) and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def inference_autocast(device: torch.device, precision: str = "auto"):
    """Autocast context for :func:`inference_precision` (a no-op for fp32)."""
    resolved = inference_precision(device, precision)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16)


def default_batch_size(device: torch.device) -> int:
    """Inference batch size: small on CPUs (activations stay in cache: 16 ran 1.5x faster than 64), large on GPUs."""
    return 16 if device.type == "cpu" else 128


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 autocast needs a gradient scaler; bf16 and fp32 do not."""
    return amp_dtype(device) == torch.float16


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last where it is faster: CUDA and x86 CPUs (1.6x for Lite0 here); not on MPS.

    To train in the default layout anyway, pass ``fit(..., channels_last=False)``.
    """
    if device.type == "mps":
        return torch.contiguous_format
    return torch.channels_last


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copies an image batch to ``device`` (non-blocking from pinned memory) in the fast layout."""
    x = x.to(device, non_blocking=device.type == "cuda")
    return x.contiguous(memory_format=memory_format(device)) if x.ndim == 4 else x


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Hands memory that Python and PyTorch have freed back to the operating system.

    Decoding thousands of JPEGs of different sizes between large tensor
    allocations fragments glibc's heap: freed memory stays with the process.
    A feature pass over the 2,000 training photos on a CPU peaked at about
    2.0 GB of RSS without trimming and 0.9-1.0 GB when trimming every 10
    batches, 3-5% slower. Binder gives a notebook 2 GB. Returns False where
    there is no glibc (nothing to do there).

    Example:
        >>> trim_heap()
        True
    """
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def release_memory() -> bool:
    """Collects garbage, then :func:`trim_heap`: after a large one-off step (an export, a latency run at
    batch 32, a feature pass), so the next step's peak does not add to memory nobody uses.

    Example:
        >>> release_memory()
        True
    """
    import gc

    gc.collect()
    return trim_heap()


def releasing_memory(batches: Iterable[T], device: torch.device, every: int = 10) -> Iterator[T]:
    """Yields ``batches`` unchanged, calling :func:`trim_heap` after every ``every``-th on a CPU.

    On a GPU nothing is trimmed: host memory holds little there, and the
    loop should not pause.

    Example:
        >>> for x, y, dropped in releasing_memory(loader, torch.device("cpu")): ...
    """
    for i, batch in enumerate(batches):
        yield batch
        if device.type == "cpu" and i % every == every - 1:
            trim_heap()
