"""Budgeted full fine-tuning by validation (METHOD.md section 5, issue 20).

All remaining weights, Adam without weight decay (or the family's optimizer), the
family's native loss, dropout off. The run validates every ``val_every`` optimizer steps
(or at every epoch end with 0) and when it stops, keeps the best weights in memory (the starting weights count as
step 0), and stops when ``patience`` validations in a row did not improve, after
``epochs`` epochs, or when its wall-time budget is spent. With ``plateau_decays`` > 0 a
spent patience first sends the run back to its best weights at a tenth of the rate, that
many times, before it stops. With ``weight_ema`` > 0 a full run validates, keeps and returns an
exponential moving average of its weights (updated after every step) instead of the
weights of its last step; probes are unchanged.

The learning rate comes from a grid (default: the family's, extended upwards,
tsprune.train.lr_grid). With ``lr_probe_steps`` > 0 every rate of the grid first trains
that many steps from the same starting weights on the same batches, the rate with the
best validation then gets the full run; with 0 every rate gets a full run (the paper).
The dense and the pruned arms of a comparison get the same grid, probe and budget.

Validation uses the validation windows' own horizon (tsprune.train.validation): pass
windows at the horizon the user asked for and the forecast is rolled out when that is
longer than the model's output patch.

The paper's recipe: ``FinetuneConfig(lr=(3e-5,), epochs=1, patience=1, val_every=0,
lr_probe_steps=0, val_metric="loss")``.

Distillation (tsprune.train.distill; ``distill`` != "off", a ``teacher`` given): every step
mixes the native loss with a teacher term by a weight w. "auto" searches w like the rate:
the rates are probed at w = 0 (plain fine-tuning), then the other weights of
distill.AUTO_WEIGHTS at the chosen rate, on the same batches, and the best (rate, w) gets
the full run: len(grid) + 2 probes, all inside the time budget. With lr_probe_steps=0
every (rate, w) gets a full run. "off" (and a fixed w = 0) is plain fine-tuning, step for
step the same as without a teacher.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tsprune.distributed import world
from tsprune.errors import bad_arg
from tsprune.progress import progress
from tsprune.state import load_state, optimizer_from_tensors, optimizer_to_tensors, save_state

from .distill import TeacherCache, check_distill, distill_loss, teacher_cache, weights
from .lr_grid import default_lr_grid
from .validation import METRICS, rolls_out, validate

DEFAULT_MAX_EPOCHS = 10
PLATEAU_FACTOR = 0.1  # the learning rate after a plateau (FinetuneConfig.plateau_decays)
EMA_WARMUP = 10  # the average's decay at update n is min(weight_ema, (1 + n) / (EMA_WARMUP + n))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class FinetuneConfig:
    """lr: one learning rate or a grid; None = default_lr_grid(family).
    epochs: at most this many epochs; None = DEFAULT_MAX_EPOCHS (10).
    patience: validations in a row without improvement before the run stops.
    val_every: optimizer steps between validations, counted across epochs (0 = at every
      epoch end instead); the run's last steps are always validated.
    time_budget_s: wall-time budget of the whole call, lr probes and validations included
      (None = no budget); in a full-grid search every rate gets an equal share of what is left.
    lr_probe_steps: steps per rate of the grid before the best gets the full run (0 = a
      full run per rate).
    val_metric: "forecast_mse" (point forecast at the validation horizon, rolled out) or
      "loss" (the family's native loss over the first output patch).
    train_samples / val_samples: optional seeded subsampling of windows.
    plateau_decays: when patience is spent, go back to the run's best weights and go on at
      the learning rate x PLATEAU_FACTOR (fresh optimizer state), up to this many times
      before the run stops (0 = stop at the first plateau).
    weight_ema: decay of an exponential moving average of the weights, updated after every step
      of a full run (warm-up: min(ema, (1 + n) / (10 + n)) at update n); the average is
      what is validated, kept and returned. 0 = off (the weights of the last step).
    distill: "off" (plain fine-tuning), "auto" (mixing weight probed over
      distill.AUTO_WEIGHTS) or a fixed weight in [0, 1] of the teacher term
      (tsprune.train.distill); anything but "off" needs finetune(..., teacher=)."""

    lr: tuple[float, ...] | None = None
    epochs: int | None = None
    batch_size: int = 64
    patience: int = 3
    train_samples: int | None = None
    val_samples: int | None = 4096
    grad_clip: float | None = None
    seed: int = 0
    val_every: int = 100
    time_budget_s: float | None = None
    lr_probe_steps: int = 50
    val_metric: str = "forecast_mse"
    distill: str | float = "off"
    plateau_decays: int = 0
    weight_ema: float = 0.0

    def __post_init__(self):
        if self.lr is not None:
            lrs = (self.lr,) if isinstance(self.lr, (int, float)) else tuple(self.lr)
            if not lrs or any((not isinstance(x, (int, float))) or not (0 < x < 1) for x in lrs):
                raise bad_arg("--lr", self.lr, "one or more learning rates in (0, 1)")
            object.__setattr__(self, "lr", tuple(float(x) for x in lrs))
        if self.epochs is not None and (not _is_int(self.epochs) or self.epochs < 1):
            raise bad_arg("--finetune-epochs", self.epochs, "an integer >= 1")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise bad_arg("--batch-size", self.batch_size, "an integer >= 1")
        if not _is_int(self.patience) or self.patience < 1:
            raise bad_arg("--finetune-patience", self.patience, "an integer >= 1 (validations)")
        for name in ("train_samples", "val_samples"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise bad_arg(f"--{name.replace('_', '-')}", v, "a positive integer or none")
        if not _is_int(self.val_every) or self.val_every < 0:
            raise bad_arg("--val-every", self.val_every, "an integer >= 0 (steps; 0 = at every epoch end)")
        b = self.time_budget_s
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))
                              or not math.isfinite(b) or b <= 0):
            raise bad_arg("--finetune-budget", b, "a number of seconds > 0, or none")
        if not _is_int(self.lr_probe_steps) or self.lr_probe_steps < 0:
            raise bad_arg("--lr-probe-steps", self.lr_probe_steps,
                          "an integer >= 0 (0 = a full run per learning rate)")
        if not _is_int(self.plateau_decays) or self.plateau_decays < 0:
            raise bad_arg("--plateau-decays", self.plateau_decays, "an integer >= 0")
        e = self.weight_ema
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < 1:
            raise bad_arg("--finetune-ema", e, "a decay in [0, 1) (0 = off)")
        object.__setattr__(self, "weight_ema", float(e))
        if self.val_metric not in METRICS:
            raise bad_arg("--val-metric", self.val_metric, " or ".join(METRICS))
        object.__setattr__(self, "distill", check_distill(self.distill))


@dataclass
class FinetuneResult:
    """The chosen run: lr, its best validation figure (val_loss) and the starting one
    (val_loss_before); epochs_run / steps_run of that run, the step of its best weights
    (best_step, 0 = the starting weights), why it stopped ("patience", "epochs", "budget").
    trials: one dict per probe and per full run; history: the chosen run's validations.
    distill_weight: the chosen run's mixing weight w (None without distillation; trials and
    history then carry "w" too)."""

    lr: float
    val_loss: float
    val_loss_before: float
    epochs_run: int
    trials: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps_run: int = 0
    best_step: int = 0
    stopped: str = ""
    val_metric: str = "forecast_mse"
    val_horizon: int = 0
    rolled_out: bool = False
    distill_weight: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _optimizer(model, lr: float):
    params = [p for p in model.module.parameters() if p.requires_grad]
    if model.family.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    return torch.optim.Adam(params, lr=lr, weight_decay=0.0)


class _LossModule(nn.Module):
    """forward(context, target[, teacher point, teacher quantiles, w]) -> the training loss,
    so that DistributedDataParallel can wrap the whole training step: the family's loss
    (+ auxiliary loss), mixed with the distillation term by w (tsprune.train.distill; w = 0
    or no teacher: the family's loss alone, w = 1: the teacher term alone)."""

    def __init__(self, family, module: nn.Module):
        super().__init__()
        self.family, self.module = family, module

    def forward(self, c, t, tp=None, tq=None, w: float = 0.0):
        dev = next(self.module.parameters()).device
        loss = None
        if tp is None or w < 1.0:
            loss = self.family.loss(self.module, c.to(dev), t.to(dev))
            aux = self.family.aux_loss(self.module)
            loss = loss if aux is None else loss + aux
            if tp is None or w == 0.0:
                return loss
        c = c.to(dev)
        f = self.family.forecast(self.module, c, tp.shape[1])
        if not f.point.requires_grad:
            raise ValueError(f"distillation: the {self.family.name} forecast is not differentiable")
        d = distill_loss(f.point, f.quantiles, tp.to(dev), None if tq is None else tq.to(dev), c)
        return d if loss is None else (1.0 - w) * loss + w * d


def _agree(flag: bool) -> bool:
    """True on every rank when it is true on any (a wall-clock decision must be shared)."""
    if world()[1] == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _clone_state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Ema:
    """An exponential moving average of a module's state (floating tensors averaged, the
    rest copied), updated after each optimizer step; ``n`` counts the updates."""

    def __init__(self, decay: float, state: dict, n: int = 0):
        self.decay, self.state, self.n = decay, state, n
        self.avg = [k for k, v in state.items() if v.is_floating_point()]
        self.copied = [k for k in state if k not in set(self.avg)]

    def update(self, module: nn.Module) -> None:
        d = min(self.decay, (1 + self.n) / (EMA_WARMUP + self.n))
        cur = module.state_dict()
        if self.avg:
            torch._foreach_lerp_([self.state[k] for k in self.avg], [cur[k].detach() for k in self.avg], 1.0 - d)
        for k in self.copied:
            self.state[k].copy_(cur[k])
        self.n += 1

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module):
        """The module holds the average inside the block, its own weights after."""
        own = _clone_state(module)
        module.load_state_dict(self.state)
        try:
            yield
        finally:
            module.load_state_dict(own)


