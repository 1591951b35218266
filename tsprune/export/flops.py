"""FLOPs of an ONNX graph: the multiply-adds of its matrix products, from shape inference.

Counted (2 FLOPs per multiply-add):
  MatMul, MatMulInteger, QLinearMatMul, DynamicQuantizeMatMul  2 * prod(output dims) * K
  Gemm                                                         2 * M * N * K
  Conv, ConvInteger, QLinearConv                               2 * prod(output dims) * C_in/group * prod(kernel)
  Attention (opset 23)                                         2 * B * H_q * T_q * T_kv * (D_qk + D_v)
Everything else (norms, activations, softmax) is elementwise and left out: on these models
it is a few percent of the total. Symbolic input dims (batch, context) are fixed to the
values given, then ONNX shape inference runs; when it cannot resolve a counted node
(Reshape to a computed shape, ops newer than the inference knows), the shapes are read
from one onnxruntime run of the fixed-shape graph with those tensors exposed as outputs.
A counted node whose shapes stay unknown is listed in ``unknown``, never guessed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import onnx

_MATMUL = ("MatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul")
_CONV = ("Conv", "ConvInteger", "QLinearConv")
_COUNTED = frozenset((*_MATMUL, *_CONV, "Gemm", "Attention"))


@dataclass
class FlopCount:
    """total: FLOPs of one run; by_op: per op type; unknown: counted ops without shapes."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    dims: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, flops: int) -> None:
        self.total += int(flops)
        self.by_op[op] = self.by_op.get(op, 0) + int(flops)

    def to_json(self) -> dict:
        return {"total": self.total, "by_op": dict(self.by_op), "unknown": list(self.unknown),
                "dims": dict(self.dims)}


def count_flops(model: onnx.ModelProto | str | os.PathLike, dims: dict[str, int] | None = None,
                *, batch: int = 1) -> FlopCount:
    """FLOPs of one run of ``model`` with its symbolic input dims set by ``dims`` (a dim
    name -> size; the first dim of every input defaults to ``batch``)."""
    proto = onnx.load(str(model), load_external_data=False) if not isinstance(model, onnx.ModelProto) else model
    proto = _fixed(proto, dict(dims or {}), batch)
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {}
    for v in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        shapes[v.name] = _dims(v)
    for init in inferred.graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    out = FlopCount(dims=_input_dims(proto))
    counted = [n for n in inferred.graph.node if n.op_type in _COUNTED]
    missing = {t for n in counted for t in (*n.input, *n.output) if t and shapes.get(t) is None}
    if missing:
        shapes.update(_run_shapes(proto, sorted(missing)))
    for node in counted:
        f = _node_flops(node, shapes)
        if f is None:
            out.unknown.append(node.name or node.op_type)
        else:
            out.add(node.op_type, f)
    return out


def _run_shapes(proto: onnx.ModelProto, names: list[str]) -> dict[str, list[int]]:
    """Shapes of ``names`` from one onnxruntime run of the fixed-shape ``proto`` (random
    inputs; shapes here do not depend on values). {} without onnxruntime."""
    try:  # lazy: onnxruntime is an optional dependency
        import onnxruntime as ort
    except ImportError:
        return {}
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    have = {o.name for o in p.graph.output}
    inits = {i.name for i in p.graph.initializer}
    for n in names:
        if n not in have and n not in inits:
            p.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                 "tensor(double)": np.float64}.get(i.type, np.float32)
        feeds[i.name] = rng.standard_normal(i.shape).astype(dtype)
    wanted = [o.name for o in sess.get_outputs() if o.name in set(names)]
    return {n: list(v.shape) for n, v in zip(wanted, sess.run(wanted, feeds))}


def _dims(v) -> list[int] | None:
    t = v.type.tensor_type
    if not t.HasField("shape"):
        return None
    d = [x.dim_value if x.HasField("dim_value") else None for x in t.shape.dim]
    return None if any(x is None for x in d) else d


def _input_dims(proto) -> dict[str, int]:
    return {v.name: _dims(v) for v in proto.graph.input}


def _fixed(proto: onnx.ModelProto, dims: dict[str, int], batch: int) -> onnx.ModelProto:
    """A copy with every symbolic input dim set and stale shape annotations dropped."""
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    inits = {i.name for i in p.graph.initializer}
    for v in p.graph.input:
        if v.name in inits:
            continue
        for i, d in enumerate(v.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                continue
            name = d.dim_param
            size = dims.get(name, batch if i == 0 else None)
            if size is None:
                raise ValueError(f"count_flops: input {v.name!r} dim {i} ({name or 'unnamed'}) needs a size: "
                                 f"pass dims={{{name!r}: N}}")
            d.Clear()
            d.dim_value = int(size)
    del p.graph.value_info[:]
    for v in p.graph.output:
        v.type.tensor_type.ClearField("shape")
    return p


def _node_flops(node, shapes) -> int | None:
    ins = [shapes.get(n) if n else None for n in node.input]
    outs = [shapes.get(n) for n in node.output]
    op = node.op_type
    if op in _MATMUL:
        a = ins[0]
        b = ins[3] if op == "QLinearMatMul" else ins[1]
        if a is None or b is None or outs[0] is None:
            return None
        return 2 * math.prod(outs[0]) * int(a[-1])
    if op == "Gemm":
        a, b = ins[0], ins[1]
        if a is None or b is None:
            return None
        attrs = {x.name: x.i for x in node.attribute}
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
        n = b[0] if attrs.get("transB", 0) else b[1]
        return 2 * m * n * k
    if op in _CONV:
        w = ins[3] if op == "QLinearConv" else ins[1]
        if w is None or outs[0] is None:
            return None
        return 2 * math.prod(outs[0]) * math.prod(w[1:])
    if op == "Attention":
        q, k, v = ins[0], ins[1], ins[2]
        if q is None or k is None or v is None:
            return None
        if len(q) == 4:  # (B, H, T, D)
            b, h, tq, d = q
            tk, dv = k[2], v[3]
        else:            # (B, T, H*D) with q_num_heads / kv_num_heads
            attrs = {x.name: x.i for x in node.attribute}
            h, hkv = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
            if not h or not hkv:
                return None
            b, tq, d = q[0], q[1], q[2] // h
            tk, dv = k[1], v[2] // hkv
        return 2 * b * h * tq * tk * (d + dv)
    return None
