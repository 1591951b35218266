"""TimesFM 2.0 adapter: parity with transformers' TimesFmModelForPrediction (forecast and
decode), surgery == masked with uneven heads/widths per layer, save/reload, plan replay,
ONNX parity, scoring (fused == reference)."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import TimesFmConfig, TimesFmModelForPrediction  # noqa: E402

from helpers import (context_batch, exports_to_onnx, plan_forecast, random_masks,  # noqa: E402
                     reloads_and_replays, scorers_agree, sine_windows)
from tsprune.families import get  # noqa: E402
from tsprune.model import TSModel, load  # noqa: E402
from tsprune.prune import Plan, apply  # noqa: E402

TINY = dict(patch_length=32, context_length=256, horizon_length=64, num_hidden_layers=2,
            hidden_size=64, intermediate_size=96, head_dim=16, num_attention_heads=4)


def _hf(**over) -> TimesFmModelForPrediction:
    torch.manual_seed(0)
    return TimesFmModelForPrediction(TimesFmConfig(**{**TINY, **over})).eval()


def _tiny(**over) -> TSModel:
    return TSModel(get("timesfm2"), _hf(**over))


@pytest.mark.parametrize("pos", [False, True])
def test_zero_pruning_equals_upstream(pos):
    hf = _hf(use_positional_embedding=pos)
    m = TSModel(get("timesfm2"), hf)
    x = context_batch(3, 256)
    f = m.forecast(x, 64)
    with torch.no_grad():
        ref = hf(past_values=list(x))
    assert torch.equal(f.point, ref.mean_predictions)
    assert torch.equal(f.quantiles, ref.full_predictions[..., 1:])
    # shorter context: tsprune pads to a multiple of the patch, upstream to context_length
    xs = x[:, -150:]
    with torch.no_grad():
        ref = hf(past_values=list(xs))
    assert torch.allclose(m.forecast(xs, 40).point, ref.mean_predictions[:, :40], atol=1e-5)


def test_rollout_follows_upstream_decode():
    hf = _hf()
    m = TSModel(get("timesfm2"), hf)
    x = context_batch(2, 200)
    f = m.forecast(x, 150)
    assert f.point.shape == (2, 150) and f.quantiles.shape == (2, 150, 9)
    # step 2 = upstream on the context extended by step 1's mean (it keeps the last 256)
    with torch.no_grad():
        step2 = hf(past_values=list(torch.cat([x, f.point[:, :64]], 1))).mean_predictions
    assert torch.allclose(f.point[:, 64:128], step2, atol=1e-5)
    assert torch.equal(m.forecast(x, 64).point, f.point[:, :64])


def test_detect_and_load_save_pretrained_dir(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path / "hf")
    m = load(tmp_path / "hf")
    assert m.family.name == "timesfm2" and not m.pruned
    x = context_batch(2, 256)
    with torch.no_grad():
        ref = hf(past_values=list(x)).mean_predictions
    assert torch.equal(m.forecast(x, 64).point, ref)


def _uneven_plan(m: TSModel) -> Plan:
    """Layer 0: heads 1 and 3 dead, some V and Q/K dims (unlike per head) and FFN neurons
    gone; layer 1: whole attention and whole FFN dead."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    a0, f0 = s.blocks[0].attention[0], s.blocks[0].ffn[0]
    d = a0.v_head_dim
    for h in (1, 3):
        ms.m_out[a0.v][h * d:(h + 1) * d] = 0
    ms.m_in[a0.o][0 * d + 2] = 0          # head 0 loses V dims 2 and 5
    ms.m_out[a0.v][0 * d + 5] = 0
    ms.m_in[a0.o][2 * d + 7] = 0          # head 2 loses V dims 7, 8, 9
    ms.m_out[a0.v][2 * d + 8] = 0
    ms.m_in[a0.o][2 * d + 9] = 0
    ms.m_out[a0.q][[0 * d + 1, 0 * d + 4, 2 * d + 3]] = 0   # Q dims: head 0 two, head 2 one
    ms.m_out[a0.k][[2 * d + 11, 0 * d + 6]] = 0             # K dims: head 2 one more, head 0
    ms.m_out[f0.inputs[0]][:10] = 0
    ms.m_in[f0.output][50:55] = 0
    ms.m_in[a0.q][:3] = 0                 # residual-stream channels: zeroed, not sliced
    ms.m_out[a0.o][-2:] = 0
    a1, f1 = s.blocks[1].attention[0], s.blocks[1].ffn[0]
    ms.m_out[a1.v][:] = 0
    ms.m_out[f1.inputs[0]][:] = 0
    n = m.num_params()
    return Plan("timesfm2", ms.to_json(), n, n)


def test_uneven_surgery_equals_masked_and_reloads(tmp_path):
    m = _tiny()
    plan = _uneven_plan(m)
    p = apply(m, plan)
    rows = p.describe()
    assert (rows[0]["heads"], rows[0]["v_dim"], rows[0]["qk_dim"], rows[0]["ffn"]) == (2, 14, 14, 81)
    assert rows[1]["heads"] == 0 and rows[1]["ffn"] == 0
    assert p.module.decoder.layers[0].self_attn.scaling.shape == (2, 14)
    assert p.num_params() < m.num_params()
    x = context_batch(3, 230)
    ref = plan_forecast(m, plan, x, 100)
    got = p.forecast(x, 100)
    assert torch.allclose(got.point, ref.point, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got.quantiles, ref.quantiles, atol=1e-5, rtol=1e-5)
    reloads_and_replays(m, plan, p, x, 100, tmp_path)


def test_uneven_pruned_model_exports_to_onnx(tmp_path):
    m = _tiny()
    p = apply(m, _uneven_plan(m))
    exports_to_onnx(p, tmp_path / "m.onnx", context=224, horizon=100,  # two decode steps
                    outputs=("point", "quantiles"))


def test_score_fused_equals_reference():
    m = _tiny()
    train, val = sine_windows(400, 1, horizon=64, stride=3), sine_windows(260, 2, horizon=64, stride=3)
    fused = scorers_agree(m, train, val, ratio=0.15, max_epochs=1, macro_batch=48, batch_size=16,
                          calib_samples=96, val_samples=32)
    p = apply(m, fused)
    x = context_batch(2, 128)
    ref_f = plan_forecast(m, fused, x, 64)
    assert torch.allclose(p.forecast(x, 64).point, ref_f.point, atol=1e-5, rtol=1e-5)


def test_q_and_k_output_dims_are_pruned_together():
    """q.out[i] and k.out[i] scale the same term of every logit (no RoPE, no q/k norm), so
    their Taylor scores are equal up to rounding; the engine prunes them as one unit, or
    rounding alone would decide between them (it did, differently per scorer)."""
    from tsprune.prune import PruneConfig, score
    from tsprune.prune.engine import coupled_qk
    m = _tiny()
    assert coupled_qk(m.family.structure(m.module))  # the tiny TimesFM 2.0 has coupled pairs
    train, val = sine_windows(400, 1, horizon=64, stride=3), sine_windows(260, 2, horizon=64, stride=3)
    plan = score(m, train, val, PruneConfig(ratio=0.3, max_epochs=1, macro_batch=48, batch_size=16,
                                            calib_samples=96, val_samples=32), show_progress=False)
    pruned_any = False
    for layer in range(2):
        q = plan.masks[f"decoder.layers.{layer}.self_attn.q_proj"]["out"]
        k = plan.masks[f"decoder.layers.{layer}.self_attn.k_proj"]["out"]
        assert q == k
        pruned_any |= bool(q)
    assert pruned_any
