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
    """The model the budget pruned: m with the plan's family units (experts) removed."""
    _, extra = split_extra(plan.extra)
    if not extra:
        return m
    s = m.clone()
    s.family.apply_extra(s.module, extra)
    return s


@pytest.mark.parametrize("build", BUILDS, ids=IDS)
def test_budgets_met_exactly_against_the_given_model(build, tmp_path):
    m, train, val, outputs = build()
    c, t = (int(x.shape[1]) for x in train.gather(torch.arange(1)))
    dense = Cost(m.num_params(), forecast_profile(m, c, t).total)
    full = CostModel(m.module, m.family.structure(m.module), forecast_profile(m, c, t))
    for kind in ("params", "flops"):
        frac = _target(full, kind, 0.5)
        plan = score(m, train, val, PruneConfig(budget=f"{kind}={frac}", **FAST), show_progress=False)
        p = apply(m, plan)
        meas = plan.config["measured"]
        # what the plan says is what apply builds, and it is within the budget of the given model
        assert meas["params"] == p.num_params() and meas["params_dense"] == dense.params
        assert meas["flops"] == forecast_profile(p, c, t).total and meas["flops_dense"] == dense.flops
        assert meas[kind] <= math.floor(frac * dense.get(kind))
        # and no zeroed unit could come back without breaking it
        s = _scored(m, plan)
        costs = CostModel(s.module, s.family.structure(s.module), forecast_profile(s, c, t), reference=dense)
        assert_exact(m, plan, costs, kind, frac, sample=150)
    x = train.gather(torch.arange(3))[0]
    reloads_and_replays(m, plan, p, x, t, tmp_path)
    exports_to_onnx(p, tmp_path / "m.onnx", context=c, horizon=t, outputs=outputs)
