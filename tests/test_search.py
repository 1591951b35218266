"""Hyperparameter search: (r, alpha) by validation of the pruned model, every trial kept."""
from __future__ import annotations

import torch

from helpers import TINY_TIMESFM25, synthetic_frame
from tsprune.data import DataConfig, prepare_frame
from tsprune.model import from_config
from tsprune.prune import PruneConfig
from tsprune.search import SearchConfig, search


def test_search_picks_the_lowest_validation_loss():
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    data = prepare_frame(synthetic_frame(n=1500, channels=1),
                         DataConfig(None, split="0.7,0.1,0.2", context=128, horizon=24))
    train, val = data.windows("train"), data.windows("val")
    res = search(m, train, val, PruneConfig(batch_size=64),
                 SearchConfig(ratios=(0.1, 0.6), emas=(0.5, 1.0), calib_samples=256, val_samples=64),
                 show_progress=False)
    assert len(res.trials) == 4
    best = min(res.trials, key=lambda t: t["val_loss"])
    assert (res.ratio, res.ema) == (best["ratio"], best["ema"])
    assert res.plan.config["ratio"] == res.ratio and res.plan.config["ema"] == res.ema
    # a larger ratio prunes more in the same epoch
    sp = {(t["ratio"], t["ema"]): t["sparsity"] for t in res.trials}
    assert sp[(0.6, 0.5)] > sp[(0.1, 0.5)]
    assert all(t["curve"] for t in res.trials)
    j = res.to_json()
    assert j["grids"]["ratio"] == [0.1, 0.6] and j["chosen"]["ratio"] == res.ratio
