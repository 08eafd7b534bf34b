"""Where tlkit keeps files, and the one safe way it writes and reads tensors.

* ``cache_root()``: the user cache that holds downloaded data and cached
  features (``$XDG_CACHE_HOME/tlkit``, by default ``~/.cache/tlkit``).
* ``atomic_save(obj, path)``: ``torch.save`` to a temporary file that is
  renamed only when complete, so a crash never leaves a half file under the
  real name.
* ``safe_load(path, what)``: ``torch.load(weights_only=True)``, so a file that
  hides code in a pickle is refused instead of run. Every failure is a
  :class:`tlkit.errors.CheckpointError` that says what happened.

Model files, training checkpoints, feature caches and the offline
EfficientNet-Lite weights all load through ``safe_load``.

Example:
    >>> atomic_save({"w": torch.zeros(2)}, "runs/x.pt")
    >>> safe_load("runs/x.pt", "test file")["w"]
    tensor([0., 0.])
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from tlkit.errors import CheckpointError

# What torch.load raises on a damaged or foreign file (besides UnpicklingError).
_LOAD_ERRORS = (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
                AttributeError, UnicodeDecodeError)


def cache_root() -> Path:
    """The user cache folder of tlkit: ``$XDG_CACHE_HOME/tlkit`` or ``~/.cache/tlkit``.

    Example:
        >>> cache_root()
        PosixPath('/home/me/.cache/tlkit')
    """
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tlkit"


def atomic_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, then rename it into place.

    Example:
        >>> atomic_save({"epoch": 3}, "runs/a/last.pt")
        PosixPath('runs/a/last.pt')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; a saved model is an ordinary file
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def hash_file_stamps(h, files, targets=None) -> None:
    """Feeds each file's path, size and modification time (and its label) into the hash ``h``.

    What the feature, activation and int8 caches key on: a replaced or edited photo gives a new
    key. A file deleted since the scan is stamped ``missing`` (the loader skips it with a warning);
    ``surrogateescape`` keeps file names that are not valid UTF-8 (Linux allows any bytes).

    Example:
        >>> h = hashlib.sha1()
        >>> hash_file_stamps(h, ["a.jpg"], [0]); len(h.hexdigest())
        40
    """
    for i, f in enumerate(files):
        try:
            st = os.stat(f)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        label = "" if targets is None else f"|{targets[i]}"
        h.update(f"|{f}|{stamp}{label}".encode("utf-8", "surrogateescape"))


def current_umask() -> int:
    """The process's umask (Linux shows it in /proc; elsewhere read by setting and restoring it).

    Example:
        >>> oct(current_umask())
        '0o22'
    """
    try:
        with open("/proc/self/status") as f:
            return int(next(ln.split()[1] for ln in f if ln.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def unpickling_detail(exc: BaseException) -> str:
    """The line of torch's weights_only refusal that names the culprit (e.g. ``GLOBAL posix.system``),
    rather than its first line, which suggests turning the check off.

    Example:
        >>> unpickling_detail(pickle.UnpicklingError("Weights only load failed.\\nUnsupported global: GLOBAL posix.system"))
        'Unsupported global: GLOBAL posix.system'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else "")


def safe_load(path: str | os.PathLike, what: str = "file", mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; CheckpointError on any failure.

    ``what`` names the file in messages ("model file", "training checkpoint"). ``mmap``
    maps the tensors from the file instead of reading them (large caches).
    A pickle of arbitrary objects is refused (the error's ``__cause__`` is the
    ``pickle.UnpicklingError``); its code never runs.

    Example:
        >>> safe_load("runs/demo/model.pt", "model file")["format"]
        'tlkit-model/1'
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        detail = unpickling_detail(exc)
        if "GLOBAL" not in detail:  # not a pickle of objects at all: random bytes, another format
            raise CheckpointError(f"{path} is not a readable {what} (damaged, or not a PyTorch file): "
                                  f"{detail}") from exc
        raise CheckpointError(
            f"Refusing to load {path}: it contains Python objects other than tensors and plain data "
            "(numbers, strings, lists, dicts), which could run code when unpickled, so it was refused "
            f"(torch.load with weights_only=True). tlkit's own files never need this; only load such a "
            f"file if you trust its source. Detail: {detail}") from exc
    except _LOAD_ERRORS as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"{path} is not a readable {what} (damaged or cut short?): "
                              f"{type(exc).__name__}: {first}") from exc


def content_hash(paths) -> str:
    """SHA-1 over the bytes of ``paths``, in order: the same files in any folder give the same hash.

    Unlike :func:`hash_file_stamps`, it survives a copy or a fresh download (the int8
    verdicts that tlkit ships name their calibration photos this way).

    Example:
        >>> len(content_hash(["a.jpg", "b.jpg"]))
        40
    """
    h = hashlib.sha1()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()
