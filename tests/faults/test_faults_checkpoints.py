"""Model files and training checkpoints that are wrong, damaged, hostile or half-written.

* A file made for another backbone or class list: CheckpointError naming both.
* A pickle that would run code: refused by ``weights_only=True``; the code never runs,
  neither through ``load_model`` nor ``python -m tlkit evaluate`` nor resuming training.
* A crash in the middle of a save: the target keeps its previous complete version.
* ``python -m tlkit evaluate`` on garbage: one ``error:`` line, exit status 2, no traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from browser.tiny import tiny_backbone
from faultkit import ROOT, assert_clean_user_error, run_cli
from imagegen import make_dataset, make_split
from tlkit.backbones import load_backbone
from tlkit.checkpoint import load_model, read_checkpoint, save_model
from tlkit.errors import CheckpointError

CLASSES = ["cats", "dogs"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real 2-class resnet18 model file, and a folder of images with the same classes."""
    tmp = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = load_backbone("resnet18", pretrained=False, num_classes=2, class_names=CLASSES).eval()
    path = save_model(model, tmp / "model.pt", image_size=32)
    split = make_split(tmp / "val", per_class=2, size=32)
    return path, split, model


class RunsCode:
    """Unpickling this calls ``os.system("touch MARKER")``: the classic malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_malicious(path: Path, marker: Path, base: dict) -> Path:
    """A file that looks like a tlkit file but carries a code-running object."""
    torch.save({**base, "extra": {"note": RunsCode(marker)}}, path)
    return path


def assert_payload_is_live(path: Path, marker: Path) -> None:
    """Proves the test file really would run code (plain torch.load, in a child process)."""
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert marker.exists(), "the malicious test file did not run its payload; the test proves nothing"
    marker.unlink()


# ---------------------------------------------------------------- mismatches

def test_checkpoint_for_another_backbone_names_both(saved):
    path, _, _ = saved
    with pytest.raises(CheckpointError) as err:
        load_model(path, expect_backbone="mobilenet_v3_small")
    assert "'resnet18'" in str(err.value) and "'mobilenet_v3_small'" in str(err.value)
    assert str(path) in str(err.value)


def test_checkpoint_for_another_class_count_names_both(saved, tmp_path):
    path, _, _ = saved
    with pytest.raises(CheckpointError) as err:
        load_model(path, expect_classes=["birds", "cats", "dogs"])
    msg = str(err.value)
    assert "['cats', 'dogs'] (2)" in msg and "['birds', 'cats', 'dogs'] (3)" in msg
    three = make_split(tmp_path / "three", classes=("birds", "cats", "dogs"), per_class=1, size=32)
    res = run_cli("evaluate", path, three, "--quiet")
    assert_clean_user_error(res, "['birds', 'cats', 'dogs']", "['cats', 'dogs']")


def test_checkpoint_whose_tensors_do_not_fit_names_them(saved, tmp_path):
    path, _, _ = saved
    blob = read_checkpoint(path)
    (key,) = [k for k in blob["state_dict"] if k.startswith("groups.head.") and k.endswith("weight")]
    blob["state_dict"][key] = torch.zeros(5, 512)  # edited by hand: 5 outputs instead of 2
    torch.save(blob, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "edited.pt")
    assert "does not fit this model" in str(err.value) and "1 wrong-shaped" in str(err.value)
    assert f"{key}: file (5, 512) vs model (2, 512)" in str(err.value)


# ---------------------------------------------------------------- hostile files

def test_malicious_pickle_is_refused_by_load_model_and_the_cli(saved, tmp_path):
    path, split, _ = saved
    marker = tmp_path / "pwned"
    evil = write_malicious(tmp_path / "evil.pt", marker, read_checkpoint(path))
    assert_payload_is_live(evil, marker)
    with pytest.raises(CheckpointError) as err:
        load_model(evil)
    assert "refused" in str(err.value) and "weights_only=True" in str(err.value)
    assert "posix.system" in str(err.value)  # names what it would have called
    assert not marker.exists()
    res = run_cli("evaluate", evil, split, "--quiet")
    assert_clean_user_error(res, "refused", str(evil))
    assert not marker.exists()


def _truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path, good: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _empty(path: Path, good: Path) -> None:
    path.write_bytes(b"")


def _directory(path: Path, good: Path) -> None:
    path.mkdir()


def _pickle_bomb(path: Path, good: Path) -> None:
    """A valid torch file whose class_names is a list of 2**64 strings by reference: a few bytes
    on disk, but printing it (e.g. in an error message) would never finish."""
    bomb = ["cat"]
    for _ in range(64):
        bomb = [bomb, bomb]
    blob = read_checkpoint(good)
    blob["class_names"] = bomb
    torch.save(blob, path)


def _text(path: Path, good: Path) -> None:
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 44780235\n")


def _edited(good: Path, bad: Path, **changes) -> None:
    """A copy of the good file with some fields replaced (a hand-edited or diverged model file)."""
    blob = torch.load(good, weights_only=True)
    blob.update(changes)
    torch.save(blob, bad)


def _nan_weights(path: Path, good: Path) -> None:  # what `--lr inf` used to save
    blob = torch.load(good, weights_only=True)
    head = next(k for k in blob["state_dict"] if k.startswith("groups.head") and k.endswith("weight"))
    blob["state_dict"][head] = torch.full_like(blob["state_dict"][head], float("nan"))
    torch.save(blob, path)


def _huge_image_size(path: Path, good: Path) -> None:  # would allocate tens of GB per image
    _edited(good, path, image_size=100_000)


def _tiny_image_size(path: Path, good: Path) -> None:  # would end in a convolution traceback
    _edited(good, path, image_size=1)


def _fifo(path: Path, good: Path) -> None:  # torch.load on a FIFO would block forever
    os.mkfifo(path)


def _symlink_loop(path: Path, good: Path) -> None:
    os.symlink(path.name, path)


def _broken_symlink(path: Path, good: Path) -> None:
    os.symlink(path.parent / "gone.pt", path)


BAD_FILES = {"truncated": (_truncated, "damaged or cut short"),
             "random_bytes": (_random_bytes, "not a readable model file"),
             "empty": (_empty, "empty (0 bytes)"),
             "directory": (_directory, "is a folder, not a model file"),
             "pickle_bomb": (_pickle_bomb, "class_names has the wrong type"),
             "git_lfs_pointer": (_text, "not a readable model file"),
             "nan_weights": (_nan_weights, "has NaN or inf in 1 weight tensor(s)"),
             "image_size_100000": (_huge_image_size, "image_size 100000, outside the valid range 32..1024"),
             "image_size_1": (_tiny_image_size, "image_size 1, outside the valid range 32..1024"),
             "fifo": (_fifo, "is a FIFO (named pipe), not a model file"),
             "symlink_loop": (_symlink_loop, "is a symbolic link loop"),
             "broken_symlink": (_broken_symlink, "is a broken symbolic link")}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_evaluate_on_a_bad_model_file_prints_one_clear_line(saved, tmp_path, kind):
    good, split, _ = saved
    make, words = BAD_FILES[kind]
    bad = tmp_path / "model.pt"
    make(bad, good)
    with pytest.raises(CheckpointError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_model(bad)
    res = run_cli("evaluate", bad, split, "--quiet")  # the CLI has a timeout: a hang fails the test
    assert_clean_user_error(res, words, str(bad))


# ---------------------------------------------------------------- crash while saving

CRASH = textwrap.dedent("""
    import io, os, signal, sys, torch
    from tlkit.backbones import load_backbone
    from tlkit.checkpoint import save_model
    torch.manual_seed(1)
    model = load_backbone("resnet18", pretrained=False, num_classes=2, class_names=["cats", "dogs"])
    real_save = torch.save

    def dying_save(obj, f):  # writes half the file, then the process is killed (power cut, OOM killer)
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save
    save_model(model, sys.argv[1])
