"""Evaluate any forecaster over a WindowDataset (every window, every step)."""
from __future__ import annotations

import torch
from tsprune.progress import progress as _progress

from tsprune.data.windows import WindowDataset
from tsprune.errors import bad_arg
from tsprune.metrics import ForecastMetrics


def evaluate_forecaster(fn, dataset: WindowDataset, *, batch_size: int = 4096, horizons=None,
                        progress: bool = False, desc: str = "eval") -> dict:
    """MSE and MAE of `fn` over `dataset` in z-scored units.

    fn: context (B, L) float32 tensor -> forecast (B, H') with H' >= dataset.horizon
    (extra steps are ignored). Runs under torch.inference_mode.
    Returns {"mse", "mae", "windows"} and, with horizons, "by_horizon"
    (see `ForecastMetrics.result`).
    """
    if batch_size < 1:
        raise bad_arg("batch_size", batch_size, "a positive integer")
    H = dataset.horizon
    metrics = ForecastMetrics()
    bar = _progress(total=len(dataset), desc=desc, unit="win", disable=not progress)
    with torch.inference_mode():
        for context, target in dataset.batches(batch_size):
            pred = fn(context)
            if pred.shape[0] != context.shape[0] or pred.shape[-1] < H:
                raise ValueError(f"forecaster returned shape {tuple(pred.shape)}; "
                                 f"expected ({context.shape[0]}, >= {H})")
            metrics.update(pred[..., :H], target)
            bar.update(len(context))
    bar.close()
    return metrics.result(horizons)
