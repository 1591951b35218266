"""Full fine-tuning (METHOD.md section 5): all remaining weights, Adam without weight
decay (or the family's optimizer), the family's native loss, dropout off, validation
after every epoch with early stopping, best model kept; a learning-rate grid is chosen by
validation loss."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tsprune.distributed import world
from tsprune.errors import bad_arg
from tsprune.progress import progress
from tsprune.prune.engine import masked_loss
from tsprune.state import load_state, optimizer_from_tensors, optimizer_to_tensors, save_state


@dataclass(frozen=True)
class FinetuneConfig:
    """lr: one learning rate or a grid (chosen by validation); None = the family default.
    epochs: None = the family default. patience: epochs without improvement before stopping.
    train_samples / val_samples: optional subsampling of windows."""

    lr: tuple[float, ...] | None = None
    epochs: int | None = None
    batch_size: int = 64
    patience: int = 1
    train_samples: int | None = None
    val_samples: int | None = 4096
    grad_clip: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.lr is not None:
            lrs = (self.lr,) if isinstance(self.lr, (int, float)) else tuple(self.lr)
            if not lrs or any((not isinstance(x, (int, float))) or not (0 < x < 1) for x in lrs):
                raise bad_arg("--lr", self.lr, "one or more learning rates in (0, 1)")
            object.__setattr__(self, "lr", tuple(float(x) for x in lrs))
        if self.epochs is not None and self.epochs < 1:
            raise bad_arg("--finetune-epochs", self.epochs, "an integer >= 1")
        if self.batch_size < 1:
            raise bad_arg("--batch-size", self.batch_size, "an integer >= 1")
        if self.patience < 1:
            raise bad_arg("--patience", self.patience, "an integer >= 1")
        for name in ("train_samples", "val_samples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise bad_arg(f"--{name.replace('_', '-')}", v, "a positive integer or none")


@dataclass
class FinetuneResult:
    lr: float
    val_loss: float
    val_loss_before: float
    epochs_run: int
    trials: list[dict] = field(default_factory=list)   # one per learning rate
    history: list[dict] = field(default_factory=list)  # of the chosen lr
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def _optimizer(model, lr: float):
    params = [p for p in model.module.parameters() if p.requires_grad]
    if model.family.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    return torch.optim.Adam(params, lr=lr, weight_decay=0.0)


class _LossModule(nn.Module):
    """forward(context, target) -> the family's training loss (+ auxiliary loss), so that
    DistributedDataParallel can wrap the whole training step."""

    def __init__(self, family, module: nn.Module):
        super().__init__()
        self.family, self.module = family, module

    def forward(self, c, t):
        dev = next(self.module.parameters()).device
        loss = self.family.loss(self.module, c.to(dev), t.to(dev))
        aux = self.family.aux_loss(self.module)
        return loss if aux is None else loss + aux


def _clone_state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


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


def finetune(model, train, val, cfg: FinetuneConfig = FinetuneConfig(), *,
             show_progress: bool = True, log=None, checkpoint=None,
             checkpoint_every_s: float = 120.0) -> FinetuneResult:
    """Fine-tune ``model`` (TSModel) in place on window datasets; keep the best weights
    (the starting weights count as epoch 0). Returns the figures of every trial.

    checkpoint: a directory; the run saves its state there every ``checkpoint_every_s``
      seconds and at every epoch end, and a call with the same arguments continues from
      the last checkpoint (same batches, same optimizer state).
    Under torch.distributed (torchrun) each rank trains on its share of every batch inside
    DistributedDataParallel; the losses are scaled so that the gradients equal one process's.
    """
    t0 = time.time()
    lrs = cfg.lr or (model.family.default_lr,)
    epochs = cfg.epochs or model.family.finetune_epochs
    if cfg.train_samples:
        train = train.subset(cfg.train_samples, seed=cfg.seed)
    if cfg.val_samples:
        val = val.subset(cfg.val_samples, seed=cfg.seed + 1)
    torch.manual_seed(cfg.seed)
    module = model.module
    rank, n_proc = world()
    ck = _Ckpt(checkpoint, checkpoint_every_s)
    fingerprint = json.loads(json.dumps({"cfg": asdict(cfg), "lrs": list(lrs), "epochs": epochs,
                                         "n_train": len(train), "n_val": len(val), "world": n_proc}))
    st = ck.load()
    if st is not None and st[1].get("fingerprint") != fingerprint:
        st = None
    if st is None:
        v0 = masked_loss(model, None, val)
        start = _clone_state(module)
        pos = {"lr_i": 0, "epoch": 0, "batch": 0, "tot": 0.0, "n": 0, "stale": 0,
               "run_best_val": v0, "history": [], "trials": [], "best": None}
        best_state, run_best = None, None
        opt_t, opt_m = None, None
    else:
        tens, meta = st
        v0, pos = meta["v0"], meta["pos"]
        start = {k[6:]: v for k, v in tens.items() if k.startswith("start.")}
        module.load_state_dict({k[6:]: v for k, v in tens.items() if k.startswith("model.")})
        run_best = {k[4:]: v for k, v in tens.items() if k.startswith("run.")} or None
        best_state = {k[5:]: v for k, v in tens.items() if k.startswith("best.")} or None
        opt_t, opt_m = {k: v for k, v in tens.items() if k.startswith("opt.")}, meta.get("opt")

    def save_ck(opt):
        t, m = optimizer_to_tensors(opt) if opt is not None else ({}, None)
        tensors = {**{f"model.{k}": v for k, v in module.state_dict().items()},
                   **{f"start.{k}": v for k, v in start.items()}, **t}
        if run_best is not None:
            tensors.update({f"run.{k}": v for k, v in run_best.items()})
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        ck.save(tensors, {"fingerprint": fingerprint, "v0": v0, "pos": pos, "opt": m})

    for p in module.parameters():
        p.requires_grad_(True)
    clip = cfg.grad_clip if cfg.grad_clip is not None else getattr(model.family, "grad_clip", None)
    step_module = _LossModule(model.family, module)
    if n_proc > 1:
        from torch.nn.parallel import DistributedDataParallel
        # some heads may be unused by the loss (e.g. an unused quantile head)
        step_module = DistributedDataParallel(step_module, find_unused_parameters=True)
    while pos["lr_i"] < len(lrs):
        lr = lrs[pos["lr_i"]]
        fresh = pos["epoch"] == 0 and pos["batch"] == 0 and opt_t is None
        if fresh:
            module.load_state_dict(start)
            run_best = None
        opt = _optimizer(model, lr)
        if opt_t is not None:
            optimizer_from_tensors(opt, opt_t, opt_m)
            opt_t = opt_m = None
        while pos["epoch"] < epochs and pos["stale"] < cfg.patience:
            epoch = pos["epoch"]
            module.eval()  # dropout off (METHOD.md s.5); gradients still flow
            bar = progress(total=len(train), desc=f"finetune lr={lr:g} epoch {epoch + 1}/{epochs}",
                           unit="win", disable=not show_progress or rank != 0)
            for i, (c, t) in enumerate(train.batches(cfg.batch_size, shuffle=True, seed=cfg.seed + epoch)):
                if i < pos["batch"]:
                    bar.update(c.shape[0])
                    continue
                # each rank takes its share of the batch; DDP averages gradients over ranks,
                # so a share's mean loss is weighted by share * n_proc / batch
                cs, ts = (c[rank::n_proc], t[rank::n_proc]) if n_proc > 1 else (c, t)
                opt.zero_grad(set_to_none=True)
                if cs.shape[0]:
                    loss = step_module(cs, ts)
                    (loss * (cs.shape[0] * n_proc / c.shape[0]) if n_proc > 1 else loss).backward()
                    lv = loss.detach().item() * cs.shape[0]
                else:  # an empty share still joins DDP's gradient all-reduce
                    loss = step_module(c[:1], t[:1])
                    (loss * 0.0).backward()
                    lv = 0.0
                if clip:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
                opt.step()
                if n_proc > 1:
                    import torch.distributed as dist
                    lt = torch.tensor([lv], dtype=torch.float64)
                    dist.all_reduce(lt)
                    lv = float(lt)
                pos["tot"] += lv
                pos["n"] += c.shape[0]
                pos["batch"] = i + 1
                bar.update(c.shape[0])
                bar.set_postfix(loss=f"{pos['tot'] / pos['n']:.4f}")
                if ck.due():
                    save_ck(opt)
            bar.close()
            v = masked_loss(model, None, val)
            rec = {"lr": lr, "epoch": epoch + 1, "train_loss": pos["tot"] / max(pos["n"], 1), "val_loss": v}
            pos["history"].append(rec)
            if log:
                log(rec)
            if v < pos["run_best_val"]:
                pos["run_best_val"], run_best, pos["stale"] = v, _clone_state(module), 0
            else:
                pos["stale"] += 1
            pos.update(epoch=epoch + 1, batch=0, tot=0.0, n=0)
            save_ck(opt)
        # the run for this lr is over: its best (or the start when nothing improved)
        v = pos["run_best_val"]
        pos["trials"].append({"lr": lr, "val_loss": v, "epochs": pos["epoch"], "improved": v < v0})
        if pos["best"] is None or v < pos["best"]["val_loss"]:
            pos["best"] = {"lr": lr, "val_loss": v, "history": pos["history"], "epochs": pos["epoch"]}
            best_state = run_best if run_best is not None else {k: x.clone() for k, x in start.items()}
        pos.update(lr_i=pos["lr_i"] + 1, epoch=0, batch=0, tot=0.0, n=0, stale=0,
                   run_best_val=v0, history=[])
        run_best = None
        save_ck(None)
    b = pos["best"]
    module.load_state_dict(best_state)
    module.eval()
    return FinetuneResult(lr=b["lr"], val_loss=b["val_loss"], val_loss_before=v0,
                          epochs_run=b["epochs"], trials=pos["trials"], history=b["history"],
                          seconds=time.time() - t0)
