"""Time-MoE: tsprune's implementation against the upstream modeling code of the Time-MoE
repository (../shared/reference/time_moe, imported there, never copied).

Both are built from the same configuration and hold the same random weights, exchanged
through the published parameter names; inputs are real ETTh1 windows. Compared in fp32 at
1e-5 (oracles.max_err: absolute, relative where |reference| > 1): the final hidden states,
every output head at every position, the router logits of every MoE layer (and the routing
tsprune derives from them), with both of tsprune's expert dispatches; and tsprune's KV-
cached roll-out against the upstream's uncached repeated forward (its generate with
use_cache=False, on a context normalised as its README does).

The oracle is patched in one place only: transformers 5 removed
``DynamicCache.from_legacy_cache``, which the upstream forward calls when use_cache is true,
so every upstream call passes ``use_cache=False``. Its attention implementation is set to
"eager" (the upstream's own default class; transformers 5 leaves it unset).
"""
from __future__ import annotations

import time

import pytest
import torch

from helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from oracles import ett_contexts, exchange_state, max_err, randomize, time_moe_upstream
from tsprune.model import from_config

TOL = 1e-5
# the published config.json keys of Maple728/TimeMoE-50M, at a small size (GQA: 2 KV heads)
SMALL = {"model_type": "time_moe", "architectures": ["TimeMoeForPrediction"], "apply_aux_loss": True,
         "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": 64, "horizon_lengths": [1, 4, 8],
         "initializer_range": 0.02, "input_size": 1, "intermediate_size": 96,
         "max_position_embeddings": 4096, "num_attention_heads": 4, "num_experts": 4,
         "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
         "rope_theta": 10000, "router_aux_loss_factor": 0.02, "tie_word_embeddings": False,
         "use_cache": True, "use_dense": False}
# Maple728/TimeMoE-50M at its published size (the values tsprune's test_family_time_moe and
# docs/families.md document: 12 layers of 384, 12 heads, 8 experts top-2, heads 1/8/32/64)
FULL = {**SMALL, "hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 12,
        "num_key_value_heads": 12, "num_experts": 8, "num_hidden_layers": 12,
        "horizon_lengths": [1, 8, 32, 64]}


def _pair(cfg: dict, seed: int = 0):
    """(upstream TimeMoeForPrediction, tsprune TSModel) with the same random weights."""
    up = time_moe_upstream()
    from time_moe.models.configuration_time_moe import TimeMoeConfig
    kw = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    c = TimeMoeConfig(**kw)
    c._attn_implementation = "eager"
    ref = up.TimeMoeForPrediction(c).eval()
    randomize(ref, seed)
    m = from_config(dict(cfg))
    exchange_state(ref, m.module)
    return ref, m


def _ref_forward(ref, x):
    """Upstream backbone on (B, T): (hidden (B, T, D), router logits per layer (B*T, E))."""
    out = ref.model(input_ids=x.clone()[..., None], use_cache=False, return_dict=True)
    return out.last_hidden_state, out.router_logits


def _gate_logits(m, x, dispatch):
    """tsprune's backbone on (B, T) with the router logits caught at every ``gate``."""
    logits, hooks = [], []
    for layer in m.module.model.layers:
        hooks.append(layer.ffn_layer.gate.register_forward_hook(lambda mod, i, o: logits.append(o)))
    try:
        hidden, routes = m.module(x, dispatch=dispatch)
    finally:
        for h in hooks:
            h.remove()
    return hidden, routes, logits


def test_state_dicts_exchange_with_no_missing_or_unexpected_keys():
    ref, m = _pair(SMALL)
    assert set(ref.state_dict()) == set(m.module.state_dict())


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_per_horizon_outputs_and_router_logits_on_real_windows(dispatch):
    ref, m = _pair(SMALL)
    x = ett_contexts("ETTh1", context=256, n=4)
    with torch.no_grad():
        want_h, want_logits = _ref_forward(ref, x)
        got_h, routes, got_logits = _gate_logits(m, x, dispatch)
        assert max_err(got_h, want_h) < TOL
        for head in range(len(SMALL["horizon_lengths"])):           # every position, every head
            assert max_err(m.module.lm_heads[head](got_h), ref.lm_heads[head](want_h)) < TOL
        assert len(got_logits) == len(want_logits) == SMALL["num_hidden_layers"]
        for g, w, (probs, sel) in zip(got_logits, want_logits, routes):
            assert max_err(g.reshape(w.shape), w) < TOL
            p_ref = torch.softmax(w, dim=-1, dtype=torch.float)
            assert max_err(probs.reshape(p_ref.shape), p_ref) < TOL
            assert torch.equal(sel.reshape(-1, 2), torch.topk(p_ref, 2, dim=-1).indices)
        # the upstream forward's own prediction at the last position: head choice, truncation
        for remaining in (1, 3, 4, 7, 8, 20):
            want = ref(input_ids=x.clone(), use_cache=False, max_horizon_length=remaining).logits[:, -1]
            got = m.family._step(m.module, x, remaining, dispatch)
            assert max_err(got, want) < TOL, remaining


def _upstream_rollout(ref, context: torch.Tensor, horizon: int) -> torch.Tensor:
    """The upstream README's forecast: normalise by the context's mean and std, generate
    (here: repeat the uncached forward on the grown sequence, each step's last-position
    prediction from the longest head that fits), de-normalise."""
    mu, sd = context.mean(dim=-1, keepdim=True), context.std(dim=-1, keepdim=True)
    seq = (context - mu) / sd
    outs, done = [], 0
    while done < horizon:
        y = ref(input_ids=seq.clone(), use_cache=False, max_horizon_length=horizon - done).logits[:, -1]
        outs.append(y)
        done += y.shape[1]
        seq = torch.cat([seq, y], dim=1)
    return torch.cat(outs, dim=1) * sd + mu


@pytest.mark.parametrize("horizon", [1, 13, 24])
def test_cached_rollout_equals_uncached_repeated_upstream_forward(horizon):
    """13 = 8 + 4 + 1, 24 = 8 x 3: every head, each step against the KV cache."""
    ref, m = _pair(SMALL)
    x = ett_contexts("ETTh1", context=200, n=4) * 3.0 + 1.0         # a non-trivial scale
    with torch.no_grad():
        want = _upstream_rollout(ref, x, horizon)
        for dispatch in ("sparse", "dense"):
            got = m.family.forecast(m.module, x, horizon, dispatch=dispatch).point
            assert got.shape == want.shape == (4, horizon)
            assert max_err(got, want) < TOL


def test_full_published_size_forward():
    """TimeMoE-50M's size (113M parameters, 50M active), forward only, 2 windows of 512."""
    t0 = time.perf_counter()
    ref, m = _pair(FULL)
    n = sum(p.numel() for p in m.module.parameters())
    assert 100e6 < n < 130e6, n
    x = ett_contexts("ETTh1", context=512, n=2)
    with torch.no_grad():
        want_h, want_logits = _ref_forward(ref, x)
        got_h, _, got_logits = _gate_logits(m, x, "sparse")
        assert max_err(got_h, want_h) < TOL
        assert max(max_err(g.reshape(w.shape), w) for g, w in zip(got_logits, want_logits)) < TOL
        for head in range(4):
            assert max_err(m.module.lm_heads[head](got_h[:, -1]), ref.lm_heads[head](want_h[:, -1])) < TOL
    print(f"TimeMoE-50M size: {n} parameters, {time.perf_counter() - t0:.1f} s")
