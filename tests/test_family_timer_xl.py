"""Timer-XL adapter (tsprune's own implementation): the published checkpoint layout, causal
patch decoding and rollout, the next-patch loss, surgery == masks (heads, V dims, Q/K RoPE
pairs with the W_Q rescale), save/reload, plan replay, scorer agreement and ONNX parity."""
from __future__ import annotations

import json

import torch

from helpers import (context_batch, exports_to_onnx, one_thread, plan_forecast, random_masks,  # noqa: F401
                     reloads_and_replays, scorers_agree, two_series_windows)
from tsprune.families import detect
from tsprune.model import from_config, load
from tsprune.prune import Plan, apply

# published config.json keys (thuml/timer-base-84m with tiny sizes)
TINY = {
    "architectures": ["TimerForPrediction"],
    "auto_map": {"AutoConfig": "configuration_timer.TimerConfig",
                 "AutoModelForCausalLM": "modeling_timer.TimerForPrediction"},
    "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02,
    "input_token_len": 8, "intermediate_size": 48, "max_position_embeddings": 10000, "model_type": "timer",
    "num_attention_heads": 4, "num_hidden_layers": 2, "output_token_lens": [8, 16], "rope_theta": 10000,
    "torch_dtype": "float32", "transformers_version": "4.40.1", "use_cache": True,
}


def published_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of modeling_timer.TimerForPrediction for ``cfg``."""
    d, ff, p = cfg["hidden_size"], cfg["intermediate_size"], cfg["input_token_len"]
    out = {"model.embed_layer.emb.weight": (d, p), "model.norm.weight": (d,), "model.norm.bias": (d,)}
    for i in range(cfg["num_hidden_layers"]):
        q = f"model.layers.{i}."
        for n in ("q", "k", "v"):
            out[q + f"self_attn.{n}_proj.weight"] = (d, d)
            out[q + f"self_attn.{n}_proj.bias"] = (d,)
        out.update({q + "self_attn.o_proj.weight": (d, d),
                    q + "ffn_layer.gate_proj.weight": (ff, d), q + "ffn_layer.up_proj.weight": (ff, d),
                    q + "ffn_layer.down_proj.weight": (d, ff),
                    q + "norm1.weight": (d,), q + "norm1.bias": (d,),
                    q + "norm2.weight": (d,), q + "norm2.bias": (d,)})
    for m, n in enumerate(cfg["output_token_lens"]):
        out[f"lm_heads.{m}.weight"] = (n, d)
    return out


def tiny(seed: int = 0, **over):
    torch.manual_seed(seed)
    m = from_config({**TINY, **over})
    with torch.no_grad():  # non-trivial norms, so that masks on every Linear matter
        for n, prm in m.module.named_parameters():
            if "norm" in n:
                prm.add_(0.1 * torch.randn_like(prm))
    return m


def dataset(n: int = 400, seed: int = 0):
    return two_series_windows(n, 48, 16, stride=2, seed=seed)


def test_published_names_shapes_and_config():
    m = tiny()
    got = {k: tuple(v.shape) for k, v in m.module.state_dict().items()}
    assert got == published_shapes(TINY)
    assert detect(TINY).name == "timer_xl"
    c = m.family.config_dict(m.module)
    assert c["model_type"] == "timer" and c["architectures"] == ["TimerForPrediction"]
    keys = set(TINY) - {"auto_map", "torch_dtype", "transformers_version"}
    assert keys <= set(c) and all(c[k] == TINY[k] for k in keys)
    assert m.family.output_horizon(m.module) == 16 and m.family.context_multiple(m.module) == 8


def test_loads_published_checkpoint_dir(tmp_path):
    from safetensors.torch import save_file
    ref = tiny(3)
    d = tmp_path / "hub"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    save_file({k: v.contiguous() for k, v in ref.module.state_dict().items()}, str(d / "model.safetensors"),
              metadata={"format": "pt"})
    m = load(d)
    assert m.family.name == "timer_xl" and not m.pruned
    x = context_batch(2, 64)
    assert torch.equal(m.forecast(x, 40).point, ref.forecast(x, 40).point)


def test_causal_rollout_and_loss():
    m = tiny(1)
    fam, mod = m.family, m.module
    x = context_batch(2, 70)  # 70 = 8 * 8 + 6: the 6 oldest points are dropped
    y = x.clone()
    y[:, 6 + 40:] += 5.0      # changes patches 5.. only
    with torch.no_grad():
        a, b = mod(x[:, 6:]), mod(y[:, 6:])
    assert torch.equal(a[:, :5], b[:, :5]) and not torch.allclose(a[:, 5:], b[:, 5:])
    assert torch.equal(m.forecast(x, 20).point, m.forecast(x[:, 6:], 20).point)
    # horizon 40 with heads (8, 16): steps 16, 16, 8 on the growing sequence, normalised
    # afresh at every step (upstream's uncached generate with revin)
    f = m.forecast(x, 40).point
    c = x[:, 6:]
    mu, sd = c.mean(1, keepdim=True), c.std(1, keepdim=True) + 1e-6
    seq, outs = c, []
    with torch.no_grad():
        for n, head in ((16, 1), (16, 1), (8, 0)):
            m_s, s_s = seq.mean(1, keepdim=True), seq.std(1, keepdim=True) + 1e-6
            step = mod.lm_heads[head](mod((seq - m_s) / s_s)[:, -1])[:, :n] * s_s + m_s
            outs.append(step)
            seq = torch.cat([seq, step], dim=1)
    assert torch.allclose(f, torch.cat(outs, 1), atol=1e-6)
    # the loss: token i predicts the next 8 / 16 normalised points (MSE), heads averaged
    tgt = context_batch(2, 16, seed=5)
    with torch.no_grad():
        loss = fam.loss(mod, c, tgt)
        full = (torch.cat([c, tgt], 1) - mu) / sd
        h = mod(full[:, :64])
        want = 0.0
        for head, n in zip(mod.lm_heads, (8, 16)):
            pred = head(h)
            lab = torch.stack([full[:, 8 * (i + 1): 8 * (i + 1) + n] for i in range(8)], 1)
            want += ((pred - lab) ** 2).mean() / 2
    assert torch.allclose(loss, want, atol=1e-6)
    assert torch.isfinite(fam.loss(mod, c, tgt[:, :5]))  # targets shorter than a head: masked


def _uneven_plan(m) -> Plan:
    """Layer 0: head 1 dead, V dims, Q/K RoPE pairs (different per head) and FFN neurons;
    layer 1: every Q/K pair and the FFN dead (attention keeps its V path)."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    a0, f0 = s.blocks[0].attention[0], s.blocks[0].ffn[0]
    dv, dq = a0.v_head_dim, a0.qk_head_dim
    half = dq // 2
    ms.m_in[a0.o][1 * dv:2 * dv] = 0
    ms.m_out[a0.v][0 * dv + 2] = 0
    ms.m_in[a0.o][2 * dv + 6] = 0
    ms.m_out[a0.v][3 * dv + 7] = 0
    for head, pairs, proj in ((0, (0,), a0.q), (2, (3,), a0.k), (3, (1, 2), a0.q)):
        for i in pairs:
            ms.m_out[proj][head * dq + i] = 0
            ms.m_out[proj][head * dq + i + half] = 0
    ms.m_out[a0.k][0 * dq + 1] = 0  # a lone K dim: zeroed in the masked model, not a pair
    ms.m_out[f0.inputs[0]][:6] = 0
    ms.m_in[f0.output][30:33] = 0
    ms.m_out[a0.o][-2:] = 0
    a1, f1 = s.blocks[1].attention[0], s.blocks[1].ffn[0]
    ms.m_out[a1.q][:] = 0
    ms.m_in[f1.output][:] = 0
    n = m.num_params()
    return Plan("timer_xl", ms.to_json(), n, n)


