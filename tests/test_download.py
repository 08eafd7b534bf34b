"""tlkit.download against a real local HTTP server, and torchvision weights via its cache.

Zip extraction itself (zip-slip, links, bombs) is tested in test_archive.py.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from httpserver import LocalHTTPServer, Reply, closed_port
from tlkit import data
from tlkit.download import count_images, download_dataset, download_file
from tlkit.errors import DownloadError, UnsafeArchiveError
from zipgen import NAME, SMALL, age, dataset_zip, jpeg_bytes, leftovers, make_zip


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_DATA_DIR", str(tmp_path / "data_dir"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path


# ----------------------------------------------------------------- download_file

def test_download_file_good_verified(tmp_path):
    payload = os.urandom(300_000)  # several chunks
    with LocalHTTPServer({"/f.bin": Reply(body=payload)}) as server:
        out = download_file(server.url("/f.bin"), tmp_path / "sub" / "f.bin", expected_size=len(payload),
                            sha256=hashlib.sha256(payload).hexdigest().upper(), progress=False)
    assert out == tmp_path / "sub" / "f.bin"
    assert out.read_bytes() == payload
    assert leftovers(tmp_path) == []


def test_truncated_download_is_discarded_then_retried_next_time(tmp_path):
    payload = os.urandom(50_000)
    dest = tmp_path / "f.bin"
    truncated = Reply(body=payload[:20_000], content_length=len(payload))
    with LocalHTTPServer({"/f.bin": truncated}) as server:
        with pytest.raises(DownloadError, match="truncated: received 20,000 of 50,000"):
            download_file(server.url("/f.bin"), dest, progress=False, retries=1, backoff=0)
        assert server.hits["/f.bin"] == 2  # one retry
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # no temp files either
    with LocalHTTPServer({"/f.bin": Reply(body=payload)}) as server:
        download_file(server.url("/f.bin"), dest, progress=False)
    assert dest.read_bytes() == payload


def test_transient_failure_then_success(tmp_path):
    payload = b"x" * 1000
    with LocalHTTPServer({"/f": [Reply(status=503), Reply(drop=True), Reply(body=payload)]}) as server:
        download_file(server.url("/f"), tmp_path / "f", progress=False, retries=2, backoff=0)
        assert server.hits["/f"] == 3
    assert (tmp_path / "f").read_bytes() == payload


@pytest.mark.parametrize("kwargs, match", [
    ({"expected_size": 999}, "has 1,000 bytes, expected 999"),
    ({"expected_size": 1001}, "truncated: received 1,000 of the expected 1,001"),
    ({"sha256": "0" * 64}, "SHA-256"),
])
def test_wrong_size_or_checksum_leaves_no_file(tmp_path, kwargs, match):
    with LocalHTTPServer({"/f": Reply(body=b"y" * 1000)}) as server:
        with pytest.raises(DownloadError, match=match):
            download_file(server.url("/f"), tmp_path / "f", progress=False, retries=0, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_http_500_retries_then_names_status(tmp_path):
    with LocalHTTPServer({"/f": Reply(status=500)}) as server:
        with pytest.raises(DownloadError, match="HTTP 500") as err:
            download_file(server.url("/f"), tmp_path / "f", progress=False, retries=2, backoff=0)
        assert server.hits["/f"] == 3
    assert isinstance(err.value, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def test_http_404_fails_at_once(tmp_path):
    with LocalHTTPServer({}) as server:
        with pytest.raises(DownloadError, match="HTTP 404") as err:
            download_file(server.url("/missing.zip"), tmp_path / "f", progress=False, retries=3)
        assert server.hits["/missing.zip"] == 1  # a client error is not retried
    assert err.value.reason == "http"


def test_connection_refused_says_offline(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/data.zip"
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "f", progress=False, retries=5, backoff=100)  # no retry, no wait
    msg = str(err.value)
    assert err.value.reason == "offline"
    assert "offline" in msg and "Connect to the internet" in msg and "ConnectionRefusedError" in msg
    assert list(tmp_path.iterdir()) == []


def test_parent_is_a_file_gives_write_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    dest = blocker / "f.bin"
    with LocalHTTPServer({"/f": Reply(body=b"z" * 100)}) as server:
        with pytest.raises(DownloadError, match="Could not write") as err:
            download_file(server.url("/f"), dest, progress=False)
        assert server.hits["/f"] == 0
    assert str(dest) in str(err.value) and err.value.reason == "write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_disk_error_while_saving_removes_temp(tmp_path, monkeypatch):
    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tlkit.download.os.replace", disk_full)
    dest = tmp_path / "f.bin"
    with LocalHTTPServer({"/f": Reply(body=b"z" * 100)}) as server:
        with pytest.raises(DownloadError, match="No space left") as err:
            download_file(server.url("/f"), dest, progress=False)
    assert str(dest) in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- download_dataset

def test_download_dataset_good_then_reused(tmp_path):
    with LocalHTTPServer({"/d.zip": Reply(body=dataset_zip())}) as server:
        folder = download_dataset(server.url("/d.zip"), tmp_path, NAME, expected_counts=SMALL)
        assert folder == tmp_path / NAME
        assert count_images(folder, SMALL) == SMALL
        assert sorted(p.name for p in (folder / "train").iterdir()) == ["cats", "dogs"]
        assert (tmp_path / f"{NAME}.zip").is_file()
        # A second call finds the complete folder; without it, the intact zip. No new request.
        download_dataset(server.url("/d.zip"), tmp_path, NAME, expected_counts=SMALL)
        (folder / "train" / "cats" / "cat.0.jpg").unlink()  # now incomplete -> re-extracted from the zip
        download_dataset(server.url("/d.zip"), tmp_path, NAME, expected_counts=SMALL)
        assert server.hits["/d.zip"] == 1
    assert count_images(folder, SMALL) == SMALL
    assert leftovers(tmp_path) == []


def test_download_dataset_replaces_partial_extraction_and_bad_zip(tmp_path):
    partial = tmp_path / NAME / "train" / "cats"
    partial.mkdir(parents=True)
    (partial / "half.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / f"{NAME}.zip").write_bytes(b"PK\x03\x04 truncated")
    with LocalHTTPServer({"/d.zip": Reply(body=dataset_zip())}) as server:
        folder = download_dataset(server.url("/d.zip"), tmp_path, NAME, expected_counts=SMALL)
        assert server.hits["/d.zip"] == 1
    assert not (folder / "train" / "cats" / "half.jpg").exists()
    assert count_images(folder, SMALL) == SMALL


def test_download_dataset_wrong_counts(tmp_path):
    with LocalHTTPServer({"/d.zip": Reply(body=dataset_zip({"train": 3, "validation": 2}))}) as server:
        with pytest.raises(DownloadError, match="expected"):
            download_dataset(server.url("/d.zip"), tmp_path, NAME, expected_counts=SMALL)
    assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.zip").exists()
    assert leftovers(tmp_path) == []


def test_download_dataset_unsafe_zip_leaves_nothing(tmp_path):
    body = make_zip({f"{NAME}/train/cats/a.jpg": jpeg_bytes(0), "../escaped.txt": b"x"})
    target = tmp_path / "cache"
    with LocalHTTPServer({"/d.zip": Reply(body=body)}) as server:
        with pytest.raises(UnsafeArchiveError):
            download_dataset(server.url("/d.zip"), target, NAME, expected_counts=SMALL)
    assert not (tmp_path / "escaped.txt").exists()
    assert list(target.iterdir()) == []  # no dataset folder, no zip kept for reuse, no temp


def test_download_dataset_offline_message_ends_with_hint(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/d.zip"
    with pytest.raises(DownloadError, match="offline") as err:
        download_dataset(url, tmp_path, NAME, expected_counts=SMALL, hint="Set TLKIT_DATA_DIR, please.")
    assert str(err.value).endswith("Set TLKIT_DATA_DIR, please.")
    assert not (tmp_path / NAME).exists()


# ----------------------------------------------------------------- cats_vs_dogs

def test_cats_vs_dogs_downloads_into_root(isolated_env, monkeypatch):
    monkeypatch.setattr(data, "DATASET_COUNTS", dict(SMALL))
    root = isolated_env / "root"
    with LocalHTTPServer({"/cats.zip": Reply(body=dataset_zip())}) as server:
        train, val = data.cats_vs_dogs(root=root, url=server.url("/cats.zip"))
    assert (len(train), len(val)) == (4, 2)
    assert train.classes == val.classes == ["cats", "dogs"]
    assert all(f.startswith(str(root / NAME)) for f in train.files + val.files)
    assert not (isolated_env / "xdg").exists() and not (isolated_env / "data_dir").exists()


def test_cats_vs_dogs_missing_names_env_var(isolated_env):
    with pytest.raises(FileNotFoundError, match="TLKIT_DATA_DIR") as err:
        data.cats_vs_dogs(download=False)
    assert str(isolated_env / "data_dir") in str(err.value)


# ----------------------------------------------------------------- torchvision weights

def test_resnet18_loads_from_torchvision_cache_without_network(isolated_env):
    import torchvision.models as tvm

    from tlkit.backbones import load_backbone

    saved = tvm.resnet18(weights=None).state_dict()
    ckpt_dir = isolated_env / "torch_home" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save(saved, ckpt_dir / os.path.basename(tvm.ResNet18_Weights.DEFAULT.url))
    model = load_backbone("resnet18")
    assert model.weights == "imagenet"
    loaded = model.state_dict()
    rename = {"conv1": "groups.stem.0", "bn1": "groups.stem.1", "fc": "groups.head"}
    rename.update({f"layer{i}": f"groups.stage{i}" for i in range(1, 5)})
    assert len(loaded) == len(saved)
    for key, value in saved.items():
        first, rest = key.split(".", 1)
        assert torch.equal(loaded[f"{rename[first]}.{rest}"], value), key


def test_resnet18_unreachable_weights_name_offline_alternative(isolated_env, monkeypatch):
    import torch.hub
    import torchvision.models._api as tv_api

    from tlkit.backbones import load_backbone
    from tlkit.errors import WeightsUnavailableError

    real = torch.hub.load_state_dict_from_url
    refused = f"http://127.0.0.1:{closed_port()}/resnet18-f37072fd.pth"
    calls = []

    def redirect(url, *args, **kwargs):  # a genuine connection attempt, to a port nobody serves
        calls.append(url)
        return real(refused, *args, **kwargs)

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", redirect)
    with pytest.raises(WeightsUnavailableError, match="efficientnet_lite0") as err:
        load_backbone("resnet18")
    url = tvm_url()
    assert calls == [url]
    checkpoints = isolated_env / "torch_home" / "hub" / "checkpoints"
    msg = str(err.value)
    assert "Connection refused" in msg and url in msg
    assert str(checkpoints / os.path.basename(url)) in msg  # the exact file to copy by hand
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []


def test_resnet18_damaged_cache_file_is_named(isolated_env):
    from tlkit.backbones import load_backbone
    from tlkit.errors import WeightsUnavailableError

    cached = isolated_env / "torch_home" / "hub" / "checkpoints" / os.path.basename(tvm_url())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a file")
    with pytest.raises(WeightsUnavailableError, match="efficientnet_lite0") as err:
        load_backbone("resnet18")
    assert str(cached) in str(err.value) and "damaged" in str(err.value)


def tvm_url() -> str:
    import torchvision.models as tvm
    return tvm.ResNet18_Weights.DEFAULT.url


def _old_file(path: Path, content: bytes, hours: float = 2) -> Path:
    """A file last written ``hours`` ago."""
    path.write_bytes(content)
    return age(path, hours)


def test_leftovers_of_killed_downloads_are_removed_but_fresh_ones_kept(tmp_path):
    payload = os.urandom(20_000)
    stale = _old_file(tmp_path / "f.bin.part-99991", b"half")  # a killed download of f.bin
    fresh = tmp_path / "f.bin.part-99992"  # maybe another process downloading f.bin right now
    fresh.write_bytes(b"busy")
    other = _old_file(tmp_path / "g.bin.part-99993", b"another file's leftover")
    with LocalHTTPServer({"/f.bin": Reply(body=payload)}) as server:
        download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert not stale.exists() and fresh.exists() and other.exists()
    assert (tmp_path / "f.bin").read_bytes() == payload
