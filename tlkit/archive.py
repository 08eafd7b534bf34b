"""Safe zip extraction: check every member first, then move the whole tree into place at once.

A zip file from the internet can be hostile or just broken, and
``zipfile.extractall`` trusts it. ``safe_extract_zip`` refuses, before it
writes a single byte:

* zip-slip: members named ``/etc/x``, ``C:/x`` or ``../../x``, which would
  land outside the target folder;
* symbolic links, which could point a later member (or a later program)
  anywhere on the machine;
* zip bombs: more than ``MAX_ZIP_BYTES`` uncompressed in total or
  ``MAX_ZIP_MEMBERS`` members, or a member that unpacks to more bytes than its
  header declares;
* damaged zips, whose CRCs are checked first.

It extracts into a hidden ``.<name>.extract-<pid>`` folder next to the target
and renames that into place, so an interrupted run never leaves a
half-extracted tree under the final name. A run killed outright cannot clean
up, so :func:`remove_stale` deletes such leftovers on the next run.

Its errors, ``DownloadError`` (reason ``"archive"`` or ``"write"``) and
``UnsafeArchiveError``, live in :mod:`tlkit.errors`, shared with the downloader.

Example:
    >>> safe_extract_zip("cats_and_dogs_filtered.zip", "data")[0]
    PosixPath('data/cats_and_dogs_filtered/train/cats/cat.0.jpg')
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import time
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

from tlkit.errors import DownloadError, UnsafeArchiveError

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_ZIP_BYTES = 2 * 1024**3  # total uncompressed size above this is treated as a zip bomb
MAX_ZIP_MEMBERS = 100_000


def remove_stale(folder: Path, prefix: str, max_age_s: float = 3600) -> list[Path]:
    """Deletes leftovers named ``prefix*`` in ``folder`` untouched for ``max_age_s`` seconds.

    Part files and extraction folders are removed on every error, but a killed
    process (power cut, ``kill -9``, a restarted kernel) cannot clean up.
    Younger ones may belong to a download running right now and are kept.
    Returns what was removed.

    Example:
        >>> remove_stale(Path("data"), ".cats_and_dogs_filtered.extract-")
        [PosixPath('data/.cats_and_dogs_filtered.extract-4242')]
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


def write_error(path: Path, exc: OSError) -> DownloadError:
    """The DownloadError (reason ``"write"``) for an OSError while writing ``path``.

    Example:
        >>> write_error(Path("data"), OSError(28, "No space left on device")).reason
        'write'
    """
    return DownloadError(f"Could not write {path}: {type(exc).__name__}: {exc}. Check that the folder "
                         "exists, is writable and has free space, or choose another location "
                         "(e.g. set TLKIT_DATA_DIR).", reason="write")


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
    zf = _open_zip(zip_path)
    tmp = target_dir.parent / f".{target_dir.name}.extract-{os.getpid()}"
    remove_stale(target_dir.parent, f".{target_dir.name}.extract-")  # left by a process that was killed
    with zf:
        members = _check_members(zf, target_dir, max_total_bytes, max_members)
        _test_zip(zf, zip_path)
        _extract_into_place(zf, members, tmp, target_dir, zip_path)
    return [target_dir / rel for info, rel in members if not info.is_dir()]


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    """The open zip; DownloadError (reason "archive") if it is missing or not a zip."""
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{zip_path} is missing or not a valid zip file ({type(exc).__name__}: "
                            f"{exc}). Delete it and download it again.", reason="archive") from exc


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


def _extract_into_place(zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, str]], tmp: Path,
                        target_dir: Path, zip_path: Path) -> None:
    """Extracts the checked ``members`` into ``tmp``, then moves them to ``target_dir``.

    ``tmp`` is removed whatever happens; errors become DownloadError.
    """
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        for info, rel in members:
            _extract_member(zf, info, tmp / rel)
        _move_into_place(tmp, target_dir)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(f"{zip_path} is damaged ({exc}); delete it and download it again.",
                            reason="archive") from exc
    except OSError as exc:  # disk full, read-only folder, a file where a folder should be
        raise write_error(target_dir, exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
        replace_path(entry, target_dir / entry.name)


def replace_path(src: Path, dst: Path) -> None:
    """Moves ``src`` to ``dst``; an existing ``dst`` (file or folder) is swapped out and deleted.

    Example:
        >>> replace_path(Path("data/.staging/cats_and_dogs_filtered"), Path("data/cats_and_dogs_filtered"))
    """
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


@contextlib.contextmanager
def staging_folder(target_dir: Path, name: str) -> Iterator[Path]:
    """A hidden ``.<name>.staging-<pid>`` path beside ``target_dir / name`` (not created), removed afterwards.

    Fill it, then :func:`publish` it: the final name never holds a half-made tree.

    Example:
        >>> with staging_folder(Path("data"), "rt-polaritydata") as staging:
        ...     fill(staging); publish(staging, Path("data/rt-polaritydata"))
    """
    staging = Path(target_dir) / f".{name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(src: Path, dst: Path) -> None:
    """:func:`replace_path`, with a failure raised as ``DownloadError(reason="write")`` naming ``dst``."""
    try:
        replace_path(src, dst)
    except OSError as exc:
        raise write_error(dst, exc) from exc
