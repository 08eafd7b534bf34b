"""Verified downloads, and whole datasets that are complete or absent.

* ``download_file(url, dest)`` streams into a temporary file next to ``dest``,
  checks its length (and optionally size and SHA-256), and only then renames
  it to ``dest``. A truncated or wrong file is deleted, never used.
* ``download_dataset(url, target_dir, name)`` downloads a zip, unpacks it with
  :func:`tlkit.archive.safe_extract_zip` (no zip-slip, links or zip bombs;
  moved into place in one rename) and checks the image counts of each split.

Errors are :class:`tlkit.errors.DownloadError` (a RuntimeError) with a message
that says what happened and what to do, for example when the machine is offline.

Example:
    >>> folder = download_dataset(DATASET_URL, Path("~/.cache/tlkit/data").expanduser(),
    ...                           "cats_and_dogs_filtered")
    >>> sorted(p.name for p in folder.iterdir())
    ['train', 'validation', 'vectorize.py']
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import Callable

from tlkit.archive import CHUNK, publish, remove_stale, safe_extract_zip, staging_folder, write_error
from tlkit.errors import DownloadError, UnsafeArchiveError
from tlkit.images import is_image_file

log = logging.getLogger(__name__)

_OFFLINE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})


class _TransientError(Exception):
    """A failure worth retrying (connection reset, 5xx, truncated body)."""


# --------------------------------------------------------------------------
# download_file

def download_file(url: str, dest: str | os.PathLike, expected_size: int | None = None,
                  sha256: str | None = None, progress: bool = True, retries: int = 2,
                  timeout: float = 30, *, backoff: float = 1.0) -> Path:
    """Downloads ``url`` to ``dest`` atomically: ``dest`` exists only if the file is complete.

    Args:
        url: http(s) or file URL.
        dest: final path; its folder is created if needed.
        expected_size: bytes the file must have (checked after the transfer).
        sha256: hex digest the file must have.
        progress: show a tqdm progress bar.
        retries: extra attempts after a transient failure (connection reset,
            HTTP 5xx, truncated body), waiting ``backoff * 2**attempt`` seconds.
        timeout: seconds to wait for the connection and for each read.

    Raises:
        DownloadError: offline, HTTP error, incomplete or wrong file, or the
            file could not be written. No partial file is left behind.

    Example:
        >>> download_file("https://example.org/data.zip", "data/data.zip", expected_size=1024)
        PosixPath('data/data.zip')
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(dest, exc) from exc
    _retry(partial(_attempt, url, dest, expected_size, sha256, progress, timeout), url, dest, retries, backoff)
    return dest


def download_with_hint(url: str, dest: str | os.PathLike, hint: str | None) -> Path:
    """:func:`download_file`, with ``hint`` (what to do offline) added to a failure's message.

    A failure to write (a full disk, no permission) is about this machine, not the network, so
    it keeps its own message.

    Example:
        >>> download_with_hint(URL, "data/x.zip", "Or copy x.zip into data/ by hand.")
    """
    try:
        return download_file(url, dest)
    except DownloadError as exc:
        if exc.reason == "write" or not hint:
            raise
        raise DownloadError(f"{exc} {hint}", reason=exc.reason) from exc


def _retry(attempt_once: Callable[[], None], url: str, dest: Path, retries: int, backoff: float) -> None:
    """Calls ``attempt_once`` until it succeeds, at most ``retries + 1`` times.

    Only a transient failure is retried, after ``backoff * 2**attempt`` seconds;
    DownloadError (offline, HTTP 404, wrong file) propagates at once.
    """
    for attempt in range(retries + 1):
        try:
            attempt_once()
            return
        except _TransientError as exc:
            last = exc
            if attempt < retries:
                wait = backoff * 2**attempt
                log.warning("Download of %s failed (%s); retrying in %.1f s (%d/%d).",
                            url, exc, wait, attempt + 1, retries)
                time.sleep(wait)
    raise DownloadError(f"Could not download {url} to {dest} after {retries + 1} attempt(s): {last}. "
                        "The connection or the server is unreliable; try again later.",
                        reason="incomplete") from last


