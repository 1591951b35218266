"""Forecast metrics: MSE and MAE over (windows, steps), accumulated in float64.

Arrays are (B, H) or (B, H, ...) numpy arrays or torch tensors; trailing dims
(channels) are averaged like windows. The streaming accumulator keeps per-step
sums so that any horizon prefix (MSE at 96 of a 192-step forecast) is exact:
    mse@h = sum_{b, s < h} (pred - true)^2 / (B * h)
Note: a prefix of longer windows covers fewer windows than the TSLib set at
the shorter horizon (test_len - 192 + 1 instead of test_len - 96 + 1).
"""
from __future__ import annotations

import torch

from tsprune.errors import bad_arg


def _pair(pred, true) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.as_tensor(pred).detach().to(torch.float64)
    true = torch.as_tensor(true).detach().to(device=pred.device, dtype=torch.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != true shape {tuple(true.shape)}")
    return pred, true


def mse(pred, true) -> float:
    """Mean squared error over every element, in float64."""
    pred, true = _pair(pred, true)
    return float((pred - true).square().mean())


def mae(pred, true) -> float:
    """Mean absolute error over every element, in float64."""
    pred, true = _pair(pred, true)
    return float((pred - true).abs().mean())


class ForecastMetrics:
    """Streaming MSE/MAE; `update(pred, true)` with (B, H[, ...]) batches.

    >>> m = ForecastMetrics(); m.update([[1., 2.]], [[0., 0.]]); m.mse(), m.mse(1)
    (2.5, 1.0)
    """

    def __init__(self):
        self.sse = None  # (H,) float64 sum of squared errors per step
        self.sae = None  # (H,) float64 sum of absolute errors per step
        self.count = 0   # series summed per step (windows x trailing elements)

    @property
    def horizon(self) -> int:
        return 0 if self.sse is None else len(self.sse)

    def update(self, pred, true) -> None:
        pred, true = _pair(pred, true)
        if pred.dim() < 2:
            raise ValueError(f"expected (B, H, ...) arrays, got shape {tuple(pred.shape)}")
        err = (pred - true).movedim(1, -1).reshape(-1, pred.shape[1])  # (B*..., H)
        sse, sae = err.square().sum(0).cpu(), err.abs().sum(0).cpu()
        if self.sse is None:
            self.sse, self.sae = sse, sae
        elif len(sse) != self.horizon:
            raise ValueError(f"horizon {len(sse)} differs from earlier batches ({self.horizon})")
        else:
            self.sse += sse
            self.sae += sae
        self.count += err.shape[0]

    def _steps(self, h) -> int:
        if self.sse is None:
            raise ValueError("no batches were added")
        if h is None:
            return self.horizon
        if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= self.horizon:
            raise bad_arg("horizon", h, f"an integer in [1, {self.horizon}]")
        return h

    def mse(self, h: int | None = None) -> float:
        """MSE over the first h steps (all by default)."""
        h = self._steps(h)
        return float(self.sse[:h].sum() / (self.count * h))

    def mae(self, h: int | None = None) -> float:
        """MAE over the first h steps (all by default)."""
        h = self._steps(h)
        return float(self.sae[:h].sum() / (self.count * h))

    def result(self, horizons=None) -> dict:
        """{"mse", "mae", "windows"} over all steps; with horizons, also
        "by_horizon": {h: {"mse", "mae"}} per prefix."""
        out = {"mse": self.mse(), "mae": self.mae(), "windows": self.count}
        if horizons:
            out["by_horizon"] = {h: {"mse": self.mse(h), "mae": self.mae(h)} for h in horizons}
        return out
