"""Pruning to a budget (tsprune.prune.budget, tsprune.prune.to_budget): parse errors, exact
budgets on nano and tiny TimesFM 2.0 / PatchTST / Timer-XL, the cost accounting against
surgery, the torch FLOP counter and ONNX graphs, nested plans, criteria, determinism and
resume."""
from __future__ import annotations

import json
import random

import pytest
import torch

pytest.importorskip("transformers")

from helpers import (TINY_TIMESFM25, cli, context_batch, exports_to_onnx, one_line_error,  # noqa: E402
                     reloads_and_replays, sine_windows, two_series_windows)
from tsprune.errors import UserError  # noqa: E402
from tsprune.model import TSModel, from_config, load  # noqa: E402
from tsprune.prune import Budget, CostModel, PruneConfig, apply, score, score_to_budgets  # noqa: E402
from tsprune.prune.budget import forecast_profile  # noqa: E402
from tsprune.prune.masks import MaskSet  # noqa: E402

FAST = dict(macro_batch=32, batch_size=16, min_steps=2, val_samples=16)


# ---- the budget string -------------------------------------------------------------------
@pytest.mark.parametrize("text", ["params=1.5", "params=0", "flops=1", "speedup=0.5", "speedup=1",
                                  "params", "params=abc", "latency=0.5", "=0.5", "params=nan", ""])
def test_bad_budgets_are_user_errors(text):
    with pytest.raises(UserError, match="--budget"):
        Budget.parse(text)
    with pytest.raises(UserError, match="--budget"):
        PruneConfig(budget=text)


def test_criterion_without_budget_is_refused_by_score_not_by_the_config(tiny):
    m, train, val = tiny
    cfg = PruneConfig(criterion="magnitude", cost_aware=False, **FAST)   # score_to_budgets' config
    with pytest.raises(UserError, match="--criterion"):
        score(m, train, val, cfg, show_progress=False)
    plan, = score_to_budgets(m, train, val, cfg, ["params=0.95"], show_progress=False)
    assert plan.config["criterion"] == "magnitude" and plan.config["budget"] == "params=0.95"


def test_budget_kinds():
    assert Budget.parse("params=0.4") == Budget("params", 0.4)
    assert (Budget.parse("flops=0.33").measure, Budget.parse("flops=0.33").fraction) == ("flops", 0.33)
    s = Budget.parse(" speedup=4 ")
    assert (s.measure, s.fraction, str(s)) == ("flops", 0.25, "speedup=4")
    assert PruneConfig(budget="params=0.40").budget == "params=0.4"


@pytest.mark.parametrize("args,needle", [
    (["--budget", "params=1.5"], "--budget"),
    (["--budget", "speed=2"], "--budget"),
    (["--budget", "params=0.5", "--criterion", "random"], "--criterion"),
    (["--criterion", "taylor"], "--criterion"),
    (["--no-cost-aware"], "--no-cost-aware"),
    (["--budget", "params=0.5", "--search"], "--search"),
])
def test_cli_budget_errors_are_one_line(tmp_path, args, needle):
    one_line_error(cli("prune", "--out", tmp_path / "out", *args), needle)
    assert not (tmp_path / "out").exists()


# ---- exactness helpers ---------------------------------------------------------------------
def _costs(m, profile):
    structure = m.family.structure(m.module)
    return structure, CostModel(m.module, structure, profile)


def _target(costs, kind: str, share: float) -> float:
    """A kept fraction ``share`` of the way from the unprunable floor to the dense model."""
    ms = MaskSet(costs.module, costs.structure.linears())
    for _, _, x in ms.units():
        x.zero_()
    floor = costs.measure(ms).get(kind) / costs.dense().get(kind)
    return round(floor + share * (1.0 - floor), 3)


def assert_exact(m, plan, costs, kind: str, frac: float, sample: int | None = None):
    """The plan meets the budget, and giving back any one zeroed unit that adds a cost back
    exceeds it (checked on every zeroed unit, or on ``sample`` of them). ``costs`` is the
    CostModel of the model that was scored (m with the plan's extra units applied)."""
    masks = MaskSet.from_json(costs.module, plan.masks)
    target = int(frac * costs.dense().get(kind))
    now = costs.measure(masks)
    assert now.get(kind) <= target
    assert plan.config["measured"]["params"] == now.params == apply(m, plan).num_params()
    units = [(p, s, i) for p, s, x in masks.units() for i in torch.nonzero(x == 0).flatten().tolist()]
    assert units
    if sample is not None and len(units) > sample:
        units = random.Random(0).sample(units, sample)
    for p, s, i in units:
        masks.get(p, s)[i] = 1.0
        after = costs.measure(masks).get(kind)
        masks.get(p, s)[i] = 0.0
        assert after == now.get(kind) or after > target, (p, s, i, after, target)


