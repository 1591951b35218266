"""`tsprune export`: its arguments and its work (tsprune.cli only parses and dispatches).

    tsprune export --model DIR --out m.onnx [--precision fp16 | --quantize int8] [--simplify]
                   [--opset 23] [--data ETTh1.csv.gz --eval-samples 2048]
    tsprune export --model DIR --format triton --out REPO [--name N] [--max-batch-size 64]
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from tsprune.errors import bad_arg

from .triton import write_repo
from .variants import VariantConfig, Windows, export_variant, sidecar_path

from .args import FORMATS, add_arguments  # noqa: F401  (re-exported)


def variant_config(a) -> VariantConfig:
    """The VariantConfig of parsed arguments (UserError on a bad combination)."""
    if a.eval_samples < 0:
        raise bad_arg("--eval-samples", a.eval_samples, "an integer >= 0 (0: every test window)")
    if a.format == "triton":
        if a.max_batch_size < 0:
            raise bad_arg("--max-batch-size", a.max_batch_size, "an integer >= 0 (0: no batching)")
        if a.instances < 1:
            raise bad_arg("--instances", a.instances, "an integer >= 1")
    return VariantConfig(precision=a.precision, quantize=a.quantize, simplify=a.simplify, opset=a.opset,
                         dynamic_context=not a.static_context, graph=a.graph)


def default_name(model) -> str:
    base = Path(model.source or model.family.name).name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) or model.family.name


def _windows(a, data_config, context: int, horizon: int):
    """(Windows for the accuracy check, metadata of the dataset or {})."""
    if not a.data:
        return None, {}
    from tsprune.data import prepare  # lazy: tsprune.data pulls pandas; only --data needs it
    data = prepare(data_config(a))
    test = data.windows("test", context=context, horizon=horizon, stride=a.stride)
    w = Windows.from_dataset(test, a.eval_samples or None, source=os.path.basename(a.data))
    meta = {"columns": list(data.columns), "zscore_mean": data.mean.tolist(),
            "zscore_std": data.std.tolist(),
            "normalisation": "instance normalisation inside the graph; train z-score stats in "
                             "zscore_mean/zscore_std"}
    return w, meta


def run(a, model, cfg: VariantConfig, data_config) -> int:
    """Export as the arguments say; prints one summary line per artefact."""
    windows, meta = _windows(a, data_config, a.context, a.horizon)
    if not meta and model.manifest and model.manifest.get("dataset"):
        meta = {k: v for k, v in model.manifest["dataset"].items()}
    quantiles = list(getattr(model.module.config, "quantiles", []) or [])
    if quantiles:
        meta["quantiles"] = quantiles
    meta["command"] = "tsprune " + " ".join(getattr(a, "argv", []) or [])
    kw = dict(context=a.context, horizon=a.horizon, windows=windows, metadata=meta)
    if a.format == "onnx":
        info = export_variant(model, a.out, cfg, **kw)
        print(_summary(a.out, info) + f"; sidecar {sidecar_path(a.out)}")
        return 0
    name = a.name or default_name(model)
    with tempfile.TemporaryDirectory(prefix="tsprune-triton-") as tmp:
        path = Path(tmp) / "model.onnx"
        info = export_variant(model, path, cfg, **kw)
        r = write_repo(path, a.out, name, sidecar=sidecar_path(path), max_batch_size=a.max_batch_size,
                       instances=a.instances, device=a.device)
    print(_summary(os.path.join(a.out, name), info) + f"; config {r['validated']}")
    return 0


def _summary(where, info: dict) -> str:
    acc = info["accuracy"]
    rel = acc["mse_rel_delta"]
    return (f"wrote {where} ({info['variant']['name']}, {info['bytes'] / 1e6:.2f} MB, opset "
            f"{info['variant']['opset']}, {'dynamic' if info['variant']['dynamic_context'] else 'fixed'} "
            f"context; parity max abs err {info['parity']['max_abs_err']:.1e}; MSE torch "
            f"{acc['mse_torch']:.4f} -> onnx {acc['mse_onnx']:.4f} ({rel:+.3%}) on {acc['windows']} "
            f"{'test' if 'synthetic' not in acc['source'] else 'synthetic'} windows)")
