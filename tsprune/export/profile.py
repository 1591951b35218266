"""The FLOPs profile of a deployed forecast: what pruning to a FLOPs budget counts
(tsprune.prune.budget.FlopProfile), measured on the module that ``export_onnx`` traces.

For TimesFM 2.5 that is the optimized graph (tsprune.export.timesfm2_5): the output heads
read the last patch only, and the last decoder layer computes its query, attention output,
O projection and MLP for the last patch only (K and V for every patch); with flip
invariance the decoder runs on [x; -x] (batch 2); horizons past the model's output length
roll out (one decode per step). Its fused products (``_Lin``) name the Linears they
compute (``tsprune_sources``). Families without an optimized graph trace their own
forecast, so their profile is tsprune.prune.budget.forecast_profile's.
"""
from __future__ import annotations

import torch

from tsprune.prune.budget import FlopProfile, profile_forward, stream_linears

from .adapters import export_module


def deployed_profile(model, context: int, horizon: int, *, graph: str = "optimized") -> FlopProfile:
    """Profile one forecast of one series (``context`` steps, ``horizon`` ahead) of the
    graph ``graph`` of TSModel ``model`` (dense or pruned: the structure it has now)."""
    module = model.module
    structure = model.family.structure(module)
    stream = stream_linears(model.family, module)   # the residual stream's Linears too
    by_id = {id(module.get_submodule(p)): p for p in [*structure.linears(), *stream]}
    wrapper, _ = export_module(model, context, horizon, graph=graph)
    aliases = {}
    for sub in wrapper.modules():
        src = getattr(sub, "tsprune_sources", None)
        if src:
            paths = [by_id[i] for i in src if i in by_id]
            if paths:
                aliases[sub] = paths
    p = next(module.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    t = torch.arange(context, dtype=torch.float32, device=dev)
    x = (torch.sin(t / 7.0) + 0.01 * t)[None]                                  # (1, L)
    wrapper.to(dev)
    return profile_forward(module, structure, lambda: wrapper(x), aliases=aliases, context=context,
                           horizon=horizon, source=f"{graph} graph", hidden_paths=stream)
