"""TTM (TinyTimeMixer) adapter: parity with granite-tsfm's TinyTimeMixerForPrediction,
head-only (paper) and mixer-MLP structures, surgery == masked with uneven widths,
save/reload, plan replay, ONNX parity, scoring (fused == reference), horizon/context rules."""
from __future__ import annotations

import sys

import pytest
import torch

from helpers import (context_batch, exports_to_onnx, plan_forecast, random_masks, reloads_and_replays,
                     scorers_agree, sine_windows)
from tsprune.errors import UserError
from tsprune.families import Constant, get
from tsprune.model import TSModel, load
from tsprune.prune import Plan, apply

try:
    from tsprune.families.ttm import HEAD, _upstream
    TinyTimeMixerConfig, TinyTimeMixerForPrediction = _upstream()
except ImportError as e:  # granite-tsfm is an optional extra
    pytest.skip(f"granite-tsfm not installed ({str(e).splitlines()[0]})", allow_module_level=True)

TINY = dict(context_length=128, patch_length=16, patch_stride=16, d_model=16, decoder_d_model=8,
            num_layers=2, decoder_num_layers=2, adaptive_patching_levels=2, prediction_length=32)


def _hf(**over):
    torch.manual_seed(0)
    return TinyTimeMixerForPrediction(TinyTimeMixerConfig(**{**TINY, **over})).eval()


def _tiny(mixers: bool = False, **over) -> TSModel:
    m = TSModel(get("ttm"), _hf(**over))
    m.module.config.tsprune_mask_mixers = mixers
    return m


def test_zero_pruning_equals_upstream():
    hf = _hf()
    m = TSModel(get("ttm"), hf)
    x = context_batch(3, 128)
    with torch.no_grad():
        ref = hf(past_values=x[..., None]).prediction_outputs[..., 0]
    assert torch.equal(m.forecast(x, 32).point, ref)
    assert torch.equal(m.forecast(x, 20).point, ref[:, :20])           # shorter horizon: truncated
    xs = x[:, -100:]                                                     # shorter context: padded,
    with torch.no_grad():                                                # padding unobserved
        ref = hf(past_values=xs[..., None], past_observed_mask=torch.ones(3, 100, 1)).prediction_outputs
    assert torch.equal(m.forecast(xs, 32).point, ref[..., 0])
    with pytest.raises(UserError, match="at most 32"):
        m.forecast(x, 33)


def test_detect_and_load_save_pretrained_dir(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path / "hf")
    m = load(tmp_path / "hf")
    assert m.family.name == "ttm" and not m.pruned
    x = context_batch(2, 128)
    with torch.no_grad():
        ref = hf(past_values=x[..., None]).prediction_outputs[..., 0]
    assert torch.equal(m.forecast(x, 32).point, ref)


def test_structure_paper_default_and_mixers_option():
    s = _tiny().family.structure(_tiny().module)
    assert s.linears() == [HEAD]                                          # the paper: head only
    sm = _tiny(mixers=True)
    s = sm.family.structure(sm.module)
    assert len(s.blocks) == 4 + 2 + 1          # 2 levels x 2 encoder layers, 2 decoder layers, head
    assert len(s.linears()) == 6 * 4 + 1
    assert all(p.endswith(("fc1", "fc2")) for p in s.linears()[:-1])


def _uneven_plan(m: TSModel) -> Plan:
    """Different neurons per mixer MLP, one MLP entirely dead, head features and steps."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    groups = [f for b in s.blocks for f in b.ffn]
    if len(groups) > 1:                                       # mixers masked
        for i, f in enumerate(groups[:-1]):
            ms.m_out[f.inputs[0]][: i % 3 + 1] = 0           # 1, 2 or 3 neurons
        ms.m_in[groups[2].output][:] = 0                      # a whole MLP
        ms.m_in[groups[0].inputs[0]][0] = 0                   # residual channel: zeroed only
    ms.m_in[HEAD][[0, 5, 6, 40, 63]] = 0                      # head features: sliced
    ms.m_out[HEAD][[3, 31]] = 0                               # forecast steps: zeroed only
    n = m.num_params()
    return Plan("ttm", ms.to_json(), n, n)


@pytest.mark.parametrize("mixers", [False, True])
def test_uneven_surgery_equals_masked_and_reloads(tmp_path, mixers):
    m = _tiny(mixers)
    plan = _uneven_plan(m)
    p = apply(m, plan)
    rows = p.describe()
    assert rows[-1]["ffn"] == 64 - 5 and p.module.head.base_forecast_block.in_features == 59
    if mixers:
        groups = [f for b in m.family.structure(m.module).blocks for f in b.ffn][:-1]
        want = [m.module.get_submodule(f.output).in_features - (i % 3 + 1) for i, f in enumerate(groups)]
        want[2] = 0
        got_w = [0 if isinstance(p.module.get_submodule(f.owner), Constant)
                 else p.module.get_submodule(f.output).in_features for f in groups]
        assert got_w == want
    assert p.num_params() < m.num_params()
    x = context_batch(3, 128)
    ref = plan_forecast(m, plan, x, 32)
    got = p.forecast(x, 32)
    assert torch.allclose(got.point, ref.point, atol=1e-5, rtol=1e-5)
    assert (got.point[:, [3, 31]] == ref.point[:, [3, 31]]).all()
    reloads_and_replays(m, plan, p, x, 32, tmp_path)


def test_uneven_pruned_model_exports_to_onnx(tmp_path):
    m = _tiny(mixers=True)
    p = apply(m, _uneven_plan(m))
    exports_to_onnx(p, tmp_path / "m.onnx", context=100, horizon=24)  # padded context


@pytest.mark.parametrize("mixers", [False, True])
def test_score_fused_equals_reference(mixers):
    m = _tiny(mixers)
    train, val = sine_windows(400, 1, horizon=32, stride=2), sine_windows(260, 2, horizon=32, stride=2)
    fused = scorers_agree(m, train, val, ratio=0.2, max_epochs=2, macro_batch=32, batch_size=16,
                          calib_samples=64, val_samples=32)
    p = apply(m, fused)
    assert p.num_params() < m.num_params()
    x = context_batch(2, 128)
    ref_f = plan_forecast(m, fused, x, 32)
    assert torch.allclose(p.forecast(x, 32).point, ref_f.point, atol=1e-5, rtol=1e-5)


def test_missing_granite_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "tsfm_public.models.tinytimemixer", None)
    with pytest.raises(ImportError, match=r"tsprune\[ttm\].*--no-deps 'granite-tsfm==0\.3\.11'"):
        _upstream()


def test_unsupported_variant_is_refused():
    with pytest.raises(UserError, match="enable_forecast_channel_mixing"):
        get("ttm").build({**TINY, "enable_forecast_channel_mixing": True, "num_input_channels": 2,
                          "fcm_context_length": 1})


def test_report_scope_says_which_mode_ran():
    head, mixers = _tiny(), _tiny(mixers=True)
    assert "only (the paper's mode" in head.family.prune_scope(head.module)
    n = sum(len(b.ffn) for b in mixers.family.structure(mixers.module).blocks) - 1
    assert n > 0 and f"neurons of {n} mixer MLP(s)" in mixers.family.prune_scope(mixers.module)