# ---- models --------------------------------------------------------------------------------
def _timesfm2():
    from transformers import TimesFmConfig, TimesFmModelForPrediction

    from tsprune.families import get
    torch.manual_seed(0)
    cfg = dict(patch_length=32, context_length=256, horizon_length=64, num_hidden_layers=2,
               hidden_size=64, intermediate_size=96, head_dim=16, num_attention_heads=4)
    return TSModel(get("timesfm2"), TimesFmModelForPrediction(TimesFmConfig(**cfg)).eval()), \
        sine_windows(900, 0, 32, 8, context=256), sine_windows(700, 1, 32, 16, context=256)


def _patchtst():
    torch.manual_seed(0)
    m = from_config(dict(model_type="patchtst", num_input_channels=1, context_length=96, patch_length=16,
                         patch_stride=8, num_hidden_layers=2, d_model=32, num_attention_heads=4, ffn_dim=48,
                         prediction_length=24, pooling_type=None, norm_type="batchnorm"))
    return m, sine_windows(600, 0, 24, 4, context=96), sine_windows(400, 1, 24, 8, context=96)


def _timer_xl():
    torch.manual_seed(0)
    m = from_config({"model_type": "timer", "architectures": ["TimerForPrediction"], "hidden_size": 32,
                     "input_token_len": 8, "intermediate_size": 48, "num_attention_heads": 4,
                     "num_hidden_layers": 2, "output_token_lens": [8, 16], "max_position_embeddings": 10000,
                     "hidden_act": "silu", "rope_theta": 10000, "attention_dropout": 0.0,
                     "initializer_range": 0.02, "use_cache": True})
    return m, two_series_windows(400, 48, 16, stride=2), two_series_windows(300, 48, 16, stride=4, seed=1)


@pytest.mark.parametrize("build", [_timesfm2, _patchtst, _timer_xl], ids=["timesfm2", "patchtst", "timer_xl"])
def test_params_and_flops_budgets_are_met_exactly(build):
    m, train, val = build()
    c, t = train.gather(torch.arange(1))
    profile = forecast_profile(m, c.shape[1], t.shape[1])
    structure, costs = _costs(m, profile)
    for kind in ("params", "flops"):
        frac = _target(costs, kind, 0.5)
        plan = score(m, train, val, PruneConfig(budget=f"{kind}={frac}", **FAST), show_progress=False)
        assert plan.config["measured"]["target"] == pytest.approx(frac)
        assert_exact(m, plan, costs, kind, frac)
        # the FLOPs accounting equals the torch FLOP counter on the pruned model's forecast
        p = apply(m, plan)
        assert forecast_profile(p, c.shape[1], t.shape[1]).total == plan.config["measured"]["flops"]


# ---- nano ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nano():
    m = load("nano")
    train = sine_windows(900, 0, 96, 8, context=512)
    val = sine_windows(800, 1, 96, 32, context=512)
    return m, train.subset(48), val


@pytest.fixture(scope="module")
def nano_profile(nano):
    from tsprune.export.profile import deployed_profile
    return deployed_profile(nano[0], 512, 96)


@pytest.fixture(scope="module")
def nano_plans(nano, nano_profile):
    m, train, val = nano
    return {b: score(m, train, val, PruneConfig(budget=b, **FAST), show_progress=False, profile=nano_profile)
            for b in ("params=0.5", "flops=0.4")}


def test_nano_budgets_met_exactly(nano, nano_profile, nano_plans):
    m = nano[0]
    _, costs = _costs(m, nano_profile)
    assert_exact(m, nano_plans["params=0.5"], costs, "params", 0.5, sample=400)
    assert_exact(m, nano_plans["flops=0.4"], costs, "flops", 0.4, sample=400)
    meas = nano_plans["flops=0.4"].config["measured"]
    assert meas["profile"]["source"] == "optimized graph" and meas["flops_dense"] == nano_profile.total


def test_nano_budget_plan_reloads_and_replays(nano, nano_plans, tmp_path):
    m = nano[0]
    plan = nano_plans["params=0.5"]
    reloads_and_replays(m, plan, apply(m, plan), context_batch(3, 512), 96, tmp_path)
    assert json.loads((tmp_path / "plan.json").read_text())["config"]["measured"]["budget"] == "params=0.5"


