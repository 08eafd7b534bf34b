"""tlkit's own static int8 (QDQ) quantizer for the frozen part of a CNN, built for a cold start.

ONNX Runtime's ``quantize_static`` (what :func:`tlkit.export.quantize.quantize_int8`
uses for exported classifiers) calibrates on an unoptimised graph and quantizes
the weights one channel at a time in Python: about 1.5 s for EfficientNet-Lite0
on 2 cores, a tenth of a cold feature pass. The frozen pass only needs the common
case, so this module does it directly, in about 0.3 s:

1. ONNX Runtime's basic graph optimisation folds the exporter's padding
   arithmetic into the convolutions (``Conv``, ``Clip``, ``Add``, pooling remain);
2. one run of that graph on the calibration images records the min and max of
   every activation a quantized operator reads or writes (MinMax calibration);
3. activations become uint8 (asymmetric, per tensor), convolution weights int8
   (symmetric, per output channel, range -127..127) and biases int32, written as
   QuantizeLinear / DequantizeLinear pairs that ONNX Runtime fuses into
   ``QLinearConv`` and ``QLinearAdd``;
4. a ``Relu`` or ``Clip(0, max)`` after a convolution or an addition is dropped: the
   uint8 range calibrated on its output lies inside ``[0, max]``, so the quantization
   clips the same values.

Global average pooling reads the dequantized activations and stays in float, so
the pooled features are not rounded to 256 levels.

Example:
    >>> quantize_frozen("body-fp32.onnx", [x.numpy()], "body-int8.onnx")
    PosixPath('body-int8.onnx')
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


QUANTIZER = "tlkit-qdq-1"  # in int8 cache tags and verdict keys: a new quantizer never reuses old int8 features
QUANTIZED_OPS = ("Conv", "Add")  # inputs and outputs in uint8; every other op stays in float
CALIBRATION_CHUNK = 2  # images per calibration run, all of whose activations come back (Lite0, 224 px: ~40 MB an image)


def require(module: str):
    """onnx or onnxruntime, or an ImportError saying how to install them (:func:`tlkit.export.runtime.require`)."""
    from tlkit.export.runtime import require as _require  # not at import time: tlkit.export imports tlkit.features

    return _require(module)


def quantize_frozen(fp32_path: str | os.PathLike, batches: list[np.ndarray], out_path: str | os.PathLike) -> Path:
    """Writes a static int8 (QDQ) copy of the one-input ONNX file ``fp32_path``, calibrated on ``batches``.

    ``batches``: preprocessed float32 arrays ``(N, 3, S, S)`` (training images).
    Raises ValueError when there is nothing to calibrate on or nothing to quantize.
    """
    if not batches or not sum(len(b) for b in batches):
        raise ValueError("quantize_frozen needs at least one calibration image.")
    onnx = require("onnx")
    optimised = _basic_optimised(fp32_path)
    model = onnx.load_from_string(optimised)
    graph = model.graph
    _drop_clips(graph)  # a dropped Clip's output name is now its Conv's: the same tensor names in both graphs
    tensors = _activations(graph)
    if not tensors:
        raise ValueError(f"{fp32_path} has no Conv or Add to quantize.")
    ranges = _calibrate(onnx.load_from_string(optimised), tensors, batches)  # with the Clips: clipped ranges
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type == "Conv":
            nodes.extend(_quantize_conv_params(node, inits, ranges, graph))
        nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    _insert_qdq(graph, tensors, ranges)
    _drop_unused_initializers(graph)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path


def _basic_optimised(path: str | os.PathLike) -> bytes:
    """The model after ONNX Runtime's basic optimisations (constant folding, Pad fused into Conv), as bytes."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    out = Path(path).with_name(f"{Path(path).stem}.basic{os.getpid()}.onnx")
    opts.optimized_model_filepath = str(out)
    try:
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _drop_clips(graph) -> None:
    """Removes each ``Relu`` or ``Clip(0, max)`` that is the only reader of a Conv's or an Add's output.

    The Conv or Add then writes the activation's output, whose calibrated uint8 range
    starts at 0 and ends at most at ``max``: quantizing clips the same values.
    """
    inits = {t.name: t for t in graph.initializer}
    users, outputs = _consumers(graph), {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    keep = []
    for node in graph.node:
        src = producer.get(node.input[0]) if node.op_type in ("Clip", "Relu") else None
        if src is not None and src.op_type in QUANTIZED_OPS and len(users[node.input[0]]) == 1 \
                and node.input[0] not in outputs and (node.op_type == "Relu" or _clip_min(node, inits) == 0.0):
            src.output[0] = node.output[0]
            continue
        keep.append(node)
    graph.ClearField("node")
    graph.node.extend(keep)


def _drop_unused_initializers(graph) -> None:
    """Removes initializers no node reads (the float weights that became int8)."""
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)


def _clip_min(node, inits) -> float | None:
    numpy_helper = require("onnx.numpy_helper")
    if len(node.input) > 1 and node.input[1]:
        t = inits.get(node.input[1])
        return None if t is None else float(numpy_helper.to_array(t))
    for a in node.attribute:  # opset < 11 kept min as an attribute
        if a.name == "min":
            return float(a.f)
    return None


