"""tlkit.export: ONNX export with parity, int8 quantization, latency and distillation (all offline, CPU)."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from imagegen import make_split  # noqa: E402
from tlkit.backbones import list_backbones, load_backbone  # noqa: E402
from tlkit.data import scan_class_folders  # noqa: E402
from tlkit.evaluate import evaluate_split  # noqa: E402
from tlkit.export import (OnnxClassifier, ParityError, check_parity, distill, distillation_loss,  # noqa: E402
                          export_onnx, format_latency_table, measure_latency, quantize_int8, read_metadata,
                          teacher_logits)
from tlkit.export.runtime import require  # noqa: E402

CLASSES = ["cats", "dogs"]


def _model(name: str, seed: int = 0, pretrained: bool = False):
    """A 2-class backbone. Random weights get BatchNorm statistics from one batch of noise: with the
    initial ones (mean 0, var 1) the features vanish and every image gives the same output, which
    would make any parity check pass."""
    torch.manual_seed(seed)
    model = load_backbone(name, pretrained=pretrained, num_classes=2, class_names=CLASSES)
    if not pretrained:
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average: one batch sets the statistics
        with torch.no_grad():
            model.train()(torch.randn(8, 3, 64, 64))
    return model.eval()


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_exports_with_parity_and_a_dynamic_batch(name, tmp_path):
    model = _model(name)
    result = export_onnx(model, tmp_path / f"{name}.onnx", image_size=64)
    assert result.parity.max_abs_diff <= 1e-3 and result.parity.agreement == 1.0 and result.parity.n == 8
    meta = read_metadata(result.path)
    assert meta["image_size"] == 64 and meta["class_names"] == CLASSES and meta["backbone"] == name
    assert meta["mean"] == pytest.approx(list(model.mean)) and meta["std"] == pytest.approx(list(model.std))
    runner = OnnxClassifier(result.path)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # batch 3: not the traced 1
    with torch.no_grad():
        ref = model.eval()(x)
    got = runner(x)
    assert got.shape == (3, 2)
    assert torch.allclose(got, ref, atol=1e-3 * max(1.0, float(ref.abs().max())))  # logits, not only probs
    assert float(ref.softmax(1)[:, 0].std()) > 1e-3  # the images give different outputs: a real check


def test_export_restores_the_models_mode_and_checks_class_names(tmp_path):
    model = _model("mobilenet_v3_small").train()
    export_onnx(model, tmp_path / "m.onnx", image_size=64)
    assert model.training
    with pytest.raises(ValueError, match="3 class names"):
        export_onnx(model, tmp_path / "bad.onnx", image_size=64, class_names=["a", "b", "c"])


def test_parity_on_real_images_and_a_mismatch_raises(tmp_path):
    model = _model("mobilenet_v3_small")
    val = scan_class_folders(make_split(tmp_path / "val", per_class=3, size=48), classes=CLASSES)
    result = export_onnx(model, tmp_path / "m.onnx", image_size=64, parity_images=val)
    assert result.parity.n == 6 and result.parity.source == val.name
    other = _model("mobilenet_v3_small", seed=1)  # different weights: ONNX no longer reproduces it
    with pytest.raises(ParityError, match="does not reproduce"):
        check_parity(other, tmp_path / "m.onnx", val, image_size=64)


def test_a_failed_parity_check_on_export_deletes_the_file(tmp_path, monkeypatch):
    from tlkit.export import onnx_file

    def broken(model, path, size):  # writes a model with other weights than `model`
        real(_model("mobilenet_v3_small", seed=3), path, size)
    real = onnx_file._torch_export
    monkeypatch.setattr(onnx_file, "_torch_export", broken)
    model = _model("mobilenet_v3_small")
    with pytest.raises(ParityError):
        export_onnx(model, tmp_path / "m.onnx", image_size=64)
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install tlkit\[export\]"):
        require("onnx")


def test_evaluate_split_runs_an_onnx_file_with_its_metadata(tmp_path, lite0_64):
    val_dir = make_split(tmp_path / "val", per_class=4, size=48)
    export_onnx(lite0_64, tmp_path / "m.onnx")  # image size from the model: 64
    torch_res = evaluate_split(lite0_64, val_dir)
    onnx_res = evaluate_split(OnnxClassifier(tmp_path / "m.onnx"), val_dir)
    assert onnx_res["n"] == torch_res["n"] == 8
    assert onnx_res["confusion"] == torch_res["confusion"] and onnx_res.keys() == torch_res.keys()


def test_read_metadata_refuses_a_foreign_onnx_file(tmp_path):
    onnx = require("onnx")
    model = _model("mobilenet_v3_small")
    path = export_onnx(model, tmp_path / "m.onnx", image_size=64).path
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="no tlkit metadata"):
        read_metadata(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        read_metadata(tmp_path / "junk.onnx")


def test_int8_of_the_real_lite0_is_at_most_35_percent_and_agrees(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    filters = list(logging.getLogger().filters)
    model = _model("efficientnet_lite0", pretrained=True)  # ImageNet weights from the pip package
    fp32 = export_onnx(model, tmp_path / "lite0.onnx", image_size=96).path
    calib = scan_class_folders(make_split(tmp_path / "train", per_class=8, size=64, seed=1), classes=CLASSES)
    val = scan_class_folders(make_split(tmp_path / "val", per_class=4, size=64, seed=2), classes=CLASSES)
    q = quantize_int8(fp32, calib, tmp_path / "lite0.int8.onnx", validation=val, measure=False)
    assert q.path.is_file() and q.int8_bytes == q.path.stat().st_size
    assert q.size_ratio <= 0.35, q.size_ratio
    assert q.n == 8 and 0.0 <= q.agreement <= 1.0
    assert q.accuracy_fp32 is not None and q.accuracy_int8 is not None
    meta = read_metadata(q.path)
    assert meta["precision"] == "int8" and meta["calibration_images"] == 16 and meta["class_names"] == CLASSES
    onnx = require("onnx")
    ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    assert not [r for r in caplog.records if "onnxruntime" in r.pathname and r.levelno < logging.WARNING]
    assert logging.getLogger().filters == filters  # the quantizer's filter is gone again


def test_the_quantizer_chatter_filter_drops_only_its_info_lines():
    import logging

    from tlkit.export.quantize import _QuantizerChatter

    def record(path, level):
        return logging.LogRecord("root", level, path, 1, "Increased scale[3] for weight", None, None)

    f = _QuantizerChatter()
    ort = "/site-packages/onnxruntime/quantization/qdq_quantizer.py"
    assert not f.filter(record(ort, logging.INFO))
    assert f.filter(record(ort, logging.WARNING))  # its warnings still reach the learner
    assert f.filter(record("/work/tlkit/engine_int8.py", logging.INFO))


def test_latency_rows_for_eager_and_onnx(tmp_path):
    model = _model("mobilenet_v3_small")
    path = export_onnx(model, tmp_path / "m.onnx", image_size=64).path
    eager = measure_latency(model, image_size=64, batch=4, warmup=1, repeats=3)
    ort = measure_latency(path, batch=4, warmup=1, repeats=3)
    for row in (eager, ort):
        assert row.ms_per_image > 0 and row.images_per_s > 0 and row.batch == 4
        assert row.parameters == sum(p.numel() for p in model.parameters())
    assert ort.file_bytes == path.stat().st_size and eager.file_bytes > 0.9 * ort.file_bytes
    assert eager.name == "PyTorch eager fp32" and ort.name == "ONNX Runtime fp32"
    table = format_latency_table([eager, ort])
    assert len(table.splitlines()) == 3 and "img/s (b4)" in table
    json.dumps(eager.as_dict())
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, 64, repeats=0)


def test_distillation_loss_matches_a_hand_computation():
    s, t, y = [1.0, -0.5, 0.2], [2.0, 0.0, -1.0], 2
    T, alpha = 3.0, 0.6

    def softmax(z):
        e = [math.exp(v) for v in z]
        return [v / sum(e) for v in e]
    ps, pt = softmax([v / T for v in s]), softmax([v / T for v in t])
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
    ce = -math.log(softmax(s)[y])
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), temperature=T, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # batch mean over two rows; alpha=0 is plain cross-entropy, alpha=1 the soft term alone
    two = distillation_loss(torch.tensor([s, t]), torch.tensor([t, t]), torch.tensor([y, 0]), T, 1.0)
    assert two.item() == pytest.approx(T * T * kl / 2, rel=1e-5)
    hard = distillation_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), T, 0.0)
    assert hard.item() == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [({"temperature": 0}, "temperature"), ({"alpha": 1.5}, "alpha")])
def test_distillation_loss_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), **kwargs)


def test_teacher_logits_are_cached_and_equal_the_teachers_output(tmp_path):
    teacher = _model("mobilenet_v3_small", seed=2)
    train = scan_class_folders(make_split(tmp_path / "train", per_class=3, size=48), classes=CLASSES)
    first = teacher_logits(teacher, train, image_size=64, cache_dir=tmp_path / "cache")
    second = teacher_logits(teacher, train, image_size=64, cache_dir=tmp_path / "cache")
    assert not first.from_cache and second.from_cache
    assert first.features.shape == (6, 2) and torch.equal(first.features, second.features)
    from tlkit.data import transforms_for
    x = torch.stack([transforms_for(teacher, image_size=64)(__import__("PIL.Image").Image.open(f).convert("RGB"))
                     for f in first.files])
    with torch.no_grad():
        assert torch.allclose(first.features, teacher.eval()(x), atol=1e-4)
    with torch.no_grad():
        teacher.groups["head"][-1].weight.add_(1.0)  # a changed head is another teacher: no stale cache
    assert not teacher_logits(teacher, train, image_size=64, cache_dir=tmp_path / "cache").from_cache


def test_distill_trains_the_students_head_towards_the_teacher(tmp_path):
    from tlkit.data import transforms_for
    from tlkit.features import extract_features
    from tlkit.freezing import freeze

    from tlkit.features import train_head

    teacher, student = _model("mobilenet_v3_small", seed=4), _model("resnet18", seed=5)
    freeze(student, student.group_names[:-1])
    train = scan_class_folders(make_split(tmp_path / "train", per_class=6, size=48), classes=CLASSES)
    # a trained teacher: its head learnt the labels on its own features, so its soft targets carry a signal
    tf = extract_features(teacher, train.with_transform(transforms_for(teacher, image_size=64)), cache=False,
                          progress=False)
    teacher.groups["head"].load_state_dict(train_head(tf, epochs=60, lr=3e-2)[0].state_dict())
    before = student.head[-1].weight.clone()
    out, history = distill(teacher, student, train, temperature=2.0, alpha=1.0, epochs=60, lr=1e-2,
                           teacher_size=64, student_size=48, cache_dir=tmp_path / "cache")
    assert out is student and len(history.rows) == 60
    assert not torch.equal(before, student.head[-1].weight)
    assert history.rows[-1]["train_loss"] < 0.5 * history.rows[0]["train_loss"]
    # alpha=1: the student learnt the teacher's soft targets, so it makes the teacher's choices
    t = teacher_logits(teacher, train, image_size=64, cache_dir=tmp_path / "cache")
    assert t.from_cache  # distill ran the teacher once and cached it
    f = extract_features(student, train.with_transform(transforms_for(student, image_size=48)),
                         cache_dir=tmp_path / "cache", progress=False)
    with torch.no_grad():
        agree = (student.head(f.features).argmax(1) == t.features.argmax(1)).float().mean()
    assert len(set(t.features.argmax(1).tolist())) == 2 and agree >= 0.9
    val = scan_class_folders(make_split(tmp_path / "val", per_class=3, size=48, seed=3), classes=CLASSES)
    _, hist = distill(teacher, student, train, val=val, epochs=3, teacher_size=64, student_size=48,
                      cache_dir=tmp_path / "cache")
    assert [r["epoch"] for r in hist.rows] == [1, 2, 3] and 0.0 <= hist.rows[0]["val_acc"] <= 1.0
    with pytest.raises(ValueError, match="replace_head"):
        distill(teacher, _model("resnet18").replace_head(3), train)


def test_chunked_calibration_gives_the_same_int8_file_as_one_batch(tmp_path, monkeypatch):
    from tlkit.export import quantize as quantize_mod

    onnx = require("onnx")
    path = export_onnx(_model("mobilenet_v3_small"), tmp_path / "m.onnx", image_size=64).path
    batch = [torch.randn(10, 3, 64, 64, generator=torch.Generator().manual_seed(0)).numpy()]
    fed = []
    real_reader = quantize_mod._Reader

    class Counting(real_reader):
        def get_next(self):
            feed = super().get_next()
            fed.append(None if feed is None else len(next(iter(feed.values()))))
            return feed

    monkeypatch.setattr(quantize_mod, "_Reader", Counting)
    chunked = quantize_mod.quantize_batches(path, batch, tmp_path / "chunked.onnx")
    assert fed[:3] == [4, 4, 2]  # 10 images fed 4 at a time (memory), none lost
    monkeypatch.setattr(quantize_mod, "CALIBRATION_CHUNK", 10)
    whole = quantize_mod.quantize_batches(path, batch, tmp_path / "whole.onnx")
    inits = [{t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(p)).graph.initializer}
             for p in (chunked, whole)]
    assert inits[0].keys() == inits[1].keys()
    scales = [k for k in inits[0] if "scale" in k or "zero_point" in k]
    assert len(scales) > 10  # activation ranges (MinMax over all 10 images) are identical
    for k in inits[0]:
        assert (inits[0][k] == inits[1][k]).all(), k


def test_latency_sessions_run_without_a_memory_arena(tmp_path):
    path = export_onnx(_model("mobilenet_v3_small"), tmp_path / "m.onnx", image_size=64).path
    assert OnnxClassifier(path).session.get_session_options().enable_cpu_mem_arena
    lean = OnnxClassifier(path, arena=False)
    assert not lean.session.get_session_options().enable_cpu_mem_arena
    assert lean.run(torch.zeros(2, 3, 64, 64).numpy()).shape == (2, lean.num_classes)


def test_release_memory_collects_garbage_and_trims_the_heap():
    import gc
    import weakref

    from tlkit.device import release_memory

    class Cycle:
        pass

    a = Cycle()
    a.self = a  # only the garbage collector frees a cycle
    ref = weakref.ref(a)
    del a
    gc.disable()
    try:
        trimmed = release_memory()
    finally:
        gc.enable()
    assert ref() is None
    assert isinstance(trimmed, bool)
