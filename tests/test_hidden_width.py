"""Hidden-width (residual-stream) pruning: the shared mask, its one-call surgery, budgets
with hidden channels, save/reload, ONNX parity, for every family that describes its stream
(TimesFM 2.5 and 2.0, PatchTST, Timer-XL), and the families that cannot."""
from __future__ import annotations

import copy
import dataclasses
import random

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from helpers import (TINY_TIMESFM25, cli, context_batch, exports_to_onnx, one_line_error,  # noqa: E402
                     plan_forecast, random_masks, reloads_and_replays, tiny_task, two_series_windows)
from test_family_moirai import TINY as MOIRAI  # noqa: E402
from test_family_patchtst import TINY as PATCHTST  # noqa: E402
from test_family_timer_xl import TINY as TIMER_XL  # noqa: E402
from test_family_timesfm2 import TINY as TIMESFM2_HF  # noqa: E402
from tsprune.errors import UserError  # noqa: E402
from tsprune.model import from_config  # noqa: E402
from tsprune.prune import CostModel, Plan, PruneConfig, apply, score  # noqa: E402
from tsprune.prune import width as width_mod  # noqa: E402
from tsprune.prune.budget import forecast_profile  # noqa: E402
from tsprune.prune.masks import HIDDEN, MaskSet  # noqa: E402

FAST = dict(macro_batch=32, batch_size=16, min_steps=2, val_samples=16, calib_samples=96)
# odd shapes: a residual width of 40 with 4 heads of 16 and 72 FFN neurons
ODD = {**TINY_TIMESFM25, "hidden_size": 40, "intermediate_size": 72}
# PatchTST (d_model 32): PATCHTST is pre-norm BatchNorm with a flattened head (11 patches);
# post-norm LayerNorm with a class token and mean pooling; post-norm BatchNorm with a random
# positional table, max pooling and an unshared (one-channel) embedding
PATCHTST_LN = {**PATCHTST, "norm_type": "layernorm", "pre_norm": False, "use_cls_token": True,
               "pooling_type": "mean", "scaling": "mean"}
PATCHTST_POST_BN = {**PATCHTST, "pre_norm": False, "positional_encoding_type": "random",
                    "pooling_type": "max", "share_embedding": False}
# (context, horizon) of the forecasts compared, per family (PatchTST: 40 > 24 rolls out)
SHAPES = {"timesfm2_5": (512, 96), "patchtst": (96, 40), "timer_xl": (96, 40), "timesfm2": (256, 100)}
# TimesFM 2.0 (hidden 64, 4 heads of 16, FFN 96, patches of 32, 64 steps per position)
TIMESFM2 = {**TIMESFM2_HF, "model_type": "timesfm"}
# Timer-XL (hidden 32, patches of 8, heads of 8 and 16 steps), odd: hidden 24 (4 heads of 6)
TIMER_XL_ODD = {**TIMER_XL, "hidden_size": 24, "num_hidden_layers": 3, "intermediate_size": 40}


def _tiny(cfg: dict, seed: int = 0):
    """from_config(cfg), seeded, with random LayerNorm / BatchNorm weights, biases and running
    statistics (the defaults 1 and 0 would hide a norm that maps a pruned zero to non-zero)."""
    torch.manual_seed(seed)
    m = from_config(copy.deepcopy(cfg))
    with torch.no_grad():
        for mod in m.module.modules():
            if isinstance(mod, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 2.0)
    return m


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
    return Plan(m.family.name, ms.to_json(), n, n)


def _with_norm_scale(m, scale: str):
    """``m``'s family with HiddenWidth.norm_scale = ``scale`` (an instance attribute only)."""
    fam = m.family
    orig = type(fam).hidden_width
    fam.hidden_width = lambda module: dataclasses.replace(orig(fam, module), norm_scale=scale)
    return fam


def _assert_width(fam, module, keep: int) -> None:
    """Every tensor the family's HiddenWidth names has ``keep`` channels."""
    hw = fam.hidden_width(module)
    assert hw.size == keep
    for path in hw.writes:
        assert module.get_submodule(path).out_features == keep
    for path, repeats in hw.readers().items():
        assert module.get_submodule(path).in_features == repeats * keep
    for path in hw.norms:
        norm = module.get_submodule(path)
        assert all(getattr(norm, n).shape == (keep,) for n in width_mod._norm_tensors(norm))
    for path in hw.vectors:
        assert width_mod._vector(module, path)[2].shape[-1] == keep


