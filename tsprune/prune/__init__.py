"""Pruning: masks and scoring (engine), plans, and physical surgery."""
from __future__ import annotations

from .budget import Budget, CostModel, FlopProfile  # noqa: F401
from .engine import PruneConfig, score  # noqa: F401
from .masks import MaskSet
from .plan import Plan  # noqa: F401
from .surgery import analyze, apply_cut
from .to_budget import score_to_budgets  # noqa: F401


def apply(model, plan: Plan):
    """Apply a plan to a copy of ``model`` (TSModel): fold the masks and slice the
    coupled groups into smaller dense Linears. Returns the pruned TSModel."""
    if plan.family != model.family.name:
        raise ValueError(f"plan is for family {plan.family!r}, model is {model.family.name!r}")
    new = model.clone()
    if plan.extra:
        new.family.apply_extra(new.module, plan.extra)
    structure = new.family.structure(new.module)
    masks = MaskSet.from_json(new.module, plan.masks)
    cut = analyze(structure, masks)
    apply_cut(new.module, new.family, structure, masks, cut)
    new.manifest = {"attention": {o: s.to_json() for o, s in cut.attention.items()},
                    "ffn": dict(cut.ffn)}
    new.manifest = new.build_manifest({"plan": {"sparsity": plan.sparsity,
                                                "params_dense": plan.params_dense},
                                       "extra": plan.extra})
    new.module.eval()
    return new
