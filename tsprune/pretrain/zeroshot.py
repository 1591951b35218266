"""Zero-shot evaluation on the ETT benchmark, standard (TSLib) protocol.

ETTh1/ETTh2 (hourly) and ETTm1/ETTm2 (15 min), 12/4/4-month train/val/test split,
every channel z-scored with train-split statistics, test windows with stride 1 that
start ``context`` rows before the test split, all 7 channels as univariate series;
MSE/MAE on the z-scored values over every window, channel and step.

The model is called exactly as upstream documents forecasting::

    model(past_values=[1-D tensors], forecast_context_len=context).mean_predictions[:, :horizon]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

ETT = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
#: Daily period in steps, used by seasonal naive.
SEASON = {"ETTh1": 24, "ETTh2": 24, "ETTm1": 96, "ETTm2": 96}


def default_data_dir() -> Path:
    """``../shared/data`` relative to the repository root (or $TSPRUNE_SHARED_DATA)."""
    env = os.environ.get("TSPRUNE_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def ett_test_windows(name: str, data_dir, context: int = 512, horizon: int = 96, stride: int = 1):
    """Test windows of ``name``: (contexts (W*7, context), targets (W*7, horizon)) float32, z-scored.

    Row ``w*7 + c`` is window ``w`` of channel ``c``; ``stride`` > 1 subsamples windows
    (for development only: the standard protocol is stride 1).
    """
    import pandas as pd  # lazy: pandas is heavy; only reading the CSV needs it

    df = pd.read_csv(Path(data_dir) / f"{name}.csv.gz")
    values = df.drop(columns=["date"]).to_numpy(np.float64)  # (rows, 7)
    month = 30 * 24 * (4 if name.startswith("ETTm") else 1)
    train_end, test_end = 12 * month, 20 * month
    train = values[:train_end]
    z = (values - train.mean(0)) / train.std(0)
    test = z[16 * month - context:test_end]
    starts = np.arange(0, len(test) - context - horizon + 1, stride)
    idx = starts[:, None] + np.arange(context + horizon)[None, :]  # (W, L)
    win = test[idx]  # (W, L, 7)
    win = win.transpose(0, 2, 1).reshape(-1, context + horizon)  # (W*7, L)
    return win[:, :context].astype(np.float32), win[:, context:].astype(np.float32)


def seasonal_naive(contexts: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Repeat the last ``period`` values: pred[j] = x[-period + (j mod period)]. (n, horizon)."""
    j = np.arange(horizon) % period
    return contexts[:, -period + j] if period <= contexts.shape[1] else np.repeat(contexts[:, -1:], horizon, 1)


@torch.inference_mode()
def forecast(model, contexts: np.ndarray, horizon: int, batch_size: int = 1024,
             context: int | None = None) -> np.ndarray:
    """Point forecasts (n, horizon) through the upstream forecasting API."""
    model.eval()
    device = next(model.parameters()).device
    context = context or contexts.shape[1]
    out = []
    for s in range(0, len(contexts), batch_size):
        batch = torch.from_numpy(contexts[s:s + batch_size]).to(device)
        pred = model(past_values=list(batch), forecast_context_len=context).mean_predictions[:, :horizon]
        out.append(pred.float().cpu().numpy())
    return np.concatenate(out)


def evaluate(model, names=ETT, data_dir=None, context: int = 512, horizon: int = 96, stride: int = 1,
             batch_size: int = 1024) -> dict:
    """{name: {"mse", "mae", "snaive_mse", "snaive_mae", "series"}} on ETT test windows."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    res = {}
    for name in names:
        x, y = ett_test_windows(name, data_dir, context, horizon, stride)
        p = forecast(model, x, horizon, batch_size, context)
        sn = seasonal_naive(x, horizon, SEASON[name])
        res[name] = {"mse": float(np.mean((p - y) ** 2)), "mae": float(np.mean(np.abs(p - y))),
                     "snaive_mse": float(np.mean((sn - y) ** 2)), "snaive_mae": float(np.mean(np.abs(sn - y))),
                     "series": int(len(x))}
    return res


def main(argv=None):  # pragma: no cover - development helper
    # lazy: transformers is heavy; evaluate() takes the model from its caller
    from transformers import TimesFm2_5ModelForPrediction

    ap = argparse.ArgumentParser(description="zero-shot ETT evaluation of a TimesFM 2.5 directory")
    ap.add_argument("model_dir")
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--names", default=",".join(ETT))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--flip", action="store_true", help="force_flip_invariance=True")
    a = ap.parse_args(argv)
    model = TimesFm2_5ModelForPrediction.from_pretrained(a.model_dir, local_files_only=True,
                                                         use_safetensors=True, trust_remote_code=False)
    model.config.force_flip_invariance = a.flip
    res = evaluate(model, a.names.split(","), a.data_dir, stride=a.stride)
    for k, v in res.items():
        print(f"{k}: mse {v['mse']:.4f} mae {v['mae']:.4f} | snaive mse {v['snaive_mse']:.4f} "
              f"mae {v['snaive_mae']:.4f} | n={v['series']}")
    print(f"avg mse {np.mean([v['mse'] for v in res.values()]):.4f}")


if __name__ == "__main__":  # pragma: no cover
    main()