@pytest.mark.parametrize("scale", ["kept", "dense"])
@pytest.mark.parametrize("cfg,keep,channels,dead", [
    (TINY_TIMESFM25, 37, 0.0, False),
    (TINY_TIMESFM25, 21, 0.2, True),
    (ODD, 13, 0.3, False),
    ({**ODD, "force_flip_invariance": True}, 1, 0.1, True),
    (PATCHTST, 19, 0.2, True),
    (PATCHTST_LN, 11, 0.2, True),
    (PATCHTST_POST_BN, 1, 0.1, False),
    (TIMER_XL, 17, 0.2, True),
    (TIMER_XL_ODD, 1, 0.1, False),
    (TIMESFM2, 29, 0.2, True),
    (TIMESFM2, 1, 0.1, False),
], ids=["hidden-only", "with-channels-and-dead-groups", "odd-shapes", "one-channel-flip",
        "patchtst-batchnorm-flat-head", "patchtst-layernorm-cls", "patchtst-postnorm-one-channel",
        "timer_xl-dead-groups", "timer_xl-odd-one-channel", "timesfm2-dead-groups", "timesfm2-one-channel"])
def test_sliced_equals_masked(cfg, keep, channels, dead, scale):
    """The model sliced to ``keep`` residual channels forecasts (point and quantiles) what the
    masked model does, under either normalisation choice, and has the width everywhere."""
    m = _tiny(cfg)
    fam = _with_norm_scale(m, scale)
    try:
        d = fam.hidden_width(m.module).size
        plan = _hidden_plan(m, keep, channels, dead=dead)
        ctx, horizon = SHAPES[fam.name]
        x = context_batch(3, ctx)
        want = plan_forecast(m, plan, x, horizon)
        p = apply(m, plan)
        got = p.forecast(x, horizon)
        assert torch.allclose(got.point, want.point, atol=2e-5, rtol=1e-5)
        assert (got.quantiles is None) == (want.quantiles is None)
        if got.quantiles is not None:
            assert torch.allclose(got.quantiles, want.quantiles, atol=2e-5, rtol=1e-5)
        assert p.manifest["hidden"] == {"size": keep, "dense": d}
        _assert_width(fam, p.module, keep)
        assert sum(x.numel() for x in p.module.parameters()) == p.num_params() < m.num_params()
        if dead:
            assert p.describe()[1]["heads"] == 0 and p.describe()[1]["ffn"] == 0
    finally:
        del fam.hidden_width


@pytest.mark.parametrize("cfg", [PATCHTST, PATCHTST_LN, TINY_TIMESFM25, TIMER_XL_ODD, TIMESFM2],
                         ids=["batchnorm", "layernorm", "timesfm2_5", "timer_xl", "timesfm2"])
