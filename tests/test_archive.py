"""tlkit.archive: zip-slip, links, zip bombs and damaged zips are refused before anything is written."""
from __future__ import annotations

import os
import zipfile

import pytest

from tlkit.archive import safe_extract_zip
from tlkit.errors import DownloadError, UnsafeArchiveError
from tlkit.download import count_images
from zipgen import NAME, SMALL, age, dataset_zip, jpeg_bytes, leftovers, make_zip


def test_safe_extract_zip_extracts_and_returns_files(tmp_path):
    zpath = tmp_path / "d.zip"
    zpath.write_bytes(dataset_zip())
    files = safe_extract_zip(zpath, tmp_path / "out")
    assert len(files) == 7 and all(f.is_file() for f in files)
    assert count_images(tmp_path / "out" / NAME, SMALL) == SMALL
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("evil", ["../evil.txt", "ok/../../evil.txt", "..\\evil.txt", "C:/evil.txt", None])
def test_unsafe_members_rejected_before_writing(tmp_path, evil):
    outside = tmp_path / "evil.txt"
    if evil is None:  # an absolute path
        evil = str(tmp_path / "abs_evil.txt")
        outside = tmp_path / "abs_evil.txt"
    zpath = tmp_path / "bad.zip"
    zpath.write_bytes(make_zip({f"{NAME}/train/cats/a.jpg": jpeg_bytes(1), evil: b"pwned"}))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match="unsafe member"):
        safe_extract_zip(zpath, target)
    assert not outside.exists() and not (tmp_path / "C:").exists()
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_symlink_member_rejected(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)  # S_IFLNK
    zpath = tmp_path / "link.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract_zip(zpath, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_zip_bomb_cap(tmp_path):
    zpath = tmp_path / "bomb.zip"
    zpath.write_bytes(make_zip({"zeros.bin": bytes(100_000)}))
    assert zpath.stat().st_size < 2_000  # highly compressible
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        safe_extract_zip(zpath, tmp_path / "t", max_total_bytes=50_000)
    assert not (tmp_path / "t").exists()


def test_damaged_and_non_zip_raise_download_error(tmp_path):
    raw = bytearray(make_zip({"a.bin": os.urandom(5000)}))
    raw[100] ^= 0xFF  # flip a byte of the stored data -> CRC mismatch
    zpath = tmp_path / "damaged.zip"
    zpath.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match="damaged"):
        safe_extract_zip(zpath, tmp_path / "t")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        safe_extract_zip(tmp_path / "text.zip", tmp_path / "t")
    assert not (tmp_path / "t").exists() and leftovers(tmp_path) == []


def test_leftover_extraction_folder_of_a_killed_run_is_removed(tmp_path):
    stale = tmp_path / ".out.extract-99991"
    (stale / "x").mkdir(parents=True)
    (stale / "x" / "a.txt").write_text("half")
    age(stale, 2)
    zip_path = tmp_path / "a.zip"
    zip_path.write_bytes(make_zip({"d/a.txt": b"hello"}))
    safe_extract_zip(zip_path, tmp_path / "out")
    assert not stale.exists() and (tmp_path / "out" / "d" / "a.txt").read_text() == "hello"