def _activations(graph) -> list[str]:
    """The float tensors to quantize: inputs (data, not weights) and outputs of every Conv and Add."""
    inits = {t.name for t in graph.initializer}
    names: list[str] = []
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS:
            data_inputs = node.input[:1] if node.op_type == "Conv" else node.input
            for name in [*data_inputs, node.output[0]]:
                if name and name not in inits and name not in names:
                    names.append(name)
    return names


def _calibrate(probe, tensors: list[str], batches: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """``{tensor: (min, max)}`` over the calibration images: ``probe`` (changed here) run once with extra outputs.

    The session is fully optimised (a tensor that is a graph output keeps its values),
    which runs 2.5 times as fast as the unoptimised graph ONNX Runtime's calibrator uses.
    """
    from tlkit.export.runtime import open_session

    helper = require("onnx.helper")
    outputs = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in outputs:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = open_session(probe.SerializeToString(), arena=False)  # one-off runs: the activations given back
    feed = session.get_inputs()[0].name
    lo = {n: np.inf for n in tensors}
    hi = {n: -np.inf for n in tensors}
    for batch in batches:
        for i in range(0, len(batch), CALIBRATION_CHUNK):
            values = session.run(tensors, {feed: np.ascontiguousarray(batch[i:i + CALIBRATION_CHUNK], np.float32)})
            for name, v in zip(tensors, values):
                lo[name], hi[name] = min(lo[name], float(v.min())), max(hi[name], float(v.max()))
            del values
    return {n: (lo[n], hi[n]) for n in tensors}


def activation_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """uint8 scale and zero point for values in ``[lo, hi]`` (the range always includes 0).

    Example:
        >>> activation_params(0.0, 6.0)
        (np.float32(0.023529412), np.uint8(0))
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
    zero = np.uint8(np.clip(np.round(-lo / float(scale)), 0, 255))
    return scale, zero


def weight_params(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel int8 weights (symmetric, -127..127) and their float32 scales.

    Example:
        >>> q, s = weight_params(np.array([[1.0, -0.5], [0.0, 0.0]], np.float32))
        >>> q.tolist(), s.tolist()
        ([[127, -64], [0, 0]], [0.007874015718698502, 1.0])
    """
    absmax = np.abs(w.reshape(len(w), -1)).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale


def _quantize_conv_params(node, inits: dict, ranges: dict, graph) -> list:
    """DequantizeLinear nodes for a Conv's int8 weight and int32 bias; rewires the Conv to read them."""
    helper, numpy_helper = require("onnx.helper"), require("onnx.numpy_helper")
    w_name = node.input[1]
    if w_name not in inits:
        return []  # a weight computed at run time: the Conv stays in float
    w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
    q, w_scale = weight_params(w)
    in_scale, _ = activation_params(*ranges[node.input[0]])
    own = node.output[0]  # names from the Conv's output, which is unique, even if two Convs share a weight
    new = [numpy_helper.from_array(q, f"{own}_w_q"), numpy_helper.from_array(w_scale, f"{own}_w_scale"),
           numpy_helper.from_array(np.zeros(len(w), np.int8), f"{own}_w_zp")]
    made = [helper.make_node("DequantizeLinear", [f"{own}_w_q", f"{own}_w_scale", f"{own}_w_zp"],
                             [f"{own}_w_dq"], axis=0)]
    node.input[1] = f"{own}_w_dq"
    if len(node.input) > 2 and node.input[2] in inits:
        b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        b_scale = (np.float64(in_scale) * w_scale.astype(np.float64)).astype(np.float32)
        bq = np.clip(np.round(b / b_scale), -2**31, 2**31 - 1).astype(np.int32)
        new += [numpy_helper.from_array(bq, f"{own}_b_q"), numpy_helper.from_array(b_scale, f"{own}_b_scale"),
                numpy_helper.from_array(np.zeros(len(bq), np.int32), f"{own}_b_zp")]
        made.append(helper.make_node("DequantizeLinear", [f"{own}_b_q", f"{own}_b_scale", f"{own}_b_zp"],
                                     [f"{own}_b_dq"], axis=0))
        node.input[2] = f"{own}_b_dq"
    graph.initializer.extend(new)
    return made


def _insert_qdq(graph, tensors: list[str], ranges: dict) -> None:
    """A QuantizeLinear -> DequantizeLinear pair on each tensor; its readers read the dequantized copy."""
    helper, numpy_helper = require("onnx.helper"), require("onnx.numpy_helper")
    readers = _consumers(graph)
    position = {o: i for i, n in enumerate(graph.node) for o in n.output}
    graph_inputs = {i.name for i in graph.input}
    pairs: dict[int, list] = {}
    for name in tensors:
        scale, zero = activation_params(*ranges[name])
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
                                  numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_zp")])
        for node in readers.get(name, []):
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = f"{name}_dq"
        made = [helper.make_node("QuantizeLinear", [name, f"{name}_scale", f"{name}_zp"], [f"{name}_q"]),
                helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"], [f"{name}_dq"])]
        pairs.setdefault(-1 if name in graph_inputs else position[name], []).extend(made)
    nodes = list(pairs.get(-1, []))
    for i, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(pairs.get(i, []))
    graph.ClearField("node")
    graph.node.extend(nodes)
