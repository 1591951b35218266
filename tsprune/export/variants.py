"""Export variants: fp32 / fp16, int8 dynamic quantization, onnxslim simplification; each
checked against the torch model and described by a JSON sidecar (``<file>.json``).

    cfg = VariantConfig(precision="fp32", quantize="int8", simplify=True, opset=23)
    info = export_variant(model, "m.onnx", cfg, context=512, horizon=96, windows=test)

Order: torch -> ONNX fp32 (or fp16, traced in half precision by the family's adapter)
-> [onnxslim, kept only if fp32 parity still holds] -> [int8 dynamic quantization of the
MatMul/Gemm weights]. Every variant records its parity (max abs error against torch on
fresh inputs) and its accuracy delta on forecasting windows: the MSE and MAE of torch and
of ONNX Runtime against the targets, and the change (the figure that matters: a variant
may differ from torch by 1e-2 yet forecast as well).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tsprune import __version__
from tsprune.errors import bad_arg, missing_extra

from .adapters import get as get_adapter
from .onnx_export import ExportError, _fresh_inputs, check_parity, export_onnx
from .runtime import make_session

log = logging.getLogger("tsprune")

from .args import PRECISIONS, QUANTIZE
OPSETS = range(18, 24)


@dataclass(frozen=True)
class VariantConfig:
    """precision: fp32 | fp16; quantize: None | int8 (dynamic, fp32 graphs only);
    simplify: run onnxslim, kept only when parity holds; opset 18..23 (23: native
    Attention and RMSNormalization ops); dynamic_context where the family allows it;
    graph: "optimized" (family adapter) or "reference"; atol: fp32 parity tolerance."""

    precision: str = "fp32"
    quantize: str | None = None
    simplify: bool = False
    opset: int = 18
    dynamic_context: bool = True
    graph: str = "optimized"
    atol: float = 1e-4

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise bad_arg("--precision", self.precision, " or ".join(PRECISIONS))
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise bad_arg("--quantize", self.quantize, " or ".join(QUANTIZE))
        if self.quantize and self.precision != "fp32":
            raise bad_arg("--quantize", self.quantize, "fp32 precision only (int8 replaces fp32 weights)")
        if not isinstance(self.opset, int) or self.opset not in OPSETS:
            raise bad_arg("--opset", self.opset, "an integer from 18 to 23")
        if self.graph not in ("optimized", "reference"):
            raise bad_arg("--graph", self.graph, "optimized or reference")

    @property
    def name(self) -> str:
        return self.quantize or self.precision


@dataclass
class Windows:
    """Forecasting windows for the accuracy check: context (N, L), target (N, H)."""

    context: torch.Tensor
    target: torch.Tensor
    source: str

    @classmethod
    def synthetic(cls, n: int, context: int, horizon: int, seed: int = 7) -> "Windows":
        x = _fresh_inputs(n, context + horizon, seed)
        return cls(x[:, :context].contiguous(), x[:, context:].contiguous(),
                   f"synthetic: {n} random walks with daily seasonality (seed {seed})")

    @classmethod
    def from_dataset(cls, ds, n: int | None, source: str, seed: int = 0) -> "Windows":
        """``n`` windows of a tsprune WindowDataset (seeded subsample; all if None)."""
        sub = ds.subset(n, seed=seed) if n else ds
        ctx, tgt = sub.gather(torch.arange(len(sub)))
        return cls(ctx.float(), tgt.float(), f"{source}: {len(sub)} of {len(ds)} test windows")


def session(path, threads: int | None = None, device: str = "cpu"):
    return make_session(path, device=device, threads=threads)


def ort_forecast(sess, context: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Point forecasts (N, H) of an ONNX Runtime session, run in batches."""
    name = sess.get_inputs()[0].name
    outs = [sess.run([sess.get_outputs()[0].name], {name: c.numpy().astype(np.float32)})[0]
            for c in context.split(batch_size)]
    return np.concatenate(outs).astype(np.float32)


