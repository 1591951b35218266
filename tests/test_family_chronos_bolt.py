"""Chronos-Bolt adapter: parity with chronos-forecasting (direct and rolled-out horizons),
uneven surgery == masks (T5 relative-bias tables, single-query decoder self-attention,
dead FFN / attention), save/reload, plan replay, scorer agreement, ONNX parity.
Tiny configs, offline."""
from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("chronos", reason="chronos-forecasting is not installed (pip install 'tsprune[chronos]')")
from chronos.chronos_bolt import ChronosBoltModelForForecasting, ChronosBoltPipeline  # noqa: E402
from transformers import T5Config  # noqa: E402

from helpers import (context_batch, exports_to_onnx, masked_forecast, plan_forecast,  # noqa: E402
                     random_masks, reloads_and_replays, scorers_agree, two_series_windows)
from tsprune.families import detect, get  # noqa: E402
from tsprune.model import TSModel, load  # noqa: E402
from tsprune.prune import Plan, apply  # noqa: E402

QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
TINY = dict(
    architectures=["ChronosBoltModelForForecasting"], model_type="t5",
    d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=32, dense_act_fn="relu",
    feed_forward_proj="relu", is_gated_act=False, dropout_rate=0.1, decoder_start_token_id=0,
    pad_token_id=0, eos_token_id=1, initializer_factor=0.3,
    chronos_config=dict(context_length=128, prediction_length=32, input_patch_size=16,
                        input_patch_stride=16, quantiles=QUANTILES, use_reg_token=True),
)
GATED = {**TINY, "feed_forward_proj": "gated-gelu", "is_gated_act": True, "dense_act_fn": "gelu_new"}


def _hf(cfg: dict = TINY, seed: int = 0) -> ChronosBoltModelForForecasting:
    torch.manual_seed(seed)
    c = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    return ChronosBoltModelForForecasting(T5Config(**c)).eval()


def _tiny(cfg: dict = TINY, seed: int = 0) -> TSModel:
    return TSModel(get("chronos_bolt"), _hf(cfg, seed))


def test_detect_load_and_forecast_equal_upstream(tmp_path):
    assert detect(TINY).name == "chronos_bolt"
    hf = _hf()
    hf.save_pretrained(tmp_path / "hf")
    m = load(tmp_path / "hf")
    assert m.family.name == "chronos_bolt" and not m.pruned
    pipe = ChronosBoltPipeline(hf)
    x = context_batch(3, 120)  # not a multiple of the patch: NaN-padded upstream
    for h in (20, 32, 70):     # 70 > prediction_length: the pipeline's quantile rollout
        f = m.forecast(x, h)
        ref = pipe.predict(x, prediction_length=h)                 # (B, Q, H)
        assert f.point.shape == (3, h) and f.quantiles.shape == (3, h, 9)
        assert torch.equal(f.quantiles, ref.transpose(1, 2))
        assert torch.equal(f.point, ref[:, 4])                      # the median
    c, t = x[:, :100], x[:, 100:]
    with torch.no_grad():
        assert torch.equal(m.family.loss(m.module, c, t), hf(context=c, target=t).loss)