class _Ckpt:
    """Periodic, atomic checkpoints of a fine-tuning run (rank 0 writes)."""

    def __init__(self, path, every_s: float):
        self.path, self.every_s, self.last = path, every_s, time.time()

    def due(self) -> bool:
        return self.path is not None and time.time() - self.last >= self.every_s

    def save(self, tensors: dict, meta: dict) -> None:
        if self.path is None or world()[0] != 0:
            return
        save_state(self.path, tensors, meta)
        self.last = time.time()

    def load(self):
        return None if self.path is None else load_state(self.path)


def training_windows(train, cfg: FinetuneConfig):
    """The training windows ``finetune`` uses: ``train`` subsampled by cfg.train_samples."""
    return train.subset(cfg.train_samples, seed=cfg.seed) if cfg.train_samples else train


def validation_windows(val, cfg: FinetuneConfig):
    """The validation windows ``finetune`` uses: ``val`` subsampled by cfg.val_samples."""
    return val.subset(cfg.val_samples, seed=cfg.seed + 1) if cfg.val_samples else val


def _after_probes(pos: dict, ws: tuple, steps: int) -> list:
    """Queue entries once the probes queued so far are done: the rate of the best probe
    (fixed by the first call), then probes of the mixing weights not yet tried at that rate,
    then the full run of the best (rate, w) probed (ties: the earlier probe)."""
    probes = [tr for tr in pos["trials"] if "probe_steps" in tr]
    if pos.get("lr_star") is None:
        pos["lr_star"] = min(probes, key=lambda tr: tr["val_loss"])["lr"]
    lr = pos["lr_star"]
    at_lr = [tr for tr in probes if tr["lr"] == lr]
    tried = {tr.get("w", 0.0) for tr in at_lr}
    rest = [w for w in ws if w not in tried]
    if rest:
        return [[lr, steps, True, w] for w in rest]
    return [[lr, 0, False, min(at_lr, key=lambda tr: tr["val_loss"]).get("w", 0.0)]]


