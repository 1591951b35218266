"""The supervised training loop the trained baselines (DLinear, PatchTST) share: shuffled
mini-batches, a validation MSE after every epoch, early stopping, best weights restored."""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from tsprune.errors import bad_arg
from tsprune.progress import progress as _progress


def check(name: str, value, ok: Callable, allowed: str) -> None:
    """Raise bad_arg(name, value, allowed) unless ``ok(value)`` (a bool is never a number)."""
    if isinstance(value, bool) or not ok(value):
        raise bad_arg(name, value, allowed)


def fit(module: nn.Module, train, loss: Callable, validate: Callable[[], float],
        optimizer: torch.optim.Optimizer, *, epochs: int, batch_size: int, patience: int,
        seed: int, label: str, progress: bool, windows_per_epoch: int | None = None,
        after_step: Callable[[], None] | None = None,
        after_epoch: Callable[[], None] | None = None) -> list[dict]:
    """Train ``module`` in place on ``train`` windows; returns the history, one dict per epoch
    (epoch, train_mse, val_mse, lr, seconds).

    Epoch e draws shuffled batches (seed ``seed * 1000 + e``) and stops after
    ``windows_per_epoch`` windows (None: all). Each batch: loss(x, y) -> scalar, backward,
    optimizer step, then ``after_step()`` (a per-step schedule). After each epoch:
    ``validate()`` (the validation MSE); training stops when it has not improved for
    ``patience`` epochs, else ``after_epoch()`` runs (a per-epoch schedule). The weights of
    the best epoch are restored and ``module`` is left in eval mode."""
    n = len(train) if windows_per_epoch is None else min(windows_per_epoch, len(train))
    best, best_state, bad_epochs, history = float("inf"), None, 0, []
    for epoch in range(epochs):
        start = time.perf_counter()
        module.train()
        total, seen = 0.0, 0
        bar = _progress(total=n, desc=f"{label} epoch {epoch + 1}/{epochs}", unit="win", disable=not progress)
        for x, y in train.batches(batch_size, shuffle=True, seed=seed * 1000 + epoch):
            if seen >= n:
                break
            x, y = x[: n - seen], y[: n - seen]
            value = loss(x, y)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += value.item() * len(x)
            seen += len(x)
            bar.update(len(x))
            bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        bar.close()
        val_mse = validate()
        history.append({"epoch": epoch + 1, "train_mse": total / seen, "val_mse": val_mse,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
        if progress:
            tqdm.write(f"{label} epoch {epoch + 1}: train {total / seen:.4f} val {val_mse:.4f} "
                       f"({history[-1]['seconds']:.1f}s)")
        if val_mse < best:
            best, best_state, bad_epochs = val_mse, copy.deepcopy(module.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
        if after_epoch is not None:
            after_epoch()
    module.load_state_dict(best_state)
    module.eval()
    return history


def val_mse(model: nn.Module, dataset, batch_size: int = 8192) -> float:
    """MSE of ``model`` (context (B, L) -> forecast (B, H)) over every window of
    ``dataset``; squared errors summed in float64. Leaves the model in eval mode."""
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for x, y in dataset.batches(batch_size):
            total += float((model(x) - y).double().square().sum())
            count += y.numel()
    return total / count
