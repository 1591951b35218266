"""Shared test helpers: tiny models of each family and synthetic data, all offline."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from tsprune.prune.masks import MaskSet, attach

TINY_TIMESFM25 = dict(
    model_type="timesfm2_5", patch_length=32, context_length=512, horizon_length=128,
    num_hidden_layers=2, hidden_size=64, intermediate_size=96, head_dim=16,
    num_attention_heads=4, num_key_value_heads=4, output_quantile_len=32,
    use_continuous_quantile_head=False, force_flip_invariance=False, infer_is_positive=False,
)


def synthetic_frame(n: int = 3000, channels: int = 2, freq: str = "h", seed: int = 0) -> pd.DataFrame:
    """Seasonal series with trend and noise, a date column, `channels` numeric columns."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cols = {}
    for c in range(channels):
        cols[f"x{c}"] = (np.sin(2 * math.pi * t / 24 + c) + 0.3 * np.sin(2 * math.pi * t / 168)
                         + 0.001 * t * (c + 1) + 0.2 * rng.standard_normal(n))
    df = pd.DataFrame(cols)
    df.insert(0, "date", pd.date_range("2020-01-01", periods=n, freq=freq))
    return df


def context_batch(b: int = 4, length: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    return (torch.randn(b, length, generator=g).cumsum(1) * 0.1
            + torch.sin(2 * math.pi * t / 24)[None] + torch.randn(b, 1, generator=g))


def random_masks(model, structure, frac: float = 0.3, seed: int = 0) -> MaskSet:
    """Zero a random fraction of every mask (in and out) of the structure's Linears."""
    g = torch.Generator().manual_seed(seed)
    ms = MaskSet(model, structure.linears())
    for _, _, m in ms.units():
        m[torch.rand(m.numel(), generator=g) < frac] = 0.0
    return ms


def masked_forecast(tsmodel, masks: MaskSet, context, horizon):
    with torch.no_grad(), attach(tsmodel.module, masks, "apply"):
        return tsmodel.family.forecast(tsmodel.module.eval(), context, horizon)
