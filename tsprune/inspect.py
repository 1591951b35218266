"""`tsprune inspect`: per-layer structure and parameter counts of a model directory
(dense or pruned) or of an ONNX graph."""
from __future__ import annotations

import json
from pathlib import Path

from tsprune.errors import UserError


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(no layers)"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    head = "  ".join(k.rjust(widths[k]) for k in keys)
    body = ["  ".join(str(r.get(k, "")).rjust(widths[k]) for k in keys) for r in rows]
    return "\n".join([head, "-" * len(head), *body])


def inspect_model(path) -> dict:
    from tsprune.model import load
    m = load(path)
    return {"path": str(m.source), "family": m.family.name, "pruned": m.pruned,
            "params": m.num_params(), "layers": m.describe()}


def inspect_onnx(path: Path) -> dict:
    import onnx
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a user error here
        raise UserError(f"inspect: {path} is not a readable ONNX file ({type(e).__name__})") from None
    inits = {i.name: i for i in proto.graph.initializer}
    n_params = sum(int(__import__("numpy").prod(i.dims)) for i in inits.values())
    ops: dict[str, int] = {}
    for n in proto.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {"path": str(path), "opset": [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")],
            "params": n_params, "bytes": path.stat().st_size,
            "inputs": {i.name: dims(i) for i in proto.graph.input},
            "outputs": {o.name: dims(o) for o in proto.graph.output},
            "metadata": {p.key: p.value for p in proto.metadata_props},
            "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}


def inspect_path(path, as_json: bool = False) -> str:
    p = Path(path)
    info = inspect_onnx(p) if p.suffix == ".onnx" and p.is_file() else inspect_model(path)
    if as_json:
        return json.dumps(info, indent=1)
    if "layers" in info:
        head = (f"{info['path']}: {info['family']} ({'pruned' if info['pruned'] else 'dense'}), "
                f"{info['params']:,} parameters")
        return head + "\n" + _table(info["layers"])
    lines = [f"{info['path']}: ONNX opset {info['opset']}, {info['params']:,} initializer values, "
             f"{info['bytes'] / 1e6:.2f} MB",
             f"inputs {info['inputs']}", f"outputs {info['outputs']}",
             "metadata " + ", ".join(f"{k}={v[:60]}" for k, v in info["metadata"].items()),
             "ops " + ", ".join(f"{k} {v}" for k, v in list(info["ops"].items())[:15])]
    return "\n".join(lines)
