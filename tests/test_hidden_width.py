"""Hidden-width (residual-stream) pruning: the shared mask, its one-call surgery, budgets
with hidden channels, save/reload, ONNX parity, and the families that cannot."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

pytest.importorskip("transformers")

from helpers import (TINY_TIMESFM25, cli, context_batch, exports_to_onnx, masked_forecast,  # noqa: E402
                     one_line_error, plan_forecast, random_masks, reloads_and_replays, tiny_task)
from test_family_patchtst import TINY as PATCHTST  # noqa: E402
from tsprune.errors import UserError  # noqa: E402
from tsprune.model import from_config  # noqa: E402
from tsprune.prune import CostModel, Plan, PruneConfig, apply, score  # noqa: E402
from tsprune.prune import width as width_mod  # noqa: E402
from tsprune.prune.budget import forecast_profile  # noqa: E402
from tsprune.prune.masks import HIDDEN, MaskSet  # noqa: E402

FAST = dict(macro_batch=32, batch_size=16, min_steps=2, val_samples=16, calib_samples=96)
# odd shapes: a residual width of 40 with 4 heads of 16 and 72 FFN neurons
ODD = {**TINY_TIMESFM25, "hidden_size": 40, "intermediate_size": 72}


def _hidden_plan(m, keep: int, channels: float = 0.0, seed: int = 0, dead: bool = False) -> Plan:
    """Random residual channels kept (``keep`` of them), a ``channels`` fraction of every
    other mask zeroed; ``dead``: layer 1's attention and FFN collapse to constants."""
    s = m.family.structure(m.module)
    hw = m.family.hidden_width(m.module)
    base = random_masks(m.module, s, frac=channels, seed=seed)
    ms = MaskSet(m.module, s.linears(), hw)
    ms.m_in, ms.m_out = base.m_in, base.m_out
    g = torch.Generator().manual_seed(seed + 1)
    ms.m_hidden[torch.randperm(hw.size, generator=g)[: hw.size - keep]] = 0.0
    if dead:
        ms.m_out[s.blocks[1].attention[0].v][:] = 0.0
        ms.m_out[s.blocks[1].ffn[0].inputs[0]][:] = 0.0
    n = m.num_params()
    return Plan("timesfm2_5", ms.to_json(), n, n)


def _with_norm_scale(m, scale: str):
    """``m``'s family with HiddenWidth.norm_scale = ``scale`` (an instance attribute only)."""
    fam = m.family
    orig = type(fam).hidden_width
    fam.hidden_width = lambda module: dataclasses.replace(orig(fam, module), norm_scale=scale)
    return fam


@pytest.mark.parametrize("scale", ["kept", "dense"])
@pytest.mark.parametrize("cfg,keep,channels,dead", [
    (TINY_TIMESFM25, 37, 0.0, False),
    (TINY_TIMESFM25, 21, 0.2, True),
    (ODD, 13, 0.3, False),
    ({**ODD, "force_flip_invariance": True}, 1, 0.1, True),
], ids=["hidden-only", "with-channels-and-dead-groups", "odd-shapes", "one-channel-flip"])
def test_sliced_equals_masked(cfg, keep, channels, dead, scale):
    """The model sliced to ``keep`` residual channels forecasts (point and quantiles) what the
    masked model does, under either normalisation choice, and has the width everywhere."""
    torch.manual_seed(0)
    m = from_config(cfg)
    fam = _with_norm_scale(m, scale)
    try:
        plan = _hidden_plan(m, keep, channels, dead=dead)
        x = context_batch(3)
        want = plan_forecast(m, plan, x, 96)
        p = apply(m, plan)
        got = p.forecast(x, 96)
        assert torch.allclose(got.point, want.point, atol=2e-5, rtol=1e-5)
        assert torch.allclose(got.quantiles, want.quantiles, atol=2e-5, rtol=1e-5)
        d = cfg["hidden_size"]
        assert p.manifest["hidden"] == {"size": keep, "dense": d}
        hw = fam.hidden_width(p.module)
        assert hw.size == keep
        for path in hw.writes:
            assert p.module.get_submodule(path).out_features == keep
        for path in hw.reads:
            assert p.module.get_submodule(path).in_features == keep
        assert sum(x.numel() for x in p.module.parameters()) == p.num_params() < m.num_params()
        if dead:
            assert p.describe()[1]["heads"] == 0 and p.describe()[1]["ffn"] == 0
    finally:
        del fam.hidden_width