""")


@pytest.mark.parametrize("previous", [True, False], ids=["over_an_old_version", "new_file"])
def test_a_crash_mid_save_never_leaves_a_half_file(saved, tmp_path, previous):
    good, split, model = saved
    target = tmp_path / "model.pt"
    if previous:
        target.write_bytes(good.read_bytes())
    res = subprocess.run([sys.executable, "-c", CRASH, str(target)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.pt.")  # the hidden, half temp file
    assert (tmp_path / leftovers[0]).stat().st_size > 0
    if not previous:
        assert not target.exists()
        return
    assert target.read_bytes() == good.read_bytes()
    loaded = load_model(target)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------- training checkpoints (resume files)

@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from tlkit.data import image_folder

    root = make_dataset(tmp_path_factory.mktemp("resume") / "data", train=8, val=4, size=32)
    return root, image_folder(root)


def tiny_fit(train, val, **kw):
    from tlkit.train import fit

    model = tiny_backbone()
    opts = dict(epochs=1, batch_size=8, image_size=32, num_workers=0, progress=False, seed=0)
    return model, fit(model, train, val, **{**opts, **kw})


def test_malicious_training_checkpoint_is_refused_on_resume(train_data, tmp_path):
    from tlkit.resume import load_training_state
    from tlkit.train import fit

    _, (train, val) = train_data
    tiny_fit(train, val, checkpoint_dir=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # a genuine resume file...
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_run" / "last.pt"
    evil.parent.mkdir()
    torch.save({**state, "rng": {**state["rng"], "python": RunsCode(marker)}}, evil)  # ...with a payload
    assert_payload_is_live(evil, marker)
    with pytest.raises(CheckpointError, match="Refusing to load") as err:
        load_training_state(evil.parent)
    assert "posix.system" in str(err.value) and not marker.exists()
    model = tiny_backbone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="Refusing to load"):
        fit(model, train, val, epochs=2, batch_size=8, image_size=32, num_workers=0, progress=False,
            resume=evil.parent)
    assert not marker.exists()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing trained


CRASH_IN_TRAINING = textwrap.dedent("""
    import io, os, signal, sys, torch
    from browser.tiny import tiny_backbone
    from tlkit.data import image_folder
    from tlkit.train import fit
    torch.set_num_threads(1)
    model = tiny_backbone()
    train, val = image_folder(sys.argv[1])
    real_save, saves = torch.save, []

    def save_then_die_on_epoch_2(obj, f):
        saves.append(1)
        if len(saves) < 2:
            return real_save(obj, f)
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die_on_epoch_2
    fit(model, train, val, epochs=3, batch_size=8, image_size=32, num_workers=0, progress=False, seed=0,
        checkpoint_dir=sys.argv[2])
