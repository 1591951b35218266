"""DLinear (Zeng et al., AAAI 2023): series decomposition + two linear maps.

    trend    = moving average of x (kernel k, edges replicated), (B, L)
    seasonal = x - trend
    y        = W_s seasonal + b_s + W_t trend + b_t,  W: (H, L)

One pair of weights is shared by every channel ("individual=False");
windows are univariate, so channels are simply items of the batch.

instance_norm=True wraps it in per-window normalisation (RevIN without affine weights):
x is standardised by its own mean and standard deviation over L and the forecast is
mapped back, so the model is shift- and scale-equivariant and raw or z-scored contexts
give forecasts in their own units: the contract of the exported TSFM graphs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.baselines.training import check, fit, val_mse


class DLinear(nn.Module):
    """x (..., L) -> forecast (..., H)."""

    EPS = 1e-5  # variance floor of the per-window normalisation

    def __init__(self, context: int, horizon: int, kernel: int = 25, instance_norm: bool = False):
        super().__init__()
        self.context, self.horizon, self.kernel = context, horizon, kernel
        self.instance_norm = bool(instance_norm)
        self.seasonal = nn.Linear(context, horizon)
        self.trend = nn.Linear(context, horizon)
        with torch.no_grad():  # start from "forecast the window mean" (as TSLib)
            for layer in (self.seasonal, self.trend):
                layer.weight.fill_(1.0 / context)
                layer.bias.zero_()

    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(seasonal, trend), each shaped like x (..., L)."""
        k = self.kernel
        flat = x.reshape(-1, 1, x.shape[-1])  # (B', 1, L)
        padded = torch.cat([flat[..., :1].expand(-1, -1, (k - 1) // 2), flat,
                            flat[..., -1:].expand(-1, -1, k // 2)], dim=-1)  # (B', 1, L + k - 1)
        trend = F.avg_pool1d(padded, k, stride=1).reshape(x.shape)
        return x - trend, trend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.instance_norm:
            return self._linear(x)
        mean = x.mean(-1, keepdim=True)                                       # (..., 1)
        std = (x.var(-1, keepdim=True, unbiased=False) + self.EPS).sqrt()     # (..., 1)
        return self._linear((x - mean) / std) * std + mean

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        seasonal, trend = self.decompose(x)
        return self.seasonal(seasonal) + self.trend(trend)


def train_dlinear(prepared, context: int | None = None, horizon: int | None = None, *,
                  epochs: int = 10, lr: float = 1e-3, batch_size: int = 256, patience: int = 3,
                  lr_decay: float = 0.5, kernel: int = 25, max_train_windows: int | None = None,
                  seed: int = 0, progress: bool = True, instance_norm: bool = False) -> DLinear:
    """Train DLinear on the train windows of `prepared` (a tsprune.data.Prepared).

    Adam on MSE, shuffled stride-1 train windows (optionally a seeded subset of
    max_train_windows), learning rate times lr_decay after every epoch (TSLib's
    "type1" schedule), early stopping on the validation MSE with `patience`;
    the best weights are restored. context/horizon default to the config.
    instance_norm: per-window normalisation inside the model (see the module docstring).
    The returned model has `history`: one dict per epoch.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience),
                        ("kernel", kernel)):
        check(name, value, lambda v: isinstance(v, int) and v >= 1, "a positive integer")
    check("lr", lr, lambda v: isinstance(v, (int, float)) and v > 0, "a positive number")
    check("lr_decay", lr_decay, lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
           "a number in (0, 1]")
    train = prepared.windows("train", context=context, horizon=horizon)
    val = prepared.windows("val", context=context, horizon=horizon)
    if max_train_windows is not None:
        train = train.subset(max_train_windows, seed)
    torch.manual_seed(seed)
    model = DLinear(train.context, train.horizon, kernel, instance_norm=instance_norm)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def decay():
        for group in opt.param_groups:
            group["lr"] *= lr_decay

    history = fit(model, train, lambda x, y: F.mse_loss(model(x), y), lambda: val_mse(model, val), opt,
                  epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, label="DLinear",
                  progress=progress, after_epoch=decay)
    model.history = history
    return model

