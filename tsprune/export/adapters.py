"""Per-family export adapters: which nn.Module is traced for a family's ONNX graph.

A family without an adapter here is exported through its own reference wrapper
(``Family.export_module``: the forecasting code as it runs in torch). An adapter builds a
graph-friendly module that computes the same forecast up to float rounding, and says
whether the context axis can be dynamic and which parity tolerance it is held to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

GRAPHS = ("optimized", "reference")


@dataclass(frozen=True)
class ExportAdapter:
    """build(module, context, horizon, dynamic_context, dtype) -> nn.Module whose forward
    maps context (B, L) float32 to (point (B, H), quantiles (B, H, Q)).

    dynamic_context: the context axis may be dynamic; half: ``dtype=torch.float16`` is
    supported (the adapter decides which parts stay float32)."""

    family: str
    build: Callable[..., nn.Module]
    dynamic_context: bool = False
    half: bool = False


_ADAPTERS: dict[str, ExportAdapter] = {}


def register(adapter: ExportAdapter) -> ExportAdapter:
    if adapter.family in _ADAPTERS:
        raise ValueError(f"an export adapter for {adapter.family!r} is already registered")
    _ADAPTERS[adapter.family] = adapter
    return adapter


def _timesfm2_5(module, context, horizon, dynamic_context, dtype):
    from .timesfm2_5 import TimesFm25Export
    return TimesFm25Export(module, horizon, dynamic_context=dynamic_context, dtype=dtype)


register(ExportAdapter("timesfm2_5", _timesfm2_5, dynamic_context=True, half=True))


def get(family_name: str, graph: str = "optimized") -> ExportAdapter | None:
    """The adapter used for ``graph`` ("optimized" or "reference": never one)."""
    if graph not in GRAPHS:
        raise ValueError(f"graph: got {graph!r}; expected one of {', '.join(GRAPHS)}")
    return _ADAPTERS.get(family_name) if graph == "optimized" else None


def export_module(model, context: int, horizon: int, *, graph: str = "optimized",
                  dynamic_context: bool = False, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, bool]:
    """(module to trace, whether its context axis is dynamic) for a TSModel.

    graph: "optimized" (the family's adapter when it has one) or "reference" (the
    family's own wrapper: a fixed context, float32 only)."""
    from .sanitize import SafeContext
    adapter = get(model.family.name, graph)
    if dtype != torch.float32 and not (adapter and adapter.half):
        raise ValueError(f"dtype: {dtype} needs an export adapter with half precision; "
                         f"{model.family.name} ({graph} graph) has none")
    if adapter is None:  # every graph gets the serving contract of tsprune.export.sanitize
        return SafeContext(model.family.export_module(model.module, context, horizon), context).eval(), False
    dyn = bool(dynamic_context and adapter.dynamic_context)
    inner = adapter.build(model.module, context, horizon, dyn, dtype)
    return SafeContext(inner, 65536 if dyn else context).eval(), dyn


def reference_module(model, context: int, horizon: int) -> nn.Module:
    """The family's own forecasting code behind the same serving contract as the graph:
    what parity is checked against."""
    from .sanitize import SafeContext
    return SafeContext(model.family.export_module(model.module, context, horizon), context).eval()
