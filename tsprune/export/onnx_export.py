"""ONNX export with the dynamo exporter, checked by onnx.checker and by parity in
onnxruntime against torch on fresh inputs.

Graph: input ``context`` (batch, L) float32, the raw context (the family's instance
normalisation is inside the graph, so raw and z-scored inputs give forecasts in the
input's own units); outputs ``point`` (batch, H) and, when the family has them,
``quantiles`` (batch, H, Q). metadata_props record the family, context, horizon,
columns, quantile levels, dataset normalisation statistics and tsprune version.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from tsprune import __version__


class ExportError(RuntimeError):
    """The exported graph failed its check (onnx.checker or parity)."""


def _fresh_inputs(batch: int, context: int, seed: int) -> torch.Tensor:
    """Random walks plus a daily-like seasonality: realistic, never all-zero."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(context, dtype=torch.float32)
    walk = torch.randn(batch, context, generator=g).cumsum(1) * 0.1
    season = torch.sin(2 * torch.pi * t / 24)[None] * torch.rand(batch, 1, generator=g) * 2
    level = torch.randn(batch, 1, generator=g) * 3
    return walk + season + level


def onnx_parity(path: str | os.PathLike, module: torch.nn.Module, context: int, *, batch: int = 3,
                seed: int = 1234, providers=None) -> dict:
    """Max abs error between onnxruntime and torch on fresh inputs, per output."""
    import onnxruntime as ort

    x = _fresh_inputs(batch, context, seed)
    with torch.no_grad():
        ref = module(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    errs = {}
    for o, r, meta in zip(outs, ref, sess.get_outputs()):
        errs[meta.name] = float(np.max(np.abs(o - r.numpy()))) if o.size else 0.0
    return {"max_abs_err": max(errs.values()), "per_output": errs, "batch": batch,
            "providers": sess.get_providers()}


def export_onnx(model, path: str | os.PathLike, *, context: int, horizon: int, opset: int = 18,
                atol: float = 1e-4, metadata: dict | None = None, check: bool = True) -> dict:
    """Export ``model`` (TSModel) to ``path``; returns {"path", "max_abs_err", ...}.

    The file is written to a temporary name and renamed only after onnx.checker and the
    parity check pass; on failure nothing is left at ``path`` and ExportError is raised.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    module = model.family.export_module(model.module, context, horizon).eval()
    x = _fresh_inputs(2, context, seed=0)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "torch.export", "onnxscript"):
            logging.getLogger(name).setLevel(logging.ERROR)
        with torch.no_grad():
            out = module(x)
        n_out = len(out) if isinstance(out, (tuple, list)) else 1
        names = ["point", "quantiles"][:n_out]
        try:
            prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset,
                                     input_names=["context"], output_names=names,
                                     dynamic_shapes=({0: batch},), verbose=False,
                                     optimize=True)
            prog.save(str(tmp))
        except Exception as e:  # noqa: BLE001 - surface exporter failures as ExportError
            tmp.unlink(missing_ok=True)
            raise ExportError(f"torch.onnx.export failed for {model.family.name}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    try:
        proto = onnx.load(str(tmp))
        meta = {"tsprune_version": __version__, "family": model.family.name,
                "context": str(context), "horizon": str(horizon), "opset": str(opset)}
        for k, v in (metadata or {}).items():
            meta[k] = v if isinstance(v, str) else json.dumps(v)
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
        result = {"path": str(path), "opset": opset, "outputs": names, "metadata": meta}
        if check:
            par = onnx_parity(tmp, module, context)
            result.update(par)
            if not np.isfinite(par["max_abs_err"]) or par["max_abs_err"] > atol:
                raise ExportError(f"ONNX parity failed: max abs error {par['max_abs_err']:.3g} > "
                                  f"tolerance {atol:g} ({par['per_output']})")
        os.replace(tmp, path)
        result["bytes"] = path.stat().st_size
        return result
    finally:
        tmp.unlink(missing_ok=True)
