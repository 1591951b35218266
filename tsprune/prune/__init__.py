"""Pruning: masks and scoring (engine), plans, and physical surgery."""
from __future__ import annotations

from .budget import Budget, CostModel, FlopProfile  # noqa: F401
from .engine import PruneConfig, score  # noqa: F401
from .depth import DROPPED, block_costs, choose_blocks, split_extra  # noqa: F401
from .masks import HIDDEN, MaskSet
from .plan import Plan  # noqa: F401
from .surgery import analyze, apply_cut
from .to_budget import score_to_budgets  # noqa: F401

HIDDEN_KEY = "hidden"   # manifest key: {"size": kept residual width, "dense": the dense width}


def apply(model, plan: Plan):
    """Apply a plan to a copy of ``model`` (TSModel): fold the masks and slice the
    coupled groups into smaller dense Linears. Returns the pruned TSModel."""
    if plan.family != model.family.name:
        raise ValueError(f"plan is for family {plan.family!r}, model is {model.family.name!r}")
    new = model.clone()
    # whole blocks first (re-indexing the rest), then the family's units, then the masks:
    # every path and index after the first step refers to the shallower model
    dropped, extra = split_extra(plan.extra)
    n_blocks = len(new.family.block_paths(new.module)) if dropped else None
    if dropped:
        new.family.drop_blocks(new.module, dropped)
    if extra:
        new.family.apply_extra(new.module, extra)
    structure = new.family.structure(new.module)
    hidden = new.family.hidden_width(new.module) if HIDDEN in plan.masks else None
    masks = MaskSet.from_json(new.module, plan.masks, hidden)
    cut = analyze(structure, masks)
    apply_cut(new.module, new.family, structure, masks, cut)
    # the residual width (config.json keeps the dense width; load() slices to this one)
    width = (model.manifest or {}).get(HIDDEN_KEY)
    if cut.hidden is not None:
        width = {"size": int(cut.hidden.numel()), "dense": int((width or {}).get("dense", hidden.size))}
    new.manifest = {"attention": {o: s.to_json() for o, s in cut.attention.items()},
                    "ffn": dict(cut.ffn)}
    # the manifest's "extra" holds the family's units only (load() replays them on a model
    # built from config.json, which already has the shallower layer count)
    depth = {DROPPED: dropped, "blocks_dense": n_blocks} if dropped else {}
    new.manifest = new.build_manifest({"plan": {"sparsity": plan.sparsity,
                                                "params_dense": plan.params_dense},
                                       "extra": extra, **depth,
                                       **({HIDDEN_KEY: width} if width else {})})
    new.module.eval()
    return new
