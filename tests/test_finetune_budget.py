"""Budgeted fine-tuning by validation (issue 20): validation every k steps, best weights
kept, patience in validations, time budget, lr probes over one grid, validation at the
requested horizon rolled out past the output patch, the paper's recipe still reachable."""
from __future__ import annotations

import sys

import pytest
import torch
from helpers import TINY_TIMESFM25, one_thread, synthetic_frame, tiny_task  # noqa: F401  (one_thread: autouse)

import tsprune.train.finetune  # noqa: F401
from tsprune.errors import UserError
from tsprune.train import FinetuneConfig, finetune
from tsprune.train.lr_grid import default_lr_grid
from tsprune.train.validation import forecast_mse

ftmod = sys.modules["tsprune.train.finetune"]  # the package re-exports the function


@pytest.fixture(scope="module")
def task():
    return tiny_task(1400, 96, val=32)  # 96 train windows: 6 steps of 16 per epoch


def _scripted_validation(monkeypatch, values, model):
    """Replace the validation figure by ``values`` in call order; snapshot the weights at
    every call (call 0 is the starting weights)."""
    snaps, calls = [], {"n": 0}

    def fake(m, val, metric="forecast_mse", batch_size=256):
        snaps.append({k: v.detach().clone() for k, v in model.module.state_dict().items()})
        v = values[min(calls["n"], len(values) - 1)]
        calls["n"] += 1
        return v
    monkeypatch.setattr(ftmod, "validate", fake)
    return snaps


def test_early_stopping_keeps_the_best_weights(task, monkeypatch):
    m, train, val = task
    model = m.clone()
    # start 1.0; validations after steps 2, 4, 6, 8, 10: best at step 4, then worse twice
    snaps = _scripted_validation(monkeypatch, [1.0, 0.9, 0.8, 0.85, 0.95, 0.7], model)
    cfg = FinetuneConfig(lr=(1e-3,), epochs=5, batch_size=16, val_every=2, patience=2,
                         lr_probe_steps=0, val_samples=None)
    r = finetune(model, train, val, cfg, show_progress=False)
    assert r.stopped == "patience" and r.best_step == 4 and r.steps_run == 8
    assert [h["step"] for h in r.history] == [2, 4, 6, 8]
    assert r.val_loss == 0.8 and r.val_loss_before == 1.0
    best = snaps[2]  # the weights validated at step 4
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, best[k]), k
    assert not all(torch.equal(v, snaps[-1][k]) for k, v in model.module.state_dict().items())


def test_a_plateau_goes_back_to_the_best_weights_at_a_tenth_of_the_rate(task, monkeypatch):
    m, train, val = task
    model = m.clone()
    # start 1.0; steps 2, 4, 6, 8: best at 4, worse twice (plateau: back to step 4's
    # weights, lr 1e-4); steps 10, 12: a new best at 10, then worse twice: stop at 14
    snaps = _scripted_validation(monkeypatch, [1.0, 0.9, 0.8, 0.85, 0.95, 0.75, 0.76, 0.77], model)
    cfg = FinetuneConfig(lr=(1e-3,), epochs=5, batch_size=16, val_every=2, patience=2,
                         lr_probe_steps=0, val_samples=None, plateau_decays=1)
    r = finetune(model, train, val, cfg, show_progress=False)
    assert [(h["step"], h["lr"]) for h in r.history] == [
        (2, 1e-3), (4, 1e-3), (6, 1e-3), (8, 1e-3), (10, 1e-4), (12, 1e-4), (14, 1e-4)]
    assert r.stopped == "patience" and r.best_step == 10 and r.val_loss == 0.75
    assert r.trials[-1]["plateau_decays"] == 1
    for k, v in model.module.state_dict().items():   # the best weights: validated at step 10
        assert torch.equal(v, snaps[5][k]), k
    # the run went on from step 4's weights: two steps at lr 1e-4 from there, not from step 8's
    moved = {k: (snaps[5][k] - snaps[2][k]).abs().max() for k in snaps[2]}
    after8 = {k: (snaps[5][k] - snaps[4][k]).abs().max() for k in snaps[2]}
    assert sum(float(x) for x in moved.values()) < sum(float(x) for x in after8.values())


def test_nothing_improves_keeps_the_starting_weights(task, monkeypatch):
    m, train, val = task
    model = m.clone()
    start = {k: v.clone() for k, v in model.module.state_dict().items()}
    _scripted_validation(monkeypatch, [1.0, 1.1, 1.2], model)
    cfg = FinetuneConfig(lr=(1e-3,), epochs=3, batch_size=16, val_every=3, patience=2,
                         lr_probe_steps=0, val_samples=None)
    r = finetune(model, train, val, cfg, show_progress=False)
    assert r.best_step == 0 and r.val_loss == 1.0 and r.stopped == "patience"
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_time_budget_stops_the_run(task):
    m, train, val = task
    cfg = FinetuneConfig(lr=(1e-3,), epochs=1000, batch_size=16, val_every=0, patience=1000,
                         lr_probe_steps=0, val_samples=8, time_budget_s=1.0)
    r = finetune(m.clone(), train, val, cfg, show_progress=False)
    assert r.stopped == "budget"
    assert 0 < r.steps_run < 1000 * 6
    assert r.history[-1]["step"] == r.steps_run  # the last steps were validated too
    assert r.seconds < 20