def _uneven_plan(m: TSModel) -> Plan:
    """encoder 0: heads 1, 3 dead, V/QK dims gone, FFN neurons gone; encoder 1: head 3 dead
    (so the shared bias table loses column 3 and layer 0 selects columns [0, 2]) and every
    Q/K dim dead; encoder 2:
    whole attention dead; decoder 0: cross-attention loses head 0; decoder 1: FFN dead."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    e0, e1, e2 = (s.blocks[i].attention[0] for i in range(3))
    dv = e0.v_head_dim
    for h in (1, 3):
        ms.m_out[e0.v][h * dv:(h + 1) * dv] = 0
    ms.m_out[e1.v][3 * dv:] = 0
    ms.m_out[e1.q][:] = 0                  # encoder 1: every Q/K dim gone, scores = bias alone
    ms.m_in[e0.o][0 * dv + 2] = 0          # head 0 loses V dim 2, head 2 loses 5 and 6
    ms.m_out[e0.v][2 * dv + 5] = 0
    ms.m_in[e0.o][2 * dv + 6] = 0
    ms.m_out[e0.q][[1, 2 * dv + 1]] = 0    # Q/K dim 1 of heads 0 and 2
    ms.m_out[e0.k][[1, 2 * dv + 1]] = 0
    ms.m_out[s.blocks[0].ffn[0].inputs[0]][:10] = 0
    ms.m_in[e0.q][:3] = 0                  # residual-stream channels: zeroed, not sliced
    ms.m_out[e2.v][:] = 0
    cross = s.blocks[3].attention[1]
    ms.m_in[cross.o][:dv] = 0
    ms.m_out[s.blocks[4].ffn[0].inputs[0]][:] = 0
    n = m.num_params()
    return Plan("chronos_bolt", ms.to_json(), n, n)


@pytest.mark.parametrize("cfg", [TINY, GATED], ids=["relu", "gated"])
def test_uneven_surgery_equals_masked_and_reloads(tmp_path, cfg):
    m = _tiny(cfg)
    plan = _uneven_plan(m)
    p = apply(m, plan)
    rows = p.describe()
    assert [r["heads"] for r in rows] == [2, 3, 0, 0, 4]   # decoder 0 self-attn folded, 1 single-query
    assert rows[0]["v_dim"] == 7 and rows[0]["qk_dim"] == 7 and rows[0]["ffn"] == 38
    assert rows[1]["qk_dim"] == 0 and rows[1]["v_dim"] == 8
    assert rows[4]["qk_dim"] == 0 and rows[3]["attn1_heads"] == 3 and rows[4]["ffn"] == 0
    enc = p.module.encoder.block
    owner = enc[0].layer[0].SelfAttention
    assert owner.table_heads == [0, 1, 2] and owner.relative_attention_bias.weight.shape == (8, 3)
    assert owner.bias_index == [0, 2] and enc[1].layer[0].SelfAttention.bias_index is None
    assert p.module.decoder.block[0].layer[0].SelfAttention.relative_attention_bias is None
    assert p.num_params() < m.num_params()
    x = context_batch(3, 128)
    ref = plan_forecast(m, plan, x, 70)
    got = p.forecast(x, 70)
    scale = ref.quantiles.abs().max()
    assert torch.allclose(got.quantiles, ref.quantiles, rtol=1e-4, atol=1e-5 * scale)
    reloads_and_replays(m, plan, p, x, 70, tmp_path, field="quantiles")


def test_dead_first_encoder_attention_still_serves_the_bias():
    m = _tiny()
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    ms.m_out[s.blocks[0].attention[0].v][:] = 0            # the table's owner dies
    p = apply(m, Plan("chronos_bolt", ms.to_json(), m.num_params(), m.num_params()))
    owner = p.module.encoder.block[0].layer[0].SelfAttention
    assert owner.mode == "const" and owner.relative_attention_bias.weight.shape == (8, 4)
    x = context_batch(2, 128)
    ref = masked_forecast(m, ms, x, 32)
    got = p.forecast(x, 32)
    assert torch.allclose(got.quantiles, ref.quantiles, rtol=1e-4, atol=1e-5 * ref.quantiles.abs().max())


def _windows(n: int = 600, seed: int = 0):
    return two_series_windows(n, 128, 32, stride=8, seed=seed, periods=(4, 9), trend=0.05)


def test_scorers_agree_and_single_query_qk_go_first():
    m = _tiny()
    fused = scorers_agree(m, _windows(), _windows(300, 1), ratio=0.3, max_epochs=1, macro_batch=32,
                          batch_size=16, calib_samples=None, val_samples=None)
    dec0 = "decoder.block.0.layer.0.SelfAttention"
    for lin in ("q", "k"):  # softmax over one key: exactly zero gradients, pruned at once
        assert len(fused.masks[f"{dec0}.{lin}"]["out"]) == 32
    # the start-token branch is scored too (fused mode makes constant inputs leaves)
    assert len(fused.masks[f"{dec0}.v"]["out"]) < 32
    p = apply(m, fused)
    assert p.num_params() < m.num_params()
    assert torch.isfinite(p.forecast(context_batch(2, 128), 32).point).all()


def test_pruned_model_exports_to_onnx(tmp_path):
    m = _tiny()
    p = apply(m, _uneven_plan(m))
    exports_to_onnx(p, tmp_path / "m.onnx", context=128, horizon=24, outputs=("point", "quantiles"))


def test_missing_package_names_the_extra(monkeypatch):
    from tsprune.families import chronos_bolt
    monkeypatch.setitem(sys.modules, "chronos", None)
    with pytest.raises(ImportError, match=r"pip install 'tsprune\[chronos\]'"):
        chronos_bolt.FAMILY.build(TINY)
