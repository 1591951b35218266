"""Test metrics of a model on z-scored windows (MSE/MAE per horizon)."""
from __future__ import annotations

import torch

from tsprune.metrics import ForecastMetrics
from tsprune.progress import progress


@torch.no_grad()
def evaluate(model, dataset, horizons=None, *, batch_size: int = 512,
             show_progress: bool = True, desc: str = "evaluate") -> dict:
    """MSE and MAE of ``model`` (TSModel) over every window of ``dataset``.

    horizons: prefixes to report (default: the dataset horizon). Returns
    {"mse", "mae", "windows", "per_horizon": {h: {"mse", "mae"}}}.
    """
    h = dataset.horizon
    horizons = sorted(set(horizons or [h]))
    m = ForecastMetrics()
    bar = progress(total=len(dataset), desc=desc, unit="win", disable=not show_progress)
    for c, t in dataset.batches(batch_size):
        f = model.forecast(c, h, batch_size=batch_size)
        m.update(f.point, t)
        bar.update(c.shape[0])
    bar.close()
    per = {int(k): {"mse": m.mse(k), "mae": m.mae(k)} for k in horizons}
    return {"mse": m.mse(), "mae": m.mae(), "windows": len(dataset), "per_horizon": per}
