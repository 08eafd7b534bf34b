"""The command line when the user, the machine or a signal gets in the way (round two of the suite).

Every failure the user can cause or fix ends with exit status 2 and one
``error:`` line, without a traceback, and before any output folder exists.
A diverged run, Ctrl-C and SIGTERM keep what finished. Runs use
efficientnet_lite0 (offline weights) at 32 px on a few tiny images.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from faultkit import ROOT, TRACEBACK, assert_clean_user_error, run_cli, snapshot
from imagegen import make_dataset, write_image

FAST = ("--image-size", "32", "--quiet")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli2")
    return make_dataset(tmp / "data", train=8, val=4, size=40), tmp


def env_for(tmp: Path, **extra) -> dict:
    return {"TLKIT_CACHE_DIR": str(tmp / "cache"), "TLKIT_NUM_WORKERS": "0", **extra}


def assert_nothing_written(tmp: Path, before: dict, out: Path) -> None:
    assert not out.exists(), list(out.iterdir()) if out.is_dir() else out
    assert snapshot(tmp / "data") == before["data"]


# ---------------------------------------------------------------- arguments, checked before anything is made

BAD_ARGUMENTS = {
    "epochs_0_features": (["--epochs", "0"], "--epochs: must be a whole number of at least 1, got '0'"),
    "epochs_minus_1_features": (["--epochs", "-1"], "--epochs: must be a whole number of at least 1"),
    "image_size_0": (["--image-size", "0"], "between 32 and 1024 pixels, got 0"),
    "image_size_1": (["--image-size", "1"], "between 32 and 1024 pixels, got 1"),
    "image_size_100000": (["--image-size", "100000"], "between 32 and 1024 pixels, got 100000"),
    "lr_inf": (["--lr", "inf"], "--lr: must be a finite number above 0"),
    "lr_nan": (["--lr", "nan"], "--lr: must be a finite number above 0"),
    "lr_negative": (["--lr=-1e-3"], "--lr: must be a finite number above 0"),
    "batch_size_0": (["--strategy", "finetune", "--batch-size", "0"], "--batch-size: must be a whole number"),
    "unfreeze_at_with_features": (["--unfreeze-at", "2"], "--unfreeze-at needs --strategy partial or finetune"),
    "unfreeze_at_after_the_last_epoch": (["--strategy", "finetune", "--epochs", "2", "--unfreeze-at", "5"],
                                         "--unfreeze-at must be an epoch between 2 and --epochs=2"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_argument_is_one_error_line_and_creates_nothing(data, case):
    root, tmp = data
    args, expected = BAD_ARGUMENTS[case]
    out = tmp / f"out_{case}"
    before = {"data": snapshot(root)}
    res = run_cli("train", root, "--out", out, *args, env=env_for(tmp))
    assert_clean_user_error(res, expected)
    assert_nothing_written(tmp, before, out)


def _existing_file(tmp: Path, root: Path) -> Path:
    (tmp / "notes.txt").write_text("mine")
    return tmp / "notes.txt"


def _below_a_file(tmp: Path, root: Path) -> Path:
    (tmp / "notes.txt").write_text("mine")
    return tmp / "notes.txt" / "run"


def _inside_a_class_folder(tmp: Path, root: Path) -> Path:
    return root / "train" / "cats" / "run1"


def _the_data_folder_itself(tmp: Path, root: Path) -> Path:
    return root


BAD_OUT = {"existing_file": (_existing_file, "is an existing file, not a folder"),
           "below_a_file": (_below_a_file, "is a file, not a folder"),
           "inside_a_class_folder": (_inside_a_class_folder, "is inside the dataset folder"),
           "the_data_folder_itself": (_the_data_folder_itself, "is inside the dataset folder")}


@pytest.mark.parametrize("case", list(BAD_OUT))
def test_bad_output_folder_is_refused_before_training(data, case):
    root, tmp = data
    make, expected = BAD_OUT[case]
    out = make(tmp, root)
    before = snapshot(tmp)
    res = run_cli("train", root, "--out", out, *FAST, env=env_for(tmp))
    assert_clean_user_error(res, expected, "--out")
    assert snapshot(tmp) == before  # no folder, no cache, the file untouched
    (tmp / "notes.txt").unlink(missing_ok=True)


def test_tlkit_never_trains_on_files_it_wrote(tmp_path):
    """An output folder (marked by tlkit) inside a class folder is not read: no 'confusion_matrix.png' cat."""
    from tlkit.data import image_folder
    from tlkit.outputs import write_run

    root = make_dataset(tmp_path / "data", train=3, val=2, size=40)
    old_run = root / "train" / "cats" / "run1"  # as an older tlkit, or a copy of a run, left it
    write_run(old_run, {"val_accuracy": 1.0}, lambda p: p.write_bytes(b"model"),
              lambda p: p.write_bytes((root / "train" / "dogs").glob("*.jpg").__next__().read_bytes()))
    assert (old_run / "confusion_matrix.png").stat().st_size > 0
    train, _ = image_folder(root)
    assert len(train) == 6 and not any("run1" in f for f in train.files)
    (root / "train" / "birds_run").mkdir()
    write_run(root / "train" / "birds_run", {}, lambda p: p.write_bytes(b"m"), lambda p: None)
    assert image_folder(root)[0].classes == ["cats", "dogs"]  # an output folder is never a class


# ---------------------------------------------------------------- environment variables

BAD_ENV = {"num_workers_abc": ({"TLKIT_NUM_WORKERS": "abc"}, "TLKIT_NUM_WORKERS='abc' must be a whole number"),
           "num_workers_minus_3": ({"TLKIT_NUM_WORKERS": "-3"}, "TLKIT_NUM_WORKERS='-3' must be a whole number"),
           "cache_dir_is_a_file": ({"TLKIT_CACHE_DIR": "FILE"}, "TLKIT_CACHE_DIR=FILE is a file, not a folder"),
           "data_dir_is_a_file": ({"TLKIT_DATA_DIR": "FILE"}, "TLKIT_DATA_DIR=FILE is a file, not a folder"),
           "cpu_bf16_maybe": ({"TLKIT_CPU_BF16": "maybe"}, "TLKIT_CPU_BF16='maybe' must be 1 or 0")}


@pytest.mark.parametrize("case", list(BAD_ENV))
def test_bad_tlkit_variable_is_named_even_when_the_cache_would_hit(data, case):
    """Checked in one place before anything runs; the cache is warm, so the old code never read it."""
    root, tmp = data
    warm = run_cli("train", root, "--out", tmp / "warm", "--epochs", "2", *FAST, env=env_for(tmp))
    assert warm.returncode == 0, warm.stderr
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    extra, expected = BAD_ENV[case]
    extra = {k: v.replace("FILE", str(blocker)) for k, v in extra.items()}
    out = tmp / f"out_{case}"
    res = run_cli("demo" if "DATA_DIR" in str(extra) else "train", *([] if "DATA_DIR" in str(extra) else [root]),
                  "--out", out, "--epochs", "2", *FAST, env={**env_for(tmp), **extra})
    assert_clean_user_error(res, expected.replace("FILE", str(blocker)))
    assert not out.exists()


# ---------------------------------------------------------------- training that goes wrong

def test_diverging_head_is_an_error_and_writes_nothing(data):
    """`--lr 1e38`: it used to exit 0 with an all-NaN head and "validation accuracy 0.5000"."""
    root, tmp = data
    out = tmp / "diverged"
    res = run_cli("train", root, "--out", out, "--lr", "1e38", *FAST, env=env_for(tmp))
    assert_clean_user_error(res, "training diverged in epoch 1", "lr=1e+38", "nothing was written", "lower --lr")
    assert not out.exists()


def _fsize_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_saving_the_model_keeps_metrics_and_leaves_no_half_file(data):
    """A real write failure (RLIMIT_FSIZE = 1 MB; the model is ~14 MB), as on a full disk."""
    root, tmp = data
    out = tmp / "full"
    run_cli("train", root, "--out", tmp / "warm_full", "--epochs", "2", *FAST, env=env_for(tmp))  # cache first
    res = subprocess.run([sys.executable, "-m", "tlkit", "train", str(root), "--out", str(out), "--epochs", "2",
                          *FAST], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env_for(tmp)},
                         preexec_fn=_fsize_limit(1_000_000))
    assert_clean_user_error(res, "could not write", "Free some space")
    metrics = json.loads((out / "metrics.json").read_text())  # written first, complete
    assert metrics["epochs"] == 2 and metrics["num_train"] == 16
    assert sorted(p.name for p in out.iterdir()) == [".tlkit-output", "metrics.json"]  # no model.pt, no temp


def test_metrics_count_the_images_used_and_the_ones_skipped(tmp_path):
    """A truncated JPEG passes the header scan and fails to decode: it is not counted as used."""
    root = make_dataset(tmp_path / "data", train=4, val=2, size=40)
    victim = write_image(root / "train" / "dogs" / "truncated.jpg", (1, 2, 3), size=200, seed=5)  # noisy: long
    victim.write_bytes(victim.read_bytes()[:len(victim.read_bytes()) // 2])  # header intact, data cut
    out = tmp_path / "run"
    res = run_cli("train", root, "--out", out, "--epochs", "2", *FAST, env=env_for(tmp_path))
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["num_train"], metrics["num_train_skipped"]) == (8, 1)
    assert (metrics["num_val"], metrics["num_val_skipped"]) == (4, 0)
    assert metrics["epochs"] == metrics["epochs_requested"] == 2 and metrics["stop_reason"] is None
    assert (out / "model.pt").stat().st_mode & 0o777 == 0o666 & ~0o022  # the umask, not 0600


# ---------------------------------------------------------------- signals

@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_fine_tuning_keeps_finished_epochs_and_exits_128_plus_signal(data, sig, status):
    root, tmp = data
    out = tmp / f"signal_{sig.name}"
    proc = subprocess.Popen([sys.executable, "-m", "tlkit", "train", str(root), "--out", str(out),
                             "--strategy", "finetune", "--epochs", "200", "--image-size", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env_for(tmp)})
    lines = []
    for line in proc.stderr:  # logging goes to stderr; wait until epoch 2 has finished
        lines.append(line)
        if "epoch 2/200 train_loss=" in line:  # the log line written after the epoch, not the progress bar
            break
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=240)
    assert proc.returncode == status, "".join(lines) + rest
    assert TRACEBACK not in rest and f"interrupted ({sig.name}) after" in rest
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] >= 2 and metrics["epochs"] == len(metrics["history"]) < 200
    assert metrics["epochs_requested"] == 200 and metrics["stop_reason"] == f"interrupted ({sig.name})"
    assert (out / "model.pt").is_file()


# ---------------------------------------------------------------- many classes, and tracebacks

def test_confusion_figure_for_500_classes_stays_small(tmp_path):
    """It grew 0.6 inch per class (18,240 px square for 300 classes) with a label in every cell."""
    import numpy as np

    from tlkit.viz import CM_MAX_INCHES, figure_to_png, plot_confusion_matrix

    n = 500
    cm = np.eye(n, dtype=np.int64) * 2
    cm[3, 7] = 5
    fig = plot_confusion_matrix(cm, [f"class{i:03d}" for i in range(n)])
    w, h = fig.get_size_inches()
    assert w <= CM_MAX_INCHES + 0.8 and h <= CM_MAX_INCHES
    assert len(fig.axes[0].texts) == 0 and "class003 as class007 (5)" in fig.axes[0].get_title()
    png = figure_to_png(fig, dpi=100)
    from PIL import Image
    import io

    assert max(Image.open(io.BytesIO(png)).size) <= 100 * (CM_MAX_INCHES + 0.8)


def test_figure_failure_still_leaves_complete_metrics_and_model(tmp_path):
    from tlkit.outputs import write_run

    def no_memory(path):
        raise MemoryError

    with pytest.warns(UserWarning, match="Could not write the confusion matrix figure .* complete"):
        write_run(tmp_path / "run", {"val_accuracy": 0.5}, lambda p: p.write_bytes(b"model"), no_memory)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"val_accuracy": 0.5}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".tlkit-output", "metrics.json", "model.pt"]


def test_debug_shows_the_traceback_and_a_bug_always_does(data, monkeypatch):
    root, tmp = data
    res = run_cli("train", tmp / "missing", "--out", tmp / "dbg", "--debug", env=env_for(tmp))
    assert res.returncode != 0 and TRACEBACK in res.stderr and "DatasetLayoutError" in res.stderr
    res = run_cli("train", tmp / "missing", "--out", tmp / "dbg", env=env_for(tmp, TLKIT_DEBUG="1"))
    assert TRACEBACK in res.stderr
    import tlkit.__main__ as cli

    def bug(args):
        raise ZeroDivisionError("a bug in tlkit")

    monkeypatch.setattr(cli, "cmd_evaluate", bug)
    with pytest.raises(ZeroDivisionError):  # not turned into an error line
        cli.main(["evaluate", "model.pt", str(root)])
    from tlkit.errors import user_message

    assert user_message(MemoryError()).startswith("out of memory") and user_message(ZeroDivisionError()) is None
    assert "disk is full" in user_message(OSError(28, "No space left on device", "m.pt"))
    assert "could not write the model file" in user_message(
        RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0"))