def test_masked_hidden_channels_change_the_forecast():
    """The shared mask reaches the output (the parity above is not trivially true)."""
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    plan = _hidden_plan(m, 32)
    x = context_batch(2)
    assert (plan_forecast(m, plan, x, 64).point - m.forecast(x, 64).point).abs().max() > 1e-3


def test_one_pack_call_for_the_whole_width(monkeypatch):
    """Every tensor of one width change (writers' rows, readers' columns, norms) is gathered
    by a single tsprune.ops.pack call."""
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    hw = m.family.hidden_width(m.module)
    calls = []
    real = width_mod.ops.pack

    def counting(tensors, rows, cols, **kw):
        calls.append(len(tensors))
        return real(tensors, rows, cols, **kw)

    monkeypatch.setattr(width_mod.ops, "pack", counting)
    width_mod.slice_hidden(m.module, m.family, hw, torch.tensor([0, 3, 5, 63]))
    n_norm_tensors = len(hw.norms)  # RMSNorm: a weight each
    assert calls == [len(hw.writes) + len(hw.reads) + n_norm_tensors + sum(
        m.module.get_submodule(p).bias is not None for p in hw.writes)]


def test_slice_hidden_keeps_at_least_one_channel():
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    with pytest.raises(ValueError, match="at least one"):
        width_mod.slice_hidden(m.module, m.family, m.family.hidden_width(m.module),
                               torch.zeros(0, dtype=torch.long))


def test_save_reload_and_replay(tmp_path):
    """A model with an uneven channel cut, dead groups and 23 of 64 residual channels saves
    (config.json keeps the dense width; the manifest the kept one) and reloads without
    pickle to identical forecasts; its plan replays on a fresh copy; pruning it again keeps
    the dense width on record."""
    torch.manual_seed(0)
    m = from_config({**TINY_TIMESFM25, "force_flip_invariance": True})
    plan = _hidden_plan(m, 23, 0.2, dead=True)
    p = apply(m, plan)
    q = reloads_and_replays(m, plan, p, context_batch(3), 200, tmp_path)
    assert q.manifest["hidden"] == {"size": 23, "dense": 64}
    again = apply(q, _hidden_plan(q, 11, 0.0, seed=3))
    assert again.manifest["hidden"] == {"size": 11, "dense": 64}
    assert apply(q, Plan("timesfm2_5", MaskSet(q.module, q.family.structure(q.module).linears()).to_json(),
                         0, 0)).manifest["hidden"] == {"size": 23, "dense": 64}


def test_manifest_hidden_size_is_checked(tmp_path):
    import json
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    apply(m, _hidden_plan(m, 30)).save(tmp_path / "p")
    man = json.loads((tmp_path / "p" / "tsprune.json").read_text())
    man["hidden"]["size"] = 65
    (tmp_path / "p" / "tsprune.json").write_text(json.dumps(man))
    from tsprune.model import load
    with pytest.raises(UserError, match="hidden size"):
        load(tmp_path / "p")


def test_onnx_parity(tmp_path):
    """Both graphs of a hidden-pruned model (the optimized one and the family's reference
    forecast) match PyTorch in ONNX Runtime."""
    torch.manual_seed(0)
    m = from_config({**ODD, "force_flip_invariance": True})
    p = apply(m, _hidden_plan(m, 19, 0.2, dead=True))
    exports_to_onnx(p, tmp_path / "opt.onnx", 512, 96, outputs=("point", "quantiles"))
    exports_to_onnx(p, tmp_path / "ref.onnx", 512, 96, outputs=("point", "quantiles"), graph="reference")


# ---- budgets -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task():
    return tiny_task(900, 96)


