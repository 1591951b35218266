"""`tsprune reproduce` end to end on a tiny model and two generated hourly datasets."""
from __future__ import annotations

import json

import torch

from helpers import TINY_TIMESFM25, synthetic_frame
from tsprune.prune import PruneConfig
from tsprune.reproduce import ReproduceConfig, run
from tsprune.search import SearchConfig


def test_reproduce_small(tmp_path):
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction
    torch.manual_seed(0)
    cfg = {k: v for k, v in TINY_TIMESFM25.items() if k != "model_type"}
    TimesFm2_5ModelForPrediction(TimesFm2_5Config(**cfg)).save_pretrained(tmp_path / "m")
    paths = []
    for i, name in enumerate(("A", "B")):
        p = tmp_path / f"{name}.csv"
        synthetic_frame(n=1600, channels=1, seed=i).to_csv(p, index=False)
        paths.append(str(p))
    rc = ReproduceConfig(datasets=tuple(paths), horizons=(24, 48), model=str(tmp_path / "m"),
                         context=64, split="0.7,0.1,0.2", out=str(tmp_path / "res"),
                         search=SearchConfig(ratios=(0.2, 0.5), emas=(0.5,), calib_samples=128,
                                             val_samples=64),
                         prune=PruneConfig(batch_size=64), lrs=(1e-4,), ft_train_samples=256,
                         ft_val_samples=64, baselines=("seasonal_naive", "dlinear"),
                         transfer=((paths[0], paths[1]),))
    out = run(rc, log=lambda m: None)
    md = (tmp_path / "res" / "accuracy.md").read_text()
    assert "prune-then-finetune beats full fine-tuning in" in md
    assert (tmp_path / "res" / "mse_vs_params.png").stat().st_size > 1000
    r = out["results"][paths[0]]
    for key in ("zero_shot", "finetuned_dense", "pruned_finetuned"):
        assert set(r[key]) == {"24", "48"}
    assert set(r["pruned"]) == {"24"}  # before fine-tuning: the first horizon only
    assert r["params_pruned"] < r["params_dense"]
    assert set(r["baselines"]) == {"seasonal_naive", "dlinear"}
    assert len(out["transfer"]) == 1
    s = json.loads((tmp_path / "res" / "accuracy.json").read_text())["summary"]
    assert s["n"] == 4
    # a rerun skips finished datasets
    again = run(rc, log=lambda m: None)
    assert again["results"][paths[0]]["timings"] == r["timings"]
