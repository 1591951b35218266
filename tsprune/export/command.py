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

from .variants import PRECISIONS, QUANTIZE, VariantConfig, Windows, export_variant, sidecar_path

FORMATS = ("onnx", "triton")


def add_arguments(x) -> None:
    """The `tsprune export` flags, on the subparser ``x``."""
    x.add_argument("--model", default="nano", help="bundled model name or model directory (default: nano)")
    x.add_argument("--format", default="onnx", choices=FORMATS,
                   help="onnx: one .onnx file (+ .onnx.json sidecar); triton: a model repository")
    x.add_argument("--out", required=True, help="the .onnx file, or the Triton repository directory")
    x.add_argument("--context", type=int, default=512, help="context length (default: 512)")
    x.add_argument("--horizon", type=int, default=96, help="forecast horizon (default: 96)")
    x.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default) or fp16 (decoder in half precision, normalisation in fp32)")
    x.add_argument("--quantize", choices=QUANTIZE, help="int8: dynamic quantization of the MatMul weights")
    x.add_argument("--simplify", action="store_true", help="run onnxslim; kept only if fp32 parity holds")
    x.add_argument("--opset", type=int, default=18,
                   help="ONNX opset, 18-23 (default: 18; 23 emits native Attention/RMSNormalization)")
    x.add_argument("--static-context", action="store_true",
                   help="fix the context axis to --context (default: dynamic where the family allows it)")
    x.add_argument("--graph", choices=("optimized", "reference"), default="optimized",
                   help="optimized (the family's export adapter, default) or reference (its torch code as is)")
    x.add_argument("--data", help="CSV/parquet file: measure the accuracy delta on its test windows "
                                  "(default: synthetic windows)")
    x.add_argument("--target", nargs="+", metavar="COL", help="columns of --data (default: every numeric column)")
    x.add_argument("--date-col", help="the date column of --data (default: detected)")
    x.add_argument("--split", default="ett", help="split of --data: 'ett' or ratios like 0.7,0.1,0.2")
    x.add_argument("--stride", type=int, default=1, help="test window stride (default: 1)")
    x.add_argument("--eval-samples", type=int, default=2048,
                   help="test windows for the accuracy check, a seeded subsample (default: 2048; 0: all)")
    x.add_argument("--name", help="Triton model name (default: from the model directory)")
    x.add_argument("--max-batch-size", type=int, default=64, help="Triton max_batch_size (default: 64)")
    x.add_argument("--instances", type=int, default=1, help="Triton instance count (default: 1)")
    x.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="Triton instance kind: auto, cpu or cuda (default: auto)")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(season=None)


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
    from tsprune.data import prepare
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
    from .triton import write_repo
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
