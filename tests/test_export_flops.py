"""FLOPs counter on hand-built graphs with known counts, and the runtime helper."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from tsprune.export.flops import count_flops  # noqa: E402


def _init(name, *shape):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _known_graph(opset=23):
    """x (batch, 3, 4) @ W (4, 5) -> (batch, 3, 5); Gemm (3, 4)x(6, 4)^T; Conv 3->16 3x3 on
    8x8 (pad 1); Attention q/k/v (batch, 2, 7, 8) with v dim 6."""
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["y"]),
        h.make_node("Gemm", ["a", "g"], ["gy"], transB=1),
        h.make_node("Conv", ["img", "k"], ["cy"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["cy"], ["cr"]),
    ]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, ["batch", 3, 4]),
              h.make_tensor_value_info("a", T.FLOAT, [3, 4]),
              h.make_tensor_value_info("img", T.FLOAT, ["batch", 3, 8, 8])]
    outputs = [h.make_tensor_value_info(n, T.FLOAT, None) for n in ("y", "gy", "cr")]
    if opset >= 23:
        nodes.append(h.make_node("Attention", ["q", "kk", "v"], ["ay"]))
        inputs += [h.make_tensor_value_info("q", T.FLOAT, ["batch", 2, 7, 8]),
                   h.make_tensor_value_info("kk", T.FLOAT, ["batch", 2, 7, 8]),
                   h.make_tensor_value_info("v", T.FLOAT, ["batch", 2, 7, 6])]
        outputs.append(h.make_tensor_value_info("ay", T.FLOAT, None))
    g = h.make_graph(nodes, "known", inputs, outputs, [_init("w", 4, 5), _init("g", 6, 4), _init("k", 16, 3, 3, 3)])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def test_counts_on_known_graph():
    m = _known_graph()
    c1 = count_flops(m, batch=1)
    c4 = count_flops(m, batch=4)
    matmul, gemm, conv = 2 * 3 * 4 * 5, 2 * 3 * 6 * 4, 2 * (16 * 8 * 8) * (3 * 3 * 3)
    attention = 2 * 2 * 7 * 7 * (8 + 6)
    assert c1.by_op == {"MatMul": matmul, "Gemm": gemm, "Conv": conv, "Attention": attention}
    assert c1.total == matmul + gemm + conv + attention and not c1.unknown
    assert c4.by_op["MatMul"] == 4 * matmul and c4.by_op["Gemm"] == gemm    # Gemm has no batch axis
    assert c4.by_op["Conv"] == 4 * conv and c4.by_op["Attention"] == 4 * attention


def test_shapes_from_onnxruntime_when_inference_cannot():
    """Reshape to a computed shape: ONNX shape inference loses the dims, one ORT run finds them."""
    pytest.importorskip("onnxruntime")
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
             h.make_node("Div", ["n", "four"], ["rows"]),
             h.make_node("Concat", ["rows", "four"], ["shape"], axis=0),
             h.make_node("Reshape", ["x", "shape"], ["x2"]),
             h.make_node("MatMul", ["x2", "w"], ["y"])]
    g = h.make_graph(nodes, "reshape", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "length"])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     [_init("w", 4, 5), numpy_helper.from_array(np.array([4], np.int64), "four")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    c = count_flops(m, {"length": 12}, batch=2)
    assert c.by_op == {"MatMul": 2 * (2 * 12 // 4) * 4 * 5} and not c.unknown
    with pytest.raises(ValueError, match="length"):
        count_flops(m, batch=2)


def test_runtime_provider_choice(monkeypatch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from tsprune.export.runtime import CUDA, make_session, provider, requested_device
    path = tmp_path / "m.onnx"
    onnx.save(_known_graph(18), str(path))
    monkeypatch.delenv("TSPRUNE_ORT_DEVICE", raising=False)
    assert requested_device() == "auto"
    sess = make_session(path, threads=1)
    expected = CUDA if CUDA in ort.get_available_providers() else "CPUExecutionProvider"
    assert provider(sess) in (expected, "CPUExecutionProvider")
    assert provider(make_session(path, "cpu")) == "CPUExecutionProvider"
    monkeypatch.setenv("TSPRUNE_ORT_DEVICE", "cpu")
    assert requested_device() == "cpu" and requested_device("cuda") == "cuda"   # argument first
    monkeypatch.setenv("TSPRUNE_ORT_DEVICE", "tpu")
    with pytest.raises(ValueError, match="TSPRUNE_ORT_DEVICE"):
        make_session(path)
    if CUDA not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            make_session(path, "cuda")