def accuracy(path, model, windows: Windows, *, batch_size: int = 256, torch_point=None) -> dict:
    """MSE/MAE of torch and of ONNX Runtime on ``windows``, and their change."""
    h = windows.target.shape[1]
    if torch_point is None:
        torch_point = model.forecast(windows.context, h).point.numpy()
    onnx_point = ort_forecast(session(path), windows.context, batch_size)
    y = windows.target.numpy().astype(np.float64)
    t64, o64 = torch_point.astype(np.float64), onnx_point.astype(np.float64)
    mse_t, mse_o = float(np.mean((t64 - y) ** 2)), float(np.mean((o64 - y) ** 2))
    mae_t, mae_o = float(np.mean(np.abs(t64 - y))), float(np.mean(np.abs(o64 - y)))
    return {"windows": int(len(y)), "horizon": int(h), "source": windows.source,
            "mse_torch": mse_t, "mse_onnx": mse_o, "mse_delta": mse_o - mse_t,
            "mse_rel_delta": (mse_o - mse_t) / mse_t if mse_t > 0 else float("nan"),
            "mae_torch": mae_t, "mae_onnx": mae_o, "mae_delta": mae_o - mae_t,
            "point_max_abs_err": float(np.max(np.abs(o64 - t64))),
            "point_mean_abs_err": float(np.mean(np.abs(o64 - t64)))}


