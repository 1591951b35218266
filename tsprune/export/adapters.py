"""Which nn.Module is traced for a family's ONNX graph, from the family's spec.

A family whose spec has no ``export`` (tsprune.families.specs.ExportSpec) is exported
through its own reference wrapper (``Family.export_module``: the forecasting code as it
runs in torch). An ExportSpec names a builder of a graph-friendly module that computes the
same forecast up to float rounding, and says whether the context axis can be dynamic and
whether float16 tracing is supported.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from tsprune.families import ExportSpec, spec

from .sanitize import SafeContext

GRAPHS = ("optimized", "reference")


def get(family_name: str, graph: str = "optimized") -> ExportSpec | None:
    """The export spec used for ``graph`` ("optimized" or "reference": never one)."""
    if graph not in GRAPHS:
        raise ValueError(f"graph: got {graph!r}; expected one of {', '.join(GRAPHS)}")
    return spec(family_name).export if graph == "optimized" else None


def _builder(export: ExportSpec):
    module, name = export.build.split(":")
    return getattr(importlib.import_module(module), name)


def export_module(model, context: int, horizon: int, *, graph: str = "optimized",
                  dynamic_context: bool = False, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, bool]:
    """(module to trace, whether its context axis is dynamic) for a TSModel.

    graph: "optimized" (the family's adapter when its spec has one) or "reference" (the
    family's own wrapper: a fixed context, float32 only)."""
    export = get(model.family.name, graph)
    if dtype != torch.float32 and not (export and export.half):
        raise ValueError(f"dtype: {dtype} needs an export adapter with half precision; "
                         f"{model.family.name} ({graph} graph) has none")
    if export is None:  # every graph gets the serving contract of tsprune.export.sanitize
        return SafeContext(model.family.export_module(model.module, context, horizon)).eval(), False
    dyn = bool(dynamic_context and export.dynamic_context)
    inner = _builder(export)(model.module, context, horizon, dyn, dtype)
    return SafeContext(inner).eval(), dyn


def reference_module(model, context: int, horizon: int) -> nn.Module:
    """The family's own forecasting code behind the same serving contract as the graph:
    what parity is checked against."""
    return SafeContext(model.family.export_module(model.module, context, horizon)).eval()