def _assert_exact(m, plan, costs, kind: str, frac: float) -> MaskSet:
    """The plan meets the budget, its measured cost is the pruned model's, and giving back
    any one zeroed unit (residual channels included) either adds nothing or exceeds it."""
    masks = MaskSet.from_json(m.module, plan.masks, m.family.hidden_width(m.module))
    target = int(frac * costs.dense().get(kind))
    now = costs.measure(masks)
    assert now.get(kind) <= target
    assert plan.config["measured"]["params"] == now.params == apply(m, plan).num_params()
    units = [(p, s, i) for p, s, x in masks.units() for i in torch.nonzero(x == 0).flatten().tolist()]
    hidden = [u for u in units if u[0] == HIDDEN]
    units = hidden + random.Random(0).sample([u for u in units if u[0] != HIDDEN], min(300, len(units) - len(hidden)))
    for p, s, i in units:
        masks.get(p, s)[i] = 1.0
        after = costs.measure(masks).get(kind)
        masks.get(p, s)[i] = 0.0
        assert after == now.get(kind) or after > target, (p, s, i, after, target)
    return masks


@pytest.mark.parametrize("kind,frac", [("params", 0.5), ("flops", 0.45)])
def test_budget_with_hidden_channels_is_met_exactly(task, kind, frac):
    """A params or FLOPs budget with the hidden axis: met exactly (cost accounting = surgery
    = the torch FLOP counter on the pruned model's forecast), and hidden channels are
    among the units removed; the pruned model forecasts like the masked one."""
    m, train, val = task
    c, t = train.gather(torch.arange(1))
    profile = forecast_profile(m, c.shape[1], t.shape[1])
    structure = m.family.structure(m.module)
    costs = CostModel(m.module, structure, profile, m.family.hidden_width(m.module))
    plan = score(m, train, val, PruneConfig(budget=f"{kind}={frac}", hidden=True, **FAST), show_progress=False)
    masks = _assert_exact(m, plan, costs, kind, frac)
    kept = int(masks.m_hidden.sum())
    assert 1 <= kept < 64
    p = apply(m, plan)
    assert p.manifest["hidden"]["size"] == kept
    assert forecast_profile(p, c.shape[1], t.shape[1]).total == plan.config["measured"]["flops"]
    x = context_batch(2, 128)
    assert torch.allclose(p.forecast(x, 24).point, plan_forecast(m, plan, x, 24).point, atol=2e-5, rtol=1e-5)


def test_budget_without_the_flag_never_touches_the_width(task):
    m, train, val = task
    plan = score(m, train, val, PruneConfig(budget="params=0.85", **FAST), show_progress=False)
    assert HIDDEN not in plan.masks and "hidden" not in apply(m, plan).manifest


def test_validation_stopped_schedule_takes_hidden_channels_too(task):
    m, train, val = task
    plan = score(m, train, val, PruneConfig(hidden=True, ratio=0.5, **FAST), show_progress=False)
    assert HIDDEN in plan.masks
    p = apply(m, plan)
    assert p.num_params() == plan.params_pruned


def test_scorers_agree_on_hidden_scores(task):
    """The fused scorer (activations x gradients of every write, summed over writes and
    tokens) and the reference scorer (per-sample mask leaves) give the same plan."""
    m, train, val = task
    cfg = dict(budget="params=0.7", hidden=True, **FAST)
    a = score(m, train, val, PruneConfig(scorer="fused", **cfg), show_progress=False)
    b = score(m, train, val, PruneConfig(scorer="reference", **cfg), show_progress=False)
    assert a.masks == b.masks and a.masks[HIDDEN]["out"]


# ---- families that cannot ------------------------------------------------------------------
def test_family_without_hidden_width_says_so():
    torch.manual_seed(0)
    m = from_config(PATCHTST)
    with pytest.raises(UserError, match="hidden-width pruning is not supported for patchtst"):
        m.family.hidden_width(m.module)
    with pytest.raises(UserError, match="--prune-hidden"):
        score(m, None, None, PruneConfig(hidden=True, budget="params=0.5"), show_progress=False)


def test_cli_prune_hidden_on_an_unsupported_family_is_one_line(tmp_path):
    torch.manual_seed(0)
    from_config(PATCHTST).save(tmp_path / "patchtst")
    one_line_error(cli("prune", "--model", tmp_path / "patchtst", "--context", 96, "--horizon", 24,
                       "--prune-hidden", "--budget", "params=0.5", "--out", tmp_path / "o", "--quiet"),
                   "--prune-hidden", "patchtst")
    assert not (tmp_path / "o").exists()


def test_config_flag_is_checked():
    with pytest.raises(UserError, match="--prune-hidden"):
        PruneConfig(hidden="yes")
