"""A learner's own photos on disk: a class-folder store that survives a kernel restart.

:class:`PhotoStore` keeps ``<folder>/<class>/<photo>`` (default
``runs/own-data``), the layout every other part of tlkit reads. Every photo
is checked with :func:`tlkit.images.open_image` (broken files, non-images,
decompression bombs and HEIC are refused, each with its own message naming
the user's file) and written atomically: to a hidden ``.incoming`` folder
first, renamed into place when complete. Duplicates are found by content
hash, file names are sanitised, and zips go through
:func:`tlkit.archive.safe_extract_zip`. Opening a store on an existing folder
restores its classes. Removing a class moves its folder to ``.removed/``, so
no photo is ever deleted.

Training on a store lives in :mod:`tlkit.own_model`.

Example:
    >>> store = PhotoStore("runs/own-data")
    >>> store.add_class("mugs")
    >>> store.add_images("mugs", [("IMG_0001.JPG", data)]).added
    [PosixPath('runs/own-data/mugs/IMG_0001-3fa2c1d0.jpg')]
    >>> store.counts()
    {'mugs': 1}
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tlkit.archive import safe_extract_zip
from tlkit.data import ImageDataset
from tlkit.errors import DownloadError, ImageReadError
from tlkit.images import is_image_file, open_image

log = logging.getLogger(__name__)

DEFAULT_FOLDER = "runs/own-data"
MAX_UPLOAD_ZIP_BYTES = 1024**3  # an uploaded zip unpacking to more than this is refused as a bomb
_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_CLASS_NAME = re.compile(r"^[\w][\w .\-]{0,63}$")


@dataclass
class AddReport:
    """What one ``add_*`` call did: photos written, files refused and duplicates, each with its reason."""

    added: list[Path] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (the user's file name, why)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file name, "class/photo" it repeats)

    def merge(self, other: "AddReport") -> "AddReport":
        self.added += other.added
        self.refused += other.refused
        self.duplicates += other.duplicates
        return self

    def messages(self) -> list[str]:
        """One line per refused or duplicate file, e.g. ``"notes.txt: not an image (...)"``."""
        return ([f"{name}: {why}" for name, why in self.refused]
                + [f"{name}: already there as {where} (duplicate, skipped)" for name, where in self.duplicates])


def check_class_name(name: str) -> str:
    """``name`` stripped, or ValueError saying which names are allowed.

    Example:
        >>> check_class_name(" mugs ")
        'mugs'
    """
    if not isinstance(name, str):
        raise TypeError(f"A class name must be a string, got {type(name).__name__}.")
    clean = name.strip()
    if not _CLASS_NAME.match(clean) or clean in (".", ".."):
        raise ValueError(f"{name!r} cannot be a class name: use 1-64 letters, digits, spaces, '-', '_' or '.', "
                         "starting with a letter or digit (e.g. 'mugs' or 'red apples').")
    return clean


def safe_stem(filename: str) -> str:
    """A file name's stem reduced to letters, digits, '-' and '_' (at most 40 characters), never empty.

    Example:
        >>> safe_stem("../../My Photo (1).JPG")
        'My_Photo_1'
    """
    stem = Path(str(filename).replace("\\", "/").split("/")[-1]).stem
    stem = re.sub(r"[^\w\-]+", "_", stem, flags=re.ASCII).strip("_")[:40]
    return stem or "photo"


def decode_upload(data: bytes, name: str, workdir: str | os.PathLike | None = None) -> Image.Image:
    """RGB image (upright) from uploaded bytes, or ImageReadError naming ``name``, never a temp path.

    Example:
        >>> decode_upload(open("cat.jpg", "rb").read(), "cat.jpg").mode
        'RGB'
    """
    with tempfile.TemporaryDirectory(prefix="tlkit-upload-", dir=workdir) as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(bytes(data))
        try:
            return open_image(path)
        except ImageReadError as exc:
            raise ImageReadError(str(exc).replace(str(path), name).replace(tmp, "")) from None


class PhotoStore:
    """Class folders of photos under ``folder``; reopening the folder restores them.

    Example:
        >>> store = PhotoStore("runs/own-data")
        >>> store.classes
        ['mugs', 'plants']
    """

    def __init__(self, folder: str | os.PathLike = DEFAULT_FOLDER):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._hashes: dict[str, Path] | None = None  # content hash -> stored photo, built on first add

    # ---- classes ---------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Sorted names of the visible sub-folders: the classes."""
        return sorted(d.name for d in self.folder.iterdir() if d.is_dir() and not d.name.startswith("."))

    def add_class(self, name: str) -> str:
        """Creates the class folder (nothing happens if it exists); returns the clean name."""
        name = check_class_name(name)
        (self.folder / name).mkdir(exist_ok=True)
        return name

    def remove_class(self, name: str) -> Path:
        """Moves the class folder to ``.removed/<name>-<time>`` (photos are kept, not deleted); returns it."""
        if name not in self.classes:
            raise KeyError(f"No class {name!r}; the classes are {self.classes}.")
        target = self.folder / ".removed" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        target.parent.mkdir(exist_ok=True)
        os.replace(self.folder / name, target)
        self._hashes = None
        return target

    def files(self, name: str) -> list[Path]:
        """The photos of one class, sorted."""
        folder = self.folder / name
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p.name)) if folder.is_dir() else []

    def counts(self) -> dict[str, int]:
        """Photos per class, e.g. ``{'mugs': 12, 'plants': 9}``."""
        return {c: len(self.files(c)) for c in self.classes}

    def dataset(self) -> ImageDataset:
        """Every photo as an ImageDataset (no transform), classes in sorted order."""
        files, targets, classes = [], [], self.classes
        for label, cls in enumerate(classes):
            paths = [str(p) for p in self.files(cls)]
            files += paths
            targets += [label] * len(paths)
        return ImageDataset(files, targets, classes, name=self.folder.name)

    # ---- adding photos ------------------------------------------------------
    def add_images(self, name: str, files: list[tuple[str, bytes]]) -> AddReport:
        """Checks and writes each ``(filename, bytes)`` into class ``name`` (created if new).

        A ``.zip`` among them is read as a class-folder zip (:meth:`add_zip`).
        Refused and duplicate files are reported, and the rest are kept.
        """
        name = self.add_class(name)
        report = AddReport()
        for filename, data in files:
            if str(filename).lower().endswith(".zip"):
                report.merge(self.add_zip(bytes(data), str(filename)))
            else:
                self._add_one(name, str(filename), bytes(data), report)
        return report

    def add_folder(self, path: str | os.PathLike, name: str | None = None) -> AddReport:
        """Adds a folder on this machine: its class sub-folders, or (with ``name``) its images into one class.

        Example:
            >>> store.add_folder("photos/")          # photos/mugs/*.jpg, photos/plants/*.jpg
        """
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ValueError(f"{path} is not a folder. Give a folder holding one sub-folder per class "
                             "(e.g. photos/mugs, photos/plants), or pass name= to add its images to one class.")
        if name is not None:
            return self.add_images(name, _read_images(root, root))
        report = AddReport()
        subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not subfolders:
            raise ValueError(f"{path} has no class sub-folders. Put each class in its own sub-folder, or "
                             "pass name= to add its images to one class.")
        for sub in subfolders:
            try:
                cls = check_class_name(sub.name)
            except ValueError as exc:
                report.refused.append((sub.name + "/", str(exc)))
                continue
            report.merge(self.add_images(cls, _read_images(sub, root)))
        return report

    def add_zip(self, data: bytes | str | os.PathLike, name: str = "upload.zip") -> AddReport:
        """Adds a zip of class folders (``cls/x.jpg`` or ``top/cls/x.jpg``), extracted safely.

        A hostile or broken zip is refused as a whole, with its reason; nothing
        of it is written outside the store's hidden work folder.
        """
        report = AddReport()
        with tempfile.TemporaryDirectory(prefix="zip-", dir=self._incoming()) as tmp:
            zpath = Path(tmp) / "upload.zip"
            if isinstance(data, (bytes, bytearray, memoryview)):
                zpath.write_bytes(bytes(data))
            else:
                shutil.copyfile(data, zpath)
            try:
                safe_extract_zip(zpath, Path(tmp) / "x", max_total_bytes=MAX_UPLOAD_ZIP_BYTES)
            except DownloadError as exc:  # UnsafeArchiveError is one too
                report.refused.append((name, "zip refused: " + str(exc).replace(str(zpath), name).replace(tmp, "")))
                return report
            root = _class_root(Path(tmp) / "x")
            for stray in sorted(p.name for p in root.iterdir() if p.is_file()):
                report.refused.append((f"{name}/{stray}", "not inside a class folder; put it in one, e.g. mugs/"))
            sub = self._from_zip(root, name)
            report.merge(sub)
        return report

    def _from_zip(self, root: Path, zip_name: str) -> AddReport:
        report = AddReport()
        for sub in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__MACOSX"))):
            try:
                cls = self.add_class(sub.name)
            except ValueError as exc:
                report.refused.append((f"{zip_name}/{sub.name}/", str(exc)))
                continue
            for filename, data in _read_images(sub, root, prefix=zip_name + "/"):
                self._add_one(cls, filename, data, report)
        return report

    def _incoming(self) -> Path:
        """The hidden work folder on the store's own disk, so a rename into place is atomic."""
        path = self.folder / ".incoming"
        path.mkdir(exist_ok=True)
        return path

    def _index(self) -> dict[str, Path]:
        if self._hashes is None:
            self._hashes = {}
            for cls in self.classes:
                for p in self.files(cls):
                    self._hashes.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), p)
        return self._hashes

    def _add_one(self, cls: str, filename: str, data: bytes, report: AddReport) -> None:
        """Checks one photo and renames it into ``cls/`` when complete; records the outcome."""
        digest = hashlib.sha256(data).hexdigest()
        seen = self._index().get(digest)
        if seen is not None and seen.exists():
            report.duplicates.append((filename, f"{seen.parent.name}/{seen.name}"))
            return
        fd, tmp = tempfile.mkstemp(prefix="photo-", suffix=".part", dir=self._incoming())
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            suffix = self._check_photo(tmp, filename)
            final = self.folder / cls / f"{safe_stem(filename)}-{digest[:8]}{suffix}"
            os.replace(tmp, final)
        except ImageReadError as exc:
            report.refused.append((filename, f"not a usable image ({exc})"))
            return
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._index()[digest] = final
        report.added.append(final)
        log.info("kept %s as %s", filename, final)

    @staticmethod
    def _check_photo(path: str, filename: str) -> str:
        """The suffix for a photo that opens; ImageReadError naming ``filename`` (not ``path``) otherwise."""
        try:
            open_image(path)
            with Image.open(path) as im:
                fmt = im.format
        except ImageReadError as exc:
            raise ImageReadError(str(exc).replace(path, filename)) from None
        except OSError as exc:
            raise ImageReadError(f"{type(exc).__name__}: {exc}".replace(path, filename)) from None
        if fmt in _FORMAT_SUFFIX:  # named by what it is: "photo" or "x.png" holding a JPEG -> .jpg
            return _FORMAT_SUFFIX[fmt]
        raise ImageReadError(f"{fmt} images are not kept; save it as JPEG or PNG")


def _class_root(root: Path) -> Path:
    """``root``, or its only sub-folder when a zip wraps its class folders in one top folder."""
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = [p for p in entries[0].iterdir() if not p.name.startswith(".")]
        if inner and all(p.is_dir() for p in inner):
            return entries[0]
    return root


def _read_images(folder: Path, root: Path, prefix: str = "") -> list[tuple[str, bytes]]:
    """``[(name relative to root, bytes)]`` of the visible files under ``folder`` (images and not)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            path = Path(dirpath) / f
            out.append((prefix + str(path.relative_to(root)), path.read_bytes()))
    return out
