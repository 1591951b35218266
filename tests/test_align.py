"""FFN widths rounded to the GEMM block under a budget (tsprune.prune.align, --align)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from helpers import cli, context_batch, one_line_error, reloads_and_replays, tiny_task  # noqa: E402
from tsprune.errors import UserError  # noqa: E402
from tsprune.prune import CostModel, PruneConfig, apply, score_to_budgets  # noqa: E402
from tsprune.prune.align import align_ffn_widths  # noqa: E402
from tsprune.prune.budget import forecast_profile  # noqa: E402
from tsprune.prune.masks import MaskSet  # noqa: E402
from tsprune.prune.structure import FFNGroup  # noqa: E402

FAST = dict(macro_batch=32, batch_size=16, min_steps=2, val_samples=16)


@pytest.fixture(scope="module")
def tiny():
    return tiny_task(3000, 128)


def _costs(m, train):
    c, t = train.gather(torch.arange(1))
    structure = m.family.structure(m.module)
    return CostModel(m.module, structure, forecast_profile(m, c.shape[1], t.shape[1]))


class _Scores:
    """Importance of neuron i = i + 1 on every side (higher index, more important)."""

    def __init__(self, masks):
        self.s = {(p, s): torch.arange(1, x.numel() + 1, dtype=torch.float64) for p, s, x in masks.units()}

    def absolute(self, key):
        return self.s[key]


def _widths(costs, masks):
    out = []
    for g in costs.groups:
        if isinstance(g, FFNGroup):
            alive = masks.get(g.output, "in") != 0
            for p in g.inputs:
                alive &= masks.get(p, "out") != 0
            out.append(alive)
    return out


def _ffn_masks(costs, keep: list[int]) -> MaskSet:
    """Masks keeping the first ``keep[j]`` neurons of FFN group j (the least important)."""
    ms = MaskSet(costs.module, costs.structure.linears())
    for g, k in zip([g for g in costs.groups if isinstance(g, FFNGroup)], keep):
        for p, s in [(p, "out") for p in g.inputs] + [(g.output, "in")]:
            ms.get(p, s)[k:] = 0.0
    return ms


def test_rounding_down_drops_the_weakest_and_up_restores_the_best(tiny):
    m, train, _ = tiny
    costs = _costs(m, train)
    ms = _ffn_masks(costs, [21, 40])                # the tiny model's FFNs are 96 wide
    imp = _Scores(ms)
    tight = costs.measure(ms).flops                 # no room: both round down
    out, info = align_ffn_widths(ms, costs, imp, "flops", tight, 8)
    w = _widths(costs, out)
    assert [int(x.sum()) for x in w] == [16, 40] and info["widths"] == [[21, 16], [40, 40]]
    assert torch.equal(torch.nonzero(w[0]).flatten(), torch.arange(5, 21))   # 0..4 scored lowest
    assert costs.measure(out).flops <= tight and info["rounded_down"] == 1 and info["rounded_up"] == 0
    loose = costs.dense().flops                     # room: up to 24, with the best pruned neurons
    out, info = align_ffn_widths(ms, costs, imp, "flops", loose, 8)
    w = _widths(costs, out)
    assert [int(x.sum()) for x in w] == [24, 40] and info["rounded_up"] == 1
    assert torch.equal(torch.nonzero(w[0]).flatten(), torch.cat([torch.arange(5, 21), torch.arange(88, 96)]))
    assert ms.get(costs.groups[1].output, "in").sum() == 21   # the input is not changed


def test_aligned_budget_plans_are_met_with_aligned_widths_and_replay(tiny, tmp_path):
    m, train, val = tiny
    costs = _costs(m, train)
    plans = score_to_budgets(m, train, val, PruneConfig(align=16, **FAST), ["flops=0.93", "flops=0.87"],
                             show_progress=False)
    assert sum(p.config["measured"]["align"]["rounded_down"] for p in plans) >= 1   # something was rounded
    for frac, plan in zip((0.93, 0.87), plans):
        masks = MaskSet.from_json(m.module, plan.masks)
        assert costs.measure(masks).flops <= int(frac * costs.dense().flops)
        info = plan.config["measured"]["align"]
        for (before, after), alive in zip(info["widths"], _widths(costs, masks)):
            assert after == int(alive.sum())
            assert after % 16 == 0 or after == before < 16
            assert abs(after - before) < 16
        p = apply(m, plan)
        assert plan.config["measured"]["params"] == p.num_params()
    reloads_and_replays(m, plans[1], apply(m, plans[1]), context_batch(2, 128), 24, tmp_path)


def test_align_must_be_a_positive_integer_and_needs_a_budget(tmp_path):
    for bad in (0, -16, True, 2.5):
        with pytest.raises(UserError, match="--align"):
            PruneConfig(align=bad)
    one_line_error(cli("prune", "--out", tmp_path / "out", "--align", "16"), "--align")
    assert not (tmp_path / "out").exists()


def test_the_report_says_how_widths_were_rounded():
    from tsprune.report.writer import budget_line
    bud = {"budget": "flops=0.5", "measure": "flops", "kept_params": 0.6, "kept_flops": 0.49,
           "profile": {"source": "optimized graph", "context": 512, "horizon": 96},
           "align": {"multiple": 16, "rounded_down": 2, "rounded_up": 1, "widths": [[81, 96], [85, 80], [32, 32]]}}
    line = budget_line(bud, {"criterion": "taylor_fisher"})
    assert "multiples of 16 (2 down, 1 up; kept neurons per block: 81->96, 85->80, 32)" in line
    del bud["align"]
    assert "multiples" not in budget_line(bud, {"criterion": "taylor_fisher"})


def test_ffn_alive_needs_every_side_and_maskset_to_copies(tiny):
    from tsprune.prune.surgery import ffn_alive
    m, train, _ = tiny
    costs = _costs(m, train)
    ms = MaskSet(costs.module, costs.structure.linears())
    g = next(g for g in costs.groups if isinstance(g, FFNGroup))
    ms.get(g.inputs[0], "out")[3] = 0.0       # one side of neuron 3
    ms.get(g.output, "in")[7] = 0.0           # the other side of neuron 7
    alive = ffn_alive(g, ms)
    assert alive.sum() == alive.numel() - 2 and not alive[3] and not alive[7]
    cp = ms.to("cpu")
    cp.get(g.output, "in")[0] = 0.0           # a copy: the original is untouched
    assert ms.get(g.output, "in")[0] == 1.0 and cp.to_json() != ms.to_json()
    assert [k for k, _, _ in cp.units()] == [k for k, _, _ in ms.units()]
