"""Moirai 1.0-R adapter (tsprune's own implementation of uni2ts MoiraiModule): published
layout and loading, zero pruning, patch-size specialisation, uneven surgery == masked,
save/reload, plan replay, ONNX parity, fused == reference scoring; parity with the
upstream class when uni2ts happens to be importable."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
import types

import pytest
import torch

from helpers import (context_batch, exports_to_onnx, masked_forecast, plan_forecast, random_masks,
                     reloads_and_replays, synthetic_frame)
from tsprune.errors import UserError
from tsprune.families import detect
from tsprune.model import TSModel, from_config, load
from tsprune.prune import Plan, PruneConfig, apply, score
from tsprune.prune.masks import MaskSet

MIXTURE = {"_target_": "uni2ts.distribution.mixture.MixtureOutput", "components": [
    {"_target_": "uni2ts.distribution.student_t.StudentTOutput"},
    {"_target_": "uni2ts.distribution.normal.NormalFixedScaleOutput", "scale": 0.001},
    {"_target_": "uni2ts.distribution.negative_binomial.NegativeBinomialOutput"},
    {"_target_": "uni2ts.distribution.log_normal.LogNormalOutput"}]}
# the published config.json keys (uni2ts PyTorchModelHubMixin), tiny sizes: 2 heads of 64
TINY = dict(d_model=128, num_layers=3, patch_sizes=[8, 16, 32], max_seq_len=512,
            attn_dropout_p=0.0, dropout_p=0.0, scaling=True, distr_output=MIXTURE)
L, H = 100, 40   # neither is a multiple of the patch sizes: left / right padding


def _model(seed: int = 0) -> TSModel:
    torch.manual_seed(seed)
    return from_config(copy.deepcopy(TINY))


def _published_layout(cfg: dict) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of uni2ts MoiraiModule for ``cfg`` (mixture head)."""
    d, P, m = cfg["d_model"], len(cfg["patch_sizes"]), max(cfg["patch_sizes"])
    heads, ff = d // 64, (int(8 * d / 3) + 7) // 8 * 8
    out = {"mask_encoding.weight": (1, d), "in_proj.weight": (P, d, m), "in_proj.bias": (P, d),
           "encoder.norm.weight": (d,)}
    for i in range(cfg["num_layers"]):
        pre = f"encoder.layers.{i}"
        out[f"{pre}.self_attn.var_attn_bias.emb.weight"] = (2, heads)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[f"{pre}.self_attn.{n}.weight"] = (d, d)
        out[f"{pre}.self_attn.q_norm.weight"] = out[f"{pre}.self_attn.k_norm.weight"] = (64,)
        out[f"{pre}.ffn.fc1.weight"] = out[f"{pre}.ffn.fc_gate.weight"] = (ff, d)
        out[f"{pre}.ffn.fc2.weight"] = (d, ff)
        out[f"{pre}.norm1.weight"] = out[f"{pre}.norm2.weight"] = (d,)
    out["param_proj.proj.weights_logits.weight"] = (P, 4 * m, d)
    out["param_proj.proj.weights_logits.bias"] = (P, 4 * m)
    for k, args in enumerate((("df", "loc", "scale"), ("loc",), ("total_count", "logits"),
                              ("loc", "scale"))):
        for a in args:
            out[f"param_proj.proj.components.{k}.{a}.weight"] = (P, m, d)
            out[f"param_proj.proj.components.{k}.{a}.bias"] = (P, m)
    return out


def test_detection_and_published_layout():
    m = _model()
    assert m.family.name == "moirai" and detect(TINY).name == "moirai"
    got = {k: tuple(v.shape) for k, v in m.module.state_dict().items()}
    assert got == _published_layout(TINY)
    assert m.family.config_dict(m.module) == TINY
    with pytest.raises(UserError, match="Moirai-MoE"):
        m.family.build({**TINY, "d_ff": 512})
    with pytest.raises(UserError, match="distr_output"):
        m.family.build({**TINY, "distr_output": {"_target_": "x.ParetoOutput"}})


def test_load_published_directory(tmp_path):
    from safetensors.torch import save_file
    m = _model()
    d = tmp_path / "moirai-1.0-R-tiny"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in m.module.state_dict().items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(TINY))
    q = load(d)
    assert q.family.name == "moirai" and not q.pruned
    x = context_batch(3, L)
    f = q.forecast(x, H)
    assert f.point.shape == (3, H) and f.quantiles is None and torch.isfinite(f.point).all()
    assert torch.equal(f.point, m.forecast(x, H).point)