def _attempt(url: str, dest: Path, expected_size: int | None, sha256: str | None,
             progress: bool, timeout: float) -> None:
    """One try: stream into ``dest.part-<pid>``, verify, rename. Removes the part file on failure."""
    remove_stale(dest.parent, f"{dest.name}.part-")  # left by a process that was killed
    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    try:
        with _open(url, timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received, digest = _stream(resp, part, dest, total or expected_size, progress)
        if total is not None and received != total:
            raise _TransientError(f"truncated: received {received:,} of {total:,} bytes")
        _verify(url, received, digest, expected_size, sha256)
        os.replace(part, dest)
    except OSError as exc:  # fsync / rename (network errors were converted in _open/_stream)
        raise write_error(dest, exc) from exc
    finally:
        part.unlink(missing_ok=True)
    log.info("Downloaded %s (%s bytes) to %s", url, f"{received:,}", dest)


def _open(url: str, timeout: float):
    """urlopen with errors sorted into offline (fail now), HTTP (fail now) and transient (retry)."""
    request = urllib.request.Request(url, headers={"User-Agent": "tlkit (python urllib)"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error holds the connection open until garbage-collected otherwise
        if exc.code >= 500 or exc.code in (408, 429):
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"Downloading {url} failed: the server answered HTTP {exc.code} "
                            f"{exc.reason}. Check the URL, or download the file by hand.",
                            reason="http") from exc
    except urllib.error.URLError as exc:
        cause = exc.reason
        if _looks_offline(cause):
            host = urllib.parse.urlsplit(url).netloc or url
            raise DownloadError(
                f"Could not connect to {host} to download {url} ({type(cause).__name__}: {cause}). "
                "This machine seems to be offline, or a firewall or proxy blocks the connection. "
                "Connect to the internet and run again, or download the file on another machine "
                "and copy it here.", reason="offline") from exc
        raise _TransientError(f"{type(cause).__name__}: {cause}") from exc
    except (OSError, http.client.HTTPException) as exc:  # reset during the handshake, bad status line
        raise _TransientError(f"{type(exc).__name__}: {exc}") from exc


def _looks_offline(cause: object) -> bool:
    if isinstance(cause, (socket.gaierror, ConnectionRefusedError, TimeoutError)):
        return True  # DNS failure, nothing listening, or no route within the timeout
    return isinstance(cause, OSError) and cause.errno in _OFFLINE_ERRNOS


def _stream(resp, part: Path, dest: Path, total: int | None, progress: bool) -> tuple[int, str]:
    """Copies the body into ``part`` (fsynced). Returns ``(bytes, sha256 hex)``."""
    from tqdm.auto import tqdm  # only needed while downloading

    hasher, received = hashlib.sha256(), 0
    with open(part, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=dest.name, disable=not progress, leave=False) as bar:
        while True:
            try:
                chunk = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                raise _TransientError(f"{type(exc).__name__} after {received:,} bytes: {exc}") from exc
            if not chunk:
                break
            f.write(chunk)  # an OSError here (disk full) becomes a write error in _attempt
            hasher.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        f.flush()
        os.fsync(f.fileno())
    return received, hasher.hexdigest()


def _verify(url: str, received: int, digest: str, expected_size: int | None,
            sha256: str | None) -> None:
    if expected_size is not None and received < expected_size:
        raise _TransientError(f"truncated: received {received:,} of the expected {expected_size:,} bytes")
    if expected_size is not None and received != expected_size:
        raise DownloadError(f"{url} has {received:,} bytes, expected {expected_size:,}. The file on "
                            "the server is not the expected one; it was discarded.", reason="mismatch")
    if sha256 is not None and digest != sha256.lower():
        raise DownloadError(f"{url} has SHA-256 {digest}, expected {sha256.lower()}. The file is "
                            "corrupt or was changed; it was discarded.", reason="mismatch")


# --------------------------------------------------------------------------
# download_dataset

def download_dataset(url: str, target_dir: str | os.PathLike, name: str,
                     expected_counts: dict[str, int] | None = None, hint: str = "") -> Path:
    """Downloads and unpacks an image dataset zip; returns ``target_dir/name``.

    The zip is kept as ``target_dir/<name>.zip`` and reused when it is intact.
    The result is checked: ``name/<split>/<class>/`` must hold exactly
    ``expected_counts[split]`` images per split (default 2000 train, 1000
    validation). A previous partial ``target_dir/name`` is replaced.

    Raises:
        DownloadError: the message ends with ``hint`` when the download failed.

    Example:
        >>> download_dataset(DATASET_URL, Path("data"), "cats_and_dogs_filtered")
        PosixPath('data/cats_and_dogs_filtered')
    """
    expected = {"train": 2000, "validation": 1000} if expected_counts is None else dict(expected_counts)
    target_dir = Path(target_dir)
    final = target_dir / name
    if final.is_dir() and count_images(final, expected) == expected:
        return final
    zip_path = target_dir / f"{name}.zip"
    if not _zip_intact(zip_path):
        download_with_hint(url, zip_path, hint)
    counts = _extract_dataset(zip_path, target_dir, name, expected, url)
    log.info("Dataset %s ready in %s (%s)", name, final, counts)
    return final


def _extract_dataset(zip_path: Path, target_dir: Path, name: str, expected: dict[str, int],
                     url: str) -> dict[str, int]:
    """Unpacks into a hidden staging folder, checks the counts, then swaps it in as ``name``."""
    with staging_folder(target_dir, name) as staging:
        _unpack_download(zip_path, staging, url)
        root = staging / name if (staging / name).is_dir() else staging
        counts = count_images(root, expected)
        if counts != expected:
            zip_path.unlink(missing_ok=True)  # not the dataset we want: fetch it again next time
            raise DownloadError(f"{url} unpacked to {counts} images per split, expected {expected}. "
                                "The download was discarded; try again, or check the URL.",
                                reason="mismatch")
        publish(root, target_dir / name)
    return counts


def _unpack_download(zip_path: Path, staging: Path, url: str) -> None:
    """safe_extract_zip, deleting a bad or unsafe zip so that the next run downloads it again."""
    try:
        safe_extract_zip(zip_path, staging)
    except DownloadError as exc:
        if exc.reason == "archive":  # a bad or unsafe zip is never reused
            zip_path.unlink(missing_ok=True)
        if exc.reason == "archive" and not isinstance(exc, UnsafeArchiveError):
            detail = str(exc).replace(" Delete it and download it again.", "")
            raise DownloadError(f"The file downloaded from {url} is not a usable zip ({detail}). It was "
                                "deleted, so the next run downloads it again; if this keeps happening, a "
                                "proxy or login page may be answering instead of the server.",
                                reason="archive") from exc
        raise


def count_images(root: str | os.PathLike, splits: dict[str, int] | list[str]) -> dict[str, int]:
    """Image files under ``root/<split>/<class>/`` for each split (hidden files ignored).

    Example:
        >>> count_images("data/cats_and_dogs_filtered", ["train", "validation"])
        {'train': 2000, 'validation': 1000}
    """
    counts = {}
    for split in splits:
        n = 0
        for dirpath, dirnames, filenames in os.walk(Path(root) / split):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if Path(dirpath) == Path(root) / split:
                continue  # only files inside class folders count
            n += sum(1 for f in filenames if is_image_file(f))
        counts[split] = n
    return counts


def _zip_intact(zip_path: Path) -> bool:
    """True when ``zip_path`` is a readable zip whose CRCs all check out; a bad one is deleted."""
    if not zip_path.is_file():
        return False
    try:
        with zipfile.ZipFile(zip_path) as zf:
            if zf.testzip() is None:
                log.info("Reusing %s", zip_path)
                return True
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError):
        pass
    log.warning("%s is incomplete or damaged; downloading it again.", zip_path)
    zip_path.unlink(missing_ok=True)
    return False
