"""Safe downloads: verified files, safe zip extraction, complete datasets or nothing.

* ``download_file(url, dest)`` streams into a temporary file next to ``dest``,
  checks its length (and optionally size and SHA-256), and only then renames
  it to ``dest``. A truncated or wrong file is deleted, never used.
* ``safe_extract_zip(zip_path, target_dir)`` checks every member before it
  writes anything (no absolute paths, ``..``, drive letters, symlinks or zip
  bombs) and moves the extracted tree into place in one rename.
* ``download_dataset(url, target_dir, name)`` puts the two together and checks
  the image counts of each split.

Errors are :class:`DownloadError` (a RuntimeError) with a message that says
what happened and what to do, for example when the machine is offline.

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
import re
import shutil
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_ZIP_BYTES = 2 * 1024**3  # total uncompressed size above this is treated as a zip bomb
MAX_ZIP_MEMBERS = 100_000
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_OFFLINE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})


class DownloadError(RuntimeError):
    """A download or extraction failed. ``reason`` is one of ``"offline"``,
    ``"http"``, ``"incomplete"``, ``"mismatch"``, ``"write"``, ``"archive"``."""

    def __init__(self, message: str, reason: str = "http"):
        super().__init__(message)
        self.reason = reason


class UnsafeArchiveError(DownloadError, ValueError):
    """A zip member would land outside the target folder, is a link, or the zip is a bomb."""

    def __init__(self, message: str):
        super().__init__(message, reason="archive")


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
        raise _write_error(dest, exc) from exc
    for attempt in range(retries + 1):
        try:
            _attempt(url, dest, expected_size, sha256, progress, timeout)
            return dest
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


def remove_stale(folder: Path, prefix: str, max_age_s: float = 3600) -> list[Path]:
    """Deletes leftovers named ``prefix*`` in ``folder`` untouched for ``max_age_s`` seconds.

    Part files and extraction folders are removed on every error, but a killed
    process (power cut, ``kill -9``, a restarted kernel) cannot clean up.
    Younger ones may belong to a download running right now and are kept.
    Returns what was removed.
    """
    removed, cutoff = [], time.time() - max_age_s
    try:
        entries = [p for p in Path(folder).iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in entries:
        try:
            if p.lstat().st_mtime < cutoff:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p)
        except OSError:  # gone already, or not ours to delete: leave it
            continue
    if removed:
        log.info("Removed %d stale leftover(s) of interrupted runs: %s", len(removed), removed[:3])
    return removed


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
        raise _write_error(dest, exc) from exc
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


def _write_error(path: Path, exc: OSError) -> DownloadError:
    return DownloadError(f"Could not write {path}: {type(exc).__name__}: {exc}. Check that the folder "
                         "exists, is writable and has free space, or choose another location "
                         "(e.g. set TLKIT_DATA_DIR).", reason="write")


# --------------------------------------------------------------------------
# safe_extract_zip

def safe_extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike, *,
                     max_total_bytes: int = MAX_ZIP_BYTES,
                     max_members: int = MAX_ZIP_MEMBERS) -> list[Path]:
    """Extracts a zip after checking every member; returns the extracted file paths.

    Members with absolute paths, drive letters, ``..`` components or symlink
    type, or more than ``max_total_bytes`` uncompressed in total, raise
    UnsafeArchiveError before anything is written. The zip is extracted into a
    hidden folder next to ``target_dir`` and renamed into place, so a
    half-extracted tree never appears under its final name. Top-level entries
    that already exist in ``target_dir`` are replaced.

    Example:
        >>> safe_extract_zip("cats_and_dogs_filtered.zip", "data")[0]
        PosixPath('data/cats_and_dogs_filtered/train/cats/cat.0.jpg')
    """
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{zip_path} is missing or not a valid zip file ({type(exc).__name__}: "
                            f"{exc}). Delete it and download it again.", reason="archive") from exc
    tmp = target_dir.parent / f".{target_dir.name}.extract-{os.getpid()}"
    remove_stale(target_dir.parent, f".{target_dir.name}.extract-")  # left by a process that was killed
    with zf:
        members = _check_members(zf, target_dir, max_total_bytes, max_members)
        _test_zip(zf, zip_path)
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            for info, rel in members:
                _extract_member(zf, info, tmp / rel)
            _move_into_place(tmp, target_dir)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DownloadError(f"{zip_path} is damaged ({exc}); delete it and download it again.",
                                reason="archive") from exc
        except OSError as exc:  # disk full, read-only folder, a file where a folder should be
            raise _write_error(target_dir, exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [target_dir / rel for info, rel in members if not info.is_dir()]


def _check_members(zf: zipfile.ZipFile, target_dir: Path, max_total_bytes: int,
                   max_members: int) -> list[tuple[zipfile.ZipInfo, str]]:
    """Each member with its safe relative path; raises UnsafeArchiveError on the first bad one."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise UnsafeArchiveError(f"{zf.filename} has {len(infos):,} members (limit {max_members:,}).")
    total = sum(i.file_size for i in infos)
    if total > max_total_bytes:
        raise UnsafeArchiveError(f"{zf.filename} would unpack to {total:,} bytes (limit "
                                 f"{max_total_bytes:,}); refusing a possible zip bomb.")
    root = target_dir.resolve()
    checked = []
    for info in infos:
        rel = info.filename.replace("\\", "/")
        bad = (not rel.strip("/") or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel)
               or ".." in rel.split("/") or "\0" in rel)
        if not bad and not (root / rel).resolve().is_relative_to(root):
            bad = True
        if bad:
            raise UnsafeArchiveError(f"{zf.filename} has an unsafe member {info.filename!r} (absolute "
                                     "path, drive letter or '..'); nothing was extracted.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(f"{zf.filename} has a symbolic link member {info.filename!r}; "
                                     "nothing was extracted.")
        checked.append((info, rel.rstrip("/")))
    return checked


