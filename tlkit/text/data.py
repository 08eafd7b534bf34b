"""Text datasets: sentences with integer labels, read robustly from the layouts people have.

* ``TextDataset``: ``sentences``, ``targets`` (ints) and ``classes``; with a
  tokenizer as its ``transform`` (:class:`tlkit.text.backbone.TextTokenizer`),
  ``dataset[i]`` is ``(LongTensor (2, L), label)``: input ids and attention
  mask, so tlkit's loaders, ``fit`` and the feature cache batch it like images.
* ``read_lines(path)``: one sentence per line, UTF-8 or latin-1 (detected),
  empty and undecodable lines skipped with one warning.
* ``read_table(path)``: a ``.tsv``/``.csv`` with a ``sentence`` or ``text``
  column and a ``label`` column.
* ``split_dataset(ds, val_fraction, seed)``: a seeded, stratified split.

Loaders of whole datasets are in :mod:`tlkit.text.folders`.

Example:
    >>> ds = read_table("data/train.tsv")
    >>> ds.classes, ds[0]
    (['0', '1'], ('a gripping film', 1))
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from tlkit.errors import DatasetLayoutError

TEXT_COLUMNS = ("sentence", "text")
TABLE_SUFFIXES = {".tsv": "\t", ".csv": ","}


class TextDataset(Dataset):
    """Sentences with integer labels. ``dataset[i]`` is ``(transform(sentence), label)``.

    Args:
        sentences: the texts, one per example.
        targets: class index of each sentence.
        classes: class names; ``targets`` index into them.
        transform: a tokenizer (``TextTokenizer``) or None (then items are the raw strings).
        name: shown in progress bars and warnings.
        source_files: the files the sentences were read from (keeps a run's output out of them).

    ``files`` is ``sentences``: it names every row where images name a file
    (predictions, top losses). With a ``TextTokenizer`` transform the whole
    dataset is tokenized once, on first access, into ``(N, 2, L)``.

    Example:
        >>> ds = TextDataset(["great", "awful"], [1, 0], ["neg", "pos"])
        >>> ds.class_counts()
        {'neg': 1, 'pos': 1}
    """

    def __init__(self, sentences: list[str], targets: list[int], classes: list[str],
                 transform: Callable | None = None, name: str = "", source_files: list[str] | None = None):
        if len(sentences) != len(targets):
            raise ValueError(f"sentences ({len(sentences)}) and targets ({len(targets)}) must have the same length.")
        self.sentences, self.targets, self.classes = list(sentences), [int(t) for t in targets], list(classes)
        bad = [t for t in self.targets if not 0 <= t < len(self.classes)]
        if bad:
            raise ValueError(f"label {bad[0]} is outside 0..{len(self.classes) - 1} for classes {self.classes}.")
        self.transform = transform
        self.name = name
        self.source_files = list(source_files or [])  # the files the sentences came from (tlkit.outputs.data_root)
        self._encoded: torch.Tensor | None = None  # (N, 2, L) once tokenized

    @property
    def files(self) -> list[str]:
        """The row names (the sentences), as ``ImageDataset.files`` names images."""
        return self.sentences

    @property
    def labels(self) -> list[int]:
        return self.targets

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int):
        if self.transform is None:
            return self.sentences[i], self.targets[i]
        if self._encode() is None:  # a plain callable: one sentence at a time
            return self.transform(self.sentences[i]), self.targets[i]
        return self._encoded[i], self.targets[i]

    def _encode(self) -> torch.Tensor | None:
        """``(N, 2, L)``: every sentence tokenized once, when the transform can do batches (``encode``)."""
        if self._encoded is None and hasattr(self.transform, "encode"):
            self._encoded = self.transform.encode(self.sentences)
        return self._encoded

    def __getstate__(self) -> dict:
        """DataLoader workers get the tokenized tensor, so no worker tokenizes the data again each epoch."""
        self._encode()
        return self.__dict__.copy()

    def with_transform(self, transform: Callable | None) -> "TextDataset":
        """The same sentences and labels with another tokenizer."""
        return TextDataset(self.sentences, self.targets, self.classes, transform, self.name, self.source_files)

    def take(self, indices: list[int], name: str | None = None) -> "TextDataset":
        """The rows ``indices`` (in that order), same classes and tokenizer: what ``tlkit.data.subset`` uses.

        Example:
            >>> ds.take([0, 2]).sentences
            ['great', 'fine']
        """
        return TextDataset([self.sentences[i] for i in indices], [self.targets[i] for i in indices], self.classes,
                           self.transform, self.name if name is None else name, self.source_files)

    def fingerprint(self) -> str:
        """SHA-256 of the sentences, labels and classes: part of the feature-cache key.

        Example:
            >>> TextDataset(["a"], [0], ["x", "y"]).fingerprint()[:8]
            '...'
        """
        h = hashlib.sha256("|".join(self.classes).encode())
        for s, t in zip(self.sentences, self.targets):
            h.update(f"\0{t}\0{s}".encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def class_counts(self) -> dict[str, int]:
        return {c: self.targets.count(i) for i, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in self.class_counts().items())
        return f"TextDataset({self.name or 'text'}: {len(self)} sentences; {counts})"


def decode_lines(raw: bytes, where: str = "") -> list[str]:
    """Lines of ``raw`` as text: UTF-8, or latin-1 when no non-ASCII line is valid UTF-8.

    In a UTF-8 file the lines that are not valid UTF-8 (and lines holding a NUL)
    are skipped with one warning. Line ends and surrounding whitespace are stripped;
    empty lines are dropped silently.

    Example:
        >>> decode_lines("caf\\xe9\\n".encode("latin-1"))
        ['café']
    """
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        raw = raw[3:]
    lines = raw.splitlines()
    non_ascii = [ln for ln in lines if not ln.isascii()]
    utf8_ok = sum(1 for ln in non_ascii if _utf8(ln) is not None)
    latin1 = bool(non_ascii) and utf8_ok == 0
    out, bad = [], []
    for number, line in enumerate(lines, 1):
        text = line.decode("latin-1") if latin1 else _utf8(line)
        if text is None or "\0" in text:
            bad.append(number)
            continue
        text = text.strip()
        if text:
            out.append(text)
    if bad:
        warnings.warn(f"Skipped {len(bad)} undecodable line(s){where} (not UTF-8 or holding NUL bytes; first: "
                      f"line {', '.join(map(str, bad[:3]))}). Save the file as UTF-8 to keep them.", stacklevel=3)
    return out


def _utf8(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_lines(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a text file (UTF-8 or latin-1), e.g. ``rt-polarity.pos``.

    Example:
        >>> len(read_lines("rt-polaritydata/rt-polarity.pos"))
        4831
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetLayoutError(f"Cannot read {path} ({exc.strerror or exc}).") from None
    return decode_lines(raw, where=f" in {path}")


def read_table(path: str | os.PathLike, classes: list[str] | None = None, name: str = "") -> TextDataset:
    """A ``.tsv`` or ``.csv`` with a text column (``sentence`` or ``text``) and a ``label`` column.

    Labels may be names (``pos``) or integers (``0``, ``1``). ``classes``: the
    class names to use (a validation file takes the training file's); by
    default the sorted labels found (integers in numeric order).

    Example:
        >>> read_table("sst2/train.tsv").classes
        ['0', '1']
    """
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DatasetLayoutError(f"{path} is not a .tsv or .csv file. A text table needs one of those "
                                 f"suffixes and a header with a '{TEXT_COLUMNS[0]}' (or 'text') and a 'label' column.")
    lines = read_lines(path)
    delimiter = TABLE_SUFFIXES[path.suffix.lower()]
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # tsv text keeps its quote marks
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, quoting=quoting))
    if not rows:
        raise DatasetLayoutError(f"{path} is empty. Expected a header row with a 'sentence' (or 'text') and "
                                 "a 'label' column, then one row per example.")
    header = [h.strip().lower() for h in rows[0]]
    text_col = next((header.index(c) for c in TEXT_COLUMNS if c in header), None)
    if text_col is None or "label" not in header:
        raise DatasetLayoutError(f"{path} has the columns {rows[0]}; it needs a text column named "
                                 f"{' or '.join(map(repr, TEXT_COLUMNS))} and a 'label' column.")
    label_col = header.index("label")
    pairs = [(r[text_col].strip(), r[label_col].strip()) for r in rows[1:]
             if len(r) > max(text_col, label_col) and r[text_col].strip() and r[label_col].strip()]
    if len(pairs) < len(rows) - 1:
        warnings.warn(f"Skipped {len(rows) - 1 - len(pairs)} row(s) of {path} with an empty text or label "
                      "(or too few columns).", stacklevel=2)
    found = sorted({lab for _, lab in pairs}, key=_label_order)
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes), key=_label_order)
    if unknown:
        raise DatasetLayoutError(f"{path} has label(s) {unknown} that are not among the classes {classes} "
                                 "(those of the training file). Use the same labels in both files.")
    index = {c: i for i, c in enumerate(classes)}
    return TextDataset([s for s, _ in pairs], [index[lab] for _, lab in pairs], classes,
                       name=name or path.name, source_files=[str(path)])


def _label_order(label: str):
    """Integers in numeric order before names in alphabetical order."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def split_dataset(dataset: TextDataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[TextDataset, TextDataset]:
    """A seeded split that keeps each class's share: ``(train, val)``.

    Example:
        >>> train, val = split_dataset(ds, val_fraction=0.2, seed=0)
        >>> len(val) / len(ds)
        0.2
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (e.g. 0.2), got {val_fraction!r}.")
    rng = random.Random(seed)
    val_idx: list[int] = []
    for label in range(len(dataset.classes)):
        idx = [i for i, t in enumerate(dataset.targets) if t == label]
        rng.shuffle(idx)
        val_idx += idx[:round(len(idx) * val_fraction)]
    chosen = set(val_idx)
    train_idx = [i for i in range(len(dataset)) if i not in chosen]
    return dataset.take(train_idx, f"{dataset.name}/train"), dataset.take(sorted(val_idx), f"{dataset.name}/val")
