"""Dataset folders that are not ``train/<class>/`` + ``val/<class>/``.

Each raises DatasetLayoutError (a ValueError) whose message names the folder
and says what to change; ``python -m tlkit train`` prints that message on one
line and exits with status 2, without a traceback and before loading a model.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faultkit import assert_clean_user_error, run_cli, snapshot
from imagegen import make_dataset, write_image
from tlkit.data import image_folder
from tlkit.errors import DatasetLayoutError


def _missing(root: Path) -> None:
    shutil.rmtree(root)


def _a_file_not_a_folder(root: Path) -> None:
    shutil.rmtree(root)
    root.write_text("not a folder")


def _no_train(root: Path) -> None:
    (root / "train").rename(root / "training")


def _no_val(root: Path) -> None:
    (root / "val").rename(root / "test")


def _one_class(root: Path) -> None:
    shutil.rmtree(root / "train" / "dogs")
    shutil.rmtree(root / "val" / "dogs")


def _empty_class(root: Path) -> None:
    for f in (root / "train" / "dogs").iterdir():
        f.unlink()
    (root / "train" / "dogs" / "notes.txt").write_text("photos to come")  # not an image


def _only_unreadable_in_class(root: Path) -> None:
    for i, f in enumerate(sorted((root / "val" / "dogs").iterdir())):
        f.write_bytes(b"" if i % 2 else b"GIF89a garbage")


def _val_classes_differ(root: Path) -> None:
    (root / "val" / "dogs").rename(root / "val" / "birds")


# (how to break it, words the message must contain: the problem and the fix)
CASES = {
    "missing_directory": (_missing, ["does not exist", "train/<class>/", "val/<class>/"]),
    "path_is_a_file": (_a_file_not_a_folder, ["is a file", "train/<class>/"]),
    "no_train_folder": (_no_train, ["no train/ folder", "/train/<class>/"]),
    "no_val_folder": (_no_val, ["no val/ or validation/ folder", "next to train/"]),
    "only_one_class": (_one_class, ["1 class folder(s) (cats)", "at least 2", "own sub-folder"]),
    "class_folder_without_images": (_empty_class, ["dogs holds no readable images", ".jpg",
                                                   "Add images"]),
    "class_folder_only_unreadable": (_only_unreadable_in_class, ["dogs holds no readable images",
                                                                 "2 unreadable file(s)"]),
    "val_classes_differ": (_val_classes_differ, ["['birds', 'cats']", "['cats', 'dogs']",
                                                 "same class folders"]),
}


@pytest.fixture
def broken(tmp_path, request):
    root = make_dataset(tmp_path / "data", train=2, val=2, size=32)
    breaker, words = CASES[request.param]
    breaker(root)
    return root, words


@pytest.mark.parametrize("broken", list(CASES), indirect=True)
def test_bad_layout_raises_layout_error_naming_the_fix(broken):
    root, words = broken
    before = snapshot(root.parent)
    with pytest.raises(DatasetLayoutError) as err:
        image_folder(root)
    assert isinstance(err.value, ValueError)
    msg = str(err.value)
    assert str(root) in msg or root.name in msg
    for word in words:
        assert word in msg, (word, msg)
    assert snapshot(root.parent) == before


@pytest.mark.parametrize("broken", ["missing_directory", "path_is_a_file", "no_train_folder", "no_val_folder",
                                    "only_one_class", "class_folder_without_images", "val_classes_differ"],
                         indirect=True)
def test_bad_layout_on_the_command_line_exits_2_without_traceback(broken, tmp_path):
    root, words = broken
    out = tmp_path / "run"
    res = run_cli("train", root, "--out", out, "--quiet", env={"TLKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert_clean_user_error(res, *words)
    assert not out.exists()  # failed before creating the output folder
    assert not (tmp_path / "cache").exists()  # and before extracting any features


def test_valid_folder_name_and_stray_top_level_files_are_accepted(tmp_path):
    """The validation split may use validation/ or valid/; a stray file next to the splits is ignored."""
    root = make_dataset(tmp_path / "data", train=2, val=2, size=32, val_name="valid")
    (root / "README.txt").write_text("my photos")
    write_image(root / "preview.jpg", (1, 2, 3), size=32)  # an image at the top level is not a class
    train, val = image_folder(root)
    assert train.classes == val.classes == ["cats", "dogs"] and (len(train), len(val)) == (4, 4)
