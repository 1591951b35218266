"""Pretraining loop for a `transformers` TimesFM 2.5 model on the synthetic corpus.

Per-position loss: the backbone is causal and every patch position ``i`` (context
``x[: 32 (i+1)]``) predicts the next ``horizon_length`` steps, so a series of
``context + horizon`` values gives ``context / 32`` supervised positions. Predictions and
targets live in the per-position normalised space of that position's running stats
(``context_mu[:, i]``, ``context_sigma[:, i]``), exactly the space in which
``TimesFm2_5ModelForPrediction`` produces its forecasts before de-normalising::

    loss = MSE(y[..., decode_index], t)              # point channel
         + [MSE(y[..., 0], t) if decode_index != 0]  # mean channel
         + mean_q pinball_q(y[..., q_idx], t)        # channels 1..9, q = 0.1..0.9

Batches are a pure function of ``(seed, step)`` (see :func:`tsprune.pretrain.corpus.make_batch`),
so ``resume=True`` from a checkpoint reproduces the uninterrupted run exactly on CPU.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tsprune.errors import UserError
from tsprune.pretrain.config import PretrainConfig
from tsprune.pretrain.corpus import make_batch
from tsprune.progress import progress as _progress

CHECKPOINT_DIR = "checkpoint"
POSITION_SIGMA_FLOOR = 0.1  # positions whose running std is below this (in units of the
# context std) are not supervised: their normalised targets are unbounded.


def build_model(cfg: PretrainConfig):
    """A freshly initialised ``TimesFm2_5ModelForPrediction`` (seeded by ``cfg.seed``)."""
    # lazy: transformers is heavy; loaded only when a model is built
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction

    torch.manual_seed(cfg.seed)
    mcfg = TimesFm2_5Config(**cfg.model_overrides())
    if cfg.context_length % mcfg.patch_length:
        raise UserError(f"--context-length: got {cfg.context_length}; expected a multiple of "
                        f"patch_length {mcfg.patch_length}")
    mcfg.context_length = max(mcfg.context_length, cfg.context_length)
    return TimesFm2_5ModelForPrediction(mcfg)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: got 'cuda'; no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def cpu_has_amx_bf16() -> bool:
    """True when the CPU advertises AMX bf16 (then bf16 autocast is ~6x faster matmuls)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def resolve_precision(name: str, device: torch.device, hidden_size: int) -> torch.dtype | None:
    """Autocast dtype or None (fp32). ``auto``: bf16 on CUDA; on CPU with AMX for d >= 256.

    Measured on a 2-core AMX CPU: bf16 autocast speeds up d256 models, not d128 ones.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if (cpu_has_amx_bf16() and hidden_size >= 256) else None


def per_position_loss(model, x: torch.Tensor, context_length: int) -> torch.Tensor:
    """Loss of ``model`` on a batch ``x`` (B, context_length + horizon_length) float32.

    Shapes: N = context_length / patch positions, H = horizon_length, Q = 1 + #quantiles.
    """
    c = model.config
    p, h = c.patch_length, c.horizon_length
    b = x.shape[0]
    ctx = x[:, :context_length]
    # Same global normalisation as TimesFm2_5ModelForPrediction.forward (unbiased std).
    mu = ctx.mean(1, keepdim=True)
    sd = ctx.std(1, keepdim=True)
    sd = torch.where(sd < 1e-6, torch.ones_like(sd), sd)
    xn = (x - mu) / sd  # (B, T)
    out = model.model(past_values=xn[:, :context_length])
    n = out.last_hidden_state.shape[1]
    y = model.output_projection_point(out.last_hidden_state).float().view(b, n, h, -1)  # (B, N, H, Q)
    cm, cs = out.context_mu.float(), out.context_sigma.float()  # (B, N)
    target = xn[:, p:p + (n - 1) * p + h].unfold(1, h, p)  # (B, N, H): steps after each patch
    safe = torch.where(cs < 1e-6, torch.ones_like(cs), cs)
    tn = (target - cm[..., None]) / safe[..., None]
    w = (cs >= POSITION_SIGMA_FLOOR).float()[..., None]  # (B, N, 1)
    denom = w.sum() * h + 1e-9

    def wmean(v):
        return (v * w).sum() / denom

    di = c.decode_index
    loss = wmean((y[..., di] - tn) ** 2)
    if di != 0:
        loss = loss + wmean((y[..., 0] - tn) ** 2)
    qs = torch.tensor(c.quantiles, dtype=y.dtype, device=y.device)  # (9,)
    err = tn[..., None] - y[..., 1:1 + len(c.quantiles)]  # (B, N, H, 9)
    pin = torch.maximum(qs * err, (qs - 1) * err).mean(-1)
    return loss + wmean(pin)


def lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up to 1 over ``warmup_steps``, then

    * ``cosine``: cosine decay to ``min_lr_ratio`` at ``steps``;
    * ``wsd``: constant 1 until the last ``decay_frac * steps`` steps, then cosine decay
      to ``min_lr_ratio``. Until the decay starts the factor does not depend on
      ``steps``, so a run can be resumed with a different ``--steps`` seamlessly.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "wsd":
        start = max(cfg.warmup_steps, int(round(cfg.steps * (1 - cfg.decay_frac))))
    else:
        start = cfg.warmup_steps
    if step < start:
        return 1.0
    t = (step - start) / max(1, cfg.steps - start)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model, cfg: PretrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
    )


class _Batches(torch.utils.data.Dataset):
    """Map-style view of the corpus: item ``k`` is the whole batch of step ``k``."""

    def __init__(self, cfg: PretrainConfig, length: int):
        self.cfg, self.length = cfg, length

    def __len__(self):
        return self.cfg.steps

    def __getitem__(self, step):
        c = self.cfg
        return torch.from_numpy(make_batch(c.seed, step, c.batch_size, self.length,
                                           p_kernel=c.p_kernel, p_mixup=c.p_mixup, p_flip=c.p_flip,
                                           corpus=c.corpus))


def _worker_init(_):
    torch.set_num_threads(1)


def _save_checkpoint(ckpt: Path, model, opt, step: int, cfg: PretrainConfig, stats: dict) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "config": cfg.to_dict(), **stats}, indent=1))
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(ckpt: Path, model, opt, cfg: PretrainConfig) -> dict:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    saved = PretrainConfig.from_dict(state["config"])
    # Execution settings may change on resume, and so may ``steps`` (to extend or
    # shorten a run; seamless with the wsd schedule before its decay starts).
    ignore = {"threads", "workers", "checkpoint_every", "log_every", "device", "steps"}
    diff = {k for k, v in cfg.to_dict().items() if k not in ignore and saved.to_dict().get(k) != v}
    if diff:
        raise UserError(f"--resume: the checkpoint in {ckpt} was made with different settings "
                        f"({', '.join(sorted(diff))}); use the same flags or a new output directory")
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    return state


def run(cfg: PretrainConfig, out_dir, *, resume: bool = False, progress: bool = True,
        stop_at: int | None = None) -> Path:
    """Pretrain per ``cfg`` and write a Hugging Face model directory to ``out_dir``.

    ``out_dir`` gets ``config.json`` + ``model.safetensors`` (loadable offline with
    ``TimesFm2_5ModelForPrediction.from_pretrained(out_dir)``), ``pretrain_config.json``,
    ``train_log.jsonl`` and ``checkpoint/`` (model, optimizer and step, every
    ``cfg.checkpoint_every`` steps). ``resume=True`` continues from ``checkpoint/``.
    ``stop_at`` (for tests and time-boxed sessions) stops after that many steps
    without writing the final model, as if interrupted. Returns ``out_dir``.
    """
    out = Path(out_dir)
    ckpt = out / CHECKPOINT_DIR
    if resume and not (ckpt / "trainer_state.json").exists():
        raise UserError(f"--resume: no checkpoint in {ckpt}; run without --resume first")
    if not resume and ckpt.exists():
        raise UserError(f"{out}: already holds a checkpoint; pass --resume to continue or choose "
                        f"another output directory")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = build_model(cfg).to(device)
    amp = resolve_precision(cfg.precision, device, model.config.hidden_size)
    opt = make_optimizer(model, cfg)
    step, samples, elapsed0 = 0, 0, 0.0
    if resume:
        state = _load_checkpoint(ckpt, model, opt, cfg)
        step, samples, elapsed0 = state["step"], state.get("samples", 0), state.get("elapsed_s", 0.0)
        if step > cfg.steps:
            raise UserError(f"--steps: got {cfg.steps}; the checkpoint is already at step {step}")
    (out / "pretrain_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    length = cfg.context_length + model.config.horizon_length
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    loader = torch.utils.data.DataLoader(
        _Batches(cfg, length), batch_size=None, sampler=range(step, end), num_workers=cfg.workers,
        worker_init_fn=_worker_init if cfg.workers else None, prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False,
    )
    bar = None
    if progress:
        bar = _progress(total=cfg.steps, initial=step, unit="step", desc="pretrain", smoothing=0.05)
    model.train()
    t0 = time.perf_counter()
    ema = None
    log = open(out / "train_log.jsonl", "a")
    try:
        for x in loader:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(step, cfg)
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = per_position_loss(model, x, cfg.context_length)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {step}; lower --lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            samples += x.shape[0]
            lv = float(loss.detach())
            ema = lv if ema is None else 0.98 * ema + 0.02 * lv
            elapsed = elapsed0 + time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.4f}", sps=f"{samples / max(elapsed, 1e-9):.0f}")
            if step % cfg.log_every == 0 or step == end:
                log.write(json.dumps({"step": step, "loss": round(lv, 5), "loss_ema": round(ema, 5),
                                      "lr": opt.param_groups[0]["lr"], "samples": samples,
                                      "elapsed_s": round(elapsed, 1)}) + "\n")
                log.flush()
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == end:
                _save_checkpoint(ckpt, model, opt, step, cfg, {"samples": samples, "elapsed_s": elapsed})
    finally:
        log.close()
        if bar is not None:
            bar.close()
    if step >= cfg.steps:
        save_model(model, out, cfg.save_dtype)
    return out


def save_model(model, out_dir, dtype: str = "float32") -> None:
    """``save_pretrained`` as safetensors (config.json + model.safetensors), fp32 or bf16."""
    model = model.to("cpu")
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.eval()
    model.save_pretrained(str(out_dir))
    if dtype == "bfloat16":
        model.to(torch.float32)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["run", "build_model", "per_position_loss", "save_model", "count_parameters", "lr_factor"]