def _fresh_run(v0: float) -> dict:
    """The per-run part of the position (one learning rate, probe or full run)."""
    return {"epoch": 0, "batch": 0, "step": 0, "tot": 0.0, "n": 0, "stale": 0, "run_best_val": v0,
            "run_best_step": 0, "last_val_step": 0, "history": [], "stopped": None, "deadline": None,
            "decays": 0}


def finetune(model, train, val, cfg: FinetuneConfig = FinetuneConfig(), *,
             show_progress: bool = True, log=None, checkpoint=None,
             checkpoint_every_s: float = 120.0, teacher=None) -> FinetuneResult:
    """Fine-tune ``model`` (TSModel) in place on window datasets and leave it holding the best
    weights found (the starting weights count as step 0).

    train: windows (context (B, L), target (B, h)) with h <= the model's output patch for
      the loss; val: windows at the horizon to validate on (may be longer: rolled out).
    checkpoint: a directory; the run saves its state there every ``checkpoint_every_s``
      seconds and at every epoch end, and a call with the same arguments continues from
      the last checkpoint (same batches, same optimizer state; a time budget counts the
      seconds already spent).
    Under torch.distributed (torchrun) each rank trains on its share of every batch inside
    DistributedDataParallel; the losses are scaled so that the gradients equal one process's,
    and the decision to stop on the time budget is shared by all ranks.
    teacher: with cfg.distill != "off", the dense teacher (a TSModel: its forecasts of the
      training windows are computed once, before the clock of the budget starts, and kept in
      CHECKPOINT/teacher; or a distill.TeacherCache of those windows, e.g. the pipeline's).
    """
    t0 = time.time()
    grid = tuple(cfg.lr) if cfg.lr else default_lr_grid(model.family)
    epochs = cfg.epochs or DEFAULT_MAX_EPOCHS
    ws = weights(cfg.distill)
    distilling = cfg.distill != "off"
    probe = cfg.lr_probe_steps if len(grid) > 1 or len(ws) > 1 else 0
    train = training_windows(train, cfg)
    val = validation_windows(val, cfg)
    cache = None
    if any(w > 0 for w in ws):
        if teacher is None:
            raise ValueError(f"FinetuneConfig.distill={cfg.distill!r} needs a teacher "
                             f"(finetune(..., teacher=TSModel or TeacherCache))")
        cache = teacher if isinstance(teacher, TeacherCache) else teacher_cache(
            teacher, train, checkpoint=None if checkpoint is None else Path(checkpoint) / "teacher",
            show_progress=show_progress and world()[0] == 0)
        cache.lookup(train.window_ids())  # every training window is there (KeyError if not)
    torch.manual_seed(cfg.seed)
    module = model.module
    rank, n_proc = world()
    ck = _Ckpt(checkpoint, checkpoint_every_s)
    fingerprint = json.loads(json.dumps({"cfg": asdict(cfg), "lrs": list(grid), "epochs": epochs,
                                         "probe": probe, "n_train": len(train), "n_val": len(val),
                                         "val_horizon": val.horizon, "world": n_proc,
                                         "teacher": None if cache is None else cache.key}))
    st = ck.load()
    if st is not None and st[1].get("fingerprint") != fingerprint:
        st = None
    S: dict = {"run_best": None, "best_state": None, "ema": None}  # weights kept in memory
    if st is None:
        v0 = validate(model, val, cfg.val_metric)
        start = _clone_state(module)
        queue = [[lr, probe, True, ws[0]] for lr in grid] if probe else \
            [[lr, 0, False, w] for lr in grid for w in ws]
        pos = {"queue": queue, "qi": 0, "elapsed": 0.0, "trials": [], "best": None, **_fresh_run(v0)}
        opt_t, opt_m = None, None
    else:
        tens, meta = st
        v0, pos = meta["v0"], meta["pos"]
        start = {k[6:]: v for k, v in tens.items() if k.startswith("start.")}
        module.load_state_dict({k[6:]: v for k, v in tens.items() if k.startswith("model.")})
        S["run_best"] = {k[4:]: v for k, v in tens.items() if k.startswith("run.")} or None
        S["best_state"] = {k[5:]: v for k, v in tens.items() if k.startswith("best.")} or None
        opt_t = {k: v for k, v in tens.items() if k.startswith("opt.")} or None
        opt_m = meta.get("opt")
        ema_state = {k[4:]: v for k, v in tens.items() if k.startswith("ema.")}
        if ema_state:
            S["ema"] = _Ema(cfg.weight_ema, ema_state, meta.get("ema_n", 0))
    base_elapsed, t_resume = pos["elapsed"], time.time()

    def clock() -> float:  # seconds spent by this fine-tuning, across resumes
        return base_elapsed + time.time() - t_resume

    def save_ck(opt):
        pos["elapsed"] = clock()
        t, m = optimizer_to_tensors(opt) if opt is not None else ({}, None)
        tensors = {**{f"model.{k}": v for k, v in module.state_dict().items()},
                   **{f"start.{k}": v for k, v in start.items()}, **t}
        if S["run_best"] is not None:
            tensors.update({f"run.{k}": v for k, v in S["run_best"].items()})
        if S["best_state"] is not None:
            tensors.update({f"best.{k}": v for k, v in S["best_state"].items()})
        meta = {"fingerprint": fingerprint, "v0": v0, "pos": pos, "opt": m}
        if S["ema"] is not None:
            tensors.update({f"ema.{k}": v for k, v in S["ema"].state.items()})
            meta["ema_n"] = S["ema"].n
        ck.save(tensors, meta)

    def epoch_no() -> int:  # 1-based epoch of the latest step
        return pos["epoch"] + (1 if pos["batch"] else 0)

    def check(lr: float, is_probe: bool, w: float) -> None:
        """Validate now (the moving average, when there is one); keep the run's best
        weights (full runs only)."""
        ema = S["ema"] if not is_probe else None
        if ema is not None:
            with ema.swapped_in(module):
                v = validate(model, val, cfg.val_metric)
        else:
            v = validate(model, val, cfg.val_metric)
        rec = {"lr": lr, "epoch": epoch_no(), "step": pos["step"],
               "train_loss": pos["tot"] / max(pos["n"], 1), "val_loss": v, "seconds": round(clock(), 2)}
        if distilling:
            rec["w"] = w
        if is_probe:
            rec["probe"] = True
        pos["history"].append(rec)
        if log:
            log(rec)
        if v < pos["run_best_val"]:
            pos.update(run_best_val=v, run_best_step=pos["step"], stale=0)
            if not is_probe:
                S["run_best"] = {k: x.clone() for k, x in ema.state.items()} if ema is not None \
                    else _clone_state(module)
        else:
            pos["stale"] += 1
        pos.update(tot=0.0, n=0, last_val_step=pos["step"])

    def plateau(opt) -> bool:
        """Patience is spent: with decays left, back to the run's best weights (the starting
        ones if none was better) at lr x PLATEAU_FACTOR and a fresh optimizer state."""
        if pos.get("decays", 0) >= cfg.plateau_decays:
            return False
        module.load_state_dict(S["run_best"] if S["run_best"] is not None else start)
        if S["ema"] is not None:  # the average starts again from the weights gone back to
            S["ema"] = _Ema(cfg.weight_ema, _clone_state(module))
        for g in opt.param_groups:
            g["lr"] *= PLATEAU_FACTOR
        opt.state.clear()
        pos.update(decays=pos.get("decays", 0) + 1, stale=0)
        return True

    def lr_now(opt) -> float:
        return float(opt.param_groups[0]["lr"])

    for p in module.parameters():
        p.requires_grad_(True)
    clip = cfg.grad_clip if cfg.grad_clip is not None else getattr(model.family, "grad_clip", None)
    step_module = _LossModule(model.family, module)
    if n_proc > 1:
        # some heads may be unused by the loss (e.g. an unused quantile head)
        step_module = DistributedDataParallel(step_module, find_unused_parameters=True)
    budget = cfg.time_budget_s
    while pos["qi"] < len(pos["queue"]):
        lr, max_steps, is_probe, w = pos["queue"][pos["qi"]]
        fresh = pos["epoch"] == 0 and pos["batch"] == 0 and opt_t is None
        if fresh:
            module.load_state_dict(start)
            S["run_best"] = None
            S["ema"] = _Ema(cfg.weight_ema, _clone_state(module)) if cfg.weight_ema and not is_probe else None
            if budget is not None:  # a full run shares what is left with the full runs after it
                full_left = sum(1 for q in pos["queue"][pos["qi"]:] if not q[2]) if not is_probe else 1
                pos["deadline"] = budget if is_probe else clock() + max(budget - clock(), 0.0) / full_left
        opt = _optimizer(model, lr)
        if opt_t is not None:
            optimizer_from_tensors(opt, opt_t, opt_m)
            opt_t = opt_m = None
        if pos["epoch"] >= epochs:
            pos["stopped"] = pos["stopped"] or "epochs"
        while pos["stopped"] is None:
            epoch = pos["epoch"]
            module.eval()  # dropout off (METHOD.md s.5); gradients still flow
            n_win = len(train) if not max_steps else min(len(train), (max_steps - pos["step"]
                                                                      + pos["batch"]) * cfg.batch_size)
            what = "probe" if is_probe else f"epoch {epoch + 1}/{epochs}"
            bar = progress(total=n_win, desc=f"finetune lr={lr:g}{f' w={w:g}' if distilling else ''} {what}",
                           unit="win", disable=not show_progress or rank != 0)
            for i, batch in enumerate(train.batches(cfg.batch_size, shuffle=True, seed=cfg.seed + epoch,
                                                    with_ids=cache is not None)):
                ids, c, t = batch if cache is not None else (None, *batch)
                if i < pos["batch"]:
                    bar.update(c.shape[0])
                    continue
                # each rank takes its share of the batch; DDP averages gradients over ranks,
                # so a share's mean loss is weighted by share * n_proc / batch
                cs, ts = (c[rank::n_proc], t[rank::n_proc]) if n_proc > 1 else (c, t)
                tp, tq = cache.lookup(ids) if cache is not None and w > 0 else (None, None)
                if tp is not None and n_proc > 1:
                    tp, tq = (tp[rank::n_proc] if cs.shape[0] else tp[:1],
                              None if tq is None else tq[rank::n_proc] if cs.shape[0] else tq[:1])
                opt.zero_grad(set_to_none=True)
                if cs.shape[0]:
                    loss = step_module(cs, ts, tp, tq, w)
                    (loss * (cs.shape[0] * n_proc / c.shape[0]) if n_proc > 1 else loss).backward()
                    lv = loss.detach().item() * cs.shape[0]
                else:  # an empty share still joins DDP's gradient all-reduce
                    loss = step_module(c[:1], t[:1], tp, tq, w)
                    (loss * 0.0).backward()
                    lv = 0.0
                if clip:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
                opt.step()
                if S["ema"] is not None:
                    S["ema"].update(module)
                if n_proc > 1:
                    lt = torch.tensor([lv], dtype=torch.float64)
                    dist.all_reduce(lt)
                    lv = float(lt)
                pos["tot"] += lv
                pos["n"] += c.shape[0]
                pos["batch"] = i + 1
                pos["step"] += 1
                bar.update(c.shape[0])
                post = {"loss": f"{pos['tot'] / max(pos['n'], 1):.4f}", "val": f"{pos['run_best_val']:.4f}"}
                if pos["deadline"] is not None:
                    post["left"] = f"{max(pos['deadline'] - clock(), 0):.0f}s"
                bar.set_postfix(**post)
                if not is_probe and cfg.val_every and pos["step"] % cfg.val_every == 0:
                    check(lr_now(opt), is_probe, w)
                    if pos["stale"] >= cfg.patience and not plateau(opt):
                        pos["stopped"] = "patience"
                if pos["stopped"] is None and max_steps and pos["step"] >= max_steps:
                    pos["stopped"] = "steps"
                if pos["stopped"] is None and pos["deadline"] is not None \
                        and _agree(clock() >= pos["deadline"]):  # every rank has the same deadline
                    pos["stopped"] = "budget"
                if pos["stopped"] is not None:
                    break
                if ck.due():
                    save_ck(opt)
            bar.close()
            if pos["stopped"] is None:  # the epoch is over
                pos.update(epoch=epoch + 1, batch=0)
                if not is_probe and not cfg.val_every and pos["last_val_step"] != pos["step"]:
                    check(lr_now(opt), is_probe, w)
                    if pos["stale"] >= cfg.patience and not plateau(opt):
                        pos["stopped"] = "patience"
                if pos["stopped"] is None and pos["epoch"] >= epochs:
                    pos["stopped"] = "epochs"
            save_ck(opt)
        if pos["last_val_step"] != pos["step"]:  # the steps since the last validation count too
            check(lr_now(opt), is_probe, w)
        # the run for this lr is over: a probe scores its last validation, a full run its best
        v = pos["history"][-1]["val_loss"] if is_probe and pos["history"] else pos["run_best_val"]
        trial = {"lr": lr, "val_loss": v, "epochs": epoch_no(),
                 "steps": pos["step"], "best_step": 0 if is_probe else pos["run_best_step"],
                 "stopped": pos["stopped"], "improved": v < v0}
        if pos.get("decays"):
            trial["plateau_decays"] = pos["decays"]
        if distilling:
            trial["w"] = w
        if is_probe:
            trial["probe_steps"] = max_steps
        pos["trials"].append(trial)
        if not is_probe and (pos["best"] is None or v < pos["best"]["val_loss"]):
            pos["best"] = {**trial, "history": pos["history"]}
            S["best_state"] = S["run_best"] if S["run_best"] is not None else \
                {k: x.clone() for k, x in start.items()}
        if is_probe and not any(q[2] for q in pos["queue"][pos["qi"] + 1:]):
            pos["queue"].extend(_after_probes(pos, ws, probe))
        pos.update(qi=pos["qi"] + 1, **_fresh_run(v0))
        S["run_best"] = S["ema"] = None
        save_ck(None)
    b = pos["best"]
    module.load_state_dict(S["best_state"])
    module.eval()
    return FinetuneResult(lr=b["lr"], val_loss=b["val_loss"], val_loss_before=v0, epochs_run=b["epochs"],
                          trials=pos["trials"], history=b["history"], seconds=time.time() - t0,
                          steps_run=b["steps"], best_step=b["best_step"], stopped=b["stopped"] or "",
                          val_metric=cfg.val_metric, val_horizon=int(val.horizon),
                          rolled_out=rolls_out(model, val.horizon),
                          distill_weight=b.get("w") if distilling else None)
