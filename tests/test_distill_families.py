"""Distillation on the families tests/test_distill.py does not cover (TimesFM 2.0, Timer-XL,
Time-MoE, Moirai, Chronos-Bolt, TTM): the teacher cache holds every training window's
forecast (and the quantiles where the family has them), and fine-tuning with weight 1
pulls a perturbed student towards the teacher on every training window."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import test_budget_families as fam  # noqa: E402
from test_budget import _timesfm2  # noqa: E402
from test_distill import _student, _teacher_term  # noqa: E402
from tsprune.train import FinetuneConfig, finetune  # noqa: E402
from tsprune.train.distill import teacher_cache  # noqa: E402

# the budget tests' tiny models and windows: (model, train, val, ...)
BUILDS = {"timesfm2": _timesfm2, "timer_xl": fam._timer_xl, "time_moe": fam._time_moe, "moirai": fam._moirai,
          "chronos_bolt": fam._chronos_bolt, "ttm": fam._ttm}


@pytest.mark.parametrize("name", list(BUILDS))
def test_weight_one_pulls_the_student_to_the_teacher(name):
    teacher, train, val = BUILDS[name]()[:3]
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