@pytest.mark.slow
def test_nano_pruned_onnx_parity_and_flops(nano, nano_plans, tmp_path):
    """The pruned graph forecasts like PyTorch, and its ONNX FLOPs (tsprune.export.flops)
    agree with the budget's accounting within 2% (measured: equal)."""
    from tsprune.export.flops import count_flops
    plan = nano_plans["flops=0.4"]
    p = apply(nano[0], plan)
    exports_to_onnx(p, tmp_path / "m.onnx", 512, 96, outputs=("point", "quantiles"))
    onnx_flops = count_flops(tmp_path / "m.onnx", {"context": 512}).total
    assert abs(onnx_flops / plan.config["measured"]["flops"] - 1) < 0.02


@pytest.mark.slow
def test_dense_flops_profile_matches_the_onnx_graph(tmp_path):
    """Flip invariance (batch 2 inside) and a 2-step rollout: the profile of the optimized
    graph and count_flops of the exported graph agree within 2% (measured: equal)."""
    from tsprune.export import export_onnx
    from tsprune.export.flops import count_flops
    from tsprune.export.profile import deployed_profile
    torch.manual_seed(0)
    m = from_config({**TINY_TIMESFM25, "force_flip_invariance": True})
    prof = deployed_profile(m, 256, 160)
    export_onnx(m, tmp_path / "d.onnx", context=256, horizon=160)
    assert abs(count_flops(tmp_path / "d.onnx", {"context": 256}).total / prof.total - 1) < 0.02
    # the last layer runs Q, O and the MLP on the last patch only (8 patches x 2 flips)
    assert prof.tokens["model.layers.1.mlp.fc1"] == 2 * 2 and prof.tokens["model.layers.0.mlp.fc1"] == 2 * 2 * 8


# ---- several budgets, criteria, determinism, resume ----------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from helpers import tiny_task
    return tiny_task(3000, 128)


def test_score_to_budgets_nested_and_each_met(tiny):
    m, train, val = tiny
    c, t = train.gather(torch.arange(1))
    _, costs = _costs(m, forecast_profile(m, c.shape[1], t.shape[1]))
    fracs = [_target(costs, "params", s) for s in (0.8, 0.3, 0.55)]
    plans = score_to_budgets(m, train, val, PruneConfig(**FAST), [f"params={f}" for f in fracs],
                             show_progress=False)
    for f, plan in zip(fracs, plans):
        if f == max(fracs):   # the first budget met: tight against every zeroed unit
            assert_exact(m, plan, costs, "params", f)
        else:                 # later ones: against the units zeroed since the previous budget
            assert costs.measure(MaskSet.from_json(m.module, plan.masks)).params <= int(f * costs.params_dense)
        assert plan.config["measured"]["params"] == apply(m, plan).num_params()
    zeroed = {f: {(p, s, i) for p, d in plan.masks.items() for s in ("in", "out") for i in d[s]}
              for f, plan in zip(fracs, plans)}
    loose, mid, tight = sorted(fracs, reverse=True)
    assert zeroed[loose] < zeroed[mid] < zeroed[tight]


def test_unreachable_budgets_are_dropped_only_when_asked(tiny):
    """A calibration ladder may reach below what the model can be pruned to (embeddings,
    heads and norms stay): with drop_unreachable those budgets get None, the others their
    plans, identical to a run without the unreachable ones."""
    m, train, val = tiny
    c, t = train.gather(torch.arange(1))
    _, costs = _costs(m, forecast_profile(m, c.shape[1], t.shape[1]))
    ok, below = _target(costs, "params", 0.5), _target(costs, "params", 0.0) / 2
    asked = [f"params={ok}", f"params={below}"]
    with pytest.raises(UserError, match="at least"):
        score_to_budgets(m, train, val, PruneConfig(**FAST), asked, show_progress=False)
    plan, none = score_to_budgets(m, train, val, PruneConfig(**FAST), asked, show_progress=False,
                                  drop_unreachable=True)
    alone, = score_to_budgets(m, train, val, PruneConfig(**FAST), asked[:1], show_progress=False)
    assert none is None and plan.masks == alone.masks
    with pytest.raises(UserError, match="at least"):  # nothing reachable: still an error
        score_to_budgets(m, train, val, PruneConfig(**FAST), asked[1:], show_progress=False,
                         drop_unreachable=True)


