"""The frozen pass on ONNX Runtime (tlkit.engine): parity, fallbacks, the graph and decision caches (CPU)."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from modelgen import noise_stat_resnet

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import tlkit.engine as engine_mod  # noqa: E402
import tlkit.engine_choice as choice_mod  # noqa: E402
import tlkit.export.onnx_file as onnx_file  # noqa: E402
from tlkit.backbones import load_backbone  # noqa: E402
from tlkit.boundary.cache import extract_activations  # noqa: E402
from tlkit.data import ImageDataset, transforms_for  # noqa: E402
from tlkit.engine import PARITY_MIN_COSINE, PARITY_REL_DIFF, parity  # noqa: E402
from tlkit.env import EnvironmentSettingError  # noqa: E402
from tlkit.evaluate import predict  # noqa: E402
from tlkit.features import extract_features  # noqa: E402
from tlkit.freezing import freeze_to  # noqa: E402


@pytest.fixture(autouse=True)
def engine_from_argument(monkeypatch):
    """conftest sets TLKIT_ENGINE=torch for the rest of the suite; here the argument decides."""
    monkeypatch.delenv("TLKIT_ENGINE", raising=False)


def _model(seed: int = 0):
    return noise_stat_resnet(seed)


def _val(tiny_datasets, model, size: int = 64):
    return tiny_datasets[1].with_transform(transforms_for(model, train=False, image_size=size))


def _assert_within_tolerance(a: torch.Tensor, b: torch.Tensor):
    """The stated interchangeability tolerance: per-row cosine >= 1 - 1e-5, max |diff| <= 1e-4 x max |torch|."""
    cos = torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)
    assert float(cos.min()) >= PARITY_MIN_COSINE
    assert float((a - b).abs().max()) <= PARITY_REL_DIFF * float(b.abs().max())
    assert parity(a, b)["ok"]


def _count_exports(monkeypatch) -> list:
    calls = []
    real = onnx_file._torch_export

    def counting(model, path, size):
        calls.append(size)
        return real(model, path, size)

    monkeypatch.setattr(onnx_file, "_torch_export", counting)
    return calls


def test_ort_and_torch_features_agree_and_never_share_a_cache_file(tiny_datasets, tmp_path):
    model = _model()
    val = _val(tiny_datasets, model)
    ort = extract_features(model, val, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    ref = extract_features(model, val, cache_dir=tmp_path, engine="torch", precision="fp32", progress=False)
    assert (ort.engine, ref.engine) == ("onnxruntime", "torch")
    assert ort.features.shape == ref.features.shape == (24, 512) and ort.files == ref.files
    assert float(ref.features.std(0).mean()) > 1e-3  # not a degenerate constant output
    _assert_within_tolerance(ort.features, ref.features)
    assert len(list(tmp_path.glob("resnet18-*.pt"))) == 2  # the engine is in the key
    again = extract_features(model, val, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    assert again.from_cache and again.engine == "onnxruntime" and torch.equal(again.features, ort.features)


def test_ort_matches_torch_on_real_lite0_photos(cats_dogs_dir, tmp_path):
    model = load_backbone("efficientnet_lite0", num_classes=2)
    files = sorted(str(p) for p in (cats_dogs_dir / "validation" / "cats").glob("*.jpg"))[:4] + \
        sorted(str(p) for p in (cats_dogs_dir / "validation" / "dogs").glob("*.jpg"))[:4]
    ds = ImageDataset(files, [0] * 4 + [1] * 4, ["cats", "dogs"],
                      transforms_for(model, train=False, image_size=160), "real8")
    ort = extract_features(model, ds, cache=False, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    ref = extract_features(model, ds, cache=False, engine="torch", precision="fp32", progress=False)
    assert ort.features.shape == (8, 1280)
    _assert_within_tolerance(ort.features, ref.features)
    record = json.loads(next((tmp_path / "graphs").glob("efficientnet_lite0-head-160px-fp32-*.json")).read_text())
    assert record["ok"] and record["min_cosine"] >= PARITY_MIN_COSINE


def test_parity_uses_a_few_images_the_timing_more_and_ort_gets_nchw_batches(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    val = _val(tiny_datasets, model)
    checked, timed, fed = [], [], []
    real_check, real_call = engine_mod._export_and_check, engine_mod.OrtRunner.__call__
    monkeypatch.setattr(engine_mod, "_export_and_check",
                        lambda m, u, x, p: checked.append(len(x)) or real_check(m, u, x, p))
    monkeypatch.setattr(choice_mod, "_time_torch", lambda m, u, x, prec: timed.append(len(x)) or 1.0)
    monkeypatch.setattr(choice_mod, "_time", lambda fn, x: timed.append(len(x)) or 0.5)

    def recording(self, x):
        fed.append((tuple(x.shape), x.is_contiguous()))
        return real_call(self, x)

    monkeypatch.setattr(engine_mod.OrtRunner, "__call__", recording)
    f = extract_features(model, val, cache=False, cache_dir=tmp_path, precision="fp32", batch_size=8, progress=False)
    assert f.engine == "onnxruntime" and len(f) == 24
    assert checked == [engine_mod.PARITY_SAMPLE] == [8] and timed == [engine_mod.SAMPLE] * 2 == [16, 16]
    # the pass: three batches of 8 in NCHW order (a channels_last copy would not be contiguous)
    assert fed[-3:] == [((8, 3, 64, 64), True)] * 3


def test_auto_falls_back_to_torch_without_onnxruntime(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.warns(UserWarning, match="onnxruntime is not installed"):
        f = extract_features(model, _val(tiny_datasets, model), cache_dir=tmp_path, progress=False)
    assert f.engine == "torch" and len(f) == 24 and not (tmp_path / "graphs").exists()


def test_auto_falls_back_to_torch_when_parity_fails(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    calls = _count_exports(monkeypatch)
    real_call = engine_mod.OrtRunner.__call__
    monkeypatch.setattr(engine_mod.OrtRunner, "__call__", lambda self, x: real_call(self, x) * 1.01 + 0.05)
    val = _val(tiny_datasets, model)
    with pytest.warns(UserWarning, match="differs from PyTorch"):
        f = extract_features(model, val, cache=False, cache_dir=tmp_path, progress=False)
    assert f.engine == "torch"
    record = json.loads(next((tmp_path / "graphs").glob("*.json")).read_text())
    assert record["failed"] and not record["ok"] and not list((tmp_path / "graphs").glob("*.onnx"))
    with pytest.warns(UserWarning, match="differs from PyTorch"):  # remembered: no second export
        assert extract_features(model, val, cache=False, cache_dir=tmp_path, progress=False).engine == "torch"
    assert len(calls) == 1


def test_graph_is_cached_reused_and_invalidated_when_weights_change(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    val = _val(tiny_datasets, model)
    calls = _count_exports(monkeypatch)
    first = extract_features(model, val, cache=False, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    extract_features(model, val, cache=False, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    assert calls == [64] and len(list((tmp_path / "graphs").glob("*.onnx"))) == 1
    with torch.no_grad():
        model.groups["stem"][0].weight.mul_(1.5)  # fine-tuned body: a new fingerprint
    changed = extract_features(model, val, cache=False, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    assert calls == [64, 64] and len(list((tmp_path / "graphs").glob("*.onnx"))) == 2
    assert not torch.allclose(changed.features, first.features, atol=1e-3)
    _assert_within_tolerance(changed.features,
                             extract_features(model, val, cache=False, engine="torch", precision="fp32",
                                              progress=False).features)


def test_auto_decision_is_timed_once_and_stored(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    val = _val(tiny_datasets, model)
    timed = []
    monkeypatch.setattr(choice_mod, "_time_torch", lambda *a: timed.append("torch") or 1.0)
    monkeypatch.setattr(choice_mod, "_time", lambda fn, x: 0.5)  # ORT twice as fast
    assert extract_features(model, val, cache_dir=tmp_path, precision="fp32", progress=False).engine == "onnxruntime"
    store = json.loads((tmp_path / "engine-choice.json").read_text())
    (key, row), = store.items()
    assert key.startswith("resnet18|head|64px|fp32|ort ") and row == {"engine": "onnxruntime", "torch_img_s": 16.0,
                                                                      "ort_img_s": 32.0}  # 16 images
    monkeypatch.setattr(choice_mod, "_time", lambda fn, x: 2.0)  # would now say torch: but it is not asked again
    assert extract_features(model, val, cache=False, cache_dir=tmp_path, precision="fp32",
                            progress=False).engine == "onnxruntime"
    assert timed == ["torch"]
    other = tmp_path / "other"  # another machine (cache folder): ORT slower there
    with pytest.warns(UserWarning, match="slower than PyTorch"):
        assert extract_features(model, val, cache_dir=other, precision="fp32", progress=False).engine == "torch"
    assert json.loads((other / "engine-choice.json").read_text())[key]["engine"] == "torch"


def test_engine_switch_argument_and_environment(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    val = _val(tiny_datasets, model)
    with pytest.raises(ValueError, match="engine must be one of"):
        extract_features(model, val, cache=False, engine="tensorrt", progress=False)
    monkeypatch.setenv("TLKIT_ENGINE", "onnxruntime")  # overrides the argument
    assert extract_features(model, val, cache=False, cache_dir=tmp_path, engine="torch",
                            progress=False).engine == "onnxruntime"
    monkeypatch.setenv("TLKIT_ENGINE", "fast")
    with pytest.raises(EnvironmentSettingError, match="TLKIT_ENGINE='fast' must be one of auto, torch, onnxruntime"):
        extract_features(model, val, cache=False, progress=False)


def test_boundary_activations_and_frozen_predict_run_on_ort(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    val = _val(tiny_datasets, model)
    ort = extract_activations(model, val, "stage3", cache_dir=tmp_path, engine="onnxruntime", dtype="fp32",
                              progress=False)
    ref = extract_activations(model, val, "stage3", cache_dir=tmp_path, engine="torch", precision="fp32",
                              dtype="fp32", progress=False)
    assert ort.activations.shape == ref.activations.shape == (1, 24, 128, 8, 8)
    _assert_within_tolerance(ort.activations[0], ref.activations[0])
    assert len(list(tmp_path.glob("resnet18-stage3-*.act.pt"))) == 2  # the engine is in the key
    freeze_to(model, -1)  # only the head trains: the body is a frozen function
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path))
    calls = _count_exports(monkeypatch)
    p_ort = predict(model, val, engine="onnxruntime")
    p_ref = predict(model, val, engine="torch")
    assert calls == [64] and torch.allclose(p_ort.probs, p_ref.probs, atol=1e-4)
    assert torch.equal(p_ort.preds, p_ref.preds)
