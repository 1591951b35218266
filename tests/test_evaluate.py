"""One rollout for several horizons equals one evaluation per horizon (TSLib window sets)."""
from __future__ import annotations

import pytest
import torch

from helpers import TINY_TIMESFM25, synthetic_frame
from tsprune.data import DataConfig, prepare_frame
from tsprune.evaluation import evaluate, evaluate_horizons
from tsprune.model import from_config


def test_evaluate_horizons_matches_per_horizon_evaluation():
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    data = prepare_frame(synthetic_frame(n=1500, channels=2),
                         DataConfig(None, split="0.6,0.2,0.2", context=128, horizon=150))
    got = evaluate_horizons(m, data, [24, 150, 60], show_progress=False)
    for h in (24, 60, 150):
        ref = evaluate(m, data.windows("test", horizon=h, stride=1), show_progress=False)
        assert got[str(h)]["windows"] == ref["windows"] == len(data.windows("test", horizon=h))
        assert got[str(h)]["mse"] == pytest.approx(ref["mse"], rel=1e-5)
        assert got[str(h)]["mae"] == pytest.approx(ref["mae"], rel=1e-5)
