"""Depth pruning (tsprune.prune.depth, Family.drop_blocks): whole blocks removed per family,
exactly; the plan replays them before the channel masks; save/reload and ONNX; both
criteria find an identity block; unsupported families and bad --drop-blocks are one-line
errors."""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from helpers import (TINY_TIMESFM25, cli, context_batch, exports_to_onnx, masked_forecast,  # noqa: E402
                     one_line_error, one_thread, two_series_windows)  # noqa: F401
from test_family_moirai import TINY as MOIRAI  # noqa: E402
from test_family_patchtst import TINY as PATCHTST  # noqa: E402
from test_family_time_moe import TINY as TIME_MOE  # noqa: E402
from test_family_timer_xl import TINY as TIMER_XL  # noqa: E402
from test_family_timesfm2 import TINY as TIMESFM2  # noqa: E402
from tsprune.errors import UserError  # noqa: E402
from tsprune.model import from_config, load  # noqa: E402
from tsprune.prune import MaskSet, PruneConfig, apply, block_costs, score  # noqa: E402
from tsprune.prune.depth import (DROPPED, choose_blocks, fisher_estimate, gate_gradients,  # noqa: E402
                                 skip_loss, split_extra)
from tsprune.prune.engine import masked_loss  # noqa: E402

# family -> (config.json dict with 3 blocks, context, horizon, graph outputs); the graphs
# export one decode step (roll-outs in graphs are the family tests' business)
CASES = {
    "timesfm2_5": ({**TINY_TIMESFM25, "num_hidden_layers": 3}, 128, 24, ("point", "quantiles")),
    "timesfm2": ({"model_type": "timesfm", **TIMESFM2, "num_hidden_layers": 3}, 128, 32,
                 ("point", "quantiles")),
    "patchtst": ({**PATCHTST, "num_hidden_layers": 3}, 96, 24, ("point",)),
    "timer_xl": ({**TIMER_XL, "num_hidden_layers": 3}, 48, 16, ("point",)),
    "time_moe": ({**TIME_MOE, "num_hidden_layers": 3}, 48, 8, ("point",)),
    "moirai": ({**copy.deepcopy(MOIRAI), "num_layers": 3}, 100, 40, ("point",)),
}


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    m = from_config(copy.deepcopy(CASES[name][0]))
    with torch.no_grad():  # non-trivial norms (unit weights would hide a wrong block order)
        for n, p in m.module.named_parameters():
            if "norm" in n and p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    assert m.family.name == name
    return m


def _windows(name: str, n: int = 500, seed: int = 0):
    _, ctx, h = CASES[name][:3]
    return two_series_windows(n, ctx, h, stride=6, seed=seed, periods=(4, 9), trend=0.05)


@pytest.mark.parametrize("name", sorted(CASES))
def test_drop_one_block_is_exact_and_round_trips(name, tmp_path):
    m = _model(name)
    ctx, h, outputs = CASES[name][1:]
    paths = m.family.block_paths(m.module)
    assert len(paths) == 3 and all(m.module.get_submodule(p) is not None for p in paths)
    costs = block_costs(m)
    assert [c["path"] for c in costs] == paths and all(c["params"] > 0 for c in costs)
    x = context_batch(3, ctx)
    ds = _windows(name).subset(24)

    d = m.clone()
    d.family.drop_blocks(d.module, [1])
    # exactly the block's parameters go; the kept blocks are re-indexed 0..1
    assert d.num_params() == m.num_params() - costs[1]["params"]
    assert d.family.block_paths(d.module) == paths[:2]
    assert d.module.get_submodule(paths[1]) is not m.module.get_submodule(paths[1])
    cfg = d.family.config_dict(d.module)
    assert cfg.get("num_hidden_layers", cfg.get("num_layers")) == 2
    f = d.forecast(x, h)
    assert f.point.shape == (3, h) and torch.isfinite(f.point).all()
    # the skipped block (identity on the residual stream) is the removed block
    skipped, removed = skip_loss(m, ds, 1), masked_loss(d, None, ds)
    assert skipped == pytest.approx(removed, rel=1e-5, abs=1e-6)
    assert skipped != masked_loss(m, None, ds)  # the skip did something
    assert torch.equal(m.forecast(x, h).point, _model(name).forecast(x, h).point)  # m untouched

    # plan replay: scoring with drop_blocks=1, then apply on a fresh copy
    train, val = _windows(name, seed=1).subset(96), _windows(name, seed=2).subset(32)
    plan = score(m, train, val, PruneConfig(drop_blocks=1, max_epochs=1, ratio=0.3, batch_size=16,
                                            val_samples=None), show_progress=False)
    dropped, fam_extra = split_extra(plan.extra)
    assert len(dropped) == 1 and 0 <= dropped[0] < 3
    # the scoring-time model: the shallower copy with the family's units, under the masks
    s = m.clone()
    s.family.drop_blocks(s.module, dropped)
    if fam_extra:
        s.family.apply_extra(s.module, fam_extra)
    want = masked_forecast(s, MaskSet.from_json(s.module, plan.masks), x, h).point
    p = apply(m.clone(), plan)
    got = p.forecast(x, h).point
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(apply(m.clone(), plan).forecast(x, h).point, got)
    assert plan.params_dense == m.num_params()
    assert p.num_params() <= m.num_params() - costs[dropped[0]]["params"]
    assert len(p.family.block_paths(p.module)) == 2
    assert p.manifest[DROPPED] == dropped and p.manifest["blocks_dense"] == 3

    # save -> reload: the config holds the shallower depth, identical forecasts
    p.save(tmp_path / "pruned")
    q = load(tmp_path / "pruned")
    assert len(q.family.block_paths(q.module)) == 2 and q.num_params() == p.num_params()
    assert torch.equal(q.forecast(x, h).point, got)
    d.manifest = {}  # a depth-only model (no channel masks) saves as pruned too
    d.save(tmp_path / "shallow")
    assert torch.equal(load(tmp_path / "shallow").forecast(x, h).point, f.point)

    exports_to_onnx(q, tmp_path / "m.onnx", context=ctx, horizon=h, outputs=outputs)