def test_zero_pruning_equals_own_forward():
    m = _model()
    x = context_batch(3, L)
    ref = m.forecast(x, H)
    s = m.family.structure(m.module)
    ms = MaskSet(m.module, s.linears())
    assert torch.equal(masked_forecast(m, ms, x, H).point, ref.point)
    n = m.num_params()
    p = apply(m, Plan("moirai", ms.to_json(), n, n))  # no extra: all patch sizes kept
    assert p.num_params() == n
    assert torch.equal(p.forecast(x, H).point, ref.point)
    # the forecast is the mean of the module's own distribution, mapped back
    fam, mod = m.family, m.module
    *inputs, nc = fam.pack(mod, x, H, 32)
    with torch.no_grad():
        params, loc, scale = mod(*inputs, patch_size=32)
        mean = (mod.mean(params) * scale + loc)[:, nc:].flatten(1)[:, :H]
    assert torch.equal(mean, ref.point)


def test_specialise_to_one_patch_size():
    m = _model()
    x = context_batch(2, L)
    spec = m.clone()
    spec.family.apply_extra(spec.module, {"patch_size": 16})
    assert spec.module.config.patch_sizes == (16,)
    assert spec.num_params() < m.num_params()
    full = m.family._mean(m.module, x, H, 16)[0]
    assert torch.equal(spec.family._mean(spec.module, x, H)[0], full)
    with pytest.raises(ValueError, match="patch size 12"):
        m.family.apply_extra(m.clone().module, {"patch_size": 12})