@pytest.mark.parametrize("criterion", ["taylor", "magnitude"])
@pytest.mark.parametrize("cost_aware", [True, False])
def test_criteria_give_valid_plans(tiny, criterion, cost_aware):
    m, train, val = tiny
    c, t = train.gather(torch.arange(1))
    _, costs = _costs(m, forecast_profile(m, c.shape[1], t.shape[1]))
    frac = _target(costs, "flops", 0.5)
    plan = score(m, train, val, PruneConfig(budget=f"flops={frac}", criterion=criterion,
                                            cost_aware=cost_aware, **FAST), show_progress=False)
    assert_exact(m, plan, costs, "flops", frac)
    assert plan.config["criterion"] == criterion and plan.config["cost_aware"] == cost_aware
    x = context_batch(2, 128)
    assert torch.isfinite(apply(m, plan).forecast(x, 24).point).all()


def test_same_seed_same_plan_and_resume(tiny, tmp_path):
    m, train, val = tiny
    cfg = PruneConfig(budget="params=0.9", **FAST)
    a = score(m, train, val, cfg, show_progress=False)
    b = score(m, train, val, cfg, show_progress=False)
    assert a.masks == b.masks and a.params_pruned == b.params_pruned
    assert score(m, train, val, PruneConfig(budget="params=0.9", **{**FAST, "seed": 1}),
                 show_progress=False).masks != a.masks

    class Stop(Exception):
        pass

    def interrupt(rec):
        if rec.get("step") == 2:
            raise Stop

    with pytest.raises(Stop):
        score(m, train, val, cfg, show_progress=False, log=interrupt, checkpoint=tmp_path / "ck")
    steps = []
    c = score(m, train, val, cfg, show_progress=False, log=steps.append, checkpoint=tmp_path / "ck")
    assert c.masks == a.masks
    assert [r.get("step") for r in steps if "step" in r][0] == 2   # step 1 was not scored again


# ---- torch.distributed -------------------------------------------------------------------
def _dist_plans():
    from helpers import tiny_task
    m, train, val = tiny_task(1200, 256)
    return [score(m, train, val, PruneConfig(budget="params=0.9", criterion=c, batch_size=32, min_steps=4,
                                             val_samples=None), show_progress=False).masks
            for c in ("taylor_fisher", "taylor")]


