"""TimesFM 2.5 adapter: parity with transformers, pruning surgery, save/reload, ONNX."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from helpers import (TINY_TIMESFM25, context_batch, exports_to_onnx, plan_forecast,  # noqa: E402
                     random_masks, reloads_and_replays, tiny_timesfm25)
from tsprune.model import TSModel, from_config, load  # noqa: E402
from tsprune.prune import Plan, apply  # noqa: E402


@pytest.mark.parametrize("flip,cont", [(False, False), (True, True)])
def test_zero_pruning_equals_upstream(flip, cont):
    cfg = {**TINY_TIMESFM25, "force_flip_invariance": flip, "use_continuous_quantile_head": cont}
    hf = tiny_timesfm25(cfg)
    from tsprune.families import get
    m = TSModel(get("timesfm2_5"), hf)
    x = context_batch(3, 512)
    f = m.forecast(x, 96)
    with torch.no_grad():
        ref = hf(past_values=list(x), forecast_context_len=512)
    assert torch.equal(f.point, ref.mean_predictions[:, :96])
    assert torch.equal(f.quantiles, ref.full_predictions[:, :96, 1:])


def test_rollout_and_padding():
    m = from_config(TINY_TIMESFM25)
    x = context_batch(2, 500)  # not a multiple of the patch: left-padded
    f = m.forecast(x, 300)
    assert f.point.shape == (2, 300) and f.quantiles.shape == (2, 300, 9)
    assert torch.isfinite(f.point).all()
    # the first output patch equals a one-step forecast
    assert torch.allclose(m.forecast(x, 128).point, f.point[:, :128])


def test_load_save_pretrained_dir(tmp_path):
    hf = tiny_timesfm25(TINY_TIMESFM25)
    hf.save_pretrained(tmp_path / "hf")
    m = load(tmp_path / "hf")
    x = context_batch(2)
    with torch.no_grad():
        ref = hf(past_values=list(x), forecast_context_len=512).mean_predictions[:, :64]
    assert torch.equal(m.forecast(x, 64).point, ref)


def _uneven_plan(m: TSModel) -> Plan:
    """Layer 0: heads 1 and 3 dead, some V dims and FFN neurons gone; layer 1: whole FFN
    and whole attention dead."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    a0, f0 = s.blocks[0].attention[0], s.blocks[0].ffn[0]
    dv = a0.v_head_dim
    for h in (1, 3):
        ms.m_out[a0.v][h * dv:(h + 1) * dv] = 0
    ms.m_in[a0.o][0 * dv + 2] = 0   # head 0 loses V dims 2 and 5
    ms.m_out[a0.v][0 * dv + 5] = 0
    ms.m_in[a0.o][2 * dv + 7] = 0   # head 2 loses dims 7, 8, 9
    ms.m_out[a0.v][2 * dv + 8] = 0
    ms.m_in[a0.o][2 * dv + 9] = 0
    ms.m_out[f0.inputs[0]][:10] = 0
    ms.m_in[f0.output][50:55] = 0
    ms.m_in[a0.q][:3] = 0            # residual-stream channels: zeroed, not sliced
    ms.m_out[a0.o][-2:] = 0
    a1, f1 = s.blocks[1].attention[0], s.blocks[1].ffn[0]
    ms.m_out[a1.v][:] = 0
    ms.m_out[f1.inputs[0]][:] = 0
    n = m.num_params()
    return Plan("timesfm2_5", ms.to_json(), n, n)


def test_uneven_surgery_equals_masked_and_reloads(tmp_path):
    m = from_config({**TINY_TIMESFM25, "force_flip_invariance": True})
    plan = _uneven_plan(m)
    p = apply(m, plan)
    rows = p.describe()
    assert rows[0]["heads"] == 2 and rows[0]["v_dim"] == 14 and rows[0]["ffn"] == 96 - 15
    assert rows[1]["heads"] == 0 and rows[1]["ffn"] == 0
    assert p.num_params() < m.num_params()
    x = context_batch(3)
    ref = plan_forecast(m, plan, x, 96)
    got = p.forecast(x, 96)
    assert torch.allclose(got.point, ref.point, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got.quantiles, ref.quantiles, atol=1e-5, rtol=1e-5)
    reloads_and_replays(m, plan, p, x, 200, tmp_path)


def test_uneven_pruned_model_exports_to_onnx(tmp_path):
    m = from_config(TINY_TIMESFM25)
    exports_to_onnx(apply(m, _uneven_plan(m)), tmp_path / "m.onnx", context=512, horizon=160,
                    outputs=("point", "quantiles"), metadata={"columns": ["a"]})
    import onnx
    meta = {e.key: e.value for e in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["family"] == "timesfm2_5" and meta["horizon"] == "160"