def simplify(src: Path, dst: Path) -> dict:
    """onnxslim ``src`` into ``dst``; returns node counts."""
    try:  # lazy: optional dependency (tsprune[export])
        import onnxslim
    except ImportError as e:
        raise missing_extra("onnxslim", "export", e) from e
    import onnx  # lazy: onnx is heavy; loaded only when a graph is written
    proto = onnx.load(str(src))
    before = len(proto.graph.node)
    slim = onnxslim.slim(proto)
    onnx.save(slim, str(dst))
    return {"nodes_before": before, "nodes_after": len(slim.graph.node)}


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of the MatMul/Gemm weights (activations quantized per
    batch at run time; MatMuls between two activations, e.g. attention, stay fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # lazy: optional dependency (onnxruntime)
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"])


def fp16_generic(src: Path, dst: Path) -> None:
    """Whole-graph fp16 conversion (families without a half-precision adapter); inputs and
    outputs stay float32. The instance normalisation then runs in fp16 too: feed z-scored
    contexts."""
    # lazy: onnx is heavy; onnxruntime is an optional dependency
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_variant(model, path: str | os.PathLike, cfg: VariantConfig, *, context: int, horizon: int,
                   windows: Windows | None = None, metadata: dict | None = None,
                   flops_batch: int = 1, sidecar: bool = True, base: str | os.PathLike | None = None) -> dict:
    """Write the variant ``cfg`` of ``model`` to ``path`` (+ ``path.json`` sidecar).

    windows: the accuracy windows (default: 256 synthetic ones). base: an fp32 file that
    export_onnx/export_variant already wrote for this model with the same context,
    horizon, opset, graph and context axis: int8 and simplified variants start from it
    instead of tracing the model again. Raises ExportError when an fp32 graph misses
    ``cfg.atol`` or any variant gives non-finite forecasts."""
    # lazy: onnx is heavy; loaded only when a graph is written
    import onnx

    from .flops import count_flops  # lazy: .flops and .graph import onnx
    from .graph import io_spec, set_metadata

    adapter = get_adapter(model.family.name, cfg.graph)
    windows = windows or Windows.synthetic(256, context, horizon)
    if windows.target.shape[1] != horizon:
        raise ValueError(f"windows: horizon {windows.target.shape[1]}, the graph's {horizon}")
    if windows.context.shape[1] != context and not (cfg.dynamic_context and adapter and adapter.dynamic_context):
        raise ValueError(f"windows: context {windows.context.shape[1]}, the graph's fixed {context}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(f".{path.name}.work-{os.getpid()}")
    work.mkdir(exist_ok=True)
    t0 = time.time()
    try:
        native_half = cfg.precision == "fp16" and adapter is not None and adapter.half
        steps = []
        if base is not None and not native_half:
            current, dyn = work / "fp32.onnx", _check_base(base, model, cfg, context, horizon)
            expect = bool(cfg.dynamic_context and adapter is not None and adapter.dynamic_context)
            if dyn != expect:
                raise ValueError(f"base: {base} has dynamic_context={dyn}, the variant wants {expect}")
            shutil.copyfile(base, current)
            steps.append({"step": "export", "reused": str(base)})
        else:
            info = export_onnx(model, work / ("fp16.onnx" if native_half else "fp32.onnx"), context=context,
                               horizon=horizon, opset=cfg.opset, atol=cfg.atol, metadata=metadata,
                               graph=cfg.graph, dynamic_context=cfg.dynamic_context, fp16=native_half)
            current = Path(info["path"])
            dyn = info["dynamic_context"]
            steps.append({"step": "export", "graph": cfg.graph, "precision": "fp16" if native_half else "fp32",
                          "nodes": info["nodes"], "max_abs_err": info["max_abs_err"]})
        simplified = {"requested": cfg.simplify, "applied": False}
        if cfg.simplify:
            slim = work / "slim.onnx"
            counts = simplify(current, slim)
            par = check_parity(slim, model, context, horizon, dynamic_context=dyn)
            tol = cfg.atol if not native_half else max(10 * info["max_abs_err"], cfg.atol)
            ok = bool(np.isfinite(par["max_abs_err"]) and par["max_abs_err"] <= tol)
            simplified.update(counts, max_abs_err=par["max_abs_err"], tolerance=tol, applied=ok)
            if ok:
                current = slim
            else:
                simplified["reason"] = f"parity {par['max_abs_err']:.3g} > {tol:g}: kept the unsimplified graph"
                log.warning("onnxslim broke parity (%.3g); keeping the unsimplified graph", par["max_abs_err"])
            steps.append({"step": "simplify", **simplified})
        if cfg.precision == "fp16" and not native_half:
            half = work / "fp16.onnx"
            fp16_generic(current, half)
            current = half
            steps.append({"step": "fp16", "method": "onnxruntime.transformers.float16 (whole graph)"})
        if cfg.quantize == "int8":
            q = work / "int8.onnx"
            quantize_int8(current, q)
            current = q
            steps.append({"step": "int8", "method": "onnxruntime.quantization.quantize_dynamic "
                                                   "(MatMul/Gemm weights, per channel, QInt8)"})
        proto = onnx.load(str(current))
        meta = {e.key: e.value for e in proto.metadata_props}
        meta.update({"precision": cfg.precision, "quantize": cfg.quantize or "none",
                     "simplified": "true" if simplified["applied"] else "false"})
        set_metadata(proto, meta)
        onnx.save(proto, str(current))
        parity = check_parity(current, model, context, horizon, dynamic_context=dyn)
        if not np.isfinite(parity["max_abs_err"]):
            raise ExportError(f"{cfg.name} variant gives non-finite forecasts ({parity['per_output']})")
        if cfg.name == "fp32" and parity["max_abs_err"] > cfg.atol:
            raise ExportError(f"ONNX parity failed: max abs error {parity['max_abs_err']:.3g} > "
                              f"tolerance {cfg.atol:g}")
        acc = accuracy(current, model, windows)
        flops = count_flops(current, {"context": context}, batch=flops_batch)
        result = {
            "file": path.name, "bytes": current.stat().st_size, "sha256": _sha256(current),
            "variant": {**asdict(cfg), "dynamic_context": dyn, "name": cfg.name},
            "family": model.family.name, "context": context, "horizon": horizon,
            "params": model.num_params(), "io": io_spec(proto),
            "parity": {"max_abs_err": parity["max_abs_err"], "per_output": parity["per_output"],
                       "by_context": parity["by_context"], "atol": cfg.atol if cfg.name == "fp32" else None,
                       "inputs": "fresh random walks with seasonality, raw units"},
            "accuracy": acc,
            "flops": {"per_series": flops.total // max(flops_batch, 1), "batch": flops_batch,
                      "by_op": flops.by_op, "unknown": flops.unknown},
            "simplify": simplified, "steps": steps,
            "nodes": len(proto.graph.node), "providers": parity.get("providers"),
            "tsprune_version": __version__, "seconds": round(time.time() - t0, 1),
        }
        # the sidecar is written in full before either file is renamed into place
        tmp = path.with_name(f".{path.name}.json.tmp-{os.getpid()}")
        try:
            if sidecar:
                tmp.write_text(json.dumps(result, indent=1))
            os.replace(current, path)
            if sidecar:
                os.replace(tmp, sidecar_path(path))
        finally:
            tmp.unlink(missing_ok=True)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_base(base, model, cfg: VariantConfig, context: int, horizon: int) -> bool:
    """Check that ``base`` is an fp32 export of this model's kind with these settings;
    returns whether its context axis is dynamic."""
    import onnx  # lazy: onnx is heavy; loaded only when a graph is read
    meta = {e.key: e.value for e in onnx.load(str(base), load_external_data=False).metadata_props}
    want = {"family": model.family.name, "context": str(context), "horizon": str(horizon),
            "opset": str(cfg.opset), "graph": cfg.graph, "precision": "fp32"}
    bad = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
    if meta.get("quantize", "none") != "none":
        bad["quantize"] = (meta.get("quantize"), "none")
    if bad:
        raise ValueError(f"base: {base} does not match the variant (have, want): {bad}")
    return meta.get("dynamic_context") == "true"


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.json")
