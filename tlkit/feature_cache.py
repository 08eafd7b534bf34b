"""Where extracted features are kept: the cache folder, the key, and damaged files.

``extract_features`` (:mod:`tlkit.features`) stores each pass in one file,
``<cache folder>/<backbone>-<key[:24]>.pt`` (:func:`cache_file`). The key
(:func:`cache_key`) covers everything the features depend on: the backbone's
weights (:func:`body_fingerprint`), the precision and engine tag, the decoder
version, the transform, and each file's path, size and modification time. A
damaged file is removed and rebuilt (:func:`load_cache`); one that cannot be
removed turns the cache off for that call, with one warning. Files are written
atomically (:func:`save_cache`).

Example:
    >>> key = cache_key(model, val, "fp32")
    >>> load_cache(cache_file(default_cache_dir(), model, key), key) is None   # nothing stored yet
    True
"""
from __future__ import annotations

import hashlib
import logging
import re
import warnings
import weakref
from pathlib import Path

import torch
from torch import nn

from tlkit.archive import remove_stale
from tlkit.data import ImageDataset
from tlkit.env import env_folder
from tlkit.images import DECODE_VERSION
from tlkit.storage import atomic_save, cache_root, hash_file_stamps, safe_load

log = logging.getLogger(__name__)
CACHE_VERSION = 2
_FINGERPRINTS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def default_cache_dir() -> Path:
    """``$TLKIT_CACHE_DIR`` or ``~/.cache/tlkit/features``."""
    env = env_folder("TLKIT_CACHE_DIR")  # EnvironmentSettingError if it names a file
    return (env if env is not None else cache_root()) / "features"


def body_fingerprint(model: nn.Module) -> str:
    """Hash of every tensor before the head: fine-tuned weights give a new cache key.

    Hashing a body (90 MB for MiniLM) takes a noticeable fraction of a second, so the hash is kept
    per model with a stamp of each tensor's storage and version counter: any in-place change
    (an optimizer step, ``load_state_dict``, BatchNorm statistics, AdaBN) bumps a version and
    the hash is computed again.
    """
    tensors = [(name, t) for name, t in model.state_dict().items() if not name.startswith("groups.head.")]
    stamp = tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in tensors)
    known = _FINGERPRINTS.get(model)
    if known is not None and known[0] == stamp:
        return known[1]
    h = hashlib.sha1()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    _FINGERPRINTS[model] = (stamp, h.hexdigest())
    return h.hexdigest()


def cache_key(model: nn.Module, dataset: ImageDataset, precision: str = "fp32") -> str:
    """Key over backbone weights, precision, decoder version, transform, and each file's path, size and mtime.

    A dataset with a ``fingerprint()`` method (:class:`tlkit.text.TextDataset`) is keyed by it instead.
    """
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|d{DECODE_VERSION}|{model.name}|{model.weights}|{body_fingerprint(model)}|"
             f"{precision}|".encode())
    h.update(repr(dataset.transform).encode())  # text: the tokenizer's name and max_length
    if hasattr(dataset, "fingerprint"):  # a dataset that hashes its own content (text: sentences and labels)
        h.update(f"|content|{dataset.fingerprint()}".encode())
        return h.hexdigest()
    hash_file_stamps(h, dataset.files, dataset.targets)
    return h.hexdigest()


def cache_file(folder: Path, model: nn.Module, key: str) -> Path:
    """The file of ``key``: one safe name whatever the model is called ("hf:org/model" names a text encoder)."""
    return Path(folder) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model.name)[-60:]}-{key[:24]}.pt"


def load_cache(path: Path, key: str):
    """``(features, labels, files)`` stored under ``key``; None when absent or damaged (the file is then
    removed, with a warning); ``"unusable"`` when a damaged file cannot be removed (read-only folder)."""
    if not path.exists():
        return None
    try:
        blob = safe_load(path, "feature cache")
        ok = (blob.get("key") == key and blob["features"].ndim == 2
              and len(blob["features"]) == len(blob["labels"]) == len(blob["files"])
              and bool(torch.isfinite(blob["features"]).all()))
        if not ok:
            raise ValueError("key or shapes do not match")
    except Exception as exc:  # noqa: BLE001 - any damage means "rebuild"
        why = f"{type(exc).__name__}: {exc}"
        try:
            path.unlink(missing_ok=True)
        except OSError as gone:  # read-only or immutable cache folder: one warning, then no cache at all
            warnings.warn(f"Feature cache {path} is damaged ({why}) and cannot be removed ({gone}); "
                          "continuing without the cache. Fix the folder's permissions or set TLKIT_CACHE_DIR "
                          "to a writable folder.", stacklevel=3)
            return "unusable"
        warnings.warn(f"Feature cache {path} is damaged ({why}); rebuilding it.", stacklevel=3)
        return None
    log.info("feature cache hit: %s", path)
    return blob["features"], blob["labels"], list(blob["files"])


def save_cache(path: Path, key: str, features: torch.Tensor, labels: torch.Tensor, files: list[str]) -> None:
    """Atomic write (:func:`tlkit.storage.atomic_save`): a half-written cache file never has the final name.

    A full disk or a read-only folder gives one warning; the caller goes on without the cache.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for prefix in (f".{path.name}.", f"{path.stem}.tmp"):  # temp files a killed run left (now; before 2026-12)
            remove_stale(path.parent, prefix)
        atomic_save({"key": key, "features": features, "labels": labels, "files": files}, path)
    except (OSError, RuntimeError) as exc:  # torch.save says RuntimeError on a full disk or a read-only folder
        warnings.warn(f"Could not write the feature cache {path} ({exc}); continuing without it.", stacklevel=3)
