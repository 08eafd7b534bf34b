"""Whole text datasets: the movie-review sentences, and the folder layouts the command line accepts.

* ``rt_polarity()``: sentence polarity v1.0 (Pang and Lee; 5,331 positive and
  5,331 negative snippets in the public archive) as a seeded, stratified
  ``(train, val)`` split. Found under ``TLKIT_DATA_DIR`` or the user cache,
  else the public ``rt-polaritydata.tar.gz`` is downloaded (verified and
  atomic, :func:`tlkit.download.download_file`) and its two files extracted.
* ``load_text_folder(path)``: ``(train, val)`` from any of :data:`LAYOUTS`.
* ``load_text_split(path, classes)``: one split (a table or class folders),
  what ``python -m tlkit evaluate`` reads.

Example:
    >>> train, val = rt_polarity()
    >>> train.classes, len(train) + len(val)
    (['neg', 'pos'], 9662)
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

from tlkit.env import env_folder
from tlkit.errors import DatasetLayoutError, DownloadError
from tlkit.storage import cache_root
from tlkit.text.data import TABLE_SUFFIXES, TextDataset, read_lines, read_table, split_dataset

RT_NAME = "rt-polaritydata"
RT_URL = "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
RT_FILES = {"neg": "rt-polarity.neg", "pos": "rt-polarity.pos"}  # class -> file, classes sorted
MAX_MEMBER_BYTES = 50 * 2**20  # each file is about 0.6 MB; anything huge is not this dataset
SPLIT_NAMES = ("val", "validation", "dev", "valid", "test")
LAYOUTS = ("train.tsv|train.csv next to val|validation|dev .tsv|.csv (columns: sentence or text, label)",
           "train/<class>/*.txt and val|validation|test/<class>/*.txt (Keras text_dataset_from_directory)",
           "<class>/*.txt (split into train and val here)",
           "rt-polarity.pos and rt-polarity.neg (the rt-polaritydata folder as shipped)")


def rt_polarity(root: str | os.PathLike | None = None, *, val_fraction: float = 0.2, seed: int = 0,
                download: bool = True, url: str = RT_URL) -> tuple[TextDataset, TextDataset]:
    """Movie-review sentences, classes ``["neg", "pos"]``, as a stratified ``(train, val)`` split.

    Looks in ``root``, ``$TLKIT_DATA_DIR`` and the user cache for
    ``rt-polaritydata/rt-polarity.{pos,neg}`` (or the two files directly);
    downloads the public archive into the cache (or ``root``) when missing.
    The files may be UTF-8 or latin-1 (the public ones).

    Example:
        >>> train, val = rt_polarity(val_fraction=0.2, seed=0)
    """
    cache = cache_root() / "data"
    candidates = ([Path(root)] if root is not None else []) + [p for p in (env_folder("TLKIT_DATA_DIR"),) if p]
    candidates.append(cache)
    for base in candidates:
        for folder in (base / RT_NAME, base):
            if _is_rt_folder(folder):
                return split_dataset(_read_rt(folder), val_fraction, seed)
    hint = (f"The {RT_NAME} dataset was not found (looked in {', '.join(map(str, candidates))}). Connect to the "
            f"internet and run again (it downloads {url}, 0.5 MB), or unpack that archive yourself and set "
            f"TLKIT_DATA_DIR to the folder that holds {RT_NAME}/.")
    if not download:
        raise FileNotFoundError(hint)
    folder = download_rt_polarity(Path(root) if root is not None else cache, url, hint)
    return split_dataset(_read_rt(folder), val_fraction, seed)


def _is_rt_folder(folder: Path) -> bool:
    return all((folder / f).is_file() for f in RT_FILES.values())


def _read_rt(folder: Path) -> TextDataset:
    sentences, targets = [], []
    for label, fname in enumerate(RT_FILES.values()):
        lines = read_lines(folder / fname)
        if not lines:
            raise DatasetLayoutError(f"{folder / fname} holds no sentences. Restore it from the archive {RT_URL}.")
        sentences += lines
        targets += [label] * len(lines)
    return TextDataset(sentences, targets, list(RT_FILES), name=folder.name,
                       source_files=[str(folder / f) for f in RT_FILES.values()])


def download_rt_polarity(target_dir: str | os.PathLike, url: str = RT_URL, hint: str = "") -> Path:
    """Downloads the archive and extracts its two sentence files; returns ``target_dir/rt-polaritydata``.

    Only the two regular files ``rt-polaritydata/rt-polarity.{pos,neg}`` are
    read from the archive (no other member is ever written, so no path or link
    in it can escape), into a staging folder that is renamed into place. A
    damaged archive is deleted (the next run downloads it again) and raises
    DownloadError.

    Example:
        >>> download_rt_polarity(Path("data"))
        PosixPath('data/rt-polaritydata')
    """
    from tlkit.archive import publish, staging_folder
    from tlkit.download import download_with_hint

    target_dir = Path(target_dir)
    archive = target_dir / f"{RT_NAME}.tar.gz"
    if not archive.is_file():
        download_with_hint(url, archive, hint)
    with staging_folder(target_dir, RT_NAME) as staging:
        _extract_rt(archive, staging, url)
        publish(staging, target_dir / RT_NAME)
    return target_dir / RT_NAME


def _extract_rt(archive: Path, staging: Path, url: str) -> None:
    """Copies the two sentence files out of the tar.gz into ``staging``; DownloadError("archive") if unusable."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()
                       if m.isreg() and Path(m.name).name in RT_FILES.values()}
            missing = [f for f in RT_FILES.values() if f not in members]
            if missing:
                raise tarfile.TarError(f"it holds no {', '.join(missing)}")
            staging.mkdir(parents=True)
            for fname, member in members.items():
                if member.size > MAX_MEMBER_BYTES:
                    raise tarfile.TarError(f"{member.name} is {member.size:,} bytes, too large for this dataset")
                (staging / fname).write_bytes(tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a disk problem (full, read-only), not a bad archive; gzip's BadGzipFile has no errno
        archive.unlink(missing_ok=True)
        raise DownloadError(f"The file downloaded from {url} is not a usable {RT_NAME} archive ({exc}). It was "
                            "deleted, so the next run downloads it again.", reason="archive") from exc


def load_text_folder(path: str | os.PathLike, *, val_fraction: float = 0.2,
                     seed: int = 0) -> tuple[TextDataset, TextDataset]:
    """``(train, val)`` from a text dataset folder in one of :data:`LAYOUTS`.

    Raises DatasetLayoutError naming the valid layouts when none fits.

    Example:
        >>> train, val = load_text_folder("rt-polaritydata")
        >>> train.classes
        ['neg', 'pos']
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetLayoutError(f"Text data folder {root} does not exist or is not a folder. "
                                 f"Valid layouts: {'; '.join(LAYOUTS)}.")
    if _is_rt_folder(root) or _is_rt_folder(root / RT_NAME):
        folder = root if _is_rt_folder(root) else root / RT_NAME
        return split_dataset(_read_rt(folder), val_fraction, seed)
    train_table = _table(root, ("train",))
    if train_table is not None:
        val_table = _table(root, SPLIT_NAMES)
        if val_table is None:
            raise DatasetLayoutError(f"{root} has {train_table.name} but no validation file next to it; add "
                                     f"one of {', '.join(n + '.tsv' for n in SPLIT_NAMES)} (or .csv).")
        train = read_table(train_table, name=f"{root.name}/{train_table.name}")
        return train, read_table(val_table, classes=train.classes, name=f"{root.name}/{val_table.name}")
    val_dir = next((root / n for n in SPLIT_NAMES if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        train = read_text_classes(root / "train", name=f"{root.name}/train")
        return train, read_text_classes(val_dir, classes=train.classes, name=f"{root.name}/{val_dir.name}")
    if _txt_class_folders(root):
        return split_dataset(read_text_classes(root, name=root.name), val_fraction, seed)
    raise DatasetLayoutError(f"{root} is not a text dataset tlkit can read. Valid layouts: {'; '.join(LAYOUTS)}.")


def is_text_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a text dataset (a table, rt-polarity files, or class folders of .txt).

    Example:
        >>> is_text_folder("rt-polaritydata"), is_text_folder("cats_and_dogs_filtered")
        (True, False)
    """
    root = Path(path)
    if not root.is_dir():
        return False
    return (_is_rt_folder(root) or _is_rt_folder(root / RT_NAME) or _table(root, ("train",)) is not None
            or _txt_layout(root) or _txt_layout(root / "train"))


def _txt_layout(root: Path) -> bool:
    """Class folders of .txt files and no image in any class folder (a photo folder with a stray
    notes.txt stays an image dataset, and gets the image layout's error)."""
    from tlkit.images import is_image_file

    if not _txt_class_folders(root):
        return False
    return not any(is_image_file(f.name) for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                   for f in d.iterdir())


def load_text_split(path: str | os.PathLike, classes: list[str] | None = None) -> TextDataset:
    """One split: a ``.tsv``/``.csv`` file, a folder with one such validation file, or ``<class>/*.txt``.

    Example:
        >>> load_text_split("data/dev.tsv", classes=["0", "1"])
    """
    path = Path(path)
    if path.is_file():
        return read_table(path, classes=classes)
    table = _table(path, SPLIT_NAMES) if path.is_dir() else None
    if table is not None:
        return read_table(table, classes=classes)
    if path.is_dir() and _txt_class_folders(path):
        return read_text_classes(path, classes=classes)
    raise DatasetLayoutError(f"{path} is neither a .tsv/.csv file (columns: sentence or text, label), nor a "
                             "folder holding val.tsv/dev.tsv, nor a folder of <class>/*.txt.")


def read_text_classes(root: Path, classes: list[str] | None = None, name: str = "") -> TextDataset:
    """``root/<class>/*.txt``: each file is one example (its whole text, lines joined by spaces)."""
    found = _txt_class_folders(root)
    classes = list(classes) if classes is not None else found
    if len(classes) < 2:
        raise DatasetLayoutError(f"{root} has {len(classes)} class folder(s) of .txt files; a classifier needs "
                                 "at least 2, e.g. neg/ and pos/.")
    sentences, targets, files = [], [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).glob("*.txt")):
            text = " ".join(read_lines(f))
            if text:
                sentences.append(text)
                targets.append(label)
                files.append(str(f))
    return TextDataset(sentences, targets, classes, name=name or root.name, source_files=files)


def _txt_class_folders(root: Path) -> list[str]:
    """Sorted visible sub-folders of ``root`` that hold .txt files."""
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and any(d.glob("*.txt")))


def _table(root: Path, stems: tuple[str, ...]) -> Path | None:
    """The first ``root/<stem>.tsv|.csv`` that exists."""
    for stem in stems:
        for suffix in TABLE_SUFFIXES:
            if (root / f"{stem}{suffix}").is_file():
                return root / f"{stem}{suffix}"
    return None
