"""Full fine-tuning (METHOD.md section 5): all remaining weights, Adam without weight
decay (or the family's optimizer), the family's native loss, dropout off, validation
after every epoch with early stopping, best model kept; a learning-rate grid is chosen by
validation loss."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from tsprune.errors import bad_arg
from tsprune.progress import progress
from tsprune.prune.engine import masked_loss


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


def _run(model, train, val, lr: float, cfg: FinetuneConfig, epochs: int, v0: float,
         show_progress: bool, log) -> tuple[dict, float, list[dict], int]:
    """Train a copy's weights in place; return (best state, best val, history, epochs)."""
    module = model.module
    for p in module.parameters():
        p.requires_grad_(True)
    opt = _optimizer(model, lr)
    best_state, best_val = copy.deepcopy(module.state_dict()), v0
    history, stale, ran = [], 0, 0
    clip = cfg.grad_clip if cfg.grad_clip is not None else getattr(model.family, "grad_clip", None)
    for epoch in range(epochs):
        module.eval()  # dropout off (METHOD.md s.5); gradients still flow
        bar = progress(total=len(train), desc=f"finetune lr={lr:g} epoch {epoch + 1}/{epochs}",
                       unit="win", disable=not show_progress)
        tot, n = 0.0, 0
        for c, t in train.batches(cfg.batch_size, shuffle=True, seed=cfg.seed + epoch):
            loss = model.family.loss(module, c, t)
            aux = model.family.aux_loss(module)
            if aux is not None:
                loss = loss + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            opt.step()
            tot += loss.detach().item() * c.shape[0]
            n += c.shape[0]
            bar.update(c.shape[0])
            bar.set_postfix(loss=f"{tot / n:.4f}")
        bar.close()
        ran += 1
        v = masked_loss(model, None, val)
        rec = {"lr": lr, "epoch": epoch + 1, "train_loss": tot / max(n, 1), "val_loss": v}
        history.append(rec)
        if log:
            log(rec)
        if v < best_val:
            best_val, best_state, stale = v, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    return best_state, best_val, history, ran


def finetune(model, train, val, cfg: FinetuneConfig = FinetuneConfig(), *,
             show_progress: bool = True, log=None) -> FinetuneResult:
    """Fine-tune ``model`` (TSModel) in place on window datasets; keep the best weights
    (the starting weights count as epoch 0). Returns the figures of every trial."""
    t0 = time.time()
    lrs = cfg.lr or (model.family.default_lr,)
    epochs = cfg.epochs or model.family.finetune_epochs
    if cfg.train_samples:
        train = train.subset(cfg.train_samples, seed=cfg.seed)
    if cfg.val_samples:
        val = val.subset(cfg.val_samples, seed=cfg.seed + 1)
    torch.manual_seed(cfg.seed)
    v0 = masked_loss(model, None, val)
    start = copy.deepcopy(model.module.state_dict())
    trials, best = [], (math.inf, None, None, None, 0)
    for lr in lrs:
        model.module.load_state_dict(start)
        state, v, hist, ran = _run(model, train, val, lr, cfg, epochs, v0, show_progress, log)
        trials.append({"lr": lr, "val_loss": v, "epochs": ran, "improved": v < v0})
        if v < best[0]:
            best = (v, lr, state, hist, ran)
    v, lr, state, hist, ran = best
    model.module.load_state_dict(state)
    model.module.eval()
    return FinetuneResult(lr=lr, val_loss=v, val_loss_before=v0, epochs_run=ran, trials=trials,
                          history=hist, seconds=time.time() - t0)