def test_pruning_a_pruned_model_again_equals_masked(cfg):
    """A model whose layer-1 attention and FFN collapsed to Constants (biased, in PatchTST)
    and whose width was cut once is cut again: sliced == masked (the mask gates the
    Constants' outputs)."""
    m = _tiny(cfg)
    size = m.family.hidden_width(m.module).size
    p = apply(m, _hidden_plan(m, size - 5, 0.1, dead=True))
    assert p.family.hidden_width(p.module).constants
    plan = _hidden_plan(p, size // 2, 0.1, seed=4)
    ctx, horizon = SHAPES[m.family.name]
    x = context_batch(2, ctx)
    want = plan_forecast(p, plan, x, horizon).point
    got = apply(p, plan)
    assert torch.allclose(got.forecast(x, horizon).point, want, atol=2e-5, rtol=1e-5)
    assert got.manifest["hidden"] == {"size": size // 2, "dense": size}


@pytest.mark.parametrize("cfg", [TINY_TIMESFM25, PATCHTST, PATCHTST_LN, TIMER_XL, TIMESFM2],
                         ids=["timesfm2_5", "patchtst", "patchtst-ln", "timer_xl", "timesfm2"])
def test_masked_hidden_channels_change_the_forecast(cfg):
    """The shared mask reaches the output (the parity above is not trivially true)."""
    m = _tiny(cfg)
    plan = _hidden_plan(m, m.family.hidden_width(m.module).size // 2)
    x = context_batch(2, SHAPES[m.family.name][0])
    assert (plan_forecast(m, plan, x, 64).point - m.forecast(x, 64).point).abs().max() > 1e-3


@pytest.mark.parametrize("cfg", [TINY_TIMESFM25, PATCHTST, PATCHTST_LN, TIMER_XL, TIMESFM2],
                         ids=["timesfm2_5", "patchtst", "patchtst-ln", "timer_xl", "timesfm2"])
def test_one_pack_call_for_the_whole_width(monkeypatch, cfg):
    """Every tensor of one width change (writers' rows and biases, readers' columns, norms'
    weights, biases and running statistics, Constants' biases, positional tables and class
    tokens) is gathered by a single tsprune.ops.pack call, on a model with Constants."""
    m = _tiny(cfg)
    size = m.family.hidden_width(m.module).size
    m = apply(m, _hidden_plan(m, size, 0.0, dead=True))   # layer 1 collapsed, width unchanged
    hw = m.family.hidden_width(m.module)
    assert hw.constants
    calls = []
    real = width_mod.ops.pack

    def counting(tensors, rows, cols, **kw):
        calls.append(len(tensors))
        return real(tensors, rows, cols, **kw)

    def per_channel(path):  # a module's own tensors of one entry per channel
        mod = m.module.get_submodule(path)
        return sum(t.shape == (size,) for t in [*mod.parameters(recurse=False), *mod.buffers(recurse=False)])

    want = (sum(1 + (m.module.get_submodule(p).bias is not None) for p in hw.writes) + len(hw.readers())
            + sum(per_channel(p) for p in (*hw.norms, *hw.constants)) + len(hw.vectors))
    monkeypatch.setattr(width_mod.ops, "pack", counting)
    width_mod.slice_hidden(m.module, m.family, hw, torch.tensor([0, 3, 5, size - 1]))
    assert calls == [want]
    _assert_width(m.family, m.module, 4)
    assert m.forecast(context_batch(2, SHAPES[m.family.name][0]), 8).point.isfinite().all()


def test_slice_hidden_keeps_at_least_one_channel():
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    with pytest.raises(ValueError, match="at least one"):
        width_mod.slice_hidden(m.module, m.family, m.family.hidden_width(m.module),
                               torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("cfg,keep", [({**TINY_TIMESFM25, "force_flip_invariance": True}, 23),
                                      (PATCHTST, 13), (PATCHTST_LN, 9), (TIMER_XL_ODD, 11), (TIMESFM2, 23)],
                         ids=["timesfm2_5", "patchtst-batchnorm", "patchtst-layernorm-cls", "timer_xl", "timesfm2"])
def test_save_reload_and_replay(tmp_path, cfg, keep):
    """A model with an uneven channel cut, dead groups and ``keep`` residual channels saves
    (config.json keeps the dense width; the manifest the kept one; BatchNorm statistics at
    the kept width) and reloads without pickle to identical forecasts; its plan replays on a
    fresh copy; pruning it again keeps the dense width on record."""
    m = _tiny(cfg)
    d = m.family.hidden_width(m.module).size
    plan = _hidden_plan(m, keep, 0.2, dead=True)
    p = apply(m, plan)
    ctx, horizon = SHAPES[m.family.name]
    q = reloads_and_replays(m, plan, p, context_batch(3, ctx), horizon + 104, tmp_path)
    assert q.manifest["hidden"] == {"size": keep, "dense": d}
    _assert_width(q.family, q.module, keep)
    again = apply(q, _hidden_plan(q, keep // 2, 0.0, seed=3))
    assert again.manifest["hidden"] == {"size": keep // 2, "dense": d}
    assert apply(q, Plan(m.family.name, MaskSet(q.module, q.family.structure(q.module).linears()).to_json(),
                         0, 0)).manifest["hidden"] == {"size": keep, "dense": d}


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


@pytest.mark.parametrize("cfg,outputs", [(PATCHTST, ("point",)), (PATCHTST_LN, ("point",)), (TIMER_XL, ("point",)),
                                         (TIMESFM2, ("point", "quantiles"))],
                         ids=["patchtst-batchnorm-flat-head", "patchtst-layernorm-cls", "timer_xl", "timesfm2"])
def test_onnx_parity_reference_graph(tmp_path, cfg, outputs):
    """The family's graph (its reference forecast, rolled out past one forward's horizon)
    with 13 residual channels matches PyTorch in ONNX Runtime."""
    m = _tiny(cfg)
    p = apply(m, _hidden_plan(m, 13, 0.2, dead=True))
    exports_to_onnx(p, tmp_path / "m.onnx", *SHAPES[m.family.name], outputs=outputs)


# ---- budgets -------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["timesfm2_5", "patchtst", "timer_xl", "timesfm2"])
def task(request):
    """(model, train, val) per family: a tiny seeded model and small window sets (context
    128 / 96, horizon 24)."""
    if request.param == "timesfm2_5":
        return tiny_task(900, 96)
    windows = [two_series_windows(n, 96, 24, stride=4, seed=s, periods=(4, 9), trend=0.05)
               for n, s in ((500, 0), (300, 1))]
    # Timer-XL's published init (N(0, 0.02)) makes every block's output tiny beside the
    # post-normed stream: its residual channels would all outrank the blocks' units
    cfg = {"patchtst": PATCHTST, "timer_xl": {**TIMER_XL, "initializer_range": 0.2},
           "timesfm2": TIMESFM2}[request.param]
    return (_tiny(cfg), *windows)


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
    assert 1 <= kept < masks.hidden.size
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


@pytest.mark.parametrize("cfg", [PATCHTST, TIMESFM2], ids=["patchtst", "timesfm2"])
def test_scorers_agree_where_writes_depend_on_no_input(cfg):
    """Outputs the mask gates that depend on no input under frozen weights (the Constants of
    collapsed groups, TimesFM 2.0's frequency embedding) are scored by both scorers."""
    m = _tiny(cfg)
    p = apply(m, _hidden_plan(m, m.family.hidden_width(m.module).size, 0.0, dead=True))
    assert p.family.hidden_width(p.module).constants
    train, val = (two_series_windows(n, 96, 24, stride=4, seed=s, periods=(4, 9), trend=0.05)
                  for n, s in ((300, 0), (200, 1)))
    cfg = dict(budget="params=0.7", hidden=True, **FAST)
    a = score(p, train, val, PruneConfig(scorer="fused", **cfg), show_progress=False)
    b = score(p, train, val, PruneConfig(scorer="reference", **cfg), show_progress=False)
    assert a.masks == b.masks and a.masks[HIDDEN]["out"]


# ---- families that cannot ------------------------------------------------------------------
def test_family_without_hidden_width_says_so():
    torch.manual_seed(0)
    m = from_config(copy.deepcopy(MOIRAI))
    with pytest.raises(UserError, match="hidden-width pruning is not supported for moirai"):
        m.family.hidden_width(m.module)
    with pytest.raises(UserError, match="--prune-hidden"):
        score(m, None, None, PruneConfig(hidden=True, budget="params=0.5"), show_progress=False)


def test_timesfm2_with_a_positional_embedding_says_so():
    m = _tiny({**TIMESFM2, "use_positional_embedding": True})
    with pytest.raises(UserError, match="use_positional_embedding"):
        m.family.hidden_width(m.module)


def test_cli_prune_hidden_on_an_unsupported_family_is_one_line(tmp_path):
    torch.manual_seed(0)
    from_config(copy.deepcopy(MOIRAI)).save(tmp_path / "moirai")
    one_line_error(cli("prune", "--model", tmp_path / "moirai", "--context", 96, "--horizon", 24,
                       "--prune-hidden", "--budget", "params=0.5", "--out", tmp_path / "o", "--quiet"),
                   "--prune-hidden", "moirai")
    assert not (tmp_path / "o").exists()


def test_config_flag_is_checked():
    with pytest.raises(UserError, match="--prune-hidden"):
        PruneConfig(hidden="yes")
