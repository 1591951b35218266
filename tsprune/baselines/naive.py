"""Seasonal naive forecast: repeat the last season (or the last value)."""
from __future__ import annotations

import numpy as np
import torch

from tsprune.baselines.evaluate import evaluate_forecaster
from tsprune.errors import bad_arg


def seasonal_naive(context, horizon: int, season: int | None = None):
    """Forecast (B, H) from context (B, L): y[t] = x[L - season + (t mod season)].

    season None repeats the last value. Works on torch tensors and numpy arrays
    (returns the same kind). season must be <= L.
    """
    L = context.shape[-1]
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise bad_arg("horizon", horizon, "a positive integer")
    if season is None:
        season = 1
    if isinstance(season, bool) or not isinstance(season, (int, np.integer)) or not 1 <= season <= L:
        raise bad_arg("season", season, f"a positive integer <= the context length {L}, or None")
    steps = np.arange(horizon) % season + (L - season)
    if isinstance(context, torch.Tensor):
        return context[..., torch.from_numpy(steps).to(context.device)]
    return np.asarray(context)[..., steps]


def evaluate_seasonal_naive(dataset, season: int | None = None, *, batch_size: int = 8192,
                            horizons=None) -> dict:
    """{"mse", "mae", "windows"} of the seasonal naive forecast over `dataset`."""
    H = dataset.horizon
    return evaluate_forecaster(lambda x: seasonal_naive(x, H, season), dataset,
                               batch_size=batch_size, horizons=horizons)
