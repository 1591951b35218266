"""Small passes over an ONNX ModelProto (in place): drop the exporter's debug metadata,
share identical initializers, set the model's metadata, list its inputs and outputs."""
from __future__ import annotations

import hashlib

import onnx
from onnx import numpy_helper


def strip_debug(proto: onnx.ModelProto) -> int:
    """Remove per-node metadata_props and doc strings (the dynamo exporter records a stack
    trace and an FX node per ONNX node: megabytes on a small model). Returns bytes saved."""
    before = proto.ByteSize()
    for graph in _graphs(proto.graph):
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        graph.doc_string = ""
    return before - proto.ByteSize()


def dedupe_initializers(proto: onnx.ModelProto) -> int:
    """Keep one initializer per distinct (dtype, dims, bytes) and point every use at it.
    Returns the number removed (exporters fold a transposed copy of a weight per use)."""
    keep: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    graph = proto.graph
    graph_io = {v.name for v in graph.input} | {v.name for v in graph.output}
    for init in graph.initializer:
        if init.name in graph_io:
            continue
        raw = numpy_helper.to_array(init).tobytes()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(raw).hexdigest())
        if key in keep:
            rename[init.name] = keep[key]
        else:
            keep[key] = init.name
    if not rename:
        return 0
    kept = [i for i in graph.initializer if i.name not in rename]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for g in _graphs(graph):
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
    dropped = set(rename)
    vi = [v for v in graph.value_info if v.name not in dropped]
    del graph.value_info[:]
    graph.value_info.extend(vi)
    return len(rename)


def set_metadata(proto: onnx.ModelProto, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(k), str(v)


def io_spec(proto: onnx.ModelProto) -> dict:
    """{"inputs": [(name, elem_type name, dims)], "outputs": [...]}; a symbolic dim is
    its name (str), a fixed one an int."""
    inits = {i.name for i in proto.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        return v.name, onnx.TensorProto.DataType.Name(t.elem_type), dims

    return {"inputs": [spec(v) for v in proto.graph.input if v.name not in inits],
            "outputs": [spec(v) for v in proto.graph.output]}


def _graphs(graph: onnx.GraphProto):
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)
