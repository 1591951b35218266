"""TimesFM 2.5 export adapter in torch (no ONNX here): closed-form running statistics vs
upstream's Welford loop, and the adapter's forecast vs the family's, dense and pruned."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from helpers import TINY_TIMESFM25, context_batch, random_masks  # noqa: E402
from tsprune.export.timesfm2_5 import TimesFm25Export, running_stats, running_stats_loop  # noqa: E402
from tsprune.model import from_config  # noqa: E402
from tsprune.prune import Plan, apply  # noqa: E402


def _patches(b=5, n=16, p=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    level = torch.randn(b, 1, 1, generator=g) * 4
    return (torch.randn(b, n, p, generator=g).cumsum(-1) * 0.3 + level).float()


@pytest.mark.parametrize("padding", ["none", "partial_first", "whole_patches"])
def test_running_stats_closed_form_equals_welford_loop(padding):
    x = _patches()
    valid = None
    if padding != "none":
        valid = torch.ones_like(x)
        valid[:, 0, :7] = 0                 # left padding inside the first patch
        if padding == "whole_patches":
            valid[1, :3] = 0                # series 1: three empty patches, then data
            valid[2, 0] = 0
    mu, sigma = running_stats(x, valid)
    mu_ref, sigma_ref = running_stats_loop(x, valid)
    assert mu.shape == sigma.shape == (5, 16)
    torch.testing.assert_close(mu, mu_ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(sigma, sigma_ref, atol=2e-5, rtol=1e-5)
    if padding == "whole_patches":
        assert (mu[1, :3] == 0).all() and (sigma[1, :3] == 0).all()


def test_running_stats_constant_series_and_large_offset():
    x = torch.full((2, 8, 32), 3.0)
    x[1] += torch.randn(8, 32) * 1e-3 + 1e3    # small spread on a large level
    mu, sigma = running_stats(x)
    mu_ref, sigma_ref = running_stats_loop(x)
    torch.testing.assert_close(mu, mu_ref, atol=1e-3, rtol=1e-6)
    assert (sigma[0] == 0).all()
    torch.testing.assert_close(sigma, sigma_ref, atol=1e-4, rtol=0)  # spread 1e-3, ulp(1e3) 6e-5


PLAIN = dict(force_flip_invariance=False, use_continuous_quantile_head=False, infer_is_positive=False)
FLIP_CONT = dict(force_flip_invariance=True, use_continuous_quantile_head=True, infer_is_positive=False)
FLIP_POS = dict(force_flip_invariance=True, use_continuous_quantile_head=False, infer_is_positive=True)


GQA = dict(PLAIN, num_key_value_heads=2)


@pytest.mark.parametrize("cfg,length,horizon", [
    (PLAIN, 512, 96), (PLAIN, 77, 128), (FLIP_CONT, 500, 300), (FLIP_POS, 512, 160), (GQA, 256, 96)],
    ids=["plain-512-96", "plain-77-128", "flip+continuous-500-300", "flip+positive-512-160", "gqa-256-96"])
def test_adapter_equals_family_forecast(cfg, length, horizon):
    torch.manual_seed(0)
    m = from_config({**TINY_TIMESFM25, **cfg})
    x = context_batch(3, length, seed=length)
    if cfg["infer_is_positive"]:
        x[0] = x[0].abs()                   # one non-negative series: its forecast is clamped
    ref = m.forecast(x, horizon)
    for dynamic in (False, True):
        e = TimesFm25Export(m.module, horizon, dynamic_context=dynamic).eval()
        with torch.no_grad():
            point, quantiles = e(x)
        torch.testing.assert_close(point, ref.point, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(quantiles, ref.quantiles, atol=1e-4, rtol=1e-4)


def test_adapter_on_pruned_model_with_dead_modules():
    torch.manual_seed(0)
    m = from_config({**TINY_TIMESFM25, "num_hidden_layers": 3, "force_flip_invariance": True})
    s = m.family.structure(m.module)
    ms = random_masks(m.module, s, frac=0.0)
    a0, f0 = s.blocks[0].attention[0], s.blocks[0].ffn[0]
    ms.m_out[a0.v][1 * 16:3 * 16] = 0       # layer 0: heads 1 and 2 gone
    ms.m_out[f0.inputs[0]][:40] = 0         # and 40 FFN neurons
    ms.m_out[s.blocks[1].attention[0].v][:] = 0     # layer 1: attention dead
    ms.m_out[s.blocks[2].ffn[0].inputs[0]][:] = 0   # last layer: FFN dead
    n = m.num_params()
    p = apply(m, Plan("timesfm2_5", ms.to_json(), n, n))
    rows = p.describe()
    assert rows[0]["heads"] == 2 and rows[1]["heads"] == 0 and rows[2]["ffn"] == 0
    x = context_batch(4, 480)
    ref = p.forecast(x, 200)
    with torch.no_grad():
        point, quantiles = TimesFm25Export(p.module, 200).eval()(x)
    torch.testing.assert_close(point, ref.point, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(quantiles, ref.quantiles, atol=1e-4, rtol=1e-4)


def test_adapter_half_precision_is_close():
    torch.manual_seed(0)
    m = from_config({**TINY_TIMESFM25, "force_flip_invariance": True})
    x = context_batch(3, 512) * 1e3 + 5e4   # raw values far outside fp16: normalised in fp32
    ref = m.forecast(x, 96)
    e = TimesFm25Export(m.module, 96, dtype=torch.float16).eval()
    assert e.head_point.out.weight_t.dtype == torch.float16
    with torch.no_grad():
        point, _ = e(x)
    assert point.dtype == torch.float32 and torch.isfinite(point).all()
    scale = x.std(dim=1, keepdim=True)
    assert ((point - ref.point).abs() / scale).max() < 2e-2
