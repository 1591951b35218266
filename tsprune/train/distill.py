"""Recovery by distillation from the dense teacher (fine-tuning with a teacher term).

A training step with mixing weight w in [0, 1] minimises

    loss = (1 - w) * family.loss(student, context, target) + w * D

    D = mean_b [ mean_h (p_s - p_t)^2 / s_b ]  +  mean_b [ mean_{h,q} (q_s - q_t)^2 / s_b ]

p (B, H) and q (B, H, Q) are the point and quantile forecasts of
``family.forecast(module, context, H)`` (data units) of the student (s) and the teacher (t),
H the training windows' horizon, and s_b = Var(context_b) + 1e-5 the population variance of
window b's context: dividing by it makes D unit-free, like the families' instance-normalised
native losses. The quantile term counts only when both forecasts carry quantiles at the same
levels (PatchTST has none: D is the point term). w = 0 is plain fine-tuning (the teacher term
is not computed at all); w = 1 trains on the teacher only. Hidden states are not matched.

The teacher's forecasts are computed once per training window (``TeacherCache``: a store of
float32 point (N, H) and quantiles (N, H, Q) indexed by window id, N*H*(1+Q)*4 bytes: 15.7 MB
for the quick profile's 4,096 nano windows at H 96, 216 MB for all 56,231 ETTh1 train
windows), reused by every probe, epoch and mixing weight, saved as safetensors + JSON in the
fine-tuning checkpoint directory and resumed from there (``teacher_cache``).

The teacher is the dense model, zero-shot or fine-tuned: ``choose_teacher`` picks the one with
the lower validation forecast MSE at the validation windows' horizon.

``FinetuneConfig.distill`` (flag ``--distill``): "off" (plain fine-tuning, the default),
"auto" (w probed over AUTO_WEIGHTS on validation, like the learning rate: see
tsprune.train.finetune) or a fixed weight in [0, 1].
"""
from __future__ import annotations

import hashlib
import math
import time

import torch

from tsprune.errors import bad_arg
from tsprune.progress import progress
from tsprune.state import load_state, save_state

from .validation import forecast_mse

AUTO_WEIGHTS = (0.0, 0.5, 1.0)
EPS = 1e-5
MODES = ("off", "auto")


def check_distill(value) -> str | float:
    """The normalised value of FinetuneConfig.distill: "off", "auto" or a float in [0, 1]
    (a numeric string is read as a number). Anything else: bad_arg("--distill")."""
    v = value
    if isinstance(v, str) and v not in MODES:
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, str) and v in MODES:
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0:
        return float(v)
    raise bad_arg("--distill", value, "off, auto or a mixing weight in [0, 1]")


def weights(distill) -> tuple[float, ...]:
    """The mixing weights a FinetuneConfig.distill value trains with: "off" -> (0.0,),
    "auto" -> AUTO_WEIGHTS (probed), a weight w -> (w,)."""
    d = check_distill(distill)
    return (0.0,) if d == "off" else AUTO_WEIGHTS if d == "auto" else (d,)


def distill_loss(point: torch.Tensor, quantiles: torch.Tensor | None, teacher_point: torch.Tensor,
                 teacher_quantiles: torch.Tensor | None, context: torch.Tensor) -> torch.Tensor:
    """D of the module docstring, a batch mean. point / teacher_point (B, H); quantiles /
    teacher_quantiles (B, H, Q) or None (the term is skipped unless both are given and
    their shapes agree); context (B, L) scales each window by 1 / (Var(context) + EPS)."""
    scale = context.float().var(dim=1, unbiased=False) + EPS                     # (B,)
    d = ((point - teacher_point).square().mean(dim=1) / scale).mean()
    if quantiles is not None and teacher_quantiles is not None and quantiles.shape == teacher_quantiles.shape:
        d = d + ((quantiles - teacher_quantiles).square().mean(dim=(1, 2)) / scale).mean()
    return d


