"""Image shifts: the same photos moved away from what ImageNet looks like.

A *shift* is a picklable callable ``PIL.Image -> PIL.Image`` with a stable
``repr`` (the feature and boundary caches key on the transform's repr, so a
sketch is never mistaken for the photo it was made from).

* :class:`EdgeSketch` (``edge_sketch``): greyscale edge map, black lines on
  white, like a pencil sketch. Colour, texture and shading, the low-level
  statistics ImageNet's early layers are tuned to, are gone; the shapes stay.
* The built-in shifts with a severity 1..5 (greyscale, blur, jpeg, dark,
  contrast, noise, sketch) live in :mod:`tlkit.shift_kinds`: ``SHIFTS``,
  ``make_shift`` (``"blur:3"``, ``"dark:2+noise:3"``), ``ImageShift``,
  ``ShiftChain``, ``all_shifts``. :func:`shifted` also takes their names.
* :func:`shifted` gives an ImageDataset whose images go through a shift
  before any transform, including the one ``fit`` picks (train augmentation
  and validation preprocessing both see the shifted image).

Example:
    >>> sketches = shifted(train, edge_sketch)
    >>> history = fit(model, sketches, shifted(val, edge_sketch), epochs=4, image_size=128)
    >>> blurred = shifted(val, "blur:3")             # NAME:SEVERITY, see tlkit.shift_kinds
"""
from __future__ import annotations

from typing import Callable

from PIL import Image

from tlkit.data import ImageDataset
from tlkit.shift_kinds import make_shift, sketch_of
from tlkit.tensorize import apply_transform

Shift = Callable[[Image.Image], Image.Image]


class EdgeSketch:
    """Greyscale -> ``FIND_EDGES`` -> autocontrast -> inverted, returned as RGB.

    Example:
        >>> EdgeSketch()(Image.new("RGB", (8, 8), "red")).getextrema()
        ((255, 255), (255, 255), (255, 255))
    """

    def __call__(self, img: Image.Image) -> Image.Image:
        if not isinstance(img, Image.Image):
            raise TypeError(f"edge_sketch expects a PIL image, got {type(img).__name__}. Apply it before "
                            "ToTensor (tlkit.shifts.shifted(dataset, edge_sketch) does).")
        return sketch_of(img)

    def __repr__(self) -> str:
        return "edge_sketch"


edge_sketch = EdgeSketch()


class Then:
    """``shift`` then ``transform`` (a two-step Compose with a stable repr)."""

    def __init__(self, shift: Shift, transform: Callable):
        self.shift, self.transform = shift, transform

    def __call__(self, img):
        return apply_transform(self.transform, self.shift(img))

    def __repr__(self) -> str:
        # The caches key on this text: the shift's class (and its ``version``, if it has one) is part
        # of it, so a user's callable whose repr happens to read "sketch:1" never reuses the cached
        # features of the built-in shift, and a changed built-in does not reuse stale ones.
        kind = type(self.shift)
        version = getattr(self.shift, "version", None)
        tag = f"{kind.__module__}.{kind.__qualname__}" + (f"/v{version}" if version is not None else "")
        return f"{tag}[{self.shift!r}] -> {self.transform!r}"


class ShiftedDataset(ImageDataset):
    """An ImageDataset whose images pass through ``shift`` before its transform.

    ``transform`` reads as ``Then(shift, base)`` (or None while there is no
    base transform, so ``fit`` still picks one); ``with_transform`` keeps the
    shift. Take subsets before shifting (``subset`` returns a plain dataset).
    """

    def __init__(self, base: ImageDataset, shift: Shift):
        if not callable(shift):
            raise TypeError(f"shift must be callable (PIL image -> PIL image), e.g. tlkit.shifts.edge_sketch; "
                            f"got {type(shift).__name__}.")
        self.shift = shift
        super().__init__(base.files, base.targets, base.classes, base.transform,
                         f"{base.name or 'images'} ({shift!r})")

    @property
    def transform(self):
        return Then(self.shift, self._base) if self._base is not None else None

    @transform.setter
    def transform(self, value) -> None:
        self._base = value

    def __getitem__(self, i: int):
        img, label = super().__getitem__(i)
        if img is not None and self._base is None:  # no transform yet: the shifted PIL image
            img = self.shift(img)
        return img, label

    def with_transform(self, transform: Callable | None) -> "ShiftedDataset":
        return ShiftedDataset(ImageDataset(self.files, self.targets, self.classes, transform, self.name), self.shift)


def shifted(dataset: ImageDataset, shift: "Shift | str", seed: int = 0) -> ShiftedDataset:
    """``dataset`` with every image passed through ``shift`` first (its transform is kept).

    ``shift``: a callable (PIL image -> PIL image), or text for :func:`make_shift`
    such as ``"blur:3"``; ``seed`` goes to :func:`make_shift` (random shifts only).

    Example:
        >>> val_sketches = shifted(val, edge_sketch)
        >>> val_sketches[0][0].size == val[0][0].size
        True
        >>> shifted(val, "noise:2", seed=1).name
        'val (noise:2@1)'
    """
    if isinstance(shift, str):
        shift = make_shift(shift, seed=seed)
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"shifted() takes an ImageDataset (tlkit.data), got {type(dataset).__name__}.")
    if isinstance(dataset, ShiftedDataset):
        base = ImageDataset(dataset.files, dataset.targets, dataset.classes, dataset._base, dataset.name)
        return ShiftedDataset(base, Then(dataset.shift, shift))
    return ShiftedDataset(dataset, shift)
