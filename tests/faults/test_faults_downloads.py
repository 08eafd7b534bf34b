"""Getting the dataset when things go wrong, through ``tlkit.data.cats_vs_dogs(root=..., url=...)``.

A real HTTP server on 127.0.0.1 (tests/httpserver.py) plays the internet.
Every failure raises DownloadError (a RuntimeError) whose message says what
happened and what to do; no partial or unsafe file is ever kept or used, and
nothing is written outside ``root``. A later run with a working server succeeds.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from faultkit import ROOT, dataset_zip, jpeg_bytes, make_zip, snapshot
from httpserver import LocalHTTPServer, Reply, closed_port
from tlkit import data
from tlkit.errors import DownloadError, UnsafeArchiveError

NAME = "cats_and_dogs_filtered"
SMALL = {"train": 4, "validation": 2}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No TLKIT_DATA_DIR, a private user cache, small expected counts, no waiting between retries."""
    monkeypatch.delenv("TLKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "DATASET_COUNTS", dict(SMALL))
    sleeps = []
    monkeypatch.setattr("tlkit.download.time.sleep", sleeps.append)
    root = tmp_path / "root"
    root.mkdir()
    return tmp_path, root, sleeps


def assert_nothing_kept(tmp_path, before):
    """The whole test folder is as it was: no dataset, no zip, no .part / staging leftovers."""
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "xdg").exists()


def assert_recovers(root, url_body=None):
    with LocalHTTPServer({"/d.zip": Reply(body=url_body or dataset_zip(SMALL))}) as server:
        train, val = data.cats_vs_dogs(root=root, url=server.url("/d.zip"))
        assert server.hits["/d.zip"] == 1
    assert (len(train), len(val)) == (4, 2) and train.classes == ["cats", "dogs"]
    assert sorted(p.name for p in root.iterdir()) == [NAME, f"{NAME}.zip"]


def test_offline_connection_refused_says_what_to_do(env):
    tmp_path, root, sleeps = env
    before = snapshot(tmp_path)
    url = f"http://127.0.0.1:{closed_port()}/d.zip"
    with pytest.raises(DownloadError) as err:
        data.cats_vs_dogs(root=root, url=url)
    msg = str(err.value)
    assert err.value.reason == "offline" and sleeps == []  # offline is not retried
    for words in ("offline", "Connect to the internet", "TLKIT_DATA_DIR", "unzip", str(root)):
        assert words in msg, words
    assert_nothing_kept(tmp_path, before)
    assert_recovers(root)


def test_server_error_is_retried_then_explained(env):
    tmp_path, root, sleeps = env
    before = snapshot(tmp_path)
    with LocalHTTPServer({"/d.zip": Reply(status=500)}) as server:
        with pytest.raises(DownloadError) as err:
            data.cats_vs_dogs(root=root, url=server.url("/d.zip"))
        assert server.hits["/d.zip"] == 3  # two retries
    assert sleeps == [1.0, 2.0]  # exponential back-off
    msg = str(err.value)
    assert "HTTP 500" in msg and "try again later" in msg and "TLKIT_DATA_DIR" in msg
    assert_nothing_kept(tmp_path, before)


def test_not_found_is_not_retried_and_names_the_url(env):
    tmp_path, root, sleeps = env
    before = snapshot(tmp_path)
    with LocalHTTPServer({}) as server:
        with pytest.raises(DownloadError) as err:
            data.cats_vs_dogs(root=root, url=server.url("/moved.zip"))
        assert server.hits["/moved.zip"] == 1
    assert "HTTP 404" in str(err.value) and "Check the URL" in str(err.value) and sleeps == []
    assert server.url("/moved.zip") in str(err.value)
    assert_nothing_kept(tmp_path, before)


