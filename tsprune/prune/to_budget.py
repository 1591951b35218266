"""Progressive pruning down to one or several budgets (``PruneConfig.budget``,
``score_to_budgets``).

The scoring is the paper's (tsprune.prune.engine: frozen weights, per-sample mask
gradients, the importance EMA over mini-batches, one global pool), or another criterion
(tsprune.prune.criteria). What changes is the schedule:

  * ranking: alive units by |imp| / cost, cost = the unit's nominal saving in the budget's
    measure (tsprune.prune.budget.CostModel.unit_costs); units that save nothing are never
    chosen (cost_aware=False ranks by |imp| alone, as the paper does). Units whose |imp|
    is exactly 0 go first, as in the paper.
  * pace: the budget is reached over ``max_epochs`` epochs (default 1) of scoring steps;
    each step zeroes the best-ranked units whose nominal costs add up to the remaining
    excess divided by the planned steps left. The last planned step (and any later one,
    should measured savings lag the nominal ones) may take the whole ranking.
  * exactness: when a step's units would cross a budget, the step is trimmed to the
    shortest prefix of its ranking that meets it (a binary search: measured cost only
    falls as units are zeroed); then units zeroed since the previous budget are restored,
    most valuable first, while the budget still holds. The result: the measured kept
    fraction is <= the target, and restoring any one zeroed unit that would add a cost
    back exceeds it. Zeroing V (Q/K) units saves only when the uniform per-group reduction
    of surgery removes a dim from every kept head, so the smallest step near the target
    is a neuron, a dim of every kept KV head of a group, or a whole head: the kept
    fraction lands within that step below the target.
  * validation: the masked model's validation loss is recorded after every epoch and at
    every budget; it does not stop pruning.
  * alignment (cfg.align > 1): each budget's plan has its FFN widths rounded to multiples
    of cfg.align, the budget still met (tsprune.prune.align); scoring continues from the
    unrounded masks, so plans nest up to that rounding.

Several budgets of one measure (score_to_budgets) are met in one run, loosest first; each
plan is a snapshot, so a tighter plan zeroes a superset of a looser one's units (without
alignment).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Callable

import torch

from tsprune.distributed import world
from tsprune.errors import bad_arg
from tsprune.progress import progress
from tsprune.state import save_state

from .align import align_ffn_widths
from .budget import Budget, Cost, CostModel, FlopProfile, forecast_profile
from .criteria import MagnitudeImportance, TaylorImportance
from .engine import (Importance, _load_masks, _masks_state, coupled_qk, masked_loss, pre_prune, resumed_state,
                     score_minibatch, scoring_windows)
from .masks import HIDDEN, MaskSet
from .plan import Plan
from .surgery import count_params


class _Pool:
    """The alive units, flattened: key (p, s) id, index, |imp|, nominal cost."""

    def __init__(self, masks: MaskSet, imp, unit: dict, coupled: dict, cost_aware: bool):
        self.keys = [(p, s) for p, s, _ in masks.units()]
        self.coupled = coupled  # (q, "out") -> (k, "out")
        skip = set(coupled.values())
        kid, idx, sc, co = [], [], [], []
        for j, (p, s) in enumerate(self.keys):
            if (p, s) in skip:
                continue
            m = masks.get(p, s).cpu()
            alive = torch.nonzero(m != 0).flatten()
            if not alive.numel():
                continue
            score = imp.absolute((p, s)).detach().cpu().double()[alive]
            cost = unit[(p, s)][alive]
            if p == HIDDEN:  # the residual stream keeps its best channel
                best = int(torch.argmax(score))
                rest = torch.arange(alive.numel()) != best
                alive, score, cost = alive[rest], score[rest], cost[rest]
                if not alive.numel():
                    continue
            if (p, s) in coupled:  # one unit of Q and K output dims (engine.coupled_qk)
                kk = coupled[(p, s)]
                score = torch.maximum(score, imp.absolute(kk).detach().cpu().double()[alive])
                cost = torch.maximum(cost, unit[kk][alive])
            kid.append(torch.full((alive.numel(),), j, dtype=torch.long))
            idx += [alive]
            sc += [score]
            co += [cost]
        cat = (lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt))
        self.kid, self.idx = cat(kid, torch.long), cat(idx, torch.long)
        self.score, self.cost = cat(sc, torch.float64), cat(co, torch.float64)
        zero = self.score == 0
        if cost_aware:
            key = torch.where(self.cost > 0, self.score / self.cost.clamp_min(1e-300),
                              torch.full_like(self.score, math.inf))
        else:
            key = self.score.clone()
        key[zero] = -1.0
        self.key = key
        order = torch.argsort(key, stable=True)
        if cost_aware:  # units that save nothing are never chosen (unless never active)
            order = order[torch.isfinite(key[order])]
        self.order = order
        self.n_zero = int(zero.sum())

    def zero(self, masks: MaskSet, a: int, b: int, value: float = 0.0) -> int:
        """Set the units at ranking positions a..b-1 (and their coupled partners)."""
        sel = self.order[a:b]
        if not sel.numel():
            return 0
        kid, idx = self.kid[sel], self.idx[sel]
        for j in torch.unique(kid).tolist():
            key = self.keys[j]
            ii = idx[kid == j]
            for k in (key, self.coupled.get(key)):
                if k is not None:
                    m = masks.get(*k)
                    m[ii.to(m.device)] = value
        return int(sel.numel())


def _on(masks: MaskSet, like: MaskSet) -> MaskSet:
    """``masks`` with every tensor on the device of ``like``'s."""
    if masks is like:
        return masks
    return masks.to(next(m for _, _, m in like.units()).device)