def _dist_worker(rank, world, port, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        plans = _dist_plans()
        with open(f"{out}.{rank}", "w") as f:
            json.dump(plans, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_give_the_single_process_budget_plans(tmp_path):
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "plans")
    mp.spawn(_dist_worker, args=(2, port, out), nprocs=2, join=True)
    ranks = [json.loads(open(f"{out}.{r}").read()) for r in range(2)]
    assert ranks[0] == ranks[1]
    assert ranks[0] == json.loads(json.dumps(_dist_plans()))


# ---- a speed-up budget is reported as measured in the deployed graph -----------------------
def test_speedup_budget_reports_the_measured_speedup_of_the_exported_graph(tmp_path):
    """`--budget speedup=S --export onnx`: the report says what ONNX Runtime measured for the
    exported graph against the dense one (interleaved), and whether S was met."""
    pytest.importorskip("onnxruntime")
    from helpers import save_tiny_timesfm25, synthetic_frame

    tiny_dir = save_tiny_timesfm25(tmp_path / "tiny")
    csv = tmp_path / "series.csv"
    synthetic_frame(n=1200, channels=1).to_csv(csv, index=False)
    out = tmp_path / "X"
    rc, _, err = cli("prune", "--model", tiny_dir, "--data", csv, "--context", 128, "--horizon", 24,
                     "--split", "0.7,0.1,0.2", "--budget", "speedup=1.5", "--export", "onnx",
                     "--export-model", "tsfm", "--out", out, "--quiet", "--no-dlinear",
                     "--calib-samples", 128, "--val-samples", 64, "--train-samples", 128,
                     "--finetune-epochs", 1, "--lr-probe-steps", 0, "--test-stride", 5)
    assert rc == 0, err
    rep = json.loads((out / "report.json").read_text())
    sp = rep["prune"]["speedup"]
    assert sp["target"] == 1.5 and sp["batch"] == 64 and sp["threads"] == 1
    assert sp["measured"] > 0 and sp["met"] == (sp["measured"] >= 1.5)
    assert abs(sp["measured"] - sp["dense_ms"] / sp["pruned_ms"]) < 0.05 * sp["measured"]
    # medians over independent passes; each pass's own ratio is kept and named in the report
    from tsprune.export.speed import PASSES
    assert len(sp["passes"]) == PASSES == 3 and min(sp["passes"]) <= sp["measured"] * 1.001
    assert max(sp["passes"]) >= sp["measured"] * 0.999
    md = (out / "report.md").read_text()
    assert f"{sp['measured']:.2f}x" in md and "target 1.5x" in md and "medians over 3 passes" in md
    assert not (out / "checkpoints").exists()  # the dense graph went with the checkpoints
    # the FLOPs kept were calibrated on exported candidates, loosest first, until one was fast enough
    from tsprune.export.calibrate import candidates
    cal = rep["prune"]["calibration"]
    tried = [t["candidate"] for t in cal["calibration"]]
    assert tried == candidates(1.5)[:len(tried)]
    assert all(t["speedup"] < 1.5 * 1.02 for t in cal["calibration"][:-1])
    assert cal["met"] == any(t["speedup"] >= 1.5 for t in cal["calibration"])
    assert rep["prune"]["config"]["budget"] == cal["candidate"]
    assert rep["prune"]["budget"]["kept_flops"] <= Budget.parse(cal["candidate"]).fraction + 1e-9
    assert "Speed-up calibration" in md and cal["candidate"] in md


def test_calibration_stops_at_the_first_fast_enough_candidate_and_skips_unreachable_ones():
    from tsprune.export.calibrate import MARGIN, calibrate, candidates
    ladder = candidates(2.0)
    assert ladder[0] == "flops=0.5" and all(Budget.parse(c).fraction < 0.5 for c in ladder[1:])
    seen = []

    def speed(c, attempt=0):  # a graph with fixed work: speed-up 1 / (0.3 + 0.7 x FLOPs kept)
        seen.append(c)
        return 1.0 / (0.3 + 0.7 * Budget.parse(c).fraction)

    res = calibrate(2.0, [ladder[0], None, *ladder[2:]], speed)
    assert seen[0] == ladder[0] and ladder[1] not in seen       # None: unreachable, never timed
    assert res["met"] and res["candidate"] == seen[-1] and speed(seen[-1]) >= 2.0 * (1 + MARGIN)
    assert all(t["speedup"] < 2.0 * (1 + MARGIN) for t in res["calibration"][:-1])
    res = calibrate(2.0, ladder, lambda c, a: 1.5 - abs(Budget.parse(c).fraction - 0.3))
    assert not res["met"] and len(res["calibration"]) == len(ladder)
    assert res["candidate"] == max(res["calibration"], key=lambda t: t["speedup"])["candidate"]
    # a margin (2% by default, for prune and frontier alike) asks for a little more than the target
    res = calibrate(2.0, ladder, lambda c, a: 2.01, margin=0.0)
    assert res["met"] and res["candidate"] == ladder[0]
    res = calibrate(2.0, ladder, lambda c, a: 2.01)
    assert MARGIN == 0.02 and res["met"] and len(res["calibration"]) == len(ladder)


def test_calibration_confirms_a_fast_enough_candidate_by_the_median_of_three_timings():
    """One lucky timing must not pick the plan: a candidate whose first timing reaches the
    target is timed CONFIRM more times and chosen only if the median of its timings does."""
    from tsprune.export.calibrate import CONFIRM, MARGIN, calibrate, candidates
    ladder = candidates(3.0)
    script = {ladder[0]: [2.5], ladder[1]: [3.08, 2.83, 2.90], ladder[2]: [3.2, 3.0, 3.15]}
    calls = []

    def speed(c, attempt):
        calls.append(c)
        assert attempt == sum(x == c for x in calls) - 1  # 0, 1, 2 for one candidate's timings
        return script[c][attempt]

    res = calibrate(3.0, ladder, speed)
    assert CONFIRM == 2 and MARGIN == 0.02
    assert calls == [ladder[0], ladder[1], ladder[1], ladder[1], ladder[2], ladder[2], ladder[2]]
    assert res["met"] and res["candidate"] == ladder[2]
    assert res["calibration"] == [
        {"candidate": ladder[0], "speedup": 2.5},                                   # slow: timed once
        {"candidate": ladder[1], "speedup": 2.9, "passes": [3.08, 2.83, 2.9]},       # lucky once: rejected
        {"candidate": ladder[2], "speedup": 3.15, "passes": [3.2, 3.0, 3.15]}]       # median 3.15 >= 3.06
    # nothing confirmed: the fastest median is chosen and the budget is reported as not met
    script = {c: [3.1, 2.9, 2.95] for c in ladder}
    calls.clear()
    res = calibrate(3.0, ladder, speed)
    assert not res["met"] and len(calls) == 3 * len(ladder) and res["calibration"][0]["speedup"] == 2.95
    # confirm=0 is the single-timing search
    calls.clear()
    assert calibrate(3.0, ladder, speed, confirm=0)["candidate"] == ladder[0] and len(calls) == 1