# ---- identity of what a cache holds --------------------------------------------------------
def module_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of a module's state dict: names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def windows_digest(windows) -> str:
    """sha256 (16 hex) of a WindowDataset's windows: geometry, window ids and the series."""
    h = hashlib.sha256()
    h.update(f"{windows.context}:{windows.horizon}:{windows.stride}:{windows.first_target}:"
             f"{windows.end}:{tuple(windows.series.shape)};".encode())
    h.update(windows.window_ids().to(torch.int64).contiguous().numpy().tobytes())
    h.update(windows.series.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TeacherCache:
    """The teacher's forecasts of a fixed set of training windows, by window id.

    ids: (N,) int64 sorted window ids (WindowDataset.window_ids); point (N, H) float32;
    quantiles (N, H, Q) float32 or None; filled (N,) bool; key: what it was computed from
    (teacher digest, windows digest, horizon) so that a stale cache is never reused."""

    def __init__(self, ids: torch.Tensor, horizon: int, key: dict):
        self.ids = ids.to(torch.int64).sort().values
        self.horizon, self.key = int(horizon), dict(key)
        self.point = torch.zeros(len(self.ids), self.horizon)
        self.quantiles: torch.Tensor | None = None
        self.levels: tuple[float, ...] = ()
        self.filled = torch.zeros(len(self.ids), dtype=torch.bool)
        self.teacher_calls = 0   # teacher forward passes (batches) run by fill()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    @property
    def nbytes(self) -> int:
        q = 0 if self.quantiles is None else self.quantiles.numel()
        return 4 * (self.point.numel() + q)

    def _pos(self, ids: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.int64)
        pos = torch.searchsorted(self.ids, ids).clamp_max(max(len(self.ids) - 1, 0))
        if len(self.ids) == 0 or not torch.equal(self.ids[pos], ids):
            raise KeyError("teacher cache: some windows are not in the cache (other training windows?)")
        return pos

    def lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(point (B, H), quantiles (B, H, Q) or None) of window ids ``ids`` (B,)."""
        pos = self._pos(ids)
        if not bool(self.filled[pos].all()):
            raise KeyError("teacher cache: some windows were not computed yet (call fill first)")
        return self.point[pos], None if self.quantiles is None else self.quantiles[pos]

    @torch.no_grad()
    def fill(self, teacher, windows, *, batch_size: int = 256, checkpoint=None, every_s: float = 60.0,
             show_progress: bool = False) -> "TeacherCache":
        """Compute the forecasts of the windows not yet filled, each exactly once, with
        ``teacher`` (a TSModel) in eval mode; save to ``checkpoint`` every ``every_s``
        seconds and at the end (when given)."""
        todo = (~self.filled).nonzero().flatten()
        if len(todo) == 0:
            return self
        items = torch.searchsorted(windows.window_ids(), self.ids)   # item positions in ``windows``
        fam, mod = teacher.family, teacher.module
        was = mod.training
        mod.eval()
        dev = next(mod.parameters()).device
        bar = progress(total=len(todo), desc="teacher forecasts", unit="win", disable=not show_progress)
        last = time.time()
        try:
            for s in range(0, len(todo), batch_size):
                pos = todo[s: s + batch_size]
                c, _ = windows.gather(items[pos])
                f = fam.forecast(mod, c.to(dev), self.horizon)
                self.teacher_calls += 1
                self.point[pos] = f.point.float().cpu()
                if f.quantiles is not None:
                    if self.quantiles is None:
                        self.quantiles = torch.zeros(len(self.ids), self.horizon, f.quantiles.shape[-1])
                        self.levels = tuple(float(x) for x in f.levels)
                    self.quantiles[pos] = f.quantiles.float().cpu()
                self.filled[pos] = True
                bar.update(len(pos))
                if checkpoint is not None and time.time() - last >= every_s:
                    self.save(checkpoint)
                    last = time.time()
        finally:
            bar.close()
            mod.train(was)
        if checkpoint is not None:
            self.save(checkpoint)
        return self

    def save(self, path) -> None:
        """safetensors (ids, point, quantiles, filled) + meta.json, atomically (tsprune.state)."""
        tensors = {"ids": self.ids, "point": self.point, "filled": self.filled.to(torch.uint8)}
        if self.quantiles is not None:
            tensors["quantiles"] = self.quantiles
        save_state(path, tensors, {"key": self.key, "horizon": self.horizon, "levels": list(self.levels)})

    @classmethod
    def load(cls, path, key: dict | None = None) -> "TeacherCache | None":
        """The cache saved at ``path``, or None when there is none or its key differs."""
        st = load_state(path)
        if st is None:
            return None
        tens, meta = st
        if key is not None and meta.get("key") != key:
            return None
        c = cls(tens["ids"], meta["horizon"], meta["key"])
        c.point = tens["point"]
        c.filled = tens["filled"].bool()
        c.quantiles = tens.get("quantiles")
        c.levels = tuple(meta.get("levels") or ())
        return c


def cache_key(teacher, windows) -> dict:
    """What a cache of ``teacher``'s forecasts of ``windows`` depends on."""
    return {"teacher": module_digest(teacher.module), "windows": windows_digest(windows),
            "horizon": int(windows.horizon), "family": teacher.family.name}


def teacher_cache(teacher, windows, *, checkpoint=None, batch_size: int = 256, every_s: float = 60.0,
                  show_progress: bool = False) -> TeacherCache:
    """The teacher's forecasts of every window of ``windows`` (the training windows fine-tuning
    will use, tsprune.train.finetune.training_windows): loaded from ``checkpoint`` when a
    cache of the same teacher weights and windows is there, the missing windows computed
    (once each) and the result saved there."""
    key = cache_key(teacher, windows)
    cache = TeacherCache.load(checkpoint, key) if checkpoint is not None else None
    if cache is None:
        cache = TeacherCache(windows.window_ids(), windows.horizon, key)
    return cache.fill(teacher, windows, batch_size=batch_size, checkpoint=checkpoint, every_s=every_s,
                      show_progress=show_progress)


def choose_teacher(candidates: dict, val, batch_size: int = 256) -> tuple[str, dict[str, float]]:
    """(name, {name: val MSE}) of the candidate TSModel (dict name -> model: the dense model
    zero-shot, fine-tuned...) with the lowest point-forecast MSE on ``val`` at its horizon
    (tsprune.train.validation.forecast_mse, rolled out past the output patch); ties go to
    the first."""
    if not candidates:
        raise ValueError("choose_teacher: no candidates")
    scores = {name: forecast_mse(m, val, batch_size) for name, m in candidates.items()}
    return min(scores, key=lambda k: (scores[k], list(scores).index(k))), scores


__all__ = ["AUTO_WEIGHTS", "TeacherCache", "check_distill", "choose_teacher", "distill_loss",
           "teacher_cache", "weights"]
