"""Timer-XL: tsprune's implementation against the upstream modeling code of
thuml/timer-base-84m (../shared/reference/timer_xl, imported there, never copied).

Both are built from the same configuration and hold the same random weights, exchanged
through the published parameter names; inputs are real ETTh1 windows. Compared in fp32 at
1e-5 (oracles.max_err: absolute, relative where |reference| > 1): the hidden states and
every head's next-patch outputs at every token, the upstream forward's own prediction (head
choice and revin), and the multi-step roll-out against the upstream's uncached repeated
forward (what its generate does with use_cache=False).

The oracle is patched in one place only: transformers 5 removed
``DynamicCache.from_legacy_cache``, which the upstream forward calls when use_cache is true,
so every upstream call passes ``use_cache=False``.
"""
from __future__ import annotations

import time

import pytest
import torch

from helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from oracles import ett_contexts, exchange_state, max_err, randomize, timer_upstream
from tsprune.model import TSModel, from_config

TOL = 1e-5
# the published config.json keys of thuml/timer-base-84m, at a small size
SMALL = {"model_type": "timer", "architectures": ["TimerForPrediction"], "attention_dropout": 0.0,
         "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "input_token_len": 16,
         "intermediate_size": 96, "max_position_embeddings": 10000, "num_attention_heads": 4,
         "num_hidden_layers": 2, "output_token_lens": [16, 32], "rope_theta": 10000, "use_cache": True}
# thuml/timer-base-84m at its published size (the values tsprune's TimerConfig documents:
# configuration_timer.py defaults with the 84M checkpoint's patch of 96 and one 96-step head)
FULL = {**SMALL, "hidden_size": 1024, "intermediate_size": 2048, "input_token_len": 96,
        "output_token_lens": [96], "num_attention_heads": 8, "num_hidden_layers": 8}


def _pair(cfg: dict, seed: int = 0):
    """(upstream TimerForPrediction, tsprune TSModel) with the same random weights."""
    up = timer_upstream()
    from timer.configuration_timer import TimerConfig
    kw = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    ref = up.TimerForPrediction(TimerConfig(**kw)).eval()
    randomize(ref, seed)
    m = from_config(dict(cfg))
    exchange_state(ref, m.module)
    return ref, m


def _ref_hidden(ref, x):
    return ref.model(input_ids=x, use_cache=False, return_dict=True).last_hidden_state


def test_state_dicts_exchange_with_no_missing_or_unexpected_keys():
    ref, m = _pair(SMALL)
    assert set(ref.state_dict()) == set(m.module.state_dict())
    assert len(ref.state_dict()) == 1 + 2 * (7 + 3 + 4) + 2 + 2  # emb, 2 layers, norm, heads


def test_next_patch_outputs_on_real_windows():
    ref, m = _pair(SMALL)
    x = ett_contexts("ETTh1", context=512, n=6)                     # (6, 512): 32 patches
    with torch.no_grad():
        want_h = _ref_hidden(ref, x)
        got_h = m.module(x)
        assert max_err(got_h, want_h) < TOL
        for head in range(len(SMALL["output_token_lens"])):        # every token, every head
            assert max_err(m.module.lm_heads[head](got_h), ref.lm_heads[head](want_h)) < TOL
        # the upstream forward's own next-patch prediction: head choice and truncation
        for remaining in (8, 16, 20, 32, 50):
            want = ref(input_ids=x, use_cache=False, max_output_length=remaining).logits
            got = m.family._step(m.module, x, remaining)
            assert max_err(got, want) < TOL, remaining


def _upstream_rollout(ref, context: torch.Tensor, horizon: int) -> torch.Tensor:
    """The upstream generate(revin=True) without the cache: cut the context on the left to
    whole patches, then repeat the forward on the grown raw sequence (it re-normalises the
    whole sequence each time), appending each de-normalised prediction."""
    p = ref.config.input_token_len
    seq = context[:, context.shape[1] - context.shape[1] // p * p:]
    outs, done = [], 0
    while done < horizon:
        y = ref(input_ids=seq, use_cache=False, max_output_length=horizon - done, revin=True).logits
        outs.append(y)
        done += y.shape[1]
        seq = torch.cat([seq, y], dim=1)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("horizon", [16, 72, 96])
def test_rollout_equals_uncached_repeated_upstream_forward(horizon):
    """72 = 32 + 32 + 8 (the 16-step head truncated), 96 = 32 x 3; context 500 is cut to
    496 (31 patches)."""
    ref, m = _pair(SMALL)
    x = ett_contexts("ETTh1", context=500, n=4) * 3.0 + 1.0        # a non-trivial scale
    with torch.no_grad():
        want = _upstream_rollout(ref, x, horizon)
        got = TSModel(m.family, m.module).forecast(x, horizon).point
    assert got.shape == want.shape == (4, horizon)
    assert max_err(got, want) < TOL


def test_full_published_size_forward():
    """timer-base-84m's size (84M parameters), forward only, 2 windows of 672 steps."""
    t0 = time.perf_counter()
    ref, m = _pair(FULL)
    n = sum(p.numel() for p in m.module.parameters())
    assert 80e6 < n < 90e6, n
    x = ett_contexts("ETTh1", context=672, n=2)
    with torch.no_grad():
        want = ref(input_ids=x, use_cache=False, max_output_length=96).logits
        got = m.family._step(m.module, x, 96)
    assert max_err(got, want) < TOL
    print(f"timer-base-84m size: {n} parameters, {time.perf_counter() - t0:.1f} s")
