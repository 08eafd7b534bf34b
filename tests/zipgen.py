"""Small zip files for tests: a fake cats_and_dogs_filtered download, and the leftovers it must not leave."""
from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

from PIL import Image

NAME = "cats_and_dogs_filtered"
SMALL = {"train": 4, "validation": 2}


def jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buf.getvalue()


def dataset_zip(per_split: dict[str, int] = SMALL) -> bytes:
    """The cats_and_dogs_filtered layout: NAME/<split>/<cats|dogs>/<cls>.<i>.jpg (+ a script)."""
    members = {f"{NAME}/": b"", f"{NAME}/vectorize.py": b"print('hi')\n"}
    for split, n in per_split.items():
        for i in range(n):
            cls = ("cats", "dogs")[i % 2]
            members[f"{NAME}/{split}/{cls}/{cls[:-1]}.{i}.jpg"] = jpeg_bytes(i)
    return make_zip(members)


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a download/extraction might have left behind."""
    return sorted(p.name for p in folder.rglob("*") if ".part-" in p.name or ".extract-" in p.name
                  or ".staging-" in p.name or ".old-" in p.name)


def age(path: Path, hours: float) -> Path:
    """``path`` with its modification time set ``hours`` ago, like the leftover of a long-dead process."""
    old = time.time() - hours * 3600
    os.utime(path, (old, old))
    return path