def _importance(cfg, masks: MaskSet, module):
    if cfg.criterion == "taylor":
        return TaylorImportance(masks)
    if cfg.criterion == "magnitude":
        return MagnitudeImportance(masks, module)
    return Importance(masks, cfg.ema)


def score_to_budgets(model, train, val, cfg, budgets, *, show_progress: bool = True, log=None,
                     checkpoint=None, profile: "FlopProfile | Callable[..., FlopProfile] | None" = None,
                     drop_unreachable: bool = False) -> list[Plan | None]:
    """Prune ``model`` progressively down to each of ``budgets`` (Budget or "params=0.4"
    strings, all of one measure) in one scoring run; returns one Plan per budget, in the
    order given. ``cfg`` is a PruneConfig (its budget field is ignored here).

    profile: the FLOPs profile of the deployed forecast (tsprune.export.profile for an
    exported graph), or a function of a TSModel returning it (needed to profile the model
    the family's pre-pruning leaves, e.g. Time-MoE without its rarely routed experts; a
    plain profile is then the given model's and the smaller one gets the family's forecast
    profile); default: the family's own forecast at the training windows' context and
    horizon. Budget fractions are always fractions of the model given.
    checkpoint: a directory; the state is saved after every step and an interrupted run
    continues from its last step.
    drop_unreachable: a budget below what the model can be pruned to (embeddings, heads and
    norms stay) gets None instead of an error, as long as one budget is reachable."""
    budgets = [Budget.parse(b) for b in budgets]
    asked_budgets = budgets
    if not budgets:
        raise ValueError("score_to_budgets: no budget given")
    kinds = {b.measure for b in budgets}
    if len(kinds) > 1:
        raise bad_arg("--budget", ",".join(map(str, budgets)), "budgets of one measure (params, or flops/speedup)")
    kind = kinds.pop()
    family, module = model.family, model.module
    if cfg.hidden:
        family.hidden_width(module)  # a family that cannot says so before any work
    given = model
    model, extra = pre_prune(model, train, val, cfg, log=log)
    module = model.module
    structure = family.structure(module)
    hidden = family.hidden_width(module) if cfg.hidden else None
    masks = MaskSet(module, structure.linears(), hidden)
    coupled = {(q, "out"): (k, "out") for q, k in coupled_qk(structure)}
    train, val, macro, steps = scoring_windows(train, val, cfg)
    n = len(train)
    epochs = cfg.max_epochs or 1
    planned = epochs * steps
    c, t = (int(x.shape[1]) for x in train.gather(torch.arange(1)))

    asked = profile

    def profile_of(m) -> FlopProfile:
        if callable(asked):
            return asked(m)
        return asked if asked is not None and m is given else forecast_profile(m, c, t)

    # budgets are fractions of the model the caller gave; when units went before scoring
    # (whole blocks, Time-MoE's experts), the scored model is smaller and its routing changed, so it is
    # profiled anew and the given model is only the reference
    reference = Cost(count_params(given.module), profile_of(given).total) if extra else None
    profile = profile_of(model)
    costs = CostModel(module, structure, profile, hidden, reference=reference)
    dense = costs.dense().get(kind)
    unit = costs.unit_costs(kind)
    least = costs.least_restore(kind)
    targets = sorted(range(len(budgets)), key=lambda i: -budgets[i].fraction)
    floor_masks = masks.clone()
    for _, _, m in floor_masks.units():
        m.zero_()
    if hidden is not None:  # one residual channel always stays
        floor_masks.m_hidden[0] = 1.0
    floor = costs.measure(floor_masks).get(kind)
    if drop_unreachable and any(floor <= math.floor(b.fraction * dense) for b in budgets):
        budgets = [b for b in budgets if floor <= math.floor(b.fraction * dense)]
        targets = sorted(range(len(budgets)), key=lambda i: -budgets[i].fraction)
    tight = budgets[targets[-1]]
    if floor > math.floor(tight.fraction * dense):
        raise bad_arg("--budget", str(tight), f"a kept {kind} fraction of at least {floor / dense:.4f} for this "
                      f"{family.name} model (embeddings, heads and norms are never pruned)")

    req = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    was_training = module.training
    module.eval()

    imp = _importance(cfg, masks, module)
    base = masks.clone()   # the masks at the previous budget: restores never go below it
    history: list[dict] = []
    snaps: dict[int, dict] = {}
    done_epochs, done_steps, global_step = 0, 0, 0
    t0 = time.time()
    rank, _ = world()
    fingerprint = {"cfg": asdict(cfg), "budgets": [str(b) for b in budgets], "n": n, "macro": macro,
                   "extra": extra or {}, "profile": profile.to_json()}
    st = resumed_state(checkpoint, fingerprint)
    if st is not None:
        tens, meta = st
        _load_masks("mask", masks, tens)
        _load_masks("base", base, tens)
        imp.load(tens, meta)
        history, snaps = meta["history"], {int(k): v for k, v in meta["snaps"].items()}
        done_epochs, done_steps, global_step = meta["epoch"], meta["step"], meta["global_step"]

    def save(epoch_done: int, step_done: int) -> None:
        if checkpoint is None or rank != 0:
            return
        it, im = imp.state()
        save_state(checkpoint, {**_masks_state("mask", masks), **_masks_state("base", base), **it},
                   {**im, "fingerprint": fingerprint, "history": history, "snaps": snaps,
                    "epoch": epoch_done, "step": step_done, "global_step": global_step})

    def record(rec: dict) -> None:
        history.append(rec)
        if log:
            log(rec)

    def measured(ms: MaskSet):
        return costs.measure(ms).get(kind)

    def snapshot(i: int, epoch: int) -> None:
        b = budgets[i]
        out, aligned = masks, None
        if cfg.align > 1:  # the plan's widths rounded; scoring goes on from the unrounded masks
            out, aligned = align_ffn_widths(masks, costs, imp, kind, math.floor(b.fraction * dense), cfg.align)
        m = costs.measure(out)
        frac = costs.fraction(m)
        v = masked_loss(model, _on(out, masks), val)
        info = {"budget": str(b), "measure": kind, "target": b.fraction, "kept_params": frac["params"],
                "kept_flops": frac["flops"], "params": m.params, "params_dense": costs.dense().params,
                "flops": m.flops, "flops_dense": costs.dense().flops, "val_loss": v,
                "epoch": epoch + 1, "step": global_step + 1,
                "profile": {"source": profile.source, "context": profile.context, "horizon": profile.horizon}}
        if aligned is not None:
            info["align"] = aligned
        record({"epoch": epoch + 1, "budget": str(b), "val_loss": v, "sparsity": 1.0 - frac["params"],
                "kept_params": frac["params"], "kept_flops": frac["flops"],
                "alive_channels": out.alive(), "time_s": round(time.time() - t0, 2)})
        snaps[i] = {"masks": out.to_json(), "info": info, "history_len": len(history)}

    def restore(target: int, pool: _Pool) -> int:
        """Give back units zeroed since ``base``, most valuable first, while the budget holds."""
        cpu = masks.to("cpu")
        gap = target - measured(masks)
        kept = [costs.group_kept(i, cpu).get(kind) for i in range(len(costs.groups))]
        cand_key, cand = [], []
        for p, s, m in cpu.units():
            g = -1 if p == HIDDEN else costs.group_of.get((p, s))   # -1: a residual channel
            if g is None or (p, s) in pool.coupled.values():
                continue
            gone = torch.nonzero((m == 0) & (base.get(p, s).cpu() != 0)).flatten()
            if not gone.numel():
                continue
            sc = imp.absolute((p, s)).detach().cpu().double()[gone]
            co = unit[(p, s)][gone].clamp_min(1e-300)
            cand_key.append(sc / co if cfg.cost_aware else sc)
            cand += [(p, s, int(i), g) for i in gone.tolist()]
        if not cand:
            return 0
        order = torch.argsort(torch.cat(cand_key), descending=True, stable=True).tolist()
        back, changed = 0, True
        while changed:
            changed = False
            for j in order:
                p, s, i, g = cand[j]
                if (g >= 0 and least[g] > gap) or cpu.get(p, s)[i] != 0:
                    continue
                keys = [(p, s)] + ([pool.coupled[(p, s)]] if (p, s) in pool.coupled else [])
                for k in keys:
                    cpu.get(*k)[i] = 1.0
                if g < 0:  # a residual channel widens every group: measure the whole model
                    new = measured(cpu)
                    delta = new - (target - gap)
                else:
                    new = costs.group_kept(g, cpu).get(kind)
                    delta = new - kept[g]
                if 0 < delta <= gap:
                    gap, back, changed = gap - delta, back + 1, True
                    if g < 0:
                        kept = [costs.group_kept(i, cpu).get(kind) for i in range(len(costs.groups))]
                    else:
                        kept[g] = new
                else:
                    for k in keys:
                        cpu.get(*k)[i] = 0.0
        for p, s, m in masks.units():
            m.copy_(cpu.get(p, s).to(m.device))
        return back

    def prune_step(epoch: int) -> dict:
        nonlocal base
        pending = [i for i in targets if i not in snaps]
        pool = _Pool(masks, imp, unit, coupled, cfg.cost_aware)
        total = len(pool.order)
        now = measured(masks)
        goal = math.floor(budgets[pending[-1]].fraction * dense)
        left = planned - global_step
        if left <= 1:
            take = total
        else:
            quota = (now - goal) / left
            cum = torch.cumsum(pool.cost[pool.order], 0)
            take = min(total, int(torch.searchsorted(cum, torch.tensor(quota, dtype=torch.float64))) + 1)
        take = max(take, min(total, pool.n_zero))

        def after(k: int) -> int:  # measured cost with positions pos..k-1 zeroed too
            trial = masks.clone()
            pool.zero(trial, pos, k)
            return measured(trial)

        pos, zeroed, restored = 0, 0, 0
        while pending:
            target = math.floor(budgets[pending[0]].fraction * dense)
            if after(take) > target:
                break
            lo, hi = pos, take          # after(hi) <= target; find the least such k
            while lo < hi:
                mid = (lo + hi) // 2
                if after(mid) <= target:
                    hi = mid
                else:
                    lo = mid + 1
            zeroed += pool.zero(masks, pos, hi)
            pos = hi
            restored += restore(target, pool)
            snapshot(pending.pop(0), epoch)
            base = masks.clone()
        zeroed += pool.zero(masks, pos, take)
        return {"zeroed": zeroed, "restored": restored}

    try:
        if not history:
            record({"epoch": 0, "val_loss": masked_loss(model, masks, val), "sparsity": 0.0,
                    "kept_params": 1.0, "kept_flops": 1.0, "alive_channels": masks.alive(),
                    "time_s": round(time.time() - t0, 2)})
        epoch = done_epochs
        while len(snaps) < len(budgets):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch))
            first_step = done_steps if epoch == done_epochs else 0
            bar = progress(total=steps, initial=first_step, desc=f"prune to {tight} epoch {epoch + 1}",
                           unit="step", disable=not show_progress or rank != 0)
            for step in range(first_step, steps):
                ids = order[step * macro: (step + 1) * macro]
                loss_sum, seen = 0.0, 0
                if getattr(imp, "needs_data", True):
                    loss_sum, seen = score_minibatch(model, masks, imp, train, ids, cfg)
                res = prune_step(epoch)
                if hasattr(imp, "reset"):
                    imp.reset()
                global_step += 1
                frac = costs.fraction(costs.measure(masks))
                record({"epoch": epoch + 1, "step": step + 1, "train_loss": loss_sum / max(seen, 1) if seen else None,
                        **res, "alive_channels": masks.alive(), "total_channels": masks.total(),
                        "sparsity": 1.0 - frac["params"], "kept_params": frac["params"],
                        "kept_flops": frac["flops"], "time_s": round(time.time() - t0, 2)})
                bar.update(1)
                bar.set_postfix(kept=f"{frac[kind]:.3f}")
                save(epoch, step + 1)
                if len(snaps) == len(budgets):
                    break
            bar.close()
            frac = costs.fraction(costs.measure(masks))
            record({"epoch": epoch + 1, "val_loss": masked_loss(model, masks, val), "sparsity": 1.0 - frac["params"],
                    "kept_params": frac["params"], "kept_flops": frac["flops"],
                    "alive_channels": masks.alive(), "time_s": round(time.time() - t0, 2)})
            epoch += 1
            save(epoch, 0)
    finally:
        for p, r in zip(module.parameters(), req):
            p.requires_grad_(r)
        module.train(was_training)

    plans = []
    for i, b in enumerate(budgets):
        sn = snaps[i]
        info = sn["info"]
        conf = {**asdict(cfg), "budget": str(b), "max_epochs": epochs, "macro_batch_effective": macro,
                "steps_per_epoch": steps, "best_val_loss": info["val_loss"], "measured": info}
        plans.append(Plan(family=family.name, masks=sn["masks"], params_dense=costs.dense().params,
                          params_pruned=info["params"], config=conf,
                          history=history[: sn["history_len"]], best_epoch=info["epoch"],
                          extra=extra or {}))
    by_budget = dict(zip(map(str, budgets), plans))
    return [by_budget.get(str(b)) for b in asked_budgets]


__all__ = ["score_to_budgets"]
