"""DLinear (Zeng et al., AAAI 2023): series decomposition + two linear maps.

    trend    = moving average of x (kernel k, edges replicated), (B, L)
    seasonal = x - trend
    y        = W_s seasonal + b_s + W_t trend + b_t,  W: (H, L)

One pair of weights is shared by every channel ("individual=False");
windows are univariate, so channels are simply items of the batch.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tsprune.errors import bad_arg


class DLinear(nn.Module):
    """x (..., L) -> forecast (..., H)."""

    def __init__(self, context: int, horizon: int, kernel: int = 25):
        super().__init__()
        self.context, self.horizon, self.kernel = context, horizon, kernel
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
        seasonal, trend = self.decompose(x)
        return self.seasonal(seasonal) + self.trend(trend)


def _check(name, value, ok, allowed):
    if isinstance(value, bool) or not ok(value):
        raise bad_arg(name, value, allowed)


def train_dlinear(prepared, context: int | None = None, horizon: int | None = None, *,
                  epochs: int = 10, lr: float = 1e-3, batch_size: int = 256, patience: int = 3,
                  lr_decay: float = 0.5, kernel: int = 25, max_train_windows: int | None = None,
                  seed: int = 0, progress: bool = True) -> DLinear:
    """Train DLinear on the train windows of `prepared` (a tsprune.data.Prepared).

    Adam on MSE, shuffled stride-1 train windows (optionally a seeded subset of
    max_train_windows), learning rate times lr_decay after every epoch (TSLib's
    "type1" schedule), early stopping on the validation MSE with `patience`;
    the best weights are restored. context/horizon default to the config.
    The returned model has `history`: one dict per epoch.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience),
                        ("kernel", kernel)):
        _check(name, value, lambda v: isinstance(v, int) and v >= 1, "a positive integer")
    _check("lr", lr, lambda v: isinstance(v, (int, float)) and v > 0, "a positive number")
    _check("lr_decay", lr_decay, lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
           "a number in (0, 1]")
    train = prepared.windows("train", context=context, horizon=horizon)
    val = prepared.windows("val", context=context, horizon=horizon)
    if max_train_windows is not None:
        train = train.subset(max_train_windows, seed)
    torch.manual_seed(seed)
    model = DLinear(train.context, train.horizon, kernel)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, bad_epochs, history = float("inf"), None, 0, []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(total=len(train), desc=f"DLinear epoch {epoch + 1}/{epochs}", unit="win",
                   disable=not progress, leave=False)
        for x, y in train.batches(batch_size, shuffle=True, seed=seed * 1000 + epoch):
            loss = F.mse_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            seen += len(x)
            bar.update(len(x))
            bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        bar.close()
        val_mse = _val_mse(model, val)
        history.append({"epoch": epoch + 1, "train_mse": total / seen, "val_mse": val_mse,
                        "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
        if progress:
            tqdm.write(f"DLinear epoch {epoch + 1}: train {total / seen:.4f} val {val_mse:.4f} "
                       f"({history[-1]['seconds']:.1f}s)")
        if val_mse < best:
            best, best_state, bad_epochs = val_mse, copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
        for group in opt.param_groups:
            group["lr"] *= lr_decay
    model.load_state_dict(best_state)
    model.eval()
    model.history = history
    return model


def _val_mse(model: nn.Module, dataset, batch_size: int = 8192) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for x, y in dataset.batches(batch_size):
            total += float((model(x) - y).double().square().sum())
            count += y.numel()
    return total / count