def test_probes_choose_the_lr_for_the_full_run(task, monkeypatch):
    m, train, val = task
    model = m.clone()
    # v0, probe lr 1e-5, probe lr 1e-3 (better), then the full run's validations
    _scripted_validation(monkeypatch, [1.0, 0.95, 0.5, 0.6, 0.55, 0.58, 0.59], model)
    cfg = FinetuneConfig(lr=(1e-5, 1e-3), epochs=2, batch_size=16, val_every=3, patience=2,
                         lr_probe_steps=2, val_samples=None)
    r = finetune(model, train, val, cfg, show_progress=False)
    probes = [t for t in r.trials if "probe_steps" in t]
    assert [(t["lr"], t["steps"], t["val_loss"]) for t in probes] == [(1e-5, 2, 0.95), (1e-3, 2, 0.5)]
    assert r.lr == 1e-3 and len(r.trials) == 3 and "probe_steps" not in r.trials[-1]
    assert r.history and all("probe" not in h for h in r.history)


def test_rolled_out_validation_when_horizon_exceeds_the_output_patch():
    from tsprune.data import DataConfig, prepare_frame
    from tsprune.model import TSModel, from_config
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    out_patch = m.family.output_horizon(m.module)
    data = prepare_frame(synthetic_frame(n=3000, channels=1),
                         DataConfig(None, split="0.7,0.1,0.2", context=128, horizon=24))
    H = out_patch + 32
    train, val = data.windows("train").subset(48), data.windows("val", horizon=H)
    seen = []
    orig = TSModel.forecast

    def spy(self, context, horizon, **kw):
        seen.append(horizon)
        return orig(self, context, horizon, **kw)
    model = m.clone()
    v_ref = forecast_mse(model, val.subset(8, seed=1))
    TSModel.forecast = spy
    try:
        r = finetune(model, train, val, FinetuneConfig(lr=(1e-4,), epochs=1, batch_size=16,
                                                       lr_probe_steps=0, val_samples=8),
                     show_progress=False)
    finally:
        TSModel.forecast = orig
    assert seen and set(seen) == {H}
    assert r.val_horizon == H and r.rolled_out and r.val_metric == "forecast_mse"
    assert r.val_loss_before == pytest.approx(v_ref, rel=1e-6)


def test_the_papers_one_epoch_recipe_is_reachable(task):
    m, train, val = task
    cfg = FinetuneConfig(lr=(3e-5,), epochs=1, patience=1, val_every=0, lr_probe_steps=0,
                         val_metric="loss", batch_size=16, val_samples=None)
    r = finetune(m.clone(), train, val, cfg, show_progress=False)
    assert len(r.history) == 1 and r.history[0]["epoch"] == 1 and r.history[0]["step"] == 6
    assert r.epochs_run == 1 and r.stopped in ("epochs", "patience") and len(r.trials) == 1


def test_default_grid_reaches_ten_times_the_family_grid():
    from tsprune.families.timesfm2_5 import TimesFm25 as Fam
    g = default_lr_grid(Fam)
    assert g == (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)


def test_weight_ema_validates_keeps_and_returns_the_moving_average(task, monkeypatch):
    """The live weights train as without the average; what is validated and returned is
    the average of the weights after every step, decay min(d, (1 + n) / (10 + n))."""
    m, train, val = task
    steps = []
    from torch.optim.optimizer import register_optimizer_step_post_hook
    hook = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: steps.append({k: v.detach().clone() for k, v in plain.module.state_dict().items()}))
    try:
        plain = m.clone()
        _scripted_validation(monkeypatch, [1.0 - 0.01 * i for i in range(20)], plain)  # always better
        cfg = dict(lr=(1e-3,), epochs=2, batch_size=16, val_every=4, patience=2, lr_probe_steps=0,
                   val_samples=None)
        finetune(plain, train, val, FinetuneConfig(**cfg), show_progress=False)
        live = [dict(s) for s in steps]
        steps.clear()
        averaged = m.clone()
        plain = averaged  # the hook records the averaged run's live weights too
        snaps = _scripted_validation(monkeypatch, [1.0 - 0.01 * i for i in range(20)], averaged)
        r = finetune(averaged, train, val, FinetuneConfig(**cfg, weight_ema=0.9), show_progress=False)
    finally:
        hook.remove()
    assert len(live) == len(steps) == r.steps_run == 12
    for a, b in zip(live, steps):  # the average does not change the training itself
        for k in a:
            assert torch.equal(a[k], b[k]), k
    ref = {k: v.clone() for k, v in m.module.state_dict().items()}
    for n, s in enumerate(live):
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in ref.items():
            v.copy_(d * v + (1 - d) * s[k]) if v.is_floating_point() else v.copy_(s[k])
        if n + 1 in (4, 8, 12):  # validated: the average, not the live weights
            for k, v in ref.items():
                assert torch.allclose(snaps[(n + 1) // 4][k], v, atol=1e-6), (n, k)
    for k, v in averaged.module.state_dict().items():  # returned: the last (best) average
        assert torch.allclose(v, ref[k], atol=1e-6), k
    assert not all(torch.allclose(v, live[-1][k], atol=1e-6) for k, v in averaged.module.state_dict().items())


@pytest.mark.parametrize("field,value,flag", [
    ("val_every", -1, "--val-every"), ("time_budget_s", 0, "--finetune-budget"),
    ("time_budget_s", float("nan"), "--finetune-budget"), ("lr_probe_steps", -2, "--lr-probe-steps"),
    ("val_metric", "mae", "--val-metric"), ("patience", 0, "--finetune-patience"),
    ("val_every", True, "--val-every"), ("plateau_decays", -1, "--plateau-decays"),
    ("weight_ema", 1.0, "--finetune-ema"), ("weight_ema", -0.1, "--finetune-ema")])
def test_bad_config_values_name_the_flag(field, value, flag):
    with pytest.raises(UserError) as e:
        FinetuneConfig(**{field: value})
    assert flag in str(e.value) and "\n" not in str(e.value)
