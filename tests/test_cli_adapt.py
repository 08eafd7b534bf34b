"""`python -m tlkit evaluate MODEL.pt DIR --shift NAME:SEVERITY --adapt-bn` (tlkit.cli_adapt)."""
import json

import pytest
from imagegen import make_split
from tlkit.__main__ import main
from tlkit.checkpoint import read_checkpoint, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def saved(tmp_path, lite0_64, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    split = make_split(tmp_path / "val", per_class=4, size=64, seed=3)

    def save(**extra):
        path = tmp_path / f"model-{len(extra)}.pt"
        save_model(lite0_64, path, image_size=64, **extra)
        return path
    return save, split


def _run(capsys, *args):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_adapt_bn_reports_both_accuracies_and_warns_for_an_imagenet_stat_head(saved, capsys):
    save, split = saved
    path = save()  # no record: taken as a head on ImageNet-statistics features
    status, out, err = _run(capsys, "evaluate", path, split, "--shift", "dark:4", "--adapt-bn", "--json", "--quiet")
    assert status == 0, err
    result = json.loads(out)
    assert result["n"] == 8 and result["shift"] == "dark:4" and result["adapted_images"] == 8
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["accuracy_before_adaptation"] <= 1
    assert result["head_bn_statistics"] == "imagenet" and result["adapted_layers"] == 49
    assert "warning: " in err and "ImageNet BatchNorm statistics" in err and "bn_statistics='source'" in err
    status, text, _ = _run(capsys, "evaluate", path, split, "--shift", "dark:4", "--adapt-bn", "--quiet")
    assert f"accuracy before adaptation {result['accuracy_before_adaptation']:.4f} on 8 images shifted by dark:4" \
        in text
    assert "49 layers, 8 images" in text and f"{result['accuracy']:.4f}" in text
    assert "bn_statistics" not in read_checkpoint(path)["extra"]  # the file itself is not changed


def test_no_warning_when_the_head_used_source_statistics(saved, capsys):
    save, split = saved
    path = save(bn_statistics="source")
    status, out, err = _run(capsys, "evaluate", path, split, "--adapt-bn", "--json", "--quiet")
    assert status == 0 and "warning" not in err
    result = json.loads(out)
    assert result["warning"] is None and result["head_bn_statistics"] == "source" and result["shift"] is None


def test_shift_alone_changes_the_predictions_and_keeps_the_plain_keys(saved, capsys):
    save, split = saved
    path = save()
    _, plain, _ = _run(capsys, "evaluate", path, split, "--json", "--quiet")
    _, shifted, _ = _run(capsys, "evaluate", path, split, "--shift", "sketch:5", "--json", "--quiet")
    plain, shifted = json.loads(plain), json.loads(shifted)
    assert "accuracy_before_adaptation" not in shifted and shifted["shift"] == "sketch:5"
    assert set(plain) <= set(shifted) and shifted["n"] == plain["n"] == 8


@pytest.mark.parametrize("flag, expect", [
    ("blurr:3", "unknown shift 'blurr'"), ("blur:7", "from 1 to 5"), ("blur", "no severity"),
])
def test_bad_shift_values_are_one_error_line(saved, capsys, flag, expect):
    save, split = saved
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(save()), str(split), "--shift", flag])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and expect in err and "--shift" in err
    assert len(err.strip().splitlines()) == 1


def test_adapt_bn_refuses_an_onnx_file_and_a_model_without_batchnorm(saved, capsys, tmp_path):
    from tlkit.backbones import load_backbone

    save, split = saved
    (tmp_path / "m.onnx").write_bytes(b"x")
    status, _, err = _run(capsys, "evaluate", tmp_path / "m.onnx", split, "--adapt-bn")
    assert status == 2 and "need the model.pt" in err
    convnext = load_backbone("convnext_tiny", pretrained=False, num_classes=2, class_names=["cats", "dogs"])
    save_model(convnext, tmp_path / "convnext.pt", image_size=32)
    status, _, err = _run(capsys, "evaluate", tmp_path / "convnext.pt", split, "--adapt-bn", "--quiet")
    assert status == 2 and "no BatchNorm" in err and err.startswith("error: ")


def test_help_lists_the_shifts():
    from tlkit.__main__ import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    text = sub.format_help()
    assert "--adapt-bn" in text and "--shift" in text and "sketch" in text
