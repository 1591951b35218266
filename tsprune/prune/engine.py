"""Scoring and the progressive, validation-driven schedule (METHOD.md sections 2 and 3).

With frozen weights and dropout off, every training window contributes per-sample mask
gradients g_b (B, d) for every in- and out-mask of every masked Linear. Per mini-batch step
the score s = sum_b (-g_b + g_b^2 / 2) updates an EMA  imp = alpha*s + (1-alpha)*imp  (first
step: imp = s). After each macro-batch all still-alive channels of all layers form one pool:
the lowest ceil(pool * r / steps_per_epoch) by |imp|, and every channel whose |imp| is
exactly 0, are zeroed. After each epoch the masked model is validated; the best masks are
kept and pruning stops when validation stops improving (patience).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from tsprune import ops
from tsprune.distributed import world
from tsprune.errors import bad_arg
from tsprune.progress import progress

from tsprune.state import load_state, save_state

from .budget import Budget, CostModel
from .criteria import CRITERIA
from .masks import HIDDEN, MaskSet, attach
from .plan import Plan
from .surgery import analyze, count_params


@dataclass(frozen=True)
class PruneConfig:
    """Hyperparameters of the pruning phase. CLI flags map to these fields one to one.

    ratio: r, the fraction of the pool removed per epoch (one epoch keeps ~exp(-r)).
    ema: alpha of the importance EMA.
    max_epochs: pruning epochs at most (None: the family's default).
    macro_batch: samples per pruning step (the reference uses ~8,192; clamped so an epoch
      has at least ``min_steps`` steps).
    batch_size: windows per backward pass.
    max_sparsity: optional cap on parameter sparsity (0..1).
    patience: epochs without validation improvement before stopping.
    calib_samples / val_samples: optional subsampling of train / validation windows.
    scorer: "fused" (hooks + tsprune.ops.fused_importance) or "reference" (per-sample
      mask leaves through autograd, the paper's path).
    expert_threshold: MoE families (Time-MoE) delete experts routed to at most this
      fraction of tokens before channel pruning (None: the family's default).
    drop_blocks: whole blocks removed before anything else (tsprune.prune.depth), chosen
      greedily on the validation windows by ``depth_criterion``; below the model's block
      count (checked when scoring); not with ``budget`` (tsprune.prune.block_costs gives the
      per-block parameters a budget would need).
    budget: prune to a budget instead of stopping on validation: "params=F" or "flops=F"
      (the fraction kept, 0 < F < 1) or "speedup=S" (flops=1/S); see tsprune.prune.to_budget.
      ratio and patience are then unused; max_epochs is the number of epochs over which
      the budget is reached (default 1).
    criterion: how units are ranked under a budget: "taylor_fisher" (the paper's), "taylor"
      (first-order |sum w dL/dw|) or "magnitude" (L2 norm of the unit's weights).
    cost_aware: under a budget, rank by |importance| / the unit's cost in the budget's
      measure (False: by |importance| alone).
    criterion and cost_aware are for budgets: score() without one refuses other values
    (score_to_budgets takes its budgets as an argument and uses them).
    hidden: also prune the hidden width: one mask over the residual stream's channels,
      scored like the others and ranked in the same pool (tsprune.prune.width); a family
      that cannot raises a UserError when scoring starts.
    align: under a budget, round every kept FFN width to a multiple of this (1: off; 16 is
      ONNX Runtime's CPU GEMM block here, bench/tools/gemm_steps.py), the budget still met
      (tsprune.prune.align).
    """

    ratio: float | None = None
    ema: float = 0.5
    max_epochs: int | None = None
    macro_batch: int = 8192
    min_steps: int = 8
    batch_size: int = 64
    max_sparsity: float | None = None
    patience: int = 1
    calib_samples: int | None = None
    val_samples: int | None = 4096
    scorer: str = "fused"
    seed: int = 0
    expert_threshold: float | None = None
    drop_blocks: int = 0
    depth_criterion: str = "measured"
    budget: str | None = None
    criterion: str = "taylor_fisher"
    cost_aware: bool = True
    hidden: bool = False
    align: int = 1

    def __post_init__(self):
        if not isinstance(self.hidden, bool):
            raise bad_arg("--prune-hidden", self.hidden, "true or false")
        if self.ratio is not None and not (0.0 < self.ratio < 1.0):
            raise bad_arg("--ratio", self.ratio, "a number in (0, 1)")
        if not (0.0 < self.ema <= 1.0):
            raise bad_arg("--ema", self.ema, "a number in (0, 1]")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise bad_arg("--max-epochs", self.max_epochs, "an integer >= 1")
        if self.max_sparsity is not None and not (0.0 < self.max_sparsity < 1.0):
            raise bad_arg("--max-sparsity", self.max_sparsity, "a number in (0, 1)")
        for name in ("macro_batch", "batch_size", "min_steps", "patience"):
            if int(getattr(self, name)) < 1:
                raise bad_arg(f"--{name.replace('_', '-')}", getattr(self, name), "an integer >= 1")
        for name in ("calib_samples", "val_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise bad_arg(f"--{name.replace('_', '-')}", v, "a positive integer or none")
        if self.expert_threshold is not None and not (0.0 <= self.expert_threshold < 1.0):
            raise bad_arg("--expert-threshold", self.expert_threshold, "a number in [0, 1)")
        if self.scorer not in ("fused", "reference"):
            raise bad_arg("--scorer", self.scorer, "'fused' or 'reference'")
        if isinstance(self.drop_blocks, bool) or not isinstance(self.drop_blocks, int) or self.drop_blocks < 0:
            raise bad_arg("--drop-blocks", self.drop_blocks, "an integer >= 0, below the model's number of blocks")
        if self.depth_criterion not in ("measured", "fisher"):
            raise bad_arg("--depth-criterion", self.depth_criterion, "'measured' or 'fisher'")
        if isinstance(self.align, bool) or not isinstance(self.align, int) or self.align < 1:
            raise bad_arg("--align", self.align, "an integer >= 1 (1: no rounding)")
        if self.budget is not None:
            object.__setattr__(self, "budget", str(Budget.parse(self.budget)))
        if self.criterion not in CRITERIA:
            raise bad_arg("--criterion", self.criterion, ", ".join(CRITERIA))

    def check_budget_options(self) -> None:
        """criterion and cost_aware rank units under a budget only (score_to_budgets takes
        its budgets apart from the config): without one they must keep their defaults."""
        if self.budget is None and self.criterion != "taylor_fisher":
            raise bad_arg("--criterion", self.criterion, "taylor_fisher without --budget")
        if self.budget is None and not self.cost_aware:
            raise bad_arg("--no-cost-aware", True, "only with --budget")


class Importance:
    """Running |EMA| importance of every mask unit.

    Single process: each step's score goes straight into the fused kernel's in-place EMA.
    Under torch.distributed the step scores of the ranks' shards are summed (all-reduce)
    before the EMA, so every rank holds the same importance and prunes the same channels.
    """

    def __init__(self, masks: MaskSet, alpha: float):
        self.alpha = float(alpha)
        self.imp = {(p, s): torch.zeros(m.numel(), dtype=torch.float32, device=m.device)
                    for p, s, m in masks.units()}
        self.first = {k: True for k in self.imp}
        self.distributed = world()[1] > 1
        self._pending: dict = {}

    def update_from_grad(self, key, gb: torch.Tensor) -> None:
        """gb: per-sample gradients (B, d)."""
        if self.distributed:
            scratch = torch.zeros_like(self.imp[key])
            ops.fused_importance_from_grad(gb, scratch, alpha=1.0, first=True)
            self._pending[key] = scratch
            return
        ops.fused_importance_from_grad(gb, self.imp[key], alpha=self.alpha, first=self.first[key])
        self.first[key] = False

    def update_from_acts(self, key, x: torch.Tensor, g: torch.Tensor) -> None:
        """x, g: (B, ..., d) activations and gradient at the masked point."""
        if self.distributed:
            scratch = torch.zeros_like(self.imp[key])
            ops.fused_importance(x, g, scratch, alpha=1.0, first=True)
            self._pending[key] = scratch
            return
        ops.fused_importance(x, g, self.imp[key], alpha=self.alpha, first=self.first[key])
        self.first[key] = False

    def commit(self) -> None:
        """End of a step under torch.distributed: sum the ranks' step scores (every key, in
        a fixed order, one all-reduce) and apply the EMA."""
        if not self.distributed:
            return
        keys = list(self.imp)
        flat = torch.cat([self._pending.get(k, torch.zeros_like(self.imp[k])) for k in keys])
        dist.all_reduce(flat)
        off = 0
        for k in keys:
            n = self.imp[k].numel()
            s = flat[off: off + n]
            off += n
            if self.first[k]:
                self.imp[k].copy_(s)
            else:
                self.imp[k].mul_(1.0 - self.alpha).add_(s, alpha=self.alpha)
            self.first[k] = False
        self._pending.clear()

    def absolute(self, key) -> torch.Tensor:
        return self.imp[key].abs()

    def state(self) -> tuple[dict, dict]:
        t = {f"imp.{p}.{s}": v for (p, s), v in self.imp.items()}
        return t, {"first": [[p, s, f] for (p, s), f in self.first.items()]}

    def load(self, tensors: dict, meta: dict) -> None:
        for (p, s) in self.imp:
            self.imp[(p, s)].copy_(tensors[f"imp.{p}.{s}"])
        for p, s, f in meta["first"]:
            self.first[(p, s)] = bool(f)


def _device(module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _all_sum(*values: float) -> list[float]:
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _masks_state(prefix: str, masks: MaskSet) -> dict:
    return {f"{prefix}.{p}.{s}": m for p, s, m in masks.units()}


def _load_masks(prefix: str, masks: MaskSet, tensors: dict) -> None:
    for p, s, m in masks.units():
        m.copy_(tensors[f"{prefix}.{p}.{s}"])


def masked_loss(model, masks: MaskSet | None, dataset, batch_size: int = 256) -> float:
    """Mean native loss of the (masked) model over a window dataset, no grad."""
    total, n = 0.0, 0
    was = model.module.training
    model.module.eval()
    ctx = attach(model.module, masks, "apply") if masks is not None else contextlib.nullcontext()
    rank, n_proc = world()
    with torch.no_grad(), ctx:
        for i, (c, t) in enumerate(dataset.batches(batch_size)):
            if i % n_proc != rank:  # under torch.distributed each rank takes every n_proc-th batch
                continue
            dev = _device(model.module)
            loss = model.family.loss(model.module, c.to(dev), t.to(dev))
            total += float(loss) * c.shape[0]
            n += c.shape[0]
    model.module.train(was)
    total, n = _all_sum(total, n)
    return total / max(n, 1)


def coupled_qk(structure) -> list[tuple[str, str]]:
    """(q, k) paths whose output dims are one unit: Q/K dims that surgery slices as a union
    (qk_reducible), without RoPE and without grouped KV heads. There the score of
    q.out[i] equals that of k.out[i] exactly, since both masks scale the same term
    q_i * k_i of every attention logit; rounding alone would then decide which of the
    two is ranked first, so the two are pruned together."""
    return [(a.q, a.k) for b in structure.blocks for a in b.attention
            if a.qk_reducible and not a.rope and a.num_heads == a.num_kv_heads]


def _prune_step(masks: MaskSet, imp: Importance, ratio: float, steps: int,
                coupled: list[tuple[str, str]] = ()) -> int:
    """Zero the lowest-|imp| alive units of the global pool; returns how many were zeroed.

    coupled: (q, k) Linear paths whose output units i are one unit (see coupled_qk): when
    either is chosen, both are zeroed."""
    keys, scores = [], []
    for p, s, m in masks.units():
        alive = torch.nonzero(m != 0).flatten()
        if alive.numel():
            keys.append((p, s, alive))
            scores.append(imp.absolute((p, s))[alive].cpu())
    if not scores:
        return 0
    pool = torch.cat(scores)
    k = min(pool.numel(), math.ceil(pool.numel() * ratio / steps))
    zero = pool == 0
    order = torch.argsort(pool, stable=True)
    chosen = torch.zeros_like(zero)
    chosen[order[:k]] = True
    chosen |= zero
    drop: dict[tuple[str, str], torch.Tensor] = {}
    off = 0
    for (p, s, alive), sc in zip(keys, scores):
        sel = chosen[off: off + sc.numel()]
        off += sc.numel()
        full = torch.zeros(masks.get(p, s).numel(), dtype=torch.bool)
        full[alive.cpu()[sel]] = True
        drop[(p, s)] = full
    for q, kk in coupled:
        a, b = drop.get((q, "out")), drop.get((kk, "out"))
        if a is not None and b is not None and a.numel() == b.numel():
            drop[(q, "out")] = drop[(kk, "out")] = a | b
    h = drop.get((HIDDEN, "out"))
    if h is not None:
        keep_one_channel(h, masks.m_hidden, imp.absolute((HIDDEN, "out")))
    n = 0
    for (p, s), full in drop.items():
        m = masks.get(p, s)
        full &= (m != 0).cpu()
        if full.any():
            m[full.nonzero().flatten().to(m.device)] = 0.0
            n += int(full.sum())
    return n


def pre_prune(model, train, val, cfg: PruneConfig, log=None):
    """What goes before channel scoring, in order: whole blocks (cfg.drop_blocks, chosen on
    validation: tsprune.prune.depth), then the family's own units (Time-MoE: experts by
    routing frequency on train+val). Both change the model, so they work on a copy; returns
    (the model to score, the plan's ``extra`` recording them, or None when neither ran).
    Unit paths in the plan then refer to the shallower model."""
    extra = None
    if cfg.drop_blocks:
        from .depth import drop_for_scoring  # lazy: import cycle (depth imports this module)
        model, extra = drop_for_scoring(model, val, cfg, log=log)
    if model.family.pre_prunes:
        probe = model if extra else model.clone()
        fam_extra = model.family.pre_prune(probe.module, [train, val], cfg)
        if fam_extra:
            model, extra = probe, {**(extra or {}), **fam_extra}
    return model, extra


def keep_one_channel(drop: torch.Tensor, mask: torch.Tensor, score: torch.Tensor) -> None:
    """The residual stream keeps at least one channel: when ``drop`` (bool, CPU) would
    zero every channel alive in ``mask``, the alive one with the highest ``score`` stays."""
    alive = (mask != 0).cpu()
    if alive.any() and not (alive & ~drop).any():
        sc = score.detach().cpu().double().masked_fill(~alive, -math.inf)
        drop[int(torch.argmax(sc))] = False


def score(model, train, val, cfg: PruneConfig, *, show_progress: bool = True,
          log=None, checkpoint=None, profile=None) -> Plan:
    """Find pruning masks for ``model`` (a tsprune.model.TSModel) on window datasets.

    train, val: WindowDataset-like objects (len, batches, subset). Returns a Plan; the
    model is left unchanged (weights untouched, no masks attached).
    checkpoint: a directory; the state is saved there after every pruning step and a
      scoring interrupted at any point continues from its last step when called again.
    Under torch.distributed every rank scores its share of each mini-batch; step scores
    are all-reduced before ranking, so all ranks produce the same plan.
    With ``cfg.budget`` the units are pruned down to the budget instead
    (tsprune.prune.to_budget; profile: the FLOPs profile of the deployed forecast).
    """
    if cfg.budget is not None:
        from .to_budget import score_to_budgets  # lazy: import cycle (to_budget imports this module)
        return score_to_budgets(model, train, val, cfg, [cfg.budget], show_progress=show_progress,
                                log=log, checkpoint=checkpoint, profile=profile)[0]
    cfg.check_budget_options()
    family, module = model.family, model.module
    if cfg.hidden:
        family.hidden_width(module)  # a family that cannot says so before any work
    params_dense = count_params(module)
    model, extra = pre_prune(model, train, val, cfg, log=log)
    module = model.module
    structure = family.structure(module)
    masks = MaskSet(module, structure.linears(), family.hidden_width(module) if cfg.hidden else None)
    coupled = coupled_qk(structure)
    ratio = cfg.ratio if cfg.ratio is not None else family.default_ratio
    max_epochs = cfg.max_epochs or family.prune_epochs
    train, val, macro, steps = scoring_windows(train, val, cfg)
    n = len(train)

    req = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    was_training = module.training
    module.eval()  # dropout off

    history: list[dict] = []
    best_val = math.inf
    best_masks, best_epoch = masks.clone(), None
    stale = 0
    capped = False
    done_epochs, done_steps, finished = 0, 0, False
    t0 = time.time()
    imp = Importance(masks, cfg.ema)  # the EMA runs across steps and epochs
    rank, _ = world()
    fingerprint = {"cfg": asdict(cfg), "n": n, "macro": macro, "extra": extra or {}}
    st = resumed_state(checkpoint, fingerprint)
    if st is not None:
        tens, meta = st
        _load_masks("mask", masks, tens)
        _load_masks("best", best_masks, tens)
        imp.load(tens, meta)
        history, best_val, best_epoch = meta["history"], meta["best_val"], meta["best_epoch"]
        stale, capped = meta["stale"], meta["capped"]
        done_epochs, done_steps = meta["epoch"], meta["step"]
        finished = bool(meta.get("finished"))

    def save(epoch_done: int, step_done: int, finished: bool = False) -> None:
        if checkpoint is None or rank != 0:
            return
        it, im = imp.state()
        save_state(checkpoint, {**_masks_state("mask", masks), **_masks_state("best", best_masks), **it},
                   {**im, "fingerprint": fingerprint, "history": history, "best_val": best_val,
                    "best_epoch": best_epoch, "stale": stale, "capped": capped,
                    "epoch": epoch_done, "step": step_done, "finished": finished})

    try:
        if not history:  # the curve starts at the dense model (informative; not a candidate)
            history.append({"epoch": 0, "val_loss": masked_loss(model, masks, val), "sparsity": 0.0,
                            "alive_channels": masks.alive(), "time_s": round(time.time() - t0, 2)})
            if log:
                log(history[-1])
        for epoch in range(done_epochs, max_epochs):
            if finished:
                break
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch))
            first_step = done_steps if epoch == done_epochs else 0
            bar = progress(total=n, initial=min(n, first_step * macro),
                           desc=f"prune epoch {epoch + 1}/{max_epochs}", unit="win",
                           disable=not show_progress or rank != 0)
            for step in range(first_step, steps):
                if capped:
                    break
                ids = order[step * macro: (step + 1) * macro]
                loss_sum, seen = score_minibatch(model, masks, imp, train, ids, cfg,
                                                 on_chunk=bar.update)
                zeroed = _prune_step(masks, imp, ratio, steps, coupled)
                sp = 1.0 - count_params(module, analyze(structure, masks)) / params_dense
                rec = {"epoch": epoch + 1, "step": step + 1, "train_loss": loss_sum / max(seen, 1),
                       "zeroed": zeroed, "alive_channels": masks.alive(),
                       "total_channels": masks.total(), "sparsity": sp,
                       "time_s": round(time.time() - t0, 2)}
                history.append(rec)
                if log:
                    log(rec)
                bar.set_postfix(sparsity=f"{sp:.3f}", loss=f"{rec['train_loss']:.4f}")
                if cfg.max_sparsity is not None and sp >= cfg.max_sparsity:
                    capped = True
                save(epoch, step + 1)
            bar.close()
            v = masked_loss(model, masks, val)
            sp = 1.0 - count_params(module, analyze(structure, masks)) / params_dense
            rec = {"epoch": epoch + 1, "val_loss": v, "sparsity": sp,
                   "alive_channels": masks.alive(), "time_s": round(time.time() - t0, 2)}
            history.append(rec)
            if log:
                log(rec)
            if v < best_val:
                best_val, best_masks, best_epoch, stale = v, masks.clone(), epoch + 1, 0
            else:
                stale += 1
            finished = stale >= cfg.patience or capped or epoch + 1 == max_epochs
            save(epoch + 1, 0, finished)
            if finished:
                break
    finally:
        for p, r in zip(module.parameters(), req):
            p.requires_grad_(r)
        module.train(was_training)

    # exact (what apply(model, plan) has): beside the Linears, dead groups' owners and
    # per-head Q/K vectors (TimesFM 2.0's query scaling) and the residual channels' tensors
    params_pruned = CostModel(module, structure, hidden=best_masks.hidden).measure(best_masks).params
    return Plan(family=family.name, masks=best_masks.to_json(), params_dense=params_dense,
                params_pruned=params_pruned, config={**asdict(cfg), "ratio": ratio,
                                                     "max_epochs": max_epochs,
                                                     "macro_batch_effective": macro,
                                                     "steps_per_epoch": steps,
                                                     "best_val_loss": best_val},
                history=history, best_epoch=best_epoch, extra=extra or {})


def resumed_state(checkpoint, fingerprint: dict):
    """(tensors, meta) saved in ``checkpoint`` by a run with the same ``fingerprint``, else None."""
    st = load_state(checkpoint) if checkpoint is not None else None
    if st is None or st[1].get("fingerprint") != json.loads(json.dumps(fingerprint)):
        return None
    return st


def scoring_windows(train, val, cfg: PruneConfig):
    """The windows a scoring run sees: (train, val, macro-batch, steps per epoch). ``train``
    is cut to ``cfg.calib_samples`` and ``val`` to ``cfg.val_samples`` (fixed by the seed);
    the macro-batch is ``cfg.macro_batch``, made smaller so that an epoch has at least
    ``cfg.min_steps`` pruning steps."""
    if cfg.calib_samples:
        train = train.subset(cfg.calib_samples, seed=cfg.seed)
    if cfg.val_samples:
        val = val.subset(cfg.val_samples, seed=cfg.seed + 1)
    n = len(train)
    macro = max(cfg.batch_size, min(cfg.macro_batch, math.ceil(n / cfg.min_steps)))
    return train, val, macro, max(1, math.ceil(n / macro))


def score_minibatch(model, masks: MaskSet, imp: Importance, train, ids, cfg: PruneConfig,
                    on_chunk=None) -> tuple[float, int]:
    """Score the mini-batch ``ids`` of ``train`` in chunks of ``cfg.batch_size``: one backward
    pass per chunk, each committed to the importance EMA. Returns (loss sum, windows seen),
    summed over all ranks (under torch.distributed each rank scores its share of a chunk).
    on_chunk(n): called after each chunk of n windows (progress)."""
    rank, n_proc = world()
    loss_sum, seen = 0.0, 0
    for s in range(0, ids.numel(), cfg.batch_size):
        chunk = ids[s: s + cfg.batch_size]
        mine = chunk[rank::n_proc]
        if mine.numel():
            c, t = train.gather(mine)
            # a batch mean over the global mini-batch: each rank's loss is scaled
            # by its share, so per-sample gradients match one process exactly
            ls = _score_batch(model, masks, imp, c, t, cfg.scorer,
                              scale=mine.numel() / chunk.numel())
            loss_sum += ls * chunk.numel()
        imp.commit()
        seen += chunk.numel()
        if on_chunk is not None:
            on_chunk(chunk.numel())
    (loss_sum,) = _all_sum(loss_sum)
    return loss_sum, seen


def _score_batch(model, masks: MaskSet, imp: Importance, c, t, scorer: str,
                 scale: float = 1.0) -> float:
    """One backward pass; updates the importance EMA of every mask once.

    A Linear called k times in one forward contributes the sum of its k per-sample
    gradients (the mask is shared by the calls): the reference path sums the leaves'
    gradients, the fused path concatenates the calls' tokens before reducing."""
    family, module = model.family, model.module
    dev = _device(module)
    c, t = c.to(dev), t.to(dev)
    if scorer == "reference":
        with attach(module, masks, "reference") as leaves:
            loss = family.loss(module, c, t)
            (loss * scale if scale != 1.0 else loss).backward()
            for key, ls in leaves.items():
                grads = [leaf.grad for leaf in ls if leaf.grad is not None]
                if grads:
                    imp.update_from_grad(key, torch.stack(grads).sum(0) if len(grads) > 1 else grads[0])
        return loss.detach().item()

    # A mask whose Linear ran once is reduced inside its backward hook, so its activations
    # and gradient are freed at once; only Linears called several times wait for all calls.
    pending: dict[tuple[str, str], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    calls: dict = {}

    def on_grad(p, s, acts, grad):
        key = (p, s)
        if calls.get(key, 1) == 1:
            imp.update_from_acts(key, acts, grad)
            return
        pending.setdefault(key, []).append((acts, grad))
        pairs = pending[key]
        if len(pairs) == calls[key]:  # (B, T_1 + ... + T_k, d): a sum over more tokens
            x = torch.cat([a.reshape(a.shape[0], -1, a.shape[-1]) for a, _ in pairs], dim=1)
            g = torch.cat([b.reshape(b.shape[0], -1, b.shape[-1]) for _, b in pairs], dim=1)
            del pending[key]
            imp.update_from_acts(key, x, g)

    with attach(module, masks, "fused", on_grad=on_grad) as counts:
        c = c.clone().requires_grad_(True)
        loss = family.loss(module, c, t)
        calls.update(counts)  # the forward is complete: every mask's number of calls is known
        (loss * scale if scale != 1.0 else loss).backward()
    for key, pairs in pending.items():  # calls whose output never reached the loss
        x = torch.cat([a.reshape(a.shape[0], -1, a.shape[-1]) for a, _ in pairs], dim=1)
        g = torch.cat([b.reshape(b.shape[0], -1, b.shape[-1]) for _, b in pairs], dim=1)
        imp.update_from_acts(key, x, g)
    return loss.detach().item()
