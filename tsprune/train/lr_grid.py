"""The default fine-tuning learning-rate grid: the family's grid (METHOD.md s.5), extended
upwards so that it reaches high enough for data far from pretraining and for heavily
pruned models (PRUNING-NOTES.md: a pruned nano recovers at 3e-4 where 3e-5, the dense
optimum, leaves it far behind)."""
from __future__ import annotations

# half-decade steps above the family's largest rate, at most this many decades up
EXTEND_DECADES = 1.0
LR_CAP = 1e-2


def default_lr_grid(family) -> tuple[float, ...]:
    """Ascending grid: the family's ``lr_grid`` plus 3x and 10x its largest value (capped at
    1e-2). TimesFM 2.5 (1e-5, 3e-5, 1e-4) -> (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)."""
    base = sorted({float(x) for x in family.lr_grid} | {float(family.default_lr)})
    hi = base[-1]
    extra = [hi * f for f in (3.0, 10.0 ** EXTEND_DECADES) if hi * f <= LR_CAP * (1 + 1e-9)]
    return tuple(sorted({float(f"{x:.3g}") for x in base + extra}))
