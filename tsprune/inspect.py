"""`tsprune inspect PATH`: per-layer structure and parameter counts of a model directory
(dense or pruned), a bundled model name, or an exported ONNX graph; a table, or --json.

A pruned model is shown against its dense architecture (built from its config.json on
the meta device: no memory, no weights), cell by cell as ``pruned/dense``. An ONNX graph
is read without running it: each MatMul/Gemm whose weight is an initializer is assigned
to its module (the exporter's ``pkg.torch.onnx.name_scopes`` node metadata, else the
weight's name) and grouped per layer (the first numeric component of the module path).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from tsprune.errors import UserError

ALLOWED = "a model directory (config.json + weights), a bundled model name, or an .onnx file"


def _table(rows: list[dict], keys: list[str] | None = None, left: tuple[str, ...] = ()) -> str:
    """Columns right-aligned (numbers), those named in ``left`` left-aligned."""
    if not rows:
        return "(no layers)"
    keys = keys or list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]

    def fmt(values):
        return "  ".join(v.ljust(w) if k in left else v.rjust(w)
                         for k, v, w in zip(keys, values, widths)).rstrip()
    head = fmt(keys)
    body = [fmt(row) for row in cells]
    return "\n".join([head, "-" * len(head), *body])


def _cell(v) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


# ---- model directories -----------------------------------------------------------------
def _dense_reference(m) -> tuple[list[dict], int] | None:
    """describe() rows and parameter count of the dense architecture of a pruned model."""
    # lazy: torch is heavy (tsprune.checkpoint imports it too); an .onnx file is inspected without it
    import torch

    from tsprune.checkpoint import read_config
    try:
        config = read_config(Path(m.source))
        with torch.device("meta"):
            module = m.family.build(config)
        return m.family.describe(module), sum(p.numel() for p in module.parameters())
    except Exception:  # noqa: BLE001 - the reference is a courtesy; inspect works without it
        return None


def inspect_model(path) -> dict:
    """{"kind": "model", "path", "family", "pruned", "params", "block_params", "layers",
    and for a pruned model "params_dense", "sparsity", "dense_layers"}."""
    from tsprune.model import load  # lazy: pulls torch; an .onnx file is inspected without it
    try:
        m = load(path)
    except UserError as e:
        msg = str(e)
        raise UserError("inspect: " + msg.split(": ", 1)[1] if msg.startswith("--model: ") else msg) from None
    layers = m.describe()
    info = {"kind": "model", "path": str(m.source), "family": m.family.name, "pruned": m.pruned,
            "params": m.num_params(), "block_params": sum(r.get("params", 0) for r in layers),
            "layers": layers}
    if m.pruned:
        ref = _dense_reference(m)
        if ref is not None:
            info["dense_layers"], info["params_dense"] = ref
            info["sparsity"] = 1.0 - info["params"] / info["params_dense"]
    return info


def _model_text(info: dict) -> str:
    kind = "pruned" if info["pruned"] else "dense"
    head = f"{info['path']}: {info['family']} ({kind}), {info['params']:,} parameters"
    if "params_dense" in info:
        head += f" (dense {info['params_dense']:,}, sparsity {info['sparsity']:.1%})"
    other = info["params"] - info["block_params"]
    head += f"\n{info['block_params']:,} in the {len(info['layers'])} blocks' Linears, {other:,} elsewhere"
    rows, dense = info["layers"], info.get("dense_layers")
    if dense and len(dense) == len(rows):
        keys = list(dict.fromkeys(k for r in rows + dense for k in r))
        rows = [{k: (_cell(p.get(k, 0)) if p.get(k, 0) == d.get(k, 0) or k == "layer"
                     else f"{_cell(p.get(k, 0))}/{_cell(d.get(k, 0))}") for k in keys}
                for p, d in zip(rows, dense)]
        head += "\n(pruned/dense where they differ)"
    return head + "\n" + _table(rows)


# ---- ONNX graphs -----------------------------------------------------------------------
_LAYER = re.compile(r"\.(\d+)(?:\.|$)")


def _scope(node) -> str | None:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)  # a Python list repr of module paths
            except (ValueError, SyntaxError):
                return None
            mods = [s for s in scopes[:-1] if s]  # the last entry is the op itself
            return mods[-1] if mods else None
    return None


_WEIGHT_SUFFIX = re.compile(r"\.(weight|weight_t|w)$")


def _onnx_layers(proto, inits: dict) -> list[dict] | None:
    """Per layer: the Linear weights (module, out x in) found as MatMul/Gemm initializers.

    The module path of a weight is the exporter's name scope of its node when recorded,
    else the initializer's own name without a ``.weight``/``.weight_t`` suffix (tsprune's
    family export graphs name them ``layers.3.fc1.weight_t``). None when no weight can be
    placed in a layer (the optimizer renamed them and the scopes were stripped)."""
    seen: dict[str, tuple[str, int, int]] = {}
    for n in proto.graph.node:
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        if len(w.dims) != 2 or w.name in seen:
            continue
        trans_b = any(a.name == "transB" and a.i for a in n.attribute) if n.op_type == "Gemm" else False
        out_f, in_f = (w.dims[0], w.dims[1]) if trans_b else (w.dims[1], w.dims[0])
        path = _scope(n) or _WEIGHT_SUFFIX.sub("", w.name)
        seen[w.name] = (path, int(out_f), int(in_f))
    layers: dict[int, dict] = {}
    for path, out_f, in_f in seen.values():
        full = "." + path
        mt = _LAYER.search(full)
        if not mt:
            continue
        i = int(mt.group(1))
        row = layers.setdefault(i, {"layer": i, "linears": 0, "params": 0, "shapes": []})
        row["linears"] += 1
        row["params"] += out_f * in_f
        row["shapes"].append(f"{full[mt.end():] or path}:{out_f}x{in_f}")  # name within the layer
    return [layers[i] for i in sorted(layers)] or None


def inspect_onnx(path: Path) -> dict:
    # lazy: numpy and onnx are heavy and only ONNX graphs need them
    import numpy as np
    import onnx
    try:
        proto = onnx.load(str(path))
        # protobuf parses an empty file, or one cut at a field boundary, without complaint:
        # a graph and an opset are required, and the checker catches dangling references
        if not proto.HasField("graph") or not proto.opset_import:
            raise ValueError("no graph or no opset (empty or truncated)")
        onnx.checker.check_model(str(path))  # by path: graphs over 2 GB too
    except Exception as e:  # noqa: BLE001 - any parse failure is a user error here
        detail = " ".join(str(e).split())[:160]
        raise UserError(f"inspect: {path} is not a readable ONNX file ({type(e).__name__}"
                        f"{': ' + detail if detail else ''})") from None
    inits = {i.name: i for i in proto.graph.initializer}
    ops: dict[str, int] = {}
    for n in proto.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {"kind": "onnx", "path": str(path),
            "opset": [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")],
            "params": int(sum(int(np.prod(i.dims)) for i in inits.values())),
            "bytes": path.stat().st_size,
            "inputs": {i.name: dims(i) for i in proto.graph.input},
            "outputs": {o.name: dims(o) for o in proto.graph.output},
            "metadata": {p.key: p.value for p in proto.metadata_props},
            "layers": _onnx_layers(proto, inits),
            "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}


def _onnx_text(info: dict) -> str:
    meta = info["metadata"]
    lines = [f"{info['path']}: ONNX opset {','.join(map(str, info['opset']))}, "
             f"{info['params']:,} initializer values, {info['bytes'] / 1e6:.2f} MB"
             + (f", {meta['family']} (tsprune {meta.get('tsprune_version', '?')})" if "family" in meta else ""),
             *([f"the model had {int(meta['model_params']):,} parameters: a graph holds only the "
                f"weights its forecast reads (an unused head is dropped), plus constants"]
               if meta.get("model_params", "").isdigit() else []),
             "inputs  " + ", ".join(f"{k} {v}" for k, v in info["inputs"].items()),
             "outputs " + ", ".join(f"{k} {v}" for k, v in info["outputs"].items()),
             "metadata " + ", ".join(f"{k}={v if len(v) <= 40 else v[:37] + '...'}" for k, v in meta.items()),
             "ops " + ", ".join(f"{k} {v}" for k, v in list(info["ops"].items())[:15])]
    if info["layers"]:
        rows = [{**r, "shapes": " ".join(r["shapes"])} for r in info["layers"]]
        lines.append(_table(rows, ["layer", "linears", "params", "shapes"], left=("shapes",)))
    elif info["layers"] is None:
        lines.append("(no per-layer view: neither node name scopes nor weight names place the weights in layers)")
    return "\n".join(lines)


# ---- entry point -----------------------------------------------------------------------
def inspect_info(path) -> dict:
    """The inspection of ``path`` as a dict (what --json prints); UserError (one line)
    when ``path`` is not a model directory, a bundled model name or an .onnx file."""
    p = Path(path)
    if p.suffix == ".onnx":
        if not p.is_file():
            raise UserError(f"inspect: {str(path)!r} does not exist; expected {ALLOWED}")
        return inspect_onnx(p)
    if p.is_file():
        raise UserError(f"inspect: {str(path)!r} is a file but not an .onnx graph; expected {ALLOWED}")
    if p.is_dir() and not (p / "config.json").exists():
        raise UserError(f"inspect: {str(path)!r} has no config.json; expected {ALLOWED}")
    if not p.exists() and ("/" in str(path) or str(path).startswith(".")):
        raise UserError(f"inspect: {str(path)!r} does not exist; expected {ALLOWED}")
    return inspect_model(path)


def inspect_path(path, as_json: bool = False) -> str:
    """What `tsprune inspect` prints: a table, or JSON with ``as_json``."""
    info = inspect_info(path)
    if as_json:
        return json.dumps(info, indent=1)
    return _model_text(info) if info["kind"] == "model" else _onnx_text(info)
