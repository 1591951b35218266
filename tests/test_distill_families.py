"""Distillation on the families tests/test_distill.py does not cover (TimesFM 2.0, Timer-XL,
Time-MoE, Moirai, Chronos-Bolt, TTM): the teacher cache holds every training window's
forecast (and the quantiles where the family has them), and fine-tuning with weight 1
pulls a perturbed student towards the teacher on every training window."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from helpers import two_series_windows  # noqa: E402
from test_distill import _student, _teacher_term  # noqa: E402
from tsprune.train import FinetuneConfig, finetune  # noqa: E402
from tsprune.train.distill import teacher_cache  # noqa: E402


def _timesfm2():
    t = pytest.importorskip("test_family_timesfm2")
    return t._tiny(), two_series_windows(500, 256, 64, stride=8), two_series_windows(400, 256, 64, stride=16, seed=1)


def _timer_xl():
    import test_family_timer_xl as t
    return t.tiny(), t.dataset(300), t.dataset(200, 1)


def _time_moe():
    import test_family_time_moe as t
    return t.tiny(), t.dataset(300), t.dataset(200, 1)


def _moirai():
    import test_family_moirai as t
    return (t._model(), two_series_windows(300, t.L, t.H, stride=4),
            two_series_windows(200, t.L, t.H, stride=4, seed=1))


def _chronos_bolt():
    t = pytest.importorskip("test_family_chronos_bolt")
    return t._tiny(), t._windows(), t._windows(300, 1)


def _ttm():
    t = pytest.importorskip("test_family_ttm")  # skips without granite-tsfm (an optional extra)
    return (t._tiny(mixers=True), two_series_windows(300, 128, 32, stride=4),
            two_series_windows(200, 128, 32, stride=4, seed=1))


BUILDS = {"timesfm2": _timesfm2, "timer_xl": _timer_xl, "time_moe": _time_moe, "moirai": _moirai,
          "chronos_bolt": _chronos_bolt, "ttm": _ttm}


@pytest.mark.parametrize("name", list(BUILDS))
def test_weight_one_pulls_the_student_to_the_teacher(name):
    teacher, train, val = BUILDS[name]()
    teacher.module.eval()
    cache = teacher_cache(teacher, train)
    assert bool(cache.filled.all()) and cache.point.shape == (len(train), train.horizon)
    assert torch.isfinite(cache.point).all()
    student = _student(teacher, seed=3)
    before = _teacher_term(student, cache, train)
    assert before > 0
    cfg = FinetuneConfig(lr=(1e-3,), epochs=4, batch_size=16, val_every=4, patience=100, lr_probe_steps=0,
                         val_samples=None, distill=1.0, val_metric="loss")
    terms: list = []
    r = finetune(student, train, val, cfg, show_progress=False, teacher=cache,
                 log=lambda rec: terms.append(_teacher_term(student, cache, train)))
    assert r.distill_weight == 1.0 and terms
    assert min(terms) < 0.7 * before, (name, before, terms)
