"""TTM r2 with its real published weights (ibm-granite/granite-timeseries-ttm-r2, the
512-context / 96-step checkpoint in ../shared/models, read there, never copied).

- tsprune's forecasts equal granite-tsfm's TinyTimeMixerForPrediction on real ETT windows
  (1e-6);
- the zero-shot ETTh1 figure (``ett`` split, context 512, horizon 96, every test window:
  MSE 0.3628, MAE 0.3890, measured with granite-tsfm) is reproduced within 0.001;
- a pruned model (head only, the paper's mode, and with the mixer MLPs) equals the masked
  dense model, saves and reloads to identical forecasts and exports to ONNX within 1e-4.

Skipped, with the reason, without ../shared or granite-tsfm.
"""
from __future__ import annotations

import pytest
import torch

from helpers import one_thread, plan_forecast  # noqa: F401  (one_thread: autouse)
from oracles import ett_contexts, max_err, shared_path

try:
    from tsprune.families.ttm import _upstream
    _, TinyTimeMixerForPrediction = _upstream()
except ImportError as e:  # granite-tsfm is installed separately (see .ci/run)
    pytest.skip(f"granite-tsfm not installed ({str(e).splitlines()[0]})", allow_module_level=True)

CHECKPOINT = ("models", "granite-timeseries-ttm-r2-512-96")
PUBLISHED = {"mse": 0.3628, "mae": 0.3890}   # ../shared/models/README.md


@pytest.fixture(scope="module")
def path():
    return shared_path(*CHECKPOINT)


@pytest.fixture(scope="module")
def dense(path):
    from tsprune.model import load
    m = load(path)
    assert m.family.name == "ttm" and not m.pruned
    assert m.num_params() == 805_280
    return m


@pytest.fixture(scope="module")
def granite(path):
    return TinyTimeMixerForPrediction.from_pretrained(path).eval()


def test_forecast_equals_granite_on_real_windows(dense, granite):
    for name in ("ETTh1", "ETTm2"):
        x = ett_contexts(name, context=512, n=16)
        with torch.no_grad():
            want = granite(past_values=x[..., None]).prediction_outputs[..., 0]
        got = dense.forecast(x, 96).point
        assert max_err(got, want) < 1e-6, name
        assert max_err(dense.forecast(x, 48).point, want[:, :48]) < 1e-6
        # a longer context is cut to the last 512 steps
        x_long = ett_contexts(name, context=700, n=4)
        with torch.no_grad():
            want = granite(past_values=x_long[:, -512:, None]).prediction_outputs[..., 0]
        assert max_err(dense.forecast(x_long, 96).point, want) < 1e-6


@pytest.mark.data
def test_zero_shot_etth1_every_test_window(dense):
    """Every one of the 19,495 test windows (7 channels x 2,785): about 40 s on one busy
    core, so it carries the ``data`` marker (deselect with -m "not data")."""
    from tsprune.data import DataConfig, ett_path, prepare
    from tsprune.evaluation import evaluate
    p = ett_path("ETTh1")
    if p is None:
        pytest.skip("ETTh1 not found in ../shared/data")
    test = prepare(DataConfig(p, context=512, horizon=96)).windows("test")
    assert len(test) == 7 * (2880 - 96 + 1)
    r = evaluate(dense, test, batch_size=1024, show_progress=False)
    assert r["windows"] == len(test)
    print(f"TTM r2 zero-shot ETTh1 h96: MSE {r['mse']:.5f} MAE {r['mae']:.5f} ({r['windows']} windows)")
    assert abs(r["mse"] - PUBLISHED["mse"]) < 1e-3, r
    assert abs(r["mae"] - PUBLISHED["mae"]) < 1e-3, r


def _prune(dense, mixers: bool, ratio: float):
    """Score on a few real ETTh1 train/val windows and apply: (pruned, plan, dense copy)."""
    from tsprune.data import DataConfig, ett_path, prepare
    from tsprune.prune import PruneConfig, apply, score
    p = ett_path("ETTh1")
    if p is None:
        pytest.skip("ETTh1 not found in ../shared/data")
    data = prepare(DataConfig(p, context=512, horizon=96))
    m = dense.clone()
    m.module.config.tsprune_mask_mixers = mixers
    cfg = PruneConfig(ratio=ratio, max_epochs=1, batch_size=32, macro_batch=64, calib_samples=128,
                      val_samples=64, min_steps=2)
    plan = score(m, data.windows("train"), data.windows("val"), cfg, show_progress=False)
    return apply(m, plan), plan, m


@pytest.mark.parametrize("mixers", [False, True], ids=["head-only", "mixers"])
def test_prune_save_reload_export_keep_parity(dense, tmp_path, mixers):
    """Both modes: pruned == masked, reload identical. The ONNX export (about 20 s) runs
    once, on the mixer-pruned model (head features and mixer neurons both cut)."""
    from tsprune.model import load
    p, plan, m = _prune(dense, mixers, ratio=0.05)
    assert p.pruned and p.num_params() < dense.num_params()
    if mixers:   # mixer neurons went too, not only head features
        assert any(r.get("ffn", 0) for r in p.describe()[:-1])
    x = ett_contexts("ETTh1", context=512, n=8)
    got = p.forecast(x, 96).point
    assert max_err(got, plan_forecast(m, plan, x, 96).point) < 1e-5          # pruned == masked
    p.save(tmp_path / "pruned")
    q = load(tmp_path / "pruned")
    assert q.pruned and q.num_params() == p.num_params()
    assert torch.equal(q.forecast(x, 96).point, got)                          # reload: identical
    if not mixers:
        return
    pytest.importorskip("onnxruntime")
    from tsprune.export import export_onnx
    r = export_onnx(q, tmp_path / "m.onnx", context=512, horizon=96)
    assert r["max_abs_err"] < 1e-4
    import numpy as np
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (onnx_point, *_) = sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(np.float32)})
    assert max_err(torch.from_numpy(onnx_point), got) < 1e-4                 # on real windows
