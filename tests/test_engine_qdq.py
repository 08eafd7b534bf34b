"""tlkit's own int8 quantizer for frozen parts (tlkit.engine_qdq): fused graph, ranges, numbers, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tlkit.engine_qdq import (activation_params, _basic_optimised, _calibrate, _drop_clips,  # noqa: E402
                              quantize_frozen, weight_params)
from tlkit.export.onnx_file import _torch_export  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Block(nn.Module):
    """Conv-BN-ReLU6, depthwise Conv-BN-ReLU6, 1x1 projection with a residual Add, then an optional Hardtanh."""

    def __init__(self, c: int = 24, hardtanh: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c), nn.BatchNorm2d(c), nn.ReLU6())
        self.pw = nn.Conv2d(c, c, 1)
        self.tail = nn.Hardtanh(-1.0, 1.0) if hardtanh else nn.Identity()

    def forward(self, x):
        x = self.stem(x)
        x = self.tail(x + self.pw(self.dw(x)))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def _export(tmp_path, **kw):
    torch.manual_seed(0)
    model = Block(**kw).eval()
    for bn in model.modules():  # non-trivial BatchNorm statistics, folded into the convolutions by the exporter
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "fp32.onnx"
    _torch_export(model, path, 32)
    return model, path


def _images(n: int, seed: int) -> np.ndarray:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()


def _session(path, level="ORT_ENABLE_ALL", optimised_to=None):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if optimised_to:
        opts.optimized_model_filepath = str(optimised_to)
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def test_the_int8_graph_is_fused_by_onnx_runtime_and_close_to_fp32(tmp_path):
    _, fp32 = _export(tmp_path)
    out = quantize_frozen(fp32, [_images(6, 0)], tmp_path / "int8.onnx")
    saved = onnx.load(str(out))
    ops = [n.op_type for n in saved.graph.node]
    assert "Clip" not in ops and ops.count("Conv") == 3 and ops.count("Add") == 1
    int8_weights = [t for t in saved.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 3
    assert not [t for t in saved.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4]
    _session(out, optimised_to=tmp_path / "fused.onnx")
    fused = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert fused.count("QLinearConv") == 3 and fused.count("QLinearAdd") == 1  # ORT runs it in int8
    x = _images(8, 1)
    ref = _session(fp32).run(None, {"images": x})[0]
    got = _session(out).run(None, {"images": x})[0]
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert got.shape == ref.shape == (8, 24) and cos.min() > 0.99
    assert not np.allclose(got, ref, atol=1e-5)  # quantized for real


def test_calibration_ranges_are_those_of_the_unoptimised_graph(tmp_path):
    _, fp32 = _export(tmp_path)
    optimised = _basic_optimised(fp32)
    graph = onnx.load_from_string(optimised).graph
    names = [n.output[0] for n in graph.node if n.op_type in ("Conv", "Clip", "Add")]
    x = _images(5, 2)
    ranges = _calibrate(onnx.load_from_string(optimised), names, [x[:3], x[3:]])  # 2 batches, chunks of 2
    probe = onnx.load_from_string(optimised)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    plain = _session(probe.SerializeToString(), "ORT_DISABLE_ALL").run(names, {"images": x})
    for name, v in zip(names, plain):
        assert ranges[name] == pytest.approx((float(v.min()), float(v.max())), rel=1e-5, abs=1e-6), name


def test_relu6_after_a_conv_or_add_is_dropped_but_other_clips_stay(tmp_path):
    _, fp32 = _export(tmp_path, hardtanh=True)
    graph = onnx.load_from_string(_basic_optimised(fp32)).graph
    before = [n for n in graph.node if n.op_type == "Clip"]
    assert len(before) == 3  # two ReLU6 and the Hardtanh(-1, 1)
    _drop_clips(graph)
    clips = [n for n in graph.node if n.op_type == "Clip"]
    assert len(clips) == 1  # Hardtanh clips at -1, which uint8 cannot express: kept
    producer = {o: n.op_type for n in graph.node for o in n.output}
    dropped = [c.output[0] for c in before if c.output[0] != clips[0].output[0]]
    assert len(dropped) == 2 and all(producer[name] == "Conv" for name in dropped)  # the Conv writes its output


def test_weight_and_activation_parameters():
    w = np.array([[[[0.5]], [[-2.0]]], [[[0.0]], [[0.0]]], [[[1e-3]], [[-1e-3]]]], np.float32)  # (3, 2, 1, 1)
    q, scale = weight_params(w)
    assert q.dtype == np.int8 and q.reshape(3, 2).tolist() == [[32, -127], [0, 0], [127, -127]]
    assert scale.dtype == np.float32 and scale.tolist() == pytest.approx([2 / 127, 1.0, 1e-3 / 127])
    s, z = activation_params(-1.0, 3.0)
    assert s == pytest.approx(4 / 255) and z == 64  # 0.0 is exactly representable
    assert activation_params(0.5, 6.0) == (pytest.approx(6 / 255), 0)  # the range always includes 0
    assert activation_params(0.0, 0.0) == (1.0, 0)  # an all-zero tensor


def test_no_calibration_image_or_nothing_to_quantize_is_a_clear_error(tmp_path):
    _, fp32 = _export(tmp_path)
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_frozen(fp32, [], tmp_path / "int8.onnx")
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_frozen(fp32, [np.zeros((0, 3, 32, 32), np.float32)], tmp_path / "int8.onnx")
    linear = tmp_path / "linear.onnx"
    _torch_export(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)), linear, 32)
    with pytest.raises(ValueError, match="no Conv or Add"):
        quantize_frozen(linear, [_images(2, 0)], tmp_path / "int8.onnx")
    assert not (tmp_path / "int8.onnx").exists()


class Tied(nn.Module):
    """One 1x1 convolution applied twice: two Conv nodes read the same weight."""

    def __init__(self):
        super().__init__()
        self.stem, self.pw = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.pw(torch.relu(self.pw(torch.relu(self.stem(x)))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def test_two_convolutions_sharing_a_weight_get_their_own_int8_copies(tmp_path):
    torch.manual_seed(0)
    fp32 = tmp_path / "tied.onnx"
    _torch_export(Tied().eval(), fp32, 32)
    graph = onnx.load(str(fp32)).graph
    weights = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    assert len(weights) == 3 and len(set(weights)) == 2  # the exporter shares the tied weight
    out = quantize_frozen(fp32, [_images(4, 0)], tmp_path / "int8.onnx")
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved)
    names = [t.name for t in saved.graph.initializer]
    assert len(names) == len(set(names))
    x = _images(6, 1)
    ref, got = _session(fp32).run(None, {"images": x})[0], _session(out).run(None, {"images": x})[0]
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.99
