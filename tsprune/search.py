"""Hyperparameter search (METHOD.md section 3): (ratio r, EMA alpha) chosen by the
validation loss of the pruned, not yet fine-tuned model; the learning rate is then chosen
by validation after fine-tuning (tsprune.train.finetune with a grid)."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

from tsprune.errors import bad_arg
from tsprune.progress import progress
from tsprune.prune import Plan, PruneConfig, score


@dataclass(frozen=True)
class SearchConfig:
    """ratios / emas: the grids (None: the family's ratio grid; alphas 0.2, 0.5, 0.8).
    calib_samples / val_samples: window subsampling inside the search only."""

    ratios: tuple[float, ...] | None = None
    emas: tuple[float, ...] = (0.2, 0.5, 0.8)
    calib_samples: int | None = 8192
    val_samples: int | None = 2048

    def __post_init__(self):
        if self.ratios is not None:
            if not self.ratios or any(not 0 < r < 1 for r in self.ratios):
                raise bad_arg("--search-ratios", self.ratios, "numbers in (0, 1)")
            object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        if not self.emas or any(not 0 < a <= 1 for a in self.emas):
            raise bad_arg("--search-emas", self.emas, "numbers in (0, 1]")
        object.__setattr__(self, "emas", tuple(float(a) for a in self.emas))
        for name in ("calib_samples", "val_samples"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise bad_arg(f"--search-{name.replace('_', '-')}", v, "a positive integer or none")


@dataclass
class SearchResult:
    ratio: float
    ema: float
    plan: Plan
    trials: list[dict] = field(default_factory=list)
    grids: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"chosen": {"ratio": self.ratio, "ema": self.ema,
                           "val_loss": self.plan.config.get("best_val_loss"),
                           "sparsity": self.plan.sparsity},
                "grids": self.grids, "trials": self.trials, "seconds": round(self.seconds, 1)}


def search(model, train, val, base: PruneConfig = PruneConfig(), cfg: SearchConfig = SearchConfig(),
           *, show_progress: bool = True, log=None) -> SearchResult:
    """Score ``model`` once per (r, alpha) on the same (subsampled) windows; choose the pair
    whose pruned model has the lowest validation loss. Every trial's sparsity-vs-loss curve
    is kept (``trials[i]["curve"]``)."""
    t0 = time.time()
    ratios = cfg.ratios or tuple(model.family.ratio_grid)
    if cfg.calib_samples:
        train = train.subset(cfg.calib_samples, seed=base.seed)
    if cfg.val_samples:
        val = val.subset(cfg.val_samples, seed=base.seed + 1)
    trials, best = [], (math.inf, None, None, None)
    grid = [(r, a) for r in ratios for a in cfg.emas]
    bar = progress(total=len(grid), desc="search (r, alpha)", unit="trial", disable=not show_progress)
    for r, a in grid:
        pc = dataclasses.replace(base, ratio=r, ema=a, calib_samples=None, val_samples=None)
        plan = score(model, train, val, pc, show_progress=False)
        v = plan.config["best_val_loss"]
        curve = [{k: h[k] for k in ("epoch", "step", "sparsity", "val_loss", "train_loss") if k in h}
                 for h in plan.history]
        rec = {"ratio": r, "ema": a, "val_loss": v, "sparsity": plan.sparsity,
               "params": plan.params_pruned, "best_epoch": plan.best_epoch, "curve": curve}
        trials.append(rec)
        if log:
            log({k: v for k, v in rec.items() if k != "curve"})
        if v < best[0]:
            best = (v, r, a, plan)
        bar.update(1)
        bar.set_postfix(best=f"r={best[1]} a={best[2]} val={best[0]:.4f}")
    bar.close()
    _, r, a, plan = best
    return SearchResult(r, a, plan, trials, {"ratio": list(ratios), "ema": list(cfg.emas),
                                             "calib_samples": len(train), "val_samples": len(val)},
                        time.time() - t0)
