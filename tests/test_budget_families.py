"""Budgets on the families whose tiny models live in their own test files (Time-MoE, Moirai,
Chronos-Bolt, TTM): a budgeted plan is met exactly, in the parameters and the FLOPs of the
model the user gave (Time-MoE drops rarely routed experts before scoring; Chronos-Bolt's
surgery folds its decoder self-attentions whatever the masks), save/reload gives identical
forecasts, and the pruned model exports to ONNX with parity."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from helpers import exports_to_onnx, reloads_and_replays, two_series_windows  # noqa: E402
from test_budget import FAST, _target, assert_exact  # noqa: E402
from tsprune.prune import CostModel, PruneConfig, apply, score  # noqa: E402
from tsprune.prune.budget import Cost, forecast_profile  # noqa: E402
from tsprune.prune.depth import split_extra  # noqa: E402


def _time_moe():
    import test_family_time_moe as t
    return t.tiny(), t.dataset(), t.dataset(200, 1), ("point",)


def _moirai():
    import test_family_moirai as t
    tr = two_series_windows(400, t.L, t.H, stride=4)
    return t._model(), tr, two_series_windows(200, t.L, t.H, stride=4, seed=1), ("point",)


def _chronos_bolt():
    t = pytest.importorskip("test_family_chronos_bolt")
    return t._tiny(), t._windows(), t._windows(300, 1), ("point", "quantiles")


def _ttm():
    t = pytest.importorskip("test_family_ttm")  # skips without granite-tsfm (an optional extra)
    tr = two_series_windows(400, 128, 32, stride=4)
    return t._tiny(mixers=True), tr, two_series_windows(200, 128, 32, stride=4, seed=1), ("point",)


BUILDS = [_time_moe, _moirai, _chronos_bolt, _ttm]
IDS = ["time_moe", "moirai", "chronos_bolt", "ttm"]


def _scored(m, plan):
    """The model the budget pruned: m with the plan's blocks and family units (experts)
    removed, in apply's order."""
    dropped, extra = split_extra(plan.extra)
    if not (dropped or extra):
        return m
    s = m.clone()
    if dropped:
        s.family.drop_blocks(s.module, dropped)
    if extra:
        s.family.apply_extra(s.module, extra)
    return s


def _budgets_met(build, tmp_path, share: float, sample: int, **cfg):
    """Score ``build()``'s model to params and FLOPs budgets (``share`` of the way from the
    unprunable floor to dense) with PruneConfig(**cfg); each plan is met exactly against the
    given model: what the plan says is what apply builds, within the budget, and no zeroed
    unit could come back without breaking it. The last pruned model reloads, replays its
    plan and exports with ONNX parity. Returns (model, plans, pruned models)."""
    m, train, val, outputs = build()
    c, t = (int(x.shape[1]) for x in train.gather(torch.arange(1)))
    dense = Cost(m.num_params(), forecast_profile(m, c, t).total)
    full = CostModel(m.module, m.family.structure(m.module), forecast_profile(m, c, t))
    plans, pruned = [], []
    for kind in ("params", "flops"):
        frac = _target(full, kind, share)
        plan = score(m, train, val, PruneConfig(budget=f"{kind}={frac}", **cfg, **FAST), show_progress=False)
        p = apply(m, plan)
        meas = plan.config["measured"]
        assert meas["params"] == p.num_params() and meas["params_dense"] == dense.params
        assert meas["flops"] == forecast_profile(p, c, t).total and meas["flops_dense"] == dense.flops
        assert meas[kind] <= math.floor(frac * dense.get(kind))
        s = _scored(m, plan)
        costs = CostModel(s.module, s.family.structure(s.module), forecast_profile(s, c, t), reference=dense)
        assert_exact(m, plan, costs, kind, frac, sample=sample)
        plans.append(plan)
        pruned.append(p)
    x = train.gather(torch.arange(3))[0]
    reloads_and_replays(m, plans[-1], pruned[-1], x, t, tmp_path)
    exports_to_onnx(pruned[-1], tmp_path / "m.onnx", context=c, horizon=t, outputs=outputs)
    return m, plans, pruned


@pytest.mark.parametrize("build", BUILDS, ids=IDS)
def test_budgets_met_exactly_against_the_given_model(build, tmp_path):
    _budgets_met(build, tmp_path, 0.5, 150)


def _timer_xl():
    from test_budget import _timer_xl as build
    m, train, val = build()
    return m, train, val, ("point",)


@pytest.mark.parametrize("build", [_timer_xl, _time_moe], ids=["timer_xl", "time_moe"])
def test_depth_and_width_under_one_budget(build, tmp_path):
    """--drop-blocks K with --budget: K blocks go first (chosen on validation), then channels
    until the budget of the model the user gave is met; the dropped blocks' parameters and
    FLOPs count towards it (Time-MoE: its rarely routed experts go too)."""
    m, plans, pruned = _budgets_met(build, tmp_path, 0.4, 100, drop_blocks=1)
    n_blocks = len(m.family.block_paths(m.module))
    for plan, p in zip(plans, pruned):
        dropped, _ = split_extra(plan.extra)
        assert len(dropped) == 1
        assert len(p.family.block_paths(p.module)) == n_blocks - 1
