"""Moirai 1.0-R: tsprune's implementation against uni2ts 2.0.0's ``MoiraiModule`` (the wheel in
../shared/reference/uni2ts, unzipped to a temporary folder and imported there, never
copied).

Both are built from the same configuration (the published constructor arguments: a
four-component mixture head, patch sizes 8..128) and hold the same random weights, exchanged
through the published parameter names; inputs are real ETTh1 windows packed as tsprune packs
them. Compared in fp32 at 1e-5 for every patch size (oracles.max_err: absolute, relative
where |reference| > 1): the distribution parameters (every output projection of the mixture
head, before uni2ts's domain maps, and the scaler's loc and scale) and the point forecast
(tsprune's closed-form mixture mean against the upstream distribution's ``mean``). Moirai
forecasts every horizon in one forward (no roll-out), so there is no roll-out to compare.

The oracle is not patched. Its package ``__init__``s (lightning, gluonts) are skipped by
stubbing ``uni2ts.model`` and ``uni2ts.model.moirai``; jaxtyping and hydra-core are stubbed
when absent (annotations only, and a config decoder these tests do not use).
"""
from __future__ import annotations

import time

import pytest
import torch

from helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from oracles import ett_contexts, exchange_state, max_err, randomize, uni2ts_upstream
from tsprune.model import TSModel, from_config

TOL = 1e-5
PATCHES = [8, 16, 32, 64, 128]
MIXTURE = {"_target_": "uni2ts.distribution.mixture.MixtureOutput", "components": [
    {"_target_": "uni2ts.distribution.student_t.StudentTOutput"},
    {"_target_": "uni2ts.distribution.normal.NormalFixedScaleOutput", "scale": 0.001},
    {"_target_": "uni2ts.distribution.negative_binomial.NegativeBinomialOutput"},
    {"_target_": "uni2ts.distribution.log_normal.LogNormalOutput"}]}
# the published config.json keys of Salesforce/moirai-1.0-R-*, at a small size (2 heads)
SMALL = dict(d_model=128, num_layers=2, patch_sizes=PATCHES, max_seq_len=512, attn_dropout_p=0.0,
             dropout_p=0.0, scaling=True, distr_output=MIXTURE)
# Salesforce/moirai-1.0-R-small (the Moirai paper's small model: 6 layers of 384, 6 heads)
FULL = {**SMALL, "d_model": 384, "num_layers": 6}


@pytest.fixture(scope="module")
def uni2ts(tmp_path_factory):
    return uni2ts_upstream(tmp_path_factory.mktemp("uni2ts"))


def _pair(uni2ts, cfg: dict, seed: int = 0):
    """(upstream MoiraiModule, tsprune TSModel) with the same random weights."""
    module, d = uni2ts
    distr = d.MixtureOutput([d.StudentTOutput(), d.NormalFixedScaleOutput(scale=0.001),
                             d.NegativeBinomialOutput(), d.LogNormalOutput()])
    kw = {k: v for k, v in cfg.items() if k != "distr_output"}
    ref = module.MoiraiModule(distr_output=distr, **{**kw, "patch_sizes": tuple(kw["patch_sizes"])}).eval()
    randomize(ref, seed)
    m = from_config({**cfg, "patch_sizes": list(cfg["patch_sizes"])})
    exchange_state(ref, m.module)
    return ref, m


def _capture(module, kind):
    """Forward hooks on every submodule of class name ``kind``: {path: last output}."""
    out, hooks = {}, []
    for name, sub in module.named_modules():
        if type(sub).__name__ == kind:
            hooks.append(sub.register_forward_hook(lambda mod, i, o, name=name: out.__setitem__(name, o)))
    return out, hooks


def _compare(ref, m, x, horizon: int, p: int) -> None:
    """Distribution parameters, loc/scale and the point forecast of both at patch size p."""
    *inputs, nc = m.family.pack(m.module, x, horizon, p)
    up_out, up_hooks = _capture(ref.param_proj, "MultiOutSizeLinear")
    ts_out, ts_hooks = _capture(m.module.param_proj, "PatchOutProj")
    try:
        with torch.no_grad():
            distr = ref(*inputs, torch.full_like(inputs[3], p))
            params, loc, scale = m.module(*inputs, patch_size=p)
    finally:
        for h in up_hooks + ts_hooks:
            h.remove()
    assert up_out.keys() == ts_out.keys() and len(up_out) == 1 + 3 + 1 + 2 + 2
    mp = max(PATCHES)
    for name, got in ts_out.items():                      # (B, T, p, dim) vs (B, T, dim * mp)
        want = up_out[name].unflatten(-1, (got.shape[-1], mp)).transpose(-1, -2)[:, :, :p]
        assert max_err(got, want) < TOL, (name, p)
    assert max_err(loc, distr.loc) < TOL and max_err(scale, distr.scale) < TOL
    want_mean = distr.mean[:, nc:, :p].flatten(1)[:, :horizon]
    got_mean, loc_last, scale_last = m.family._mean(m.module, x, horizon, p)
    assert max_err(got_mean * scale_last + loc_last, want_mean) < TOL, p


def test_state_dicts_exchange_with_no_missing_or_unexpected_keys(uni2ts):
    ref, m = _pair(uni2ts, SMALL)
    assert set(ref.state_dict()) == set(m.module.state_dict())


@pytest.mark.parametrize("p", PATCHES)
def test_distribution_params_and_point_forecast_on_real_windows(uni2ts, p):
    """Context 500 and horizon 40: neither a multiple of the patch (left and right padding)."""
    ref, m = _pair(uni2ts, SMALL)
    _compare(ref, m, ett_contexts("ETTh1", context=500, n=4) * 3.0 + 1.0, 40, p)


def test_default_patch_forecast_on_real_windows(uni2ts):
    """The forecast tsprune serves (patch 32, context 512, horizon 96) is the upstream mean."""
    ref, m = _pair(uni2ts, SMALL)
    x = ett_contexts("ETTh1", context=512, n=6)
    *inputs, nc = m.family.pack(m.module, x, 96, 32)
    with torch.no_grad():
        want = ref(*inputs, torch.full_like(inputs[3], 32)).mean[:, nc:, :32].flatten(1)[:, :96]
        got = TSModel(m.family, m.module).forecast(x, 96).point
    assert max_err(got, want) < TOL


def test_full_published_size_forward(uni2ts):
    """moirai-1.0-R-small's size, forward only, 2 windows of 512, patch 32, horizon 96."""
    t0 = time.perf_counter()
    ref, m = _pair(uni2ts, FULL)
    n = sum(p.numel() for p in m.module.parameters())
    assert 10e6 < n < 20e6, n
    _compare(ref, m, ett_contexts("ETTh1", context=512, n=2), 96, 32)
    print(f"moirai-1.0-R-small size: {n} parameters, {time.perf_counter() - t0:.1f} s")
