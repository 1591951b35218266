"""Recovery by distillation (tsprune.train.distill): the teacher runs once per training
window and its cache saves, reloads and resumes; w = 0 is plain fine-tuning step for step;
w = 1 pulls the student towards the teacher; "auto" probes the weight within a bounded
number of probes; choose_teacher takes the lower validation MSE; bad flags exit 2 with one
line; TimesFM 2.5 (quantiles) and PatchTST (point only, not autoregressive) both work;
`tsprune prune --recover distill` runs its teacher phase and reports teacher and weight."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import (TINY_TIMESFM25, cli, one_line_error, one_thread, save_tiny_timesfm25,  # noqa: F401
                     synthetic_frame, tiny_task, two_series_windows)
from tsprune.errors import UserError
from tsprune.model import TSModel, from_config
from tsprune.train import FinetuneConfig, finetune
from tsprune.train.distill import (AUTO_WEIGHTS, TeacherCache, choose_teacher, distill_loss, teacher_cache,
                                   weights)
from tsprune.train.validation import forecast_mse

TINY_PATCHTST = dict(model_type="patchtst", architectures=["PatchTSTForPrediction"], num_input_channels=1,
                     context_length=96, patch_length=16, patch_stride=8, num_hidden_layers=2, d_model=32,
                     num_attention_heads=4, ffn_dim=48, prediction_length=24, pooling_type=None,
                     norm_type="batchnorm")


class Boom(Exception):
    pass


def counting(model: TSModel, log: list, fail_after: int | None = None) -> TSModel:
    """``model`` (same module) whose family's forecast appends each batch's size to ``log``
    (and raises Boom once ``fail_after`` batches were served): a teacher we can watch."""
    base = type(model.family)

    class Counting(base):
        def forecast(self, module, context, horizon, **kw):
            if fail_after is not None and len(log) >= fail_after:
                raise Boom()
            log.append(int(context.shape[0]))
            return base.forecast(self, module, context, horizon, **kw)
    return TSModel(Counting(), model.module)


def _student(teacher: TSModel, seed: int = 1) -> TSModel:
    """The teacher with its weights perturbed (a student that starts away from it)."""
    s = teacher.clone()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in s.module.parameters():
            if p.dim() == 2:
                p.add_(0.2 * p.std() * torch.randn(p.shape, generator=g))
    return s


def _teacher_term(student: TSModel, cache: TeacherCache, train) -> float:
    """Mean distillation term of ``student`` against ``cache`` over ``train`` (no grad)."""
    tot, n = 0.0, 0
    with torch.no_grad():
        for ids, c, _ in train.batches(64, with_ids=True):
            f = student.family.forecast(student.module.eval(), c, train.horizon)
            tp, tq = cache.lookup(ids)
            tot += float(distill_loss(f.point, f.quantiles, tp, tq, c)) * len(ids)
            n += len(ids)
    return tot / n


@pytest.fixture(scope="module")
def task():
    return tiny_task(1400, 96, val=32)  # tiny TimesFM 2.5, 96 train windows (h 24), 32 val


@pytest.fixture(scope="module")
def patchtst_task():
    torch.manual_seed(0)
    m = from_config(TINY_PATCHTST)
    return m, two_series_windows(700, 96, 24, stride=4), two_series_windows(500, 96, 24, stride=8, seed=1)


def _same_weights(a: TSModel, b: TSModel) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- the flag's values ----------------------------------------------------------------------
def test_distill_values():
    assert FinetuneConfig().distill == "off"
    assert weights("off") == (0.0,) and weights("auto") == AUTO_WEIGHTS and weights(0.25) == (0.25,)
    assert FinetuneConfig(distill="0.5").distill == 0.5 and FinetuneConfig(distill=1).distill == 1.0
    for bad in ("on", 1.5, -0.1, float("nan"), True, None):
        with pytest.raises(UserError, match="--distill"):
            FinetuneConfig(distill=bad)


# ---- the teacher cache ----------------------------------------------------------------------
def test_teacher_runs_once_per_window_across_probes_and_epochs(task):
    m, train, val = task
    calls: list = []
    teacher = counting(m, calls)
    cfg = FinetuneConfig(lr=(1e-3, 1e-4), epochs=2, batch_size=16, val_every=3, patience=5,
                         lr_probe_steps=2, val_samples=None, distill="auto")
    r = finetune(_student(m), train, val, cfg, show_progress=False, teacher=teacher)
    assert sum(calls) == len(train) == 96          # every window once, none twice
    assert len(calls) == 1                          # one batch of 256 covers 96 windows
    probes = [t for t in r.trials if "probe_steps" in t]
    assert len(probes) == 2 + 2                     # 2 rates at w=0, then w 0.5 and 1 at the best rate
    assert r.epochs_run == 2 and r.steps_run == 12  # the full run: both epochs, no new teacher pass


def test_cache_is_reused_not_recomputed(task):
    m, train, val = task
    calls: list = []
    cache = teacher_cache(counting(m, calls), train, batch_size=32)
    assert calls == [32, 32, 32] and cache.complete
    assert cache.nbytes == 4 * 96 * 24 * (1 + 9)    # float32 point + 9 quantiles per step
    for w in ("auto", 1.0):
        finetune(_student(m), train, val, FinetuneConfig(lr=(1e-3,), epochs=1, batch_size=32, lr_probe_steps=1,
                                                         val_samples=None, distill=w),
                 show_progress=False, teacher=cache)
    assert calls == [32, 32, 32]
    other = train.subset(10, seed=5)
    assert teacher_cache(m, other).lookup(other.window_ids())[0].shape == (10, 24)
    with pytest.raises(KeyError):      # a cache of other windows is refused
        finetune(_student(m), two_series_windows(400, 128, 24, stride=8), val,
                 FinetuneConfig(lr=(1e-3,), epochs=1, batch_size=32, val_samples=None, distill=1.0),
                 show_progress=False, teacher=cache)


def test_cache_saves_reloads_and_resumes(task, tmp_path):
    m, train, _ = task
    ref = teacher_cache(m, train, batch_size=32)
    calls: list = []
    with pytest.raises(Boom):        # interrupted after 2 of 3 batches, saved after each
        teacher_cache(counting(m, calls, fail_after=2), train, checkpoint=tmp_path / "t", batch_size=32,
                      every_s=0.0)
    assert calls == [32, 32]
    part = TeacherCache.load(tmp_path / "t")
    assert int(part.filled.sum()) == 64 and not part.complete
    calls.clear()
    got = teacher_cache(counting(m, calls), train, checkpoint=tmp_path / "t", batch_size=32)
    assert calls == [32]             # only the missing windows
    assert torch.equal(got.point, ref.point) and torch.equal(got.quantiles, ref.quantiles)
    back = TeacherCache.load(tmp_path / "t", ref.key)
    assert back.complete and torch.equal(back.point, ref.point) and torch.equal(back.quantiles, ref.quantiles)
    assert back.levels == ref.levels and len(back.levels) == 9
    assert not list((tmp_path / "t").glob("*.pkl")) and list((tmp_path / "t").glob("*.safetensors"))
    # another teacher (other weights): the saved cache is not reused
    calls.clear()
    teacher_cache(counting(_student(m), calls), train, checkpoint=tmp_path / "t", batch_size=32)
    assert sum(calls) == 96


def test_distillation_run_resumes_to_the_same_weights(task, tmp_path, monkeypatch):
    m, train, val = task
    cfg = FinetuneConfig(lr=(1e-3,), epochs=2, batch_size=16, val_every=4, patience=5, lr_probe_steps=2,
                         val_samples=None, distill="auto")
    a = _student(m)
    ra = finetune(a, train, val, cfg, show_progress=False, teacher=m)
    calls = {"n": 0}
    orig = torch.optim.Adam.step

    def step(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 9:  # in the full run, after the three weight probes
            raise Boom()
        return orig(self, *args, **kw)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(Boom):
        finetune(_student(m), train, val, cfg, show_progress=False, teacher=m, checkpoint=tmp_path / "ft",
                 checkpoint_every_s=0.0)
    monkeypatch.setattr(torch.optim.Adam, "step", orig)
    assert TeacherCache.load(tmp_path / "ft" / "teacher").complete
    c = _student(m)
    rc = finetune(c, train, val, cfg, show_progress=False, teacher=m, checkpoint=tmp_path / "ft",
                  checkpoint_every_s=0.0)
    assert rc.trials == ra.trials and rc.distill_weight == ra.distill_weight
    assert _same_weights(a, c)


# ---- the loss ---------------------------------------------------------------------------------
def test_weight_zero_is_plain_finetuning(task):
    m, train, val = task
    kw = dict(lr=(1e-3, 1e-4), epochs=1, batch_size=16, val_every=2, patience=3, lr_probe_steps=2,
              val_samples=None)
    a, b = _student(m), _student(m)
    ra = finetune(a, train, val, FinetuneConfig(**kw), show_progress=False)
    rb = finetune(b, train, val, FinetuneConfig(**kw, distill=0.0), show_progress=False, teacher=m)
    assert _same_weights(a, b)
    assert [t["val_loss"] for t in ra.trials] == [t["val_loss"] for t in rb.trials]
    assert ra.distill_weight is None and rb.distill_weight == 0.0
    # "auto" probes the rates without the teacher: the same figures as plain fine-tuning
    rc = finetune(_student(m), train, val, FinetuneConfig(**kw, distill="auto"), show_progress=False, teacher=m)
    assert [t["val_loss"] for t in rc.trials[:2]] == [t["val_loss"] for t in ra.trials[:2]]
    assert [t["w"] for t in rc.trials if "probe_steps" in t] == [0.0, 0.0, 0.5, 1.0]
    probes_at = {t["w"]: t["val_loss"] for t in rc.trials if "probe_steps" in t and t["lr"] == rc.lr}
    assert rc.distill_weight == min(probes_at, key=probes_at.get)


def test_weight_zero_needs_no_teacher_but_distillation_does(task):
    m, train, val = task
    finetune(_student(m), train, val, FinetuneConfig(lr=(1e-3,), epochs=1, batch_size=32, val_samples=None,
                                                     distill=0.0), show_progress=False)
    with pytest.raises(ValueError, match="teacher"):
        finetune(_student(m), train, val, FinetuneConfig(lr=(1e-3,), epochs=1, distill=1.0),
                 show_progress=False)


def test_distill_loss_is_unit_free():
    g = torch.Generator().manual_seed(0)
    c, p, t = (torch.randn(4, 50, generator=g), torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g))
    q, tq = torch.randn(4, 8, 3, generator=g), torch.randn(4, 8, 3, generator=g)
    d = distill_loss(p, q, t, tq, c)
    assert torch.allclose(distill_loss(10 * p + 3, 10 * q + 3, 10 * t + 3, 10 * tq + 3, 10 * c + 3), d, rtol=1e-4)
    assert torch.equal(distill_loss(p, None, t, tq, c), distill_loss(p, None, t, None, c))
    manual = ((p - t).square().mean(1) / (c.var(1, unbiased=False) + 1e-5)).mean()
    assert torch.allclose(distill_loss(p, None, t, None, c), manual)
    assert float(distill_loss(t, tq, t, tq, c)) == 0.0
    assert float(d) > float(distill_loss(p, None, t, None, c)) > 0     # the quantile term counts


@pytest.mark.parametrize("family", ["timesfm2_5", "patchtst"])
def test_weight_one_pulls_the_student_to_the_teacher(family, task, patchtst_task):
    m, train, val = task if family == "timesfm2_5" else patchtst_task
    cache = teacher_cache(m, train)
    assert (cache.quantiles is not None) == (family == "timesfm2_5")
    student = _student(m, seed=3)
    before = _teacher_term(student, cache, train)
    cfg = FinetuneConfig(lr=(3e-4,), epochs=3, batch_size=16, val_every=3, patience=100, lr_probe_steps=0,
                         val_samples=None, distill=1.0, val_metric="loss")
    terms: list = []   # the teacher term over every training window, at each validation
    r = finetune(student, train, val, cfg, show_progress=False, teacher=cache,
                 log=lambda rec: terms.append(_teacher_term(student, cache, train)))
    assert r.distill_weight == 1.0 and r.steps_run == len(terms) * 3
    assert terms[-1] < 0.5 * before and terms[-1] < terms[0] < before, (before, terms)


# ---- the teacher --------------------------------------------------------------------------------
def test_choose_teacher_takes_the_lower_validation_mse(task):
    m, train, val = task
    tuned = m.clone()
    finetune(tuned, train, val, FinetuneConfig(lr=(1e-3,), epochs=2, batch_size=16, val_samples=None),
             show_progress=False)
    worse = _student(m, seed=7)
    cands = {"zero_shot": worse, "finetuned_dense": tuned}
    name, scores = choose_teacher(cands, val)
    assert scores == {k: forecast_mse(v, val) for k, v in cands.items()}
    assert name == min(scores, key=scores.get) and scores[name] < max(scores.values())
    name2, _ = choose_teacher({"finetuned_dense": worse, "zero_shot": tuned}, val)
    assert name2 == "zero_shot"     # the figure decides, not the order


# ---- the command line and the job ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_timesfm25(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "series.csv"
    synthetic_frame(n=1200, channels=1).to_csv(p, index=False)
    return p


def test_bad_flags_exit_2_with_one_line(tiny_dir, csv_path, tmp_path):
    out = tmp_path / "X"
    base = ["prune", "--model", tiny_dir, "--data", csv_path, "--context", 128, "--horizon", 24,
            "--split", "0.7,0.1,0.2", "--out", out, "--quiet"]
    one_line_error(cli(*base, "--recover", "teach"), "--recover", "teach")
    one_line_error(cli(*base, "--recover", "distill", "--distill-weight", "2"), "--distill", "2")
    one_line_error(cli(*base, "--recover", "distill", "--distill-weight", "half"), "--distill", "half")
    one_line_error(cli(*base, "--recover", "distill", "--distill-weight", "off"), "--distill-weight", "off")
    one_line_error(cli(*base, "--distill-weight", "0.5"), "--distill-weight", "--recover distill")
    one_line_error(cli(*base, "--recover", "distill", "--no-finetune"), "--recover", "distill")
    assert not out.exists()


def test_prune_recover_distill_end_to_end(tiny_dir, csv_path, tmp_path):
    from tsprune.pipeline import PHASES
    names = [p.name for p in PHASES]
    assert names.index("apply") < names.index("teacher") < names.index("finetune_pruned")
    out = tmp_path / "D"
    rc, stdout, err = cli("prune", "--model", tiny_dir, "--data", csv_path, "--context", 128, "--horizon", 24,
                          "--split", "0.7,0.1,0.2", "--ratio", 0.3, "--max-epochs", 1, "--out", out, "--quiet",
                          "--no-dlinear", "--lr", "1e-3", "--lr-probe-steps", 2, "--train-samples", 64,
                          "--val-samples", 32, "--finetune-epochs", 1, "--recover", "distill",
                          "--compare-finetune")
    assert rc == 0, err
    rep = json.loads((out / "report.json").read_text())
    rec = rep["recovery"]
    assert rec["method"] == "distill" and rec["distill"] == "auto"
    assert rec["teacher"] in ("zero_shot", "finetuned_dense")
    assert set(rec["teacher_val_mse"]) == {"zero_shot", "finetuned_dense"}
    assert rec["teacher"] == min(rec["teacher_val_mse"], key=rec["teacher_val_mse"].get)
    assert rec["weights"] == [0.0, 0.5, 1.0] and rec["weight"] in rec["weights"]
    assert rec["cache"]["windows"] == 64 and rec["cache"]["bytes"] == 4 * 64 * 24 * 10
    assert "teacher" in rep["timings"] and rep["config"]["finetune"]["distill"] == "auto"
    assert "Recovery by distillation" in (out / "report.md").read_text()
    assert not (out / "checkpoints").exists()
