"""PatchTST adapter: parity with transformers (one channel and channel-independent C
channels), uneven surgery == masks (dead FFN, dead attention), save/reload, plan replay,
scorer agreement, ONNX parity, unsupported configs. Tiny configs, offline."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
from transformers import PatchTSTConfig, PatchTSTForPrediction  # noqa: E402

from helpers import (context_batch, exports_to_onnx, plan_forecast, random_masks,  # noqa: E402
                     reloads_and_replays, scorers_agree, two_series_windows)
from tsprune.errors import UserError  # noqa: E402
from tsprune.families import detect, get  # noqa: E402
from tsprune.model import TSModel, from_config, load  # noqa: E402
from tsprune.prune import Plan, apply  # noqa: E402

TINY = dict(model_type="patchtst", architectures=["PatchTSTForPrediction"], num_input_channels=1,
            context_length=96, patch_length=16, patch_stride=8, num_hidden_layers=3, d_model=32,
            num_attention_heads=4, ffn_dim=48, prediction_length=24, pooling_type=None,
            norm_type="batchnorm")


def _hf(cfg: dict = TINY, seed: int = 0) -> PatchTSTForPrediction:
    torch.manual_seed(seed)
    c = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    model = PatchTSTForPrediction(PatchTSTConfig(**c))
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("cfg", [TINY, {**TINY, "pooling_type": "mean", "use_cls_token": True,
                                         "norm_type": "layernorm", "scaling": "mean"}],
                         ids=["flatten-batchnorm", "cls-layernorm-mean"])
def test_forecast_equals_upstream(tmp_path, cfg):
    assert detect(cfg).name == "patchtst"
    hf = _hf(cfg)
    hf.save_pretrained(tmp_path / "hf")
    m = load(tmp_path / "hf")
    x = context_batch(3, 96)
    with torch.no_grad():
        ref = hf(past_values=x[..., None]).prediction_outputs[..., 0]
        assert torch.equal(m.forecast(x, 24).point, ref)
        assert torch.equal(m.forecast(x, 10).point, ref[:, :10])
        y = context_batch(3, 24, seed=1)
        assert torch.allclose(m.family.loss(m.module, x, y), hf(past_values=x[..., None],
                                                                future_values=y[..., None]).loss)
    long = m.forecast(context_batch(3, 130), 60)        # longer context; rolled-out horizon
    assert long.point.shape == (3, 60) and torch.isfinite(long.point).all()
    assert torch.equal(long.point[:, :24], m.forecast(context_batch(3, 130), 24).point)


def test_channel_independent_multichannel_model():
    hf = _hf({**TINY, "num_input_channels": 3})
    m = TSModel(get("patchtst"), hf)
    x = context_batch(6, 96).view(2, 3, 96)                     # 2 series x 3 channels
    with torch.no_grad():
        ref = hf(past_values=x.transpose(1, 2)).prediction_outputs  # (2, 24, 3)
    got = m.forecast(x.reshape(6, 96), 24).point.view(2, 3, 24).transpose(1, 2)
    assert torch.allclose(got, ref, atol=1e-6, rtol=1e-6)


def test_unsupported_configs_are_user_errors():
    with pytest.raises(UserError, match="channel_attention"):
        from_config({**TINY, "channel_attention": True})
    with pytest.raises(UserError, match="distribution head"):
        from_config({**TINY, "loss": "nll"})
    with pytest.raises(UserError, match="per-channel"):
        from_config({**TINY, "num_input_channels": 2, "share_embedding": False})


def _uneven_plan(m: TSModel) -> Plan:
    """Layer 0: heads 1 and 3 dead, V and Q/K dims gone, FFN neurons gone; layer 1: whole
    attention dead; layer 2: whole FFN dead, every Q/K dim dead."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    a0, f0 = s.blocks[0].attention[0], s.blocks[0].ffn[0]
    dv = a0.v_head_dim
    for h in (1, 3):
        ms.m_out[a0.v][h * dv:(h + 1) * dv] = 0
    ms.m_in[a0.o][0 * dv + 2] = 0                 # head 0 loses V dims 2 and 5, head 2 loses 7
    ms.m_out[a0.v][0 * dv + 5] = 0
    ms.m_in[a0.o][2 * dv + 7] = 0
    ms.m_out[a0.q][[0, 2 * dv + 0]] = 0           # Q/K dim 0 of heads 0 and 2
    ms.m_out[a0.k][[0, 2 * dv + 0]] = 0
    ms.m_out[f0.inputs[0]][:10] = 0
    ms.m_in[f0.output][20:25] = 0
    ms.m_in[a0.q][:3] = 0                         # residual-stream channels: zeroed, not sliced
    ms.m_out[s.blocks[1].attention[0].v][:] = 0
    ms.m_out[s.blocks[2].ffn[0].inputs[0]][:] = 0
    ms.m_out[s.blocks[2].attention[0].k][:] = 0  # every Q/K dim gone: uniform attention
    n = m.num_params()
    return Plan("patchtst", ms.to_json(), n, n)


def test_uneven_surgery_equals_masked_and_reloads(tmp_path):
    m = TSModel(get("patchtst"), _hf())
    plan = _uneven_plan(m)
    p = apply(m, plan)
    rows = p.describe()
    assert rows[0]["heads"] == 2 and rows[0]["v_dim"] == 7 and rows[0]["qk_dim"] == 7
    assert rows[0]["ffn"] == 48 - 15 and rows[1]["heads"] == 0 and rows[2]["ffn"] == 0
    assert rows[2]["qk_dim"] == 0 and rows[2]["heads"] == 4
    assert p.num_params() < m.num_params()
    x = context_batch(3, 96)
    ref = plan_forecast(m, plan, x, 40)
    assert torch.allclose(p.forecast(x, 40).point, ref.point, atol=1e-5, rtol=1e-5)
    reloads_and_replays(m, plan, p, x, 40, tmp_path)


def _windows(n: int = 500, seed: int = 0):
    return two_series_windows(n, 96, 24, stride=4, seed=seed, periods=(4, 9), trend=0.05)


def test_scorers_agree():
    m = TSModel(get("patchtst"), _hf())
    fused = scorers_agree(m, _windows(), _windows(300, 1), ratio=0.3, max_epochs=1, macro_batch=32,
                          batch_size=16, calib_samples=None, val_samples=None)
    p = apply(m, fused)
    assert p.num_params() < m.num_params()
    assert torch.isfinite(p.forecast(context_batch(2, 96), 24).point).all()


def test_pruned_model_exports_to_onnx(tmp_path):
    m = TSModel(get("patchtst"), _hf())
    p = apply(m, _uneven_plan(m))
    exports_to_onnx(p, tmp_path / "m.onnx", context=96, horizon=40)   # 40 > 24: rollout in the graph
