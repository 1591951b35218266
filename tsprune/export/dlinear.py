"""A DLinear baseline as an ONNX graph with the TSFM graphs' contract
(tsprune.export.onnx_export): input ``context`` (batch, L) float32, the raw context;
output ``point`` (batch, H) and, when the TSFM it stands in for has quantiles,
``quantiles`` (batch, H, Q): DLinear has no quantile head, so every level carries the
point forecast (metadata ``quantiles_source`` says so). A DLinear trained with
``instance_norm=True`` normalises each window inside the graph as the TSFMs do; one without
it expects z-scored contexts (metadata ``normalisation`` says which). The batch axis is
dynamic, the context axis fixed (DLinear's weights are (H, L)).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from tsprune import __version__

from .onnx_export import ExportError, _fresh_inputs, commit_graph, onnx_parity, require_parity


class DLinearGraph(nn.Module):
    """forward(context (B, L)) -> point (B, H), or (point, quantiles (B, H, Q)) with Q levels."""

    def __init__(self, dlinear: nn.Module, levels: tuple[float, ...] = ()):
        super().__init__()
        self.model, self.levels = dlinear.eval(), tuple(float(x) for x in levels)

    def forward(self, context):
        point = self.model(context)
        if not self.levels:
            return point
        return point, point.unsqueeze(-1).expand(-1, -1, len(self.levels))


def normalisation_note(dlinear) -> str:
    if getattr(dlinear, "instance_norm", False):
        return ("instance normalisation inside the graph (raw or z-scored contexts give forecasts in "
                "their own units); train z-score stats in zscore_mean/zscore_std")
    return ("none inside the graph: feed contexts z-scored with zscore_mean/zscore_std of their column; "
            "forecasts are z-scored")


def export_dlinear(dlinear, path, *, levels=(), opset: int = 18, atol: float = 1e-4,
                   metadata: dict | None = None, check: bool = True) -> dict:
    """Export a trained DLinear (tsprune.baselines.DLinear) to ``path``; returns
    {"path", "opset", "outputs", "metadata", "max_abs_err", ...} like export_onnx. The file
    is written under a temporary name and renamed after onnx.checker and the onnxruntime
    parity check (fresh inputs, ``atol``) pass; ExportError otherwise."""
    # lazy: onnx is heavy (.graph imports it too); loaded only when a DLinear is exported
    import onnx

    from .graph import dedupe_initializers, set_metadata, strip_debug

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    L, H = int(dlinear.context), int(dlinear.horizon)
    module = DLinearGraph(dlinear, levels).eval()
    names = ["point", "quantiles"] if module.levels else ["point"]
    x = _fresh_inputs(2, L, seed=0)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in ("torch.onnx", "torch.export", "onnxscript"):
                logging.getLogger(name).setLevel(logging.ERROR)
            try:
                prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset,
                                         input_names=["context"], output_names=names,
                                         dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                                         verbose=False, optimize=True)
                prog.save(str(tmp))
            except Exception as e:  # noqa: BLE001 - surface exporter failures as ExportError
                raise ExportError(f"torch.onnx.export failed for DLinear: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}") from e
        proto = onnx.load(str(tmp))
        strip_debug(proto)
        dedupe_initializers(proto)
        meta = {"tsprune_version": __version__, "family": "dlinear", "model": "DLinear baseline",
                "context": str(L), "horizon": str(H), "opset": str(opset), "dynamic_context": "false",
                "precision": "fp32", "normalisation": normalisation_note(dlinear),
                "quantiles": json.dumps(list(module.levels))}
        if module.levels:
            meta["quantiles_source"] = "the point forecast at every level (DLinear has no quantile head)"
        for k, v in (metadata or {}).items():
            if k not in ("normalisation", "quantiles"):
                meta[k] = v if isinstance(v, str) else json.dumps(v)
        set_metadata(proto, meta)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
        result = {"path": str(path), "opset": opset, "outputs": names, "metadata": meta,
                  "graph": "dlinear", "dynamic_context": False, "nodes": len(proto.graph.node)}
        if check:
            par = onnx_parity(tmp, module, L)
            result.update(par)
            require_parity(par, atol)
        return commit_graph(tmp, path, result)
    finally:
        tmp.unlink(missing_ok=True)
