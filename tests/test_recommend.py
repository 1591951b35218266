"""The deploy recommendation: a baseline is recommended only when it beats the TSFM on
validation; the headline carries both figures; --export-model resolves against it."""
from __future__ import annotations

import pytest

from tsprune.errors import UserError
from tsprune.recommend import export_choice, recommend


def test_baseline_that_wins_on_validation_is_recommended_with_both_figures():
    r = recommend({"tsfm": 0.999, "dlinear": 0.487, "seasonal_naive": 1.725},
                  tsfm_label="pruned + fine-tuned TSFM", windows=4096, horizon=96)
    assert r.deploy == "dlinear" and r.best == "dlinear"
    h = r.headline()
    assert h.startswith("Recommendation: deploy DLinear, not the pruned + fine-tuned TSFM")
    assert "0.4870" in h and "0.9990" in h and "horizon 96" in h and "4,096" in h
    assert export_choice("auto", r, have_dlinear=True) == "dlinear"
    assert export_choice("tsfm", r, have_dlinear=True) == "tsfm"


def test_tsfm_kept_when_it_wins_or_ties():
    r = recommend({"tsfm": 0.38, "dlinear": 0.41, "seasonal_naive": 0.6}, horizon=96)
    assert r.deploy == "tsfm" and "0.3800" in r.headline() and "DLinear 0.4100" in r.headline()
    assert recommend({"tsfm": 0.4, "dlinear": 0.4}).deploy == "tsfm"
    assert export_choice("auto", r, have_dlinear=True) == "tsfm"


def test_seasonal_naive_is_reported_but_not_deployed():
    r = recommend({"tsfm": 0.9, "dlinear": 0.8, "seasonal_naive": 0.5}, horizon=24)
    assert r.best == "seasonal_naive" and r.deploy == "dlinear"
    assert "Seasonal naive is lower still (0.5000)" in r.headline()
    r = recommend({"tsfm": 0.9, "seasonal_naive": 0.5}, horizon=24)  # --no-dlinear
    assert r.deploy == "tsfm" and "not exported" in r.headline()


def test_missing_or_nan_figures_are_ignored_and_choices_checked():
    r = recommend({"tsfm": 0.5, "dlinear": float("nan"), "seasonal_naive": None})
    assert r.deploy == "tsfm" and set(r.val_mse) == {"tsfm"}
    with pytest.raises(UserError, match="--export-model"):
        export_choice("dlinear", r, have_dlinear=False)
    with pytest.raises(UserError, match="--export-model"):
        export_choice("best", r, have_dlinear=True)
    with pytest.raises(ValueError):
        recommend({"dlinear": 0.3})


def test_run_recommends_and_exports_the_baseline_that_wins(tmp_path):
    """A tiny random TSFM against DLinear on clean sines: the report's first line names
    DLinear with both validation figures and --export onnx writes DLinear's graph."""
    import json

    import numpy as np
    from helpers import TINY_TIMESFM25, synthetic_frame

    import tsprune
    from tsprune.cli import main
    tsprune.from_config(dict(TINY_TIMESFM25)).save(tmp_path / "tiny")
    synthetic_frame(1000).to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "out"
    rc = main(["prune", "--model", str(tmp_path / "tiny"), "--data", str(tmp_path / "data.csv"),
               "--split", "0.6,0.2,0.2", "--context", "64", "--horizon", "16", "--max-epochs", "1",
               "--macro-batch", "128", "--calib-samples", "128", "--val-samples", "64", "--no-finetune",
               "--export", "onnx", "--quiet", "--out", str(out)])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    rec = rep["recommendation"]
    assert rec["deploy"] == "dlinear" and rec["val_mse"]["dlinear"] < rec["val_mse"]["tsfm"]
    first = (out / "report.md").read_text().splitlines()[0]
    assert first.startswith("**Recommendation: deploy DLinear, not the pruned TSFM")
    assert f"{rec['val_mse']['dlinear']:.4f}" in first and f"{rec['val_mse']['tsfm']:.4f}" in first
    assert rep["onnx"]["model"] == "dlinear" and rep["onnx"]["max_abs_err"] < 1e-4
    import onnxruntime as ort
    s = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    outs = s.run(None, {"context": np.zeros((2, 64), np.float32) + 3.0})
    assert outs[0].shape == (2, 16) and np.allclose(outs[0], 3.0, atol=1e-3)  # a flat window stays flat
    assert rec["headline"] in (out / "report.html").read_text().replace("&#x27;", "'")
