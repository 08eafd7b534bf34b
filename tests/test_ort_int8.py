"""int8 features on ONNX Runtime (tlkit.engine_int8): the option, its cache key, and when "auto" may use it."""
from __future__ import annotations

import json

import pytest
import torch
from modelgen import noise_stat_resnet

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import tlkit.engine_int8 as int8_mod  # noqa: E402
from tlkit.int8_check import check_int8  # noqa: E402
from tlkit.data import ImageDataset, transforms_for  # noqa: E402
from tlkit.features import body_fingerprint, cache_key, extract_features  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def engine_from_argument(monkeypatch):
    """conftest sets TLKIT_ENGINE=torch for the rest of the suite; here the argument decides."""
    monkeypatch.delenv("TLKIT_ENGINE", raising=False)


def _model():
    return noise_stat_resnet(0)


def _splits(tiny_datasets, model):
    tf = transforms_for(model, train=False, image_size=64)
    return tiny_datasets[0].with_transform(tf), tiny_datasets[1].with_transform(tf)


def test_int8_features_are_close_to_fp32_and_cached_apart(tiny_datasets, tmp_path):
    model = _model()
    train, val = _splits(tiny_datasets, model)
    fp32 = extract_features(model, val, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    q = extract_features(model, val, cache_dir=tmp_path, precision="int8", calibration=train, progress=False)
    assert (q.engine, q.precision, fp32.precision) == ("onnxruntime", "int8", "fp32")
    assert q.features.shape == fp32.features.shape == (24, 512) and q.files == fp32.files
    cos = torch.nn.functional.cosine_similarity(q.features, fp32.features, dim=1)
    assert float(cos.min()) > 0.9  # quantized, so not equal...
    assert not torch.allclose(q.features, fp32.features, atol=1e-4)  # ...but a real int8 graph, not the fp32 one
    assert len(list(tmp_path.glob("resnet18-*.pt"))) == 2  # precision is in the key
    graphs = sorted(p.name for p in (tmp_path / "graphs").glob("*.onnx"))
    assert len(graphs) == 2 and any("-int8-" in g for g in graphs)
    again = extract_features(model, val, cache_dir=tmp_path, precision="int8", calibration=train, progress=False)
    assert again.from_cache and again.precision == "int8" and torch.equal(again.features, q.features)


def test_cache_key_separates_precisions_and_calibration_sets(tiny_datasets):
    model = _model()
    train, val = _splits(tiny_datasets, model)
    other = ImageDataset(train.files[::-1], train.targets[::-1], train.classes, train.transform)
    calib, calib_other = int8_mod.calibration_id(train), int8_mod.calibration_id(other)
    assert calib != calib_other
    keys = {cache_key(model, val, tag) for tag in
            ("fp32", "bf16", "onnxruntime-fp32", int8_mod.int8_tag(calib), int8_mod.int8_tag(calib_other))}
    assert len(keys) == 5


def test_int8_needs_calibration_images_and_onnx_runtime(tiny_datasets, tmp_path):
    model = _model()
    train, val = _splits(tiny_datasets, model)
    with pytest.raises(ValueError, match="calibration=<training images>"):
        extract_features(model, val, cache=False, cache_dir=tmp_path, precision="int8", progress=False)
    with pytest.raises(ValueError, match="precision='int8' runs on ONNX Runtime"):
        extract_features(model, val, cache=False, cache_dir=tmp_path, precision="int8", calibration=train,
                         engine="torch", progress=False)


def test_auto_uses_int8_only_after_a_passing_check(tiny_datasets, tmp_path, monkeypatch):
    model = _model()
    train, val = _splits(tiny_datasets, model)
    assert extract_features(model, val, cache=False, cache_dir=tmp_path, engine="auto",
                            progress=False).precision != "int8"  # no verdict yet: fp32/bf16
    verdict = check_int8(model, train, val, cache_dir=tmp_path, epochs=3)
    lo, hi = verdict["interval"]
    assert 0 <= lo <= verdict["acc_fp32"] <= hi <= 1 and verdict["n_val"] == 24
    assert verdict["ok"] == (verdict["acc_int8"] >= lo)
    store = tmp_path / "int8-choice.json"
    key = int8_mod.int8_key(model, body_fingerprint(model), val)
    for ok in (True, False):  # whatever the tiny model scored: the stored verdict decides
        data = json.loads(store.read_text())
        data[key]["ok"] = ok
        store.write_text(json.dumps(data))
        f = extract_features(model, val, cache=False, cache_dir=tmp_path, engine="auto", progress=False)
        assert (f.precision == "int8") == ok
    data[key]["ok"] = True
    store.write_text(json.dumps(data))
    forced = extract_features(model, val, cache=False, cache_dir=tmp_path, engine="onnxruntime", progress=False)
    assert forced.precision == "fp32"  # a forced engine keeps fp32; only "auto" reads the verdict