def _test_zip(zf: zipfile.ZipFile, zip_path: Path) -> None:
    """Reads every member and checks its CRC; DownloadError if any is damaged."""
    try:
        bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        bad = f"({type(exc).__name__}: {exc})"
    if bad is not None:
        raise DownloadError(f"{zip_path} is damaged (first bad member: {bad}). Delete it and "
                            "download it again.", reason="archive")


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    if info.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(out, "wb") as dst:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > info.file_size:  # the header lied about the size
                raise UnsafeArchiveError(f"{info.filename!r} unpacks to more than its declared "
                                         f"{info.file_size:,} bytes; refusing a possible zip bomb.")
            dst.write(chunk)


def _move_into_place(tmp: Path, target_dir: Path) -> None:
    """Renames ``tmp`` to ``target_dir``, or each top-level entry into an existing one."""
    tmp.mkdir(exist_ok=True)  # an empty zip still gives an (empty) target
    if not target_dir.exists():
        os.replace(tmp, target_dir)
        return
    for entry in sorted(tmp.iterdir()):
        _replace_path(entry, target_dir / entry.name)


def _replace_path(src: Path, dst: Path) -> None:
    """Moves ``src`` to ``dst``; an existing ``dst`` (file or folder) is swapped out and deleted."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except OSError:
            os.replace(old, dst)  # put the previous one back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


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
        try:
            download_file(url, zip_path)
        except DownloadError as exc:
            if exc.reason == "write" or not hint:
                raise
            raise DownloadError(f"{exc} {hint}", reason=exc.reason) from exc
    counts = _extract_dataset(zip_path, target_dir, name, expected, url)
    log.info("Dataset %s ready in %s (%s)", name, final, counts)
    return final


def _extract_dataset(zip_path: Path, target_dir: Path, name: str, expected: dict[str, int],
                     url: str) -> dict[str, int]:
    """Unpacks into a hidden staging folder, checks the counts, then swaps it in as ``name``."""
    staging = target_dir / f".{name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
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
        root = staging / name if (staging / name).is_dir() else staging
        counts = count_images(root, expected)
        if counts != expected:
            zip_path.unlink(missing_ok=True)  # not the dataset we want: fetch it again next time
            raise DownloadError(f"{url} unpacked to {counts} images per split, expected {expected}. "
                                "The download was discarded; try again, or check the URL.",
                                reason="mismatch")
        try:
            _replace_path(root, target_dir / name)
        except OSError as exc:
            raise _write_error(target_dir / name, exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


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
            n += sum(1 for f in filenames if not f.startswith(".") and f.lower().endswith(_IMAGE_SUFFIXES))
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
