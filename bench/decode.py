"""Decoding alone, one core: img/s of open_image + the evaluation transform, with and without JPEG draft.

    python bench/decode.py [seconds_per_row]

Real photos: the course's cats_and_dogs_filtered (if TLKIT_DATA_DIR has it),
matplotlib's and scikit-learn's sample photos, and phone-sized (4032x3024)
JPEGs resampled from those. ``full`` decodes every pixel (tlkit before draft);
``draft`` lets a JPEG at least twice the resize decode at 1/2, 1/4 or 1/8
scale. Both then run the same resize and centre crop (224 px, resize 256).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's photo helpers
from imagegen import library_photos, phone_sized  # noqa: E402


def sample_photos() -> list[Path]:
    """A few real photos found on this machine: course data first, then the libraries' sample photos."""
    data = Path(os.environ.get("TLKIT_DATA_DIR", "data")) / "cats_and_dogs_filtered" / "validation" / "cats"
    return sorted(data.glob("*.jpg"))[:8] + library_photos()


def rate(paths: list[Path], min_side: int | None, transform, seconds: float) -> float:
    """Images per second over ``paths`` (repeated for about ``seconds``)."""
    from tlkit.images import open_image

    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in paths:
            transform(open_image(p, min_side=min_side))
            n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    from PIL import Image
    from torchvision import transforms as T

    torch.set_num_threads(1)
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    photos = sample_photos()
    with tempfile.TemporaryDirectory() as tmp:
        groups = {"course photos (<=256 px)": [p for p in photos if "cats_and_dogs" in str(p)],
                  "sample photos (427-640 px)": [p for p in photos if "cats_and_dogs" not in str(p)],
                  "phone-sized (4032x3024)": phone_sized([p for p in photos if "cats_and_dogs" not in str(p)],
                                                         Path(tmp))}
        print(f"{'photos':<28} {'n':>2} {'full img/s':>10} {'draft img/s':>11} {'speed-up':>8}")
        for label, paths in groups.items():
            if not paths:
                continue
            sizes = {Image.open(p).size for p in paths}
            # alternated, so that a change in the machine's load hits both columns alike
            full = draft = 0.0
            for _ in range(2):
                full += rate(paths, None, tf, seconds / 2) / 2
                draft += rate(paths, 256, tf, seconds / 2) / 2
            print(f"{label:<28} {len(paths):>2} {full:10.1f} {draft:11.1f} {draft / full:7.2f}x  {sorted(sizes)[:3]}")
    print(f"load average: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