def test_measured_skip_loss_equals_physical_removal_on_nano():
    """The measured criterion is the true loss after removal (nano, every block), up to
    float rounding: what justifies it as the default (docs/method.md, Depth pruning)."""
    m = load("nano")
    ds = two_series_windows(1200, 512, 96, stride=16, periods=(4, 24)).subset(16)
    for i in range(4):
        d = m.clone()
        d.family.drop_blocks(d.module, [i])
        assert skip_loss(m, ds, i) == pytest.approx(masked_loss(d, None, ds), rel=1e-6)


def test_both_criteria_pick_an_identity_block():
    """nano with block 2 made the identity (zero attention and MLP outputs: the post-norms
    of zero are zero): its skip loss equals the model's, its gate gradient is exactly 0,
    and both criteria drop it first."""
    m = load("nano")
    blk = m.module.model.layers[2]
    with torch.no_grad():
        for lin in (blk.self_attn.o_proj, blk.mlp.fc2):
            lin.weight.zero_()
            if lin.bias is not None:
                lin.bias.zero_()
    ds = two_series_windows(1200, 512, 96, stride=16, periods=(4, 24)).subset(16)
    assert skip_loss(m, ds, 2) == masked_loss(m, None, ds)
    G = gate_gradients(m, ds, batch_size=8)
    assert G.shape == (16, 4) and torch.all(G[:, 2] == 0) and fisher_estimate(G, [2]) == 0
    for crit in ("measured", "fisher"):
        blocks, hist = choose_blocks(m, ds, 1, crit)
        assert blocks == [2], (crit, hist)


def test_greedy_rescores_the_shallower_model():
    m = _model("timer_xl")
    ds = _windows("timer_xl").subset(24)
    blocks, hist = choose_blocks(m, ds, 2, "measured")
    first = hist[0]["dropped"]
    assert len(hist) == 2 and first == min(range(3), key=lambda i: hist[0]["scores"][str(i)])
    assert set(hist[1]["scores"]) == {str(i) for i in range(3)} - {str(first)}
    d = m.clone()
    d.family.drop_blocks(d.module, blocks)
    second = hist[1]["dropped"]
    assert hist[1]["scores"][str(second)] == pytest.approx(masked_loss(d, None, ds), rel=1e-5)


def test_bad_indices_and_counts():
    m = _model("timer_xl")
    for bad in ([3], [0, 0], [0, 1, 2], [-1]):
        with pytest.raises(ValueError, match="drop_blocks"):
            m.clone().family.drop_blocks(m.clone().module, bad)
    ds = _windows("timer_xl").subset(8)
    with pytest.raises(UserError, match="--drop-blocks: got 3; expected an integer from 0 to 2"):
        choose_blocks(m, ds, 3)
    for bad in (-1, 1.5, True):
        with pytest.raises(UserError, match="--drop-blocks"):
            PruneConfig(drop_blocks=bad)
    with pytest.raises(UserError, match="--depth-criterion"):
        PruneConfig(depth_criterion="magic")


def test_unsupported_family_is_a_clear_error():
    pytest.importorskip("chronos")
    from test_family_chronos_bolt import TINY as CHRONOS
    torch.manual_seed(0)
    m = from_config(CHRONOS)
    with pytest.raises(UserError, match="depth pruning is not supported for chronos_bolt"):
        m.family.block_paths(m.module)
    with pytest.raises(UserError, match="not supported for chronos_bolt"):
        score(m, _windows("patchtst"), _windows("patchtst"), PruneConfig(drop_blocks=1))


@pytest.mark.parametrize("value,needle", [("-1", "-1"), ("4", "4"), ("x", "x")])
def test_cli_bad_drop_blocks_exits_2_with_one_line(tmp_path, value, needle):
    """-1 and x fail at parsing; 4 (nano has 4 blocks) when the model is loaded, before any
    work (the bundled demo data)."""
    one_line_error(cli("prune", "--drop-blocks", value, "--out", tmp_path / "o", "--quiet"),
                   "--drop-blocks", needle)
    assert not (tmp_path / "o").exists()