def test_uneven_surgery_equals_masked_reloads_and_replays(tmp_path):
    m = tiny(5)
    plan = _uneven_plan(m)
    p = apply(m, plan)
    rows = p.describe()
    assert rows[0]["heads"] == 3 and rows[0]["qk_dim"] == 6 and rows[0]["v_dim"] == 7
    assert rows[0]["ffn"] == 48 - 9
    assert rows[1]["heads"] == 4 and rows[1]["qk_dim"] == 0 and rows[1]["ffn"] == 0
    att = p.module.model.layers[0].self_attn
    assert att.rope_idx.tolist() == [[1, 2, 3, 5, 6, 7], [0, 1, 2, 4, 5, 6], [0, 2, 3, 4, 6, 7]]
    x = context_batch(3, 64)
    ref = plan_forecast(m, plan, x, 40)
    assert torch.allclose(p.forecast(x, 40).point, ref.point, atol=1e-5, rtol=1e-5)
    reloads_and_replays(m, plan, p, x, 40, tmp_path)


def test_zero_pruning_equals_model():
    m = tiny(6)
    ms = random_masks(m.module, m.family.structure(m.module), frac=0.0)
    p = apply(m, Plan("timer_xl", ms.to_json(), m.num_params(), m.num_params()))
    x = context_batch(2, 64)
    assert p.num_params() == m.num_params()
    assert torch.equal(p.forecast(x, 40).point, m.forecast(x, 40).point)


def test_scorers_agree_and_plan_applies():
    m = tiny(7)
    fused = scorers_agree(m, dataset(seed=1), dataset(n=200, seed=2), ratio=0.15, max_epochs=2,
                          macro_batch=64, batch_size=16, calib_samples=None, val_samples=None)
    assert fused.extra == {}
    p = apply(m, fused)
    assert p.num_params() == fused.params_pruned < m.num_params()


def test_uneven_pruned_model_exports_to_onnx(tmp_path):
    m = tiny(8)
    exports_to_onnx(apply(m, _uneven_plan(m)), tmp_path / "m.onnx", context=64, horizon=40)