def test_truncated_download_is_never_used_and_retried_next_time(env):
    tmp_path, root, _ = env
    body = dataset_zip(SMALL)
    before = snapshot(tmp_path)
    cut = Reply(body=body[: len(body) // 2], content_length=len(body))  # server closes early
    with LocalHTTPServer({"/d.zip": cut}) as server:
        with pytest.raises(DownloadError, match="truncated") as err:
            data.cats_vs_dogs(root=root, url=server.url("/d.zip"))
        assert server.hits["/d.zip"] == 3
    assert "try again" in str(err.value)
    assert_nothing_kept(tmp_path, before)  # no half zip, no .part file
    assert_recovers(root)


def test_half_zip_left_by_an_interrupted_run_is_downloaded_again(env):
    tmp_path, root, _ = env
    body = dataset_zip(SMALL)
    (root / f"{NAME}.zip").write_bytes(body[: len(body) // 3])
    assert_recovers(root, body)  # exactly one request: the half file was not trusted
    assert (root / f"{NAME}.zip").read_bytes() == body


@pytest.mark.parametrize("body,words", [
    (dataset_zip({"train": 3, "validation": 2}), ["unpacked to", "expected", "discarded"]),
    (b"<html><body>Please log in to the hotel Wi-Fi</body></html>",
     ["not a usable zip", "deleted", "next run downloads it again", "proxy or login page"]),
], ids=["wrong_image_counts", "html_page_instead_of_zip"])
def test_wrong_file_is_discarded_with_a_message(env, body, words):
    tmp_path, root, _ = env
    before = snapshot(tmp_path)
    with LocalHTTPServer({"/d.zip": Reply(body=body)}) as server:
        with pytest.raises(DownloadError) as err:
            data.cats_vs_dogs(root=root, url=server.url("/d.zip"))
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert_nothing_kept(tmp_path, before)
    assert_recovers(root)


@pytest.mark.parametrize("evil", ["parent", "absolute"])
def test_zip_with_escaping_member_is_rejected_and_writes_nothing(env, evil):
    tmp_path, root, _ = env
    outside = tmp_path / "escaped.txt"
    member = "../escaped.txt" if evil == "parent" else str(outside)
    body = make_zip({f"{NAME}/train/cats/cat.0.jpg": jpeg_bytes(0), member: b"pwned"})
    before = snapshot(tmp_path)
    with LocalHTTPServer({"/d.zip": Reply(body=body)}) as server:
        with pytest.raises(UnsafeArchiveError) as err:
            data.cats_vs_dogs(root=root, url=server.url("/d.zip"))
    assert "unsafe member" in str(err.value) and "nothing was extracted" in str(err.value)
    assert not outside.exists() and not (root.parent.parent / "escaped.txt").exists()
    assert_nothing_kept(tmp_path, before)  # and the unsafe zip is not kept for reuse


def test_data_folder_that_cannot_be_created_is_a_write_error(env):
    tmp_path, _, _ = env
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data folder should go")
    before = snapshot(tmp_path)
    with LocalHTTPServer({"/d.zip": Reply(body=dataset_zip(SMALL))}) as server:
        with pytest.raises(DownloadError) as err:
            data.cats_vs_dogs(root=blocker / "data", url=server.url("/d.zip"))
        assert server.hits["/d.zip"] == 0  # failed before downloading anything
    assert err.value.reason == "write"
    assert "Could not write" in str(err.value) and "TLKIT_DATA_DIR" in str(err.value)
    assert_nothing_kept(tmp_path, before)


DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    from tlkit import data
    from tlkit.errors import DownloadError
    data.DATASET_COUNTS = {"train": 4, "validation": 2}
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        data.cats_vs_dogs(root=sys.argv[1], url=sys.argv[2])
    except DownloadError as exc:
        print(exc.reason)
        print(exc)
        sys.exit(3)
""")


def test_disk_full_while_saving_removes_the_partial_file(env):
    """A real write error mid-download: the child process may not write files over 20 kB."""
    tmp_path, root, _ = env
    body = dataset_zip(SMALL, size=128)
    assert len(body) > 40_000
    before = snapshot(tmp_path)
    with LocalHTTPServer({"/d.zip": Reply(body=body)}) as server:
        res = subprocess.run([sys.executable, "-c", DISK_FULL, str(root), server.url("/d.zip")],
                             capture_output=True, text=True, cwd=ROOT, timeout=120,
                             env={"PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
                                  "PATH": "/usr/bin:/bin",
                                  # under the 20 kB limit a .pyc would be cut short and then break every import
                                  "PYTHONDONTWRITEBYTECODE": "1"})
    assert res.returncode == 3, res.stderr[-2000:]
    reason, msg = res.stdout.split("\n", 1)
    assert reason == "write" and "File too large" in msg and "free space" in msg
    assert "Traceback" not in res.stderr
    assert_nothing_kept(tmp_path, before)
    assert_recovers(root, body)
