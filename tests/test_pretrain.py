"""Tests of tsprune.pretrain: corpus, config validation, a tiny run, exact resume."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from tsprune.errors import UserError
from tsprune.pretrain import PretrainConfig, add_cli_arguments, from_args, run
from tsprune.pretrain import corpus


# ----------------------------------------------------------------------------- corpus
def test_make_batch_is_a_function_of_seed_and_step():
    a = corpus.make_batch(3, 7, 16, 640)
    b = corpus.make_batch(3, 7, 16, 640)
    c = corpus.make_batch(3, 8, 16, 640)
    d = corpus.make_batch(4, 7, 16, 640)
    assert a.shape == (16, 640) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert np.isfinite(a).all()


def test_sources_are_finite_and_varied():
    ks = corpus.kernel_synth(32, 640, seed=1)
    st = corpus.structural(64, 640, corpus.rng_for(1, 0))
    for x in (ks, st):
        assert np.isfinite(x).all()
        assert (x.std(1) > 0).mean() > 0.95
    assert np.array_equal(corpus.kernel_synth(4, 640, seed=1, start=2), ks[2:6])
    mix = corpus.tsmixup(st, corpus.rng_for(0))
    assert mix.shape == st.shape and np.isfinite(mix).all()


def test_kernel_bank_covers_kinds_and_periods():
    rng = corpus.rng_for(0, 9)
    seen_kinds, seen_periods = set(), set()
    for _ in range(400):
        terms, names = corpus.random_kernel_terms(128, rng)
        seen_kinds.update(n for n in names if n not in "+*")
        for t in terms:
            seen_periods.update(t.periods)
    assert seen_kinds == set(corpus.KERNEL_KINDS)
    for p in (24, 168, 96, 672, 12, 7, 52, 48, 144, 288, 365):
        assert p in corpus.PERIODS
    assert {24, 96, 168, 672} <= seen_periods
    all_res_periods = {p for _, _, ps in corpus.RESOLUTIONS for p in ps}
    assert {24, 168, 96, 672} <= all_res_periods


def test_circulant_samples_have_the_kernel_covariance():
    n, draws = 48, 6000
    rng = corpus.rng_for(5)
    term = corpus._base_terms("periodic", n, rng)[0]
    x = np.stack([corpus._circulant_sample(term, n, rng) for _ in range(draws)])
    emp = x.T @ x / draws
    k = corpus.dense_kernel([term], n)
    assert np.abs(emp - k).max() < 0.12  # Monte Carlo error ~ 3 * sqrt(2 / draws)


def test_seasonal_generator_is_periodic():
    rng = corpus.rng_for(2)
    s = corpus._seasonal_profile(rng, 4, 640, 96)
    np.testing.assert_allclose(s[:, :96], s[:, 96:192], atol=1e-9)


def test_corpus_v1_is_the_default_and_v2_differs():
    # v1 is nano's recorded corpus: the default of make_batch and of PretrainConfig.
    assert PretrainConfig().corpus == "v1"
    a = corpus.make_batch(0, 2, 16, 640)
    assert np.array_equal(a, corpus.make_batch(0, 2, 16, 640, corpus="v1"))
    b = corpus.make_batch(0, 2, 16, 640, corpus="v2")
    assert np.array_equal(b, corpus.make_batch(0, 2, 16, 640, corpus="v2"))
    assert b.shape == a.shape and np.isfinite(b).all() and not np.array_equal(a, b)


def test_corpus_v2_draws_the_new_kernels_and_periods_deterministically():
    def draw(seed):
        rng = corpus.rng_for(seed, 9)
        kinds, periods = [], []
        for _ in range(300):
            terms, names = corpus.random_kernel_terms(128, rng, corpus.V2)
            kinds += [str(n) for n in names if n not in "+*"]
            periods += [p for t in terms for p in t.periods]
        return kinds, periods

    kinds, periods = draw(3)
    assert (kinds, periods) == draw(3) and (kinds, periods) != draw(4)
    assert set(kinds) == set(corpus.KERNEL_KINDS_V2)
    new = {8, 16, 32, 72, 91, 120, 180, 720, 1440}
    assert new <= set(corpus.PERIODS_V2) and not new & set(corpus.PERIODS)
    assert {96, 24, 168, 672, 48, 288, 12, 7} <= set(periods)
    assert max(set(periods), key=periods.count) == 96  # the 15-minute day leads
    res = {p for _, _, ps in corpus.RESOLUTIONS_V2 for p in ps}
    assert {96, 672, 24, 168, 48, 288, 12, 7} <= res


def test_corpus_v2_weekday_pattern_and_matern_covariance():
    w = corpus._weekday_factor(corpus.rng_for(0), 3, 96 * 14, 96)
    assert all(len(np.unique(r)) == 2 for r in w) and w.max() == 1.0
    assert np.allclose((w < 1).mean(1), 2 / 7)  # two low days a week
    n, draws = 40, 6000
    rng = corpus.rng_for(6)
    term = corpus._base_terms("matern32", n, rng, corpus.V2)[0]
    x = np.stack([corpus._circulant_sample(term, n, rng) for _ in range(draws)])
    assert np.abs(x.T @ x / draws - corpus.dense_kernel([term], n)).max() < 0.12


# ----------------------------------------------------------------------------- config
def test_small_preset_has_20_to_50m_parameters():
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction

    with torch.device("meta"):  # shapes only, nothing allocated
        model = TimesFm2_5ModelForPrediction(TimesFm2_5Config(**PretrainConfig(model="small").model_overrides()))
    n = sum(p.numel() for p in model.parameters())
    assert 20e6 <= n <= 50e6 and n == 27_358_208


def test_bundled_small_without_weights_is_one_clear_error(monkeypatch, tmp_path):
    import tsprune
    from tsprune import model as tsmodel
    from tsprune.resources import BUNDLED_MODELS, DEFAULT_MODEL, available_models

    assert DEFAULT_MODEL == "nano" and "small" in BUNDLED_MODELS
    monkeypatch.chdir(tmp_path)  # "small" must not resolve as a local directory
    monkeypatch.setattr(tsmodel, "bundled_path", lambda name: None)
    with pytest.raises(UserError) as e:
        tsprune.load("small")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--model: 'small'") and "available: " in msg
    assert ", ".join(available_models()) in msg
    with pytest.raises(UserError, match="neither a directory nor a bundled model"):
        tsprune.load("no-such-model")



def test_config_validation_names_the_flag():
    with pytest.raises(UserError, match="--lr"):
        PretrainConfig(lr=0)
    with pytest.raises(UserError, match="--model"):
        PretrainConfig(model="giant")
    with pytest.raises(UserError, match="--context-length"):
        PretrainConfig(context_length=500)
    with pytest.raises(UserError, match="--precision"):
        PretrainConfig(precision="fp8")


def test_cli_flags_round_trip():
    p = add_cli_arguments(argparse.ArgumentParser())
    ns = p.parse_args(["--steps", "12", "--model", "tiny", "--lr", "0.002", "--flip-invariance"])
    cfg = from_args(ns)
    assert cfg.steps == 12 and cfg.model == "tiny" and cfg.lr == 0.002 and cfg.flip_invariance
    assert PretrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ----------------------------------------------------------------------------- training
TINY = dict(model="tiny", batch_size=8, warmup_steps=2, workers=0, threads=1, checkpoint_every=3,
            log_every=1, precision="fp32", device="cpu", seed=11)


def test_tiny_run_writes_a_loadable_hf_dir(tmp_path):
    from transformers import TimesFm2_5ModelForPrediction

    out = run(PretrainConfig(steps=4, **TINY), tmp_path / "m", progress=False)
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "timesfm2_5" and cfg["use_continuous_quantile_head"] is False
    model = TimesFm2_5ModelForPrediction.from_pretrained(out)
    ctx = [torch.randn(512), torch.randn(200)]
    pred = model(past_values=ctx, forecast_context_len=512).mean_predictions[:, :96]
    assert pred.shape == (2, 96) and torch.isfinite(pred).all()
    log = [json.loads(s) for s in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_resume_matches_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    cfg = PretrainConfig(steps=6, **TINY)
    run(cfg, tmp_path / "full", progress=False)
    run(cfg, tmp_path / "cut", progress=False, stop_at=3)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    run(cfg, tmp_path / "cut", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cli_pretrain_interrupted_then_resumed(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from tsprune.cli import main

    flags = ["--model", "tiny", "--batch-size", "8", "--warmup-steps", "2", "--workers", "0", "--threads", "1",
             "--checkpoint-every", "2", "--precision", "fp32", "--device", "cpu", "--seed", "11",
             "--corpus", "v2", "--quiet"]
    out = tmp_path / "cli"
    run(PretrainConfig(steps=4, **{**TINY, "corpus": "v2", "checkpoint_every": 2}), out, progress=False, stop_at=2)
    assert main(["pretrain", *flags, "--steps", "4", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "pretrain_config.json").read_text())["corpus"] == "v2"
    full = run(PretrainConfig(steps=4, **{**TINY, "corpus": "v2", "checkpoint_every": 2}), tmp_path / "full",
               progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main(["pretrain", *flags, "--steps", "4", "--out", str(out), "--corpus", "v1", "--resume"]) == 2


def test_resume_refuses_other_settings_and_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="--resume"):
        run(PretrainConfig(steps=2, **TINY), tmp_path / "none", resume=True, progress=False)
    run(PretrainConfig(steps=4, **TINY), tmp_path / "a", progress=False, stop_at=3)
    with pytest.raises(UserError, match="lr"):
        run(PretrainConfig(steps=4, **{**TINY, "seed": 11}, lr=2e-3), tmp_path / "a", resume=True,
            progress=False)
    with pytest.raises(UserError, match="--resume"):
        run(PretrainConfig(steps=4, **TINY), tmp_path / "a", progress=False)


def test_per_position_loss_supervises_every_patch():
    from tsprune.pretrain.train import build_model, per_position_loss

    model = build_model(PretrainConfig(**{**TINY, "steps": 1}))
    x = torch.from_numpy(corpus.make_batch(0, 0, 4, 512 + 128))
    x.requires_grad_(True)
    per_position_loss(model, x, 512).backward()
    # The first patch's target (steps 32..160) influences the loss through position 0.
    assert x.grad[:, 32:160].abs().sum() > 0
    assert x.grad[:, -1].abs().sum() > 0