def _uneven_plan(m: TSModel) -> Plan:
    """Layer 0: head 1 dead, head 0 loses V dims, FFN neurons gone through fc1, fc_gate
    and fc2; layer 1: both heads lose a V dim, the whole FFN dead; layer 2: the whole
    attention dead. Patch size 16."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    a0, f0 = s.blocks[0].attention[0], s.blocks[0].ffn[0]
    dv = a0.v_head_dim
    ms.m_out[a0.v][1 * dv:2 * dv] = 0
    ms.m_in[a0.o][0 * dv + 3] = 0
    ms.m_out[a0.v][0 * dv + 9] = 0
    ms.m_out[f0.inputs[0]][:10] = 0          # fc1
    ms.m_out[f0.inputs[1]][20:25] = 0        # fc_gate
    ms.m_in[f0.output][100:103] = 0          # fc2
    ms.m_in[a0.q][:3] = 0                    # residual channels: zeroed, not sliced
    ms.m_out[a0.o][-2:] = 0
    a1, f1 = s.blocks[1].attention[0], s.blocks[1].ffn[0]
    ms.m_out[a1.v][0 * dv + 5] = 0
    ms.m_in[a1.o][1 * dv + 6] = 0
    ms.m_out[f1.inputs[1]][:] = 0
    ms.m_out[s.blocks[2].attention[0].v][:] = 0
    n = m.num_params()
    return Plan("moirai", ms.to_json(), n, n, extra={"patch_size": 16})


def test_uneven_surgery_equals_masked_and_reloads(tmp_path):
    m = _model()
    plan = _uneven_plan(m)
    p = apply(m, plan)
    rows = p.describe()
    ff = m.module.config.d_ff
    assert [(r["heads"], r["v_dim"], r["ffn"]) for r in rows] == \
        [(1, 62, ff - 18), (2, 63, 0), (0, 0, ff)]
    assert p.module.encoder.layers[0].self_attn.var_attn_bias.emb.weight.shape == (2, 1)
    assert p.num_params() < m.num_params()
    x = context_batch(3, L)
    ref = plan_forecast(m, plan, x, H)
    assert torch.allclose(p.forecast(x, H).point, ref.point, atol=1e-5, rtol=1e-5)
    reloads_and_replays(m, plan, p, x, 96, tmp_path)
    cfg = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert cfg["patch_sizes"] == [16] and detect(cfg).name == "moirai"


def test_uneven_pruned_model_exports_to_onnx(tmp_path):
    m = _model()
    exports_to_onnx(apply(m, _uneven_plan(m)), tmp_path / "m.onnx", context=L, horizon=H)


def test_fused_and_reference_scorers_give_the_same_plan():
    """Same patch size, same pruned model. The masks themselves may differ by ties: a V
    dim scores exactly the same through v_proj's output and out_proj's input (and an FFN
    neuron through fc1's output and fc2's input), so rounding decides which of the two is
    zeroed first; either removes the same unit."""
    from tsprune.data import DataConfig, prepare_frame
    data = prepare_frame(synthetic_frame(n=400, channels=1),
                         DataConfig(path=None, split="0.6,0.2,0.2", context=32, horizon=16))
    train, val = data.windows("train"), data.windows("val")
    m = _model()
    plans = {}
    for scorer in ("fused", "reference"):
        cfg = PruneConfig(ratio=0.3, max_epochs=1, batch_size=16, macro_batch=16, min_steps=2,
                          calib_samples=32, val_samples=16, scorer=scorer)
        plans[scorer] = score(m, train, val, cfg, show_progress=False)
    f, r = plans["fused"], plans["reference"]
    assert f.extra["patch_size"] in TINY["patch_sizes"]
    assert set(f.extra["patch_val_loss"]) == {"8", "16", "32"}
    assert f.extra == r.extra and f.params_pruned == r.params_pruned < f.params_dense
    differ = sum(len(set(f.masks[k][s]) ^ set(r.masks[k][s])) for k in f.masks for s in ("in", "out"))
    pruned = sum(len(f.masks[k][s]) for k in f.masks for s in ("in", "out"))
    assert pruned > 0 and differ <= 0.01 * pruned
    pf, pr = apply(m, f), apply(m, r)
    sf, sr = pf.module.state_dict(), pr.module.state_dict()
    assert sf.keys() == sr.keys() and all(torch.equal(sf[k], sr[k]) for k in sf)


def _upstream():
    """uni2ts's MoiraiModule, imported without its package __init__ (which needs lightning
    and gluonts); None when uni2ts is not installed."""
    if importlib.util.find_spec("uni2ts") is None:
        return None
    import uni2ts
    name = "uni2ts.model.moirai"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(os.path.dirname(uni2ts.__file__), "model", "moirai")]
        sys.modules[name] = pkg
    from uni2ts.model.moirai.module import MoiraiModule
    from uni2ts.model.moirai.module import decode_distr_output
    return MoiraiModule, decode_distr_output


def test_parity_with_upstream_uni2ts():
    up = _upstream()
    if up is None:
        pytest.skip("uni2ts is not installed (optional; tsprune implements Moirai itself)")
    cls, decode = up
    torch.manual_seed(0)
    cfg = {k: v for k, v in TINY.items() if k != "distr_output"}
    ref = cls(decode(copy.deepcopy(MIXTURE)), **cfg).eval()
    m = _model()
    m.module.load_state_dict(ref.state_dict(), strict=True)
    x = context_batch(3, L)
    for p in TINY["patch_sizes"]:
        *inputs, nc = m.family.pack(m.module, x, H, p)
        with torch.no_grad():
            want = ref(*inputs, torch.full_like(inputs[3], p)).mean[..., :p]
            params, loc, scale = m.module(*inputs, patch_size=p)
        assert torch.allclose(m.module.mean(params) * scale + loc, want, atol=1e-4, rtol=1e-5)
    # packed multivariate inputs: two samples, padding, three variates
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 24, 32, generator=g) * 3 + 1
    observed = torch.rand(2, 24, 32, generator=g) > 0.1
    sample_id = torch.tensor([[1] * 10 + [2] * 10 + [0] * 4, [1] * 24])
    variate_id = torch.tensor([[0] * 5 + [1] * 5 + [0] * 4 + [1] * 3 + [2] * 3 + [0] * 4,
                               [0] * 8 + [1] * 8 + [2] * 8])
    time_id = torch.tensor([list(range(5)) * 2 + list(range(4)) + list(range(3)) * 2 + [0] * 4,
                            list(range(8)) * 3])
    pred = torch.zeros(2, 24, dtype=torch.bool)
    pred[0, 3:5] = pred[0, 8:10] = pred[1, 6:8] = pred[1, 22:24] = True
    with torch.no_grad():
        want = ref(target, observed, sample_id, time_id, variate_id, pred, torch.full_like(time_id, 16))
        params, loc, scale = m.module(target, observed, sample_id, time_id, variate_id, pred, patch_size=16)
    keep = sample_id != 0
    got = m.module.mean(params) * scale + loc
    assert torch.allclose(got[keep], want.mean[..., :16][keep], atol=1e-4, rtol=1e-5)