""")


def test_a_crash_while_writing_a_training_checkpoint_keeps_the_previous_epoch(train_data, tmp_path):
    from tlkit.resume import load_training_state
    from tlkit.train import fit

    root, (train, val) = train_data
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", CRASH_IN_TRAINING, str(root), str(run)], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
                         timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    state = load_training_state(run)  # last.pt is epoch 1's complete file, not epoch 2's half
    assert state["epoch"] == 1 and len(state["history"]["rows"]) == 1
    model = tiny_backbone()
    history = fit(model, train, val, epochs=3, batch_size=8, image_size=32, num_workers=0, progress=False,
                  seed=0, resume=run)
    assert history["epoch"] == [1, 2, 3] and history.stop_reason is None


def test_saved_model_files_follow_the_umask(tmp_path):
    """model.pt used to be 0600 whatever the umask (tempfile's default), unreadable in a shared course folder."""
    model = tiny_backbone()
    old = os.umask(0o022)
    try:
        a = save_model(model, tmp_path / "shared" / "model.pt", image_size=32)
        os.umask(0o077)
        b = save_model(model, tmp_path / "private" / "model.pt", image_size=32)
    finally:
        os.umask(old)
    assert a.stat().st_mode & 0o777 == 0o644
    assert b.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in a.parent.iterdir()] == ["model.pt"]  # no temp file left


def test_a_model_with_non_finite_weights_is_never_saved(tmp_path):
    """save_model refuses NaN weights, so a diverged run cannot leave a plausible-looking model file."""
    model = tiny_backbone()
    with torch.no_grad():
        next(model.groups["head"].parameters()).fill_(float("inf"))
    with pytest.raises(ValueError, match="NaN or inf .* lower learning rate"):
        save_model(model, tmp_path / "model.pt", image_size=32)
    assert list(tmp_path.iterdir()) == []
