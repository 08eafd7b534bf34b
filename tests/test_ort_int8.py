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
from tlkit.feature_cache import body_fingerprint, cache_key  # noqa: E402
from tlkit.features import extract_features  # noqa: E402

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


def _ship(path, model, train, val, root, ok=True):
    """A shipped-verdicts file at ``path`` for ``model`` on ``val``, calibrated on ``train`` (under ``root``)."""
    from tlkit.int8_check import shipped_form

    verdict = {"ok": ok, "acc_fp32": 0.9, "interval": [0.8, 0.95], "acc_int8": 0.88 if ok else 0.7, "n_val": 24,
               "calibration": "unused", "calibration_files": int8_mod.calibration_set(train).files}
    path.write_text(json.dumps({int8_mod.int8_key(model, body_fingerprint(model), val): shipped_form(verdict, root)}))


def test_a_shipped_verdict_works_in_another_copy_of_the_dataset_and_only_with_the_same_photos(
        tiny_images, tmp_path, monkeypatch):
    import shutil

    from tlkit.data import image_folder

    model = _model()
    train, val = _splits(image_folder(tiny_images), model)
    shipped = tmp_path / "int8_verdicts.json"
    _ship(shipped, model, train, val, tiny_images)
    assert json.loads(shipped.read_text()) and "train/" in shipped.read_text()  # relative names
    monkeypatch.setattr(int8_mod, "SHIPPED_VERDICTS", shipped)
    copy = shutil.copytree(tiny_images, tmp_path / "elsewhere" / "tiny_images")
    train2, val2 = _splits(image_folder(copy), model)
    cache = tmp_path / "cache"
    f = extract_features(model, val2, cache=False, cache_dir=cache, engine="auto", progress=False)
    assert (f.engine, f.precision) == ("onnxruntime", "int8")
    calib = int8_mod.shipped_calibration(json.loads(shipped.read_text()).popitem()[1], val2)
    assert calib is not None and all(p.startswith(str(copy)) for p in calib.files)
    assert len(calib) == int8_mod.CALIBRATION_IMAGES == 8  # evenly spaced over the 24 training photos
    assert {calib.files[0].split("/")[-2], calib.files[-1].split("/")[-2]} == set(train.classes)  # both classes
    # one calibration photo differs in this copy: its content hash no longer matches, so fp32
    victim = copy / calib.files[3][len(str(copy)) + 1:]
    victim.write_bytes(victim.read_bytes() + b"\0")
    f = extract_features(model, val2, cache=False, cache_dir=cache, engine="auto", progress=False)
    assert f.precision != "int8"
    # a shipped "no", or no photos beside the dataset at all: fp32
    _ship(shipped, model, train, val, tiny_images, ok=False)
    assert extract_features(model, val, cache=False, cache_dir=cache, engine="auto", progress=False).precision != "int8"
    _ship(shipped, model, train, val, tiny_images)
    lone = int8_mod.ImageDataset(["/nowhere/x.jpg"], [0], val.classes, val.transform)
    assert int8_mod.shipped_calibration(json.loads(shipped.read_text()).popitem()[1], lone) is None


def test_a_local_check_overrides_the_shipped_verdict(tiny_datasets, tiny_images, tmp_path, monkeypatch):
    model = _model()
    train, val = _splits(tiny_datasets, model)
    shipped = tmp_path / "int8_verdicts.json"
    _ship(shipped, model, train, val, tiny_images)
    monkeypatch.setattr(int8_mod, "SHIPPED_VERDICTS", shipped)
    cache = tmp_path / "cache"
    cache.mkdir()
    key = int8_mod.int8_key(model, body_fingerprint(model), val)
    (cache / "int8-choice.json").write_text(json.dumps({key: {"ok": False}}))  # this machine's check said no
    assert extract_features(model, val, cache=False, cache_dir=cache, engine="auto", progress=False).precision != "int8"
    (cache / "int8-choice.json").unlink()
    assert extract_features(model, val, cache=False, cache_dir=cache, engine="auto", progress=False).precision == "int8"


def test_the_shipped_verdicts_are_consistent_and_match_the_course_setting(cats_dogs_dir):
    """tlkit/int8_verdicts.json: every entry's "ok" follows from its numbers, and the Lite0 entry is reachable."""
    from tlkit.backbones import load_backbone
    from tlkit.data import cats_vs_dogs
    from tlkit.freezing import freeze

    shipped = json.loads(int8_mod.SHIPPED_VERDICTS.read_text())
    assert shipped
    for key, v in shipped.items():
        name, fp, tf_hash, classes, quantizer = key.split("|")
        assert quantizer == int8_mod.QUANTIZER  # a verdict about another quantizer's graphs would never be used
        assert v["ok"] == (v["acc_int8"] >= v["interval"][0]) and v["interval"][0] <= v["acc_fp32"] <= v["interval"][1]
        assert len(v["calibration_files"]) == int8_mod.CALIBRATION_IMAGES and len(v["calibration_sha1"]) == 40
        assert all(not f.startswith("/") and ".." not in f for f in v["calibration_files"])
    train, val = cats_vs_dogs(download=False)
    model = load_backbone("efficientnet_lite0", num_classes=2, class_names=train.classes)
    freeze(model, model.group_names[:-1])
    val = val.with_transform(transforms_for(model, train=False))
    key = int8_mod.int8_key(model, body_fingerprint(model), val)
    assert key in shipped and shipped[key]["ok"]
    calib = int8_mod.shipped_calibration(shipped[key], val)
    assert calib is not None and len(calib) == int8_mod.CALIBRATION_IMAGES
    assert all(f.startswith(str(cats_dogs_dir)) for f in calib.files)
