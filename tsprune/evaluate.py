"""Test metrics of a TSModel on z-scored windows (MSE/MAE, per horizon prefix)."""
from __future__ import annotations

from tsprune.baselines.evaluate import evaluate_forecaster
from tsprune.progress import is_quiet


def evaluate(model, dataset, horizons=None, *, batch_size: int = 512, show_progress: bool = True,
             desc: str = "evaluate") -> dict:
    """MSE and MAE of ``model`` (TSModel) over every window of ``dataset``.

    Returns {"mse", "mae", "windows"} and, with horizons, "by_horizon": {h: {...}}.
    """
    h = dataset.horizon
    return evaluate_forecaster(lambda c: model.forecast(c, h, batch_size=batch_size).point, dataset,
                               batch_size=batch_size, horizons=horizons,
                               progress=show_progress and not is_quiet(), desc=desc)
