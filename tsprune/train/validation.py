"""The validation figure fine-tuning stops on and chooses its learning rate by.

Two metrics (FinetuneConfig.val_metric, flag --val-metric):
  * "forecast_mse": MSE of the point forecast at the validation windows' horizon, from the
    family's forecast API (TSModel.forecast), which rolls out when that horizon is longer
    than the model's output patch. This is the figure the user asked for.
  * "loss": the family's native training loss (the paper), over the first output patch of
    each target when the windows are longer than the patch.

Under torch.distributed each rank takes every world-th batch and the sums are all-reduced,
so every rank gets the same figure.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from tsprune.distributed import world

METRICS = ("forecast_mse", "loss")


def _all_sum(total: float, n: float) -> tuple[float, float]:
    if world()[1] == 1:
        return total, n
    t = torch.tensor([total, n], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0]), float(t[1])


def forecast_mse(model, dataset, batch_size: int = 256) -> float:
    """Mean squared error of ``model.forecast(context, H).point`` (B, H) against the targets
    (B, H) of every window of ``dataset`` (H = dataset.horizon), no grad."""
    rank, n_proc = world()
    total, n = 0.0, 0
    with torch.no_grad():
        for i, (c, t) in enumerate(dataset.batches(batch_size)):
            if i % n_proc != rank:
                continue
            p = model.forecast(c, dataset.horizon, batch_size=batch_size).point
            total += float((p[:, : t.shape[1]] - t).double().square().sum())
            n += t.numel()
    total, n = _all_sum(total, n)
    return total / max(n, 1)


def native_loss(model, dataset, batch_size: int = 256) -> float:
    """The family's training loss (batch mean, weighted by windows) over every window;
    targets longer than the model's output patch are cut to the patch."""
    fam, mod = model.family, model.module
    out_h = fam.output_horizon(mod)
    rank, n_proc = world()
    was = mod.training
    mod.eval()
    dev = next(mod.parameters()).device
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for i, (c, t) in enumerate(dataset.batches(batch_size)):
                if i % n_proc != rank:
                    continue
                if out_h and t.shape[1] > out_h:
                    t = t[:, :out_h]
                total += float(fam.loss(mod, c.to(dev), t.to(dev))) * c.shape[0]
                n += c.shape[0]
    finally:
        mod.train(was)
    total, n = _all_sum(total, n)
    return total / max(n, 1)


def validate(model, dataset, metric: str = "forecast_mse", batch_size: int = 256) -> float:
    """The validation figure of ``model`` (TSModel) on ``dataset``; lower is better."""
    if metric == "forecast_mse":
        return forecast_mse(model, dataset, batch_size)
    if metric == "loss":
        return native_loss(model, dataset, batch_size)
    raise ValueError(f"metric: got {metric!r}; expected one of {', '.join(METRICS)}")


def rolls_out(model, horizon: int) -> bool:
    """Whether a forecast of ``horizon`` steps needs more than one output patch."""
    out_h = model.family.output_horizon(model.module)
    return bool(out_h) and horizon > out_h


def val_windows(data, val, horizon: int):
    """The validation windows fine-tuning should use: ``val`` when its horizon is already
    ``horizon``, else the validation split of ``data`` (a tsprune.data.Prepared) at
    ``horizon`` (the horizon the user asked for, rolled out by the forecast API)."""
    return val if val.horizon == horizon else data.windows("val", horizon=horizon)
