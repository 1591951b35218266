"""Time-MoE adapter (tsprune's own implementation): the published checkpoint layout, causal
decoding and rollout, expert pruning by routing frequency, surgery == masks, save/reload,
plan replay, scorer agreement and ONNX parity. Tiny configs, offline."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import (context_batch, exports_to_onnx, one_thread, plan_forecast, random_masks,  # noqa: F401
                     reloads_and_replays, scorers_agree, two_series_windows)
from tsprune.families import detect
from tsprune.model import from_config, load
from tsprune.prune import Plan, PruneConfig, apply

# published config.json keys (a Maple728/TimeMoE-50M config with tiny sizes)
TINY = {
    "apply_aux_loss": True, "architectures": ["TimeMoeForPrediction"],
    "auto_map": {"AutoConfig": "configuration_time_moe.TimeMoeConfig",
                 "AutoModelForCausalLM": "modeling_time_moe.TimeMoeForPrediction"},
    "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": 32, "horizon_lengths": [1, 4, 8],
    "initializer_range": 0.02, "input_size": 1, "intermediate_size": 48, "max_position_embeddings": 256,
    "model_type": "time_moe", "num_attention_heads": 4, "num_experts": 4, "num_experts_per_tok": 2,
    "num_hidden_layers": 2, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "router_aux_loss_factor": 0.02, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1", "use_cache": True, "use_dense": False,
}


def published_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of modeling_time_moe.TimeMoeForPrediction for ``cfg``."""
    d, ff, e, k = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_experts"], cfg["num_experts_per_tok"]
    hd = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    out = {"model.embed_layer.emb_layer.weight": (d, 1), "model.embed_layer.gate_layer.weight": (d, 1),
           "model.norm.weight": (d,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (d, d), p + "self_attn.q_proj.bias": (d,),
                    p + "self_attn.k_proj.weight": (kv, d), p + "self_attn.k_proj.bias": (kv,),
                    p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.v_proj.bias": (kv,),
                    p + "self_attn.o_proj.weight": (d, d),
                    p + "ffn_layer.gate.weight": (e, d),
                    p + "ffn_layer.shared_expert.gate_proj.weight": (ff, d),
                    p + "ffn_layer.shared_expert.up_proj.weight": (ff, d),
                    p + "ffn_layer.shared_expert.down_proj.weight": (d, ff),
                    p + "ffn_layer.shared_expert_gate.weight": (1, d),
                    p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)})
        for j in range(e):
            q = f"{p}ffn_layer.experts.{j}."
            out.update({q + "gate_proj.weight": (ff // k, d), q + "up_proj.weight": (ff // k, d),
                        q + "down_proj.weight": (d, ff // k)})
    for m, h in enumerate(cfg["horizon_lengths"]):
        out[f"lm_heads.{m}.out_layer.weight"] = (h, d)
    return out


def tiny(seed: int = 0, **over):
    torch.manual_seed(seed)
    return from_config({**TINY, **over})


def dataset(n: int = 400, seed: int = 0):
    return two_series_windows(n, 48, 8, stride=4, seed=seed)


def test_published_names_shapes_and_config():
    m = tiny()
    got = {k: tuple(v.shape) for k, v in m.module.state_dict().items()}
    assert got == published_shapes(TINY)
    assert detect(TINY).name == "time_moe"
    assert detect({"architectures": ["TimeMoeForPrediction"]}).name == "time_moe"
    c = m.family.config_dict(m.module)
    assert c["model_type"] == "time_moe" and c["architectures"] == ["TimeMoeForPrediction"]
    keys = set(TINY) - {"auto_map", "torch_dtype", "transformers_version"}
    assert keys <= set(c) and all(c[k] == TINY[k] for k in keys)


def test_loads_published_checkpoint_dir(tmp_path):
    """config.json with auto_map and bf16 safetensors, as on the Hub: loads without remote code."""
    from safetensors.torch import save_file
    ref = tiny(3)
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in ref.module.state_dict().items()}
    d = tmp_path / "hub"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    m = load(d)
    assert m.family.name == "time_moe" and not m.pruned
    ref.module.load_state_dict({k: v.float() for k, v in sd.items()})
    x = context_batch(2, 64)
    assert torch.equal(m.forecast(x, 12).point, ref.forecast(x, 12).point)
    m.save(tmp_path / "saved")
    assert torch.equal(load(tmp_path / "saved").forecast(x, 12).point, m.forecast(x, 12).point)


def test_causal_and_rollout_equals_step_by_step():
    m = tiny(1)
    fam, mod = m.family, m.module
    x = context_batch(2, 40)
    y = x.clone()
    y[:, 30:] += 5.0
    with torch.no_grad():
        a, _ = mod(x)
        b, _ = mod(y)
    assert torch.equal(a[:, :30], b[:, :30]) and not torch.allclose(a[:, 30:], b[:, 30:])
    # horizon 20 with heads (1, 4, 8): steps of 8, 8, 4 on the growing normalised sequence
    f = m.forecast(x, 20).point
    mu, sd = x.mean(1, keepdim=True), x.std(1, keepdim=True) + 1e-6
    seq, outs = (x - mu) / sd, []
    with torch.no_grad():
        for n in (8, 8, 4):
            hidden, _ = mod(seq)
            head = {8: 2, 4: 1}[n]
            step = mod.lm_heads[head](hidden[:, -1])
            outs.append(step)
            seq = torch.cat([seq, step], dim=1)
    assert torch.allclose(f, torch.cat(outs, 1) * sd + mu, atol=1e-5)  # KV cache == rerun
    assert torch.equal(m.forecast(x, 8).point, f[:, :8])
    assert m.forecast(x, 3).point.shape == (2, 3)


def test_dense_and_sparse_dispatch_agree():
    m = tiny(2)
    m.module.model.layers[0].ffn_layer.remove([1])
    x = context_batch(3, 50)
    with torch.no_grad():
        a = m.family.forecast(m.module, x, 16, dispatch="dense").point
        b = m.family.forecast(m.module, x, 16, dispatch="sparse").point
    assert torch.allclose(a, b, atol=1e-6)


def test_expert_frequency_removal_and_router():
    m = tiny(4)
    fam, mod = m.family, m.module
    ds = dataset()
    freq, tokens = fam.expert_frequency(mod, [ds])
    assert tokens == len(ds) * (48 + 8 - 1)
    assert torch.allclose(freq.sum(1), torch.full((2,), 2.0, dtype=freq.dtype))
    # by hand on layer 0: how often each expert is in a token's top-2
    c, t = ds.as_tensors()
    xx = torch.cat([c, t], 1)
    xn = ((xx - c.mean(1, keepdim=True)) / (c.std(1, keepdim=True) + 1e-6))[:, :-1]
    with torch.no_grad():
        _, routes = mod(xn)
    manual = torch.bincount(routes[0][1].reshape(-1), minlength=4).double() / tokens
    assert torch.allclose(freq[0], manual)
    # remove at a threshold that catches the least used expert of each layer
    thr = float(freq.min(1).values.max())
    extra = fam.pre_prune(mod, [ds], PruneConfig(expert_threshold=thr, calib_samples=None, val_samples=None))
    removed = {int(k): v for k, v in extra["experts"]["removed"].items()}
    assert removed == {i: [j for j in range(4) if freq[i, j] <= thr] for i in range(2)}
    assert any(removed.values())
    ffn0 = mod.model.layers[0].ffn_layer
    assert ffn0.kept() == [j for j in range(4) if j not in removed[0]]
    # the router: full softmax, removed experts zeroed before top-k, no renormalisation
    h = torch.randn(2, 7, 32)
    with torch.no_grad():
        raw = torch.softmax(ffn0.gate(h), -1)
        probs, w, sel = ffn0.route(h)
    keep = torch.ones(4)
    keep[removed[0]] = 0
    assert torch.equal(probs, raw * keep)
    assert not torch.isin(sel, torch.tensor(removed[0])).any()
    assert torch.equal(w, torch.gather(raw, -1, sel))
    ffn0.norm_topk_prob = True  # renormalises when the model normalises top-k
    _, w2, _ = ffn0.route(h)
    assert torch.allclose(w2.sum(-1), torch.ones(2, 7))


def _uneven_plan(m, extra: dict, layer1: str = "v") -> Plan:
    """After expert removal: layer 0 loses attention head 2, V dims, Q/K RoPE pairs, part of
    its first kept expert and all of its second, part of the shared expert; layer 1 loses its
    attention (layer1="v") or every Q/K pair (layer1="q": uniform causal attention)."""
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    a0 = s.blocks[0].attention[0]
    dv, dq, half = a0.v_head_dim, a0.qk_head_dim, a0.qk_head_dim // 2
    ms.m_out[a0.v][2 * dv:3 * dv] = 0
    ms.m_in[a0.o][0 * dv + 1] = 0
    ms.m_out[a0.v][1 * dv + 3] = 0
    ms.m_out[a0.v][3 * dv + 5] = 0
    for head, pairs in ((0, (0, 2)), (1, (1, 3)), (3, (0, 1))):  # K pairs (i, i + d/2)
        for i in pairs:
            ms.m_out[a0.k][head * dq + i] = 0
            ms.m_out[a0.k][head * dq + i + half] = 0
    ms.m_out[a0.q][0] = 0  # a lone Q dim: zeroed in the masked model, not a pair
    ms.m_in[a0.q][:3] = 0  # residual channels: zeroed, not sliced
    f0 = {f.owner.rsplit(".", 1)[-1]: f for f in s.blocks[0].ffn}
    first, second = [f0[k] for k in sorted(k for k in f0 if k.isdigit())][:2]
    ms.m_out[first.inputs[0]][:5] = 0
    ms.m_in[first.output][10:12] = 0
    ms.m_out[second.inputs[1]][:] = 0
    ms.m_out[f0["shared_expert"].inputs[0]][7:20] = 0
    a1 = s.blocks[1].attention[0]
    ms.m_out[a1.v if layer1 == "v" else a1.q][:] = 0
    n = m.num_params()
    return Plan("time_moe", ms.to_json(), n, n, extra=extra)


@pytest.mark.parametrize("layer1", ["v", "q"])
def test_uneven_surgery_equals_masked_reloads_and_replays(tmp_path, layer1):
    m = tiny(5)
    extra = {"experts": {"threshold": 0.01, "tokens": 0, "frequency": {},
                         "removed": {"0": [1], "1": [0, 3]}}}
    probe = m.clone()
    m.family.apply_extra(probe.module, extra)
    plan = _uneven_plan(probe, extra, layer1)
    p = apply(m, plan)
    rows = p.describe()
    assert rows[0]["heads"] == 3 and rows[0]["qk_dim"] == 4 and rows[0]["v_dim"] == 7
    assert rows[0]["experts"] == 2 and rows[0]["expert_ffn"] == (24 - 5 - 2) + 0 + 24
    assert rows[0]["shared_ffn"] == 48 - 13
    assert rows[1]["experts"] == 2
    assert (rows[1]["heads"], rows[1]["qk_dim"]) == ((0, 0) if layer1 == "v" else (4, 0))
    att = p.module.model.layers[0].self_attn
    assert att.rope_idx.tolist() == [[1, 3, 5, 7], [0, 2, 4, 6], [2, 3, 6, 7]]  # per kept KV group
    assert p.num_params() < m.num_params()
    x = context_batch(3, 64)
    ref = plan_forecast(m, plan, x, 20)
    got = p.forecast(x, 20)
    assert torch.allclose(got.point, ref.point, atol=1e-5, rtol=1e-5)
    q = reloads_and_replays(m, plan, p, x, 20, tmp_path)
    assert q.manifest["extra"] == extra
    q.save(tmp_path / "again")  # the manifest survives a second save
    assert torch.equal(load(tmp_path / "again").forecast(x, 20).point, got.point)


def test_zero_pruning_equals_model():
    m = tiny(6)
    ms = random_masks(m.module, m.family.structure(m.module), frac=0.0)
    p = apply(m, Plan("time_moe", ms.to_json(), m.num_params(), m.num_params()))
    x = context_batch(2, 64)
    assert p.num_params() == m.num_params()
    assert torch.equal(p.forecast(x, 20).point, m.forecast(x, 20).point)


def test_scoring_removes_experts_and_scorers_agree(tmp_path):
    m = tiny(7)
    ds, val = dataset(seed=1), dataset(n=200, seed=2)
    freq, _ = m.family.expert_frequency(m.module, [ds, val])
    thr = float(freq.min(1).values.max())
    fused = scorers_agree(m, ds, val, ratio=0.1, max_epochs=2, macro_batch=64, batch_size=16,
                          calib_samples=None, val_samples=None, expert_threshold=thr)
    removed = fused.extra["experts"]["removed"]
    assert any(removed.values())
    p = apply(m, fused)
    counts = [len(layer.ffn_layer.experts) for layer in p.module.model.layers]
    assert counts == [4 - len(removed[str(i)]) for i in range(2)]
    p.save(tmp_path / "m")
    q = load(tmp_path / "m")
    x = context_batch(2, 48)
    assert torch.equal(q.forecast(x, 10).point, p.forecast(x, 10).point)


def test_aux_loss_and_finetune_settings():
    from tsprune.train.finetune import _optimizer
    m = tiny(8)
    fam, mod = m.family, m.module
    c, t = dataset().as_tensors()
    with torch.no_grad():
        fam.loss(mod, c[:4], t[:4])
    assert fam.aux_loss(mod) is None          # nothing recorded without autograd
    loss = fam.loss(mod, c[:4], t[:4])
    aux = fam.aux_loss(mod)
    assert aux is not None and aux.requires_grad and 0 < float(aux) < 1
    (loss + aux).backward()
    assert mod.model.layers[0].ffn_layer.gate.weight.grad.abs().sum() > 0
    assert fam.aux_loss(mod) is None          # consumed
    opt = _optimizer(m, 1e-4)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["weight_decay"] == 0.1
    assert fam.grad_clip == 1.0 and fam.finetune_epochs == 1 and fam.prune_epochs == 10


def test_pruned_model_with_uneven_experts_exports_to_onnx(tmp_path):
    m = tiny(9)
    extra = {"experts": {"threshold": 0.01, "tokens": 0, "frequency": {},
                         "removed": {"0": [2], "1": [0, 1]}}}
    probe = m.clone()
    m.family.apply_extra(probe.module, extra)
    p = apply(m, _uneven_plan(probe, extra))
    exports_to_onnx(p, tmp_path / "m.onnx", context=64, horizon=12)  # two decode steps
