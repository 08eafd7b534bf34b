"""`python -m tlkit export` and `evaluate MODEL.onnx`, as a user runs them (subprocesses)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from imagegen import make_split  # noqa: E402
from test_cli import tlkit  # noqa: E402
from tlkit.checkpoint import save_model  # noqa: E402


def test_help_documents_export_and_the_parser_needs_no_onnx():
    assert "export" in tlkit("--help").stdout
    out = tlkit("export", "--help").stdout
    for flag in ("--format", "--int8", "--out", "--images", "--calibration", "tlkit[export]", "--web", "--ort-web-dir"):
        assert flag in out
    import subprocess
    import sys
    code = "import sys; from tlkit.__main__ import build_parser; build_parser(); print('onnx' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert res.stdout.strip() == "False", res.stderr


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A Lite0 (ImageNet weights, random 2-class head) saved at 64 px, plus train/val class folders."""
    from tlkit.backbones import load_backbone

    tmp = tmp_path_factory.mktemp("cli_export")
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", num_classes=2, class_names=["cats", "dogs"])
    save_model(model, tmp / "model.pt", image_size=64)
    return tmp, make_split(tmp / "train", per_class=6, size=48, seed=1), make_split(tmp / "val", per_class=4,
                                                                                      size=48, seed=2)


def test_export_prints_parity_size_and_latency_and_evaluate_reads_the_onnx(saved):
    tmp, train, val = saved
    res = tlkit("export", tmp / "model.pt", "--format", "onnx", "--images", val, "--out", tmp / "m.onnx", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp / "m.onnx").is_file()
    assert "parity vs PyTorch on 8 images" in res.stdout and "predictions agree 100.0%" in res.stdout
    for row in ("PyTorch eager fp32", "ONNX Runtime fp32", "ms/img (b1)"):
        assert row in res.stdout
    pt = json.loads(tlkit("evaluate", tmp / "model.pt", val, "--json", "--quiet").stdout)
    ox = tlkit("evaluate", tmp / "m.onnx", val, "--json", "--quiet")
    assert ox.returncode == 0, ox.stderr
    ox = json.loads(ox.stdout)
    assert ox.keys() == pt.keys() and ox["n"] == pt["n"] == 8 and ox["confusion"] == pt["confusion"]
    plain = tlkit("evaluate", tmp / "m.onnx", val, "--quiet")
    assert plain.stdout.startswith(f"accuracy {ox['accuracy']:.4f} on 8 images")


def test_export_int8_writes_a_smaller_file_that_evaluate_reads(saved):
    tmp, train, val = saved
    res = tlkit("export", tmp / "model.pt", "--int8", "--images", val, "--calibration", train,
                "--out", tmp / "q.onnx", "--quiet")
    assert res.returncode == 0, res.stderr
    q = tmp / "q.int8.onnx"
    assert q.is_file() and q.stat().st_size <= 0.35 * (tmp / "q.onnx").stat().st_size
    assert "ONNX Runtime int8" in res.stdout and "of fp32); int8 agrees with fp32" in res.stdout
    ev = tlkit("evaluate", q, val, "--json", "--quiet")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["n"] == 8


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling this would run a shell command
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case", ["hostile", "missing", "foreign_onnx"])
def test_export_and_evaluate_refuse_untrusted_or_wrong_files_with_one_line(saved, case):
    tmp, _, val = saved
    marker = tmp / "pwned"
    if case == "hostile":
        torch.save({"format": "tlkit-model/1", "state_dict": _Hostile(marker)}, tmp / "evil.pt")
        res, expect = tlkit("export", tmp / "evil.pt", "--out", tmp / "evil.onnx"), "refused"
        assert not (tmp / "evil.onnx").exists()
    elif case == "missing":
        res, expect = tlkit("export", tmp / "nope.pt"), "does not exist"
    else:
        (tmp / "junk.onnx").write_bytes(b"\x08\x07garbage")
        res, expect = tlkit("evaluate", tmp / "junk.onnx", val), "not a readable ONNX file"
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr and expect in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_export_int8_without_calibration_images_says_what_to_pass(saved, monkeypatch):
    tmp, _, val = saved
    for var in ("TLKIT_DATA_DIR", "XDG_CACHE_HOME", "HOME"):  # no dataset anywhere tlkit looks
        monkeypatch.setenv(var, str(tmp / "no_data_here"))
    res = tlkit("export", tmp / "model.pt", "--int8", "--images", val, "--out", tmp / "c.onnx")
    assert res.returncode == 2 and "--calibration DIR" in res.stderr
