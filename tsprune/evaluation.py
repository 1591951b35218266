"""Test metrics of a TSModel on z-scored windows (MSE/MAE, per horizon prefix)."""
from __future__ import annotations

import torch

from tsprune.baselines.evaluate import evaluate_forecaster
from tsprune.metrics import ForecastMetrics
from tsprune.progress import is_quiet, progress


def evaluate(model, dataset, horizons=None, *, batch_size: int = 512, show_progress: bool = True,
             desc: str = "evaluate") -> dict:
    """MSE and MAE of ``model`` (TSModel) over every window of ``dataset``.

    Returns {"mse", "mae", "windows"} and, with horizons, "by_horizon": {h: {...}}.
    """
    h = dataset.horizon
    return evaluate_forecaster(lambda c: model.forecast(c, h, batch_size=batch_size).point, dataset,
                               batch_size=batch_size, horizons=horizons,
                               progress=show_progress and not is_quiet(), desc=desc)


def evaluate_horizons(model, data, horizons, split: str = "test", *, batch_size: int = 512,
                      show_progress: bool = True, desc: str = "evaluate") -> dict:
    """MSE/MAE at several horizons from ONE rollout per window (exactly the TSLib window set
    of each horizon): every window that fits the shortest horizon is forecast to the
    longest, and horizon h scores the windows whose h-step target lies inside the split.
    For an autoregressive model the first h steps of a longer rollout are its h-step
    forecast, so this equals one evaluate() per horizon at a fraction of the cost.

    Returns {str(h): {"mse", "mae", "windows"}}."""
    hs = sorted({int(h) for h in horizons})
    ds = data.windows(split, horizon=hs[0], stride=1)
    _, end = data.split_range(split)
    series = data.series  # (C, N)
    mets = {h: ForecastMetrics() for h in hs}
    bar = progress(total=len(ds), desc=desc, unit="win", disable=not show_progress or is_quiet())
    ids_all = torch.arange(len(ds))
    for s in range(0, len(ds), batch_size):
        ids = ids_all[s: s + batch_size]
        c, _ = ds.gather(ids)
        point = model.forecast(c, hs[-1], batch_size=batch_size).point
        flat = ds.index[ids] if ds.index is not None else ids
        ch, t = flat // ds.per_channel, ds.first_target + (flat % ds.per_channel) * ds.stride
        for h in hs:
            ok = t + h <= end
            if not ok.any():
                continue
            rows = t[ok][:, None] + torch.arange(h)[None, :]
            truth = series[ch[ok][:, None], rows]
            mets[h].update(point[ok, :h], truth)
        bar.update(ids.numel())
    bar.close()
    return {str(h): {"mse": m.mse(), "mae": m.mae(), "windows": m.count} for h, m in mets.items()}
