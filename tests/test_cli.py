"""The command line, as a user runs it: `python -m tlkit ...` in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagegen import make_dataset, make_split

ROOT = Path(__file__).resolve().parents[1]


def tlkit(*args, cache=None, check=False, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache:
        env["TLKIT_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "tlkit", *map(str, args)], capture_output=True, text=True,
                          env=env, check=check, cwd=cwd)


def test_help_documents_every_command():
    out = tlkit("--help").stdout
    for word in ("demo", "train", "evaluate", "TLKIT_DATA_DIR"):
        assert word in out
    train_help = tlkit("train", "--help").stdout
    for flag in ("--out", "--backbone", "--strategy", "--epochs", "--lr", "--image-size", "--seed",
                 "--unfreeze-at", "finetune", "partial"):
        assert flag in train_help


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = make_dataset(tmp / "data", train=8, val=4, size=64)
    out = tmp / "run"
    res = tlkit("train", data, "--out", out, "--image-size", "64", "--epochs", "20", "--lr", "3e-3",
                "--quiet", cache=tmp / "cache")
    assert res.returncode == 0, res.stderr
    return tmp, out, res


def test_train_writes_model_metrics_and_figure(trained):
    tmp, out, res = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] == 16 and metrics["num_val"] == 8
    assert metrics["val_accuracy"] >= 0.75 and metrics["seconds"] > 0
    assert metrics["backbone"] == "efficientnet_lite0" and metrics["strategy"] == "features"
    assert sum(map(sum, metrics["confusion_matrix"])) == 8
    blob = torch.load(out / "model.pt", weights_only=True)
    assert blob["backbone"] == "efficientnet_lite0" and blob["class_names"] == ["cats", "dogs"]
    assert blob["image_size"] == 64
    assert blob["extra"]["bn_statistics"] == "imagenet"  # the head's features used the ImageNet statistics
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "validation accuracy" in res.stdout


def test_train_without_out_writes_to_runs_strategy(trained):
    tmp, _, _ = trained
    work = tmp / "work"
    work.mkdir()
    res = tlkit("train", tmp / "data", "--image-size", "64", "--epochs", "2", "--quiet", cache=tmp / "cache", cwd=work)
    assert res.returncode == 0, res.stderr
    assert json.loads((work / "runs" / "features" / "metrics.json").read_text())["num_val"] == 8
    assert (work / "runs" / "features" / "model.pt").is_file()
    assert "runs/features" in res.stdout


def test_evaluate_on_another_directory_of_the_same_classes(trained):
    tmp, out, _ = trained
    other = make_split(tmp / "other", per_class=5, size=64, seed=7)
    res = tlkit("evaluate", out / "model.pt", other, "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["n"] == 10 and 0.7 <= result["accuracy"] <= 1.0
    plain = tlkit("evaluate", out / "model.pt", other, "--quiet")
    assert f"accuracy {result['accuracy']:.4f} on 10 images" in plain.stdout


@pytest.mark.parametrize("case", ["missing_dir", "no_train", "text_checkpoint", "other_classes", "pickle"])
def test_user_errors_exit_nonzero_without_traceback(trained, case):
    tmp, out, _ = trained
    if case == "missing_dir":
        res = tlkit("train", tmp / "nope", "--out", tmp / "x")
        expect = "does not exist"
    elif case == "no_train":
        make_split(tmp / "flat" / "val", per_class=2)
        res = tlkit("train", tmp / "flat", "--out", tmp / "x")
        expect = "no train/"
    elif case == "text_checkpoint":
        (tmp / "bad.pt").write_text("hello")
        res = tlkit("evaluate", tmp / "bad.pt", tmp / "data" / "val")
        expect = "not a readable model file"
    elif case == "other_classes":
        make_split(tmp / "birds", classes=("birds", "cats"), per_class=2)
        res = tlkit("evaluate", out / "model.pt", tmp / "birds")
        expect = "cats"
    else:
        torch.save({"format": "tlkit-model/1", "x": Path("/")}, tmp / "pickled.pt")
        res = tlkit("evaluate", tmp / "pickled.pt", tmp / "data" / "val")
        expect = "refused"
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")
    assert expect in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


class _FakeRank:
    """A DistContext stand-in: this process's rank, and what rank 0 'broadcasts'."""

    def __init__(self, is_main: bool, rank0_ok: bool = True):
        self.enabled, self.is_main, self.rank0_ok, self.sent = True, is_main, rank0_ok, []

    def broadcast_object(self, obj):
        self.sent.append(obj)
        return obj if self.is_main else self.rank0_ok


@pytest.mark.parametrize("is_main, calls", [(True, [True, False]), (False, [False])])
def test_under_torchrun_only_rank_0_may_download_the_dataset(monkeypatch, is_main, calls):
    from tlkit import __main__ as cli, data, distributed
    seen = []
    monkeypatch.setattr(data, "cats_vs_dogs", lambda download=True: seen.append(download) or ("train", "val"))
    monkeypatch.setattr(distributed, "context", lambda: _FakeRank(is_main))
    assert cli._dataset_once() == ("train", "val")
    assert seen == calls  # rank 0: may download, then reads; the others only read, after rank 0 said so


def test_under_torchrun_a_failed_download_stops_every_rank_with_a_message(monkeypatch):
    from tlkit import __main__ as cli, data, distributed
    from tlkit.errors import DownloadError

    def offline(download=True):
        raise DownloadError("offline: set TLKIT_DATA_DIR", reason="offline")

    monkeypatch.setattr(data, "cats_vs_dogs", offline)
    rank0 = _FakeRank(True)
    monkeypatch.setattr(distributed, "context", lambda: rank0)
    with pytest.raises(DownloadError, match="TLKIT_DATA_DIR"):
        cli._dataset_once()
    assert rank0.sent == [False]  # told the others before raising
    monkeypatch.setattr(distributed, "context", lambda: _FakeRank(False, rank0_ok=False))
    with pytest.raises(DownloadError, match="first process could not"):
        cli._dataset_once()
