"""Shared helpers for the fault suite: hand-made bad files, directory snapshots, the CLI.

Importable from every test in ``tests/faults/`` (pytest puts this folder on
``sys.path``). Nothing here touches the network or the real dataset.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from zipgen import make_zip  # tests/zipgen.py (pytest puts tests/ on sys.path for conftest.py)

ROOT = Path(__file__).resolve().parents[2]
TRACEBACK = "Traceback (most recent call last)"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every path under ``folder`` (relative) -> (kind, size): compare before/after a failure."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), folder)] = ("dir", 0)
        for name in filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, folder)] = ("file", os.path.getsize(p))
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, bit_depth: int = 8, color_type: int = 0,
              row: bytes | None = None, palette: bytes | None = None) -> Path:
    """A valid PNG written row by row, so huge (but highly compressible) images cost no memory.

    ``color_type``: 0 grey, 2 RGB, 3 palette. ``row`` is one row of raw pixel
    bytes (repeated for every row; default zeros).
    """
    channels = {0: 1, 2: 3, 3: 1}[color_type]
    row_len = (width * channels * bit_depth + 7) // 8
    row = bytes(row_len) if row is None else row
    assert len(row) == row_len
    comp = zlib.compressobj(9)
    line = b"\0" + row  # filter type 0
    data = []
    for _ in range(height):
        data.append(comp.compress(line))
    data.append(comp.flush())
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth,
                                                                 color_type, 0, 0, 0))
    if color_type == 3:
        png += _chunk(b"PLTE", palette or bytes([0, 0, 0, 255, 255, 255]))
    png += _chunk(b"IDAT", b"".join(data)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def run_cli(*args, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m tlkit ARGS`` in a fresh process, as a user types it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tlkit", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=300)


def assert_clean_user_error(res: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit status 2, one ``error:`` line naming ``expected``, and no traceback anywhere."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert TRACEBACK not in res.stderr and TRACEBACK not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for word in expected:
        assert word in lines[0], (word, lines[0])


def jpeg_bytes(seed: int, size: int = 8) -> bytes:
    """A small, valid JPEG (noise, so sizes differ)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def dataset_zip(counts: dict[str, int], name: str = "cats_and_dogs_filtered", size: int = 8,
                extra: dict[str, bytes] | None = None) -> bytes:
    """The cats_and_dogs_filtered layout: name/<split>/<cats|dogs>/<cls>.<i>.jpg, plus ``extra`` members."""
    members = {f"{name}/vectorize.py": b"print('hi')\n"}
    for split, n in counts.items():
        for i in range(n):
            cls = ("cats", "dogs")[i % 2]
            members[f"{name}/{split}/{cls}/{cls[:-1]}.{i}.jpg"] = jpeg_bytes(i, size)
    members.update(extra or {})
    return make_zip(members)
