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
from tsprune.export.runtime import import_ort

from .adapters import export_module, reference_module

log = logging.getLogger("tsprune")


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
    ort = import_ort()

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


def _trace(model, x, context, horizon, graph, dynamic_context, fp16, opset):
    """torch.onnx.export (dynamo) of the family's export module: (program, output names,
    whether the context axis is dynamic)."""
    module, dyn = export_module(model, context, horizon, graph=graph, dynamic_context=dynamic_context,
                                dtype=torch.float16 if fp16 else torch.float32)
    shapes = {0: torch.export.Dim("batch", min=1, max=65536)}
    if dyn:
        shapes[1] = torch.export.Dim("context", min=1, max=65536)
    out = module(x)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    names = ["point", "quantiles"][:n_out]
    prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset, input_names=["context"],
                             output_names=names, dynamic_shapes=(shapes,), verbose=False, optimize=True)
    return prog, names, dyn


def _export_error(model, e: Exception) -> "ExportError":
    return ExportError(f"torch.onnx.export failed for {model.family.name}: "
                       f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def export_onnx(model, path: str | os.PathLike, *, context: int, horizon: int, opset: int = 18,
                atol: float = 1e-4, metadata: dict | None = None, check: bool = True,
                graph: str = "optimized", dynamic_context: bool = True, fp16: bool = False) -> dict:
    """Export ``model`` (TSModel) to ``path``; returns {"path", "max_abs_err", ...}.

    graph: "optimized" (the family's export adapter, tsprune.export.adapters) or
    "reference" (the family's forecasting code traced as is). dynamic_context (default, as
    `tsprune export` without --static-context): make the
    context axis dynamic where the adapter allows it (parity is then checked at several
    lengths). fp16: trace the adapter in half precision (its normalisation stays float32);
    parity is recorded but not held to ``atol``.

    The dynamo exporter's per-node debug metadata is stripped and identical initializers
    are shared. The file is written to a temporary name and renamed only after
    onnx.checker and the parity check pass; on failure nothing is left at ``path`` and
    ExportError is raised.
    """
    # lazy: onnx is heavy (.graph imports it too); the CLI's error path imports this module
    # for ExportError alone
    import onnx

    from .graph import dedupe_initializers, set_metadata, strip_debug

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    x = _fresh_inputs(2, context, seed=0)
    fallback = None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "torch.export", "onnxscript"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            prog, names, dyn = _trace(model, x, context, horizon, graph, dynamic_context, fp16, opset)
        except Exception as e:  # noqa: BLE001 - surface exporter failures as ExportError
            if isinstance(e, OSError):
                raise  # a failed write (disk full...), not an export failure
            if not dynamic_context:
                raise _export_error(model, e) from e
            # some pruned shapes (dead modules inside a roll-out) defeat torch.export's
            # symbolic context axis: such a graph is written with a fixed context instead
            fallback = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log.warning("ONNX export: a dynamic context failed (%s); writing a fixed context of %d",
                        fallback, context)
            try:
                prog, names, dyn = _trace(model, x, context, horizon, graph, False, fp16, opset)
            except Exception as e2:  # noqa: BLE001
                if isinstance(e2, OSError):
                    raise
                raise _export_error(model, e2) from e2
        try:
            prog.save(str(tmp))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    try:
        proto = onnx.load(str(tmp))
        stripped = strip_debug(proto)
        shared = dedupe_initializers(proto)
        meta = {"tsprune_version": __version__, "family": model.family.name,
                "context": str(context), "horizon": str(horizon), "opset": str(opset),
                "graph": graph, "dynamic_context": "true" if dyn else "false",
                "precision": "fp16" if fp16 else "fp32", "model_params": str(model.num_params())}
        max_ctx = model.family.max_context(model.module)
        if dyn and max_ctx:
            meta["context_max"] = str(max_ctx)
        for k, v in (metadata or {}).items():
            meta[k] = v if isinstance(v, str) else json.dumps(v)
        set_metadata(proto, meta)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
        result = {"path": str(path), "opset": opset, "outputs": names, "metadata": meta,
                  "graph": graph, "dynamic_context": dyn, "dynamic_context_failed": fallback,
                  "nodes": len(proto.graph.node),
                  "debug_bytes_stripped": stripped, "initializers_shared": shared}
        if check:
            try:
                par = check_parity(tmp, model, context, horizon, dynamic_context=dyn)
            except Exception as e:  # noqa: BLE001 - a runtime without a kernel for an op of this opset
                onnxruntime = import_ort()
                raise ExportError(f"onnxruntime {onnxruntime.__version__} cannot run the opset {opset} graph "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                                  f"try opset 18") from e
            result.update(par)
            require_parity(par, atol, strict=not fp16)
        return commit_graph(tmp, path, result)
    finally:
        tmp.unlink(missing_ok=True)


def require_parity(par: dict, atol: float, *, strict: bool = True) -> None:
    """ExportError unless the parity report ``par`` is finite and, when strict, within atol."""
    if not np.isfinite(par["max_abs_err"]) or (strict and par["max_abs_err"] > atol):
        raise ExportError(f"ONNX parity failed: max abs error {par['max_abs_err']:.3g} > "
                          f"tolerance {atol:g} ({par['per_output']})")


def commit_graph(tmp: Path, path: Path, result: dict) -> dict:
    """Rename the checked graph ``tmp`` into place; the result with its size in bytes."""
    os.replace(tmp, path)
    result["bytes"] = path.stat().st_size
    return result


def parity_contexts(context: int, dynamic_context: bool) -> list[int]:
    """Context lengths parity is checked at: the export's, plus for a dynamic context
    axis a shorter one that is not a multiple of a typical patch and a longer one."""
    if not dynamic_context:
        return [context]
    return sorted({context, max(1, context // 2 - 5), context + 17})


def check_parity(path, model, context: int, horizon: int, *, dynamic_context: bool = False,
                 providers=None) -> dict:
    """onnx_parity of ``path`` against the family's own forecasting code (the reference
    wrapper, not the traced adapter) at every length of parity_contexts."""
    worst: dict | None = None
    by_context = {}
    for L in parity_contexts(context, dynamic_context):
        ref = reference_module(model, L, horizon)
        par = onnx_parity(path, ref, L, providers=providers)
        by_context[str(L)] = par["max_abs_err"]
        if worst is None or not par["max_abs_err"] <= worst["max_abs_err"]:
            worst = par
    return {**worst, "by_context": by_context}
