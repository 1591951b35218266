"""`tsprune reproduce` end to end on a tiny model and two generated hourly datasets."""
from __future__ import annotations

import json

import torch

from helpers import TINY_TIMESFM25, synthetic_frame
from tsprune.prune import PruneConfig
from tsprune.reproduce import ReproduceConfig, run
from tsprune.search import SearchConfig


def test_reproduce_small(tmp_path):
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction
    torch.manual_seed(0)
    cfg = {k: v for k, v in TINY_TIMESFM25.items() if k != "model_type"}
    TimesFm2_5ModelForPrediction(TimesFm2_5Config(**cfg)).save_pretrained(tmp_path / "m")
    paths = []
    for i, name in enumerate(("A", "B")):
        p = tmp_path / f"{name}.csv"
        synthetic_frame(n=1600, channels=1, seed=i).to_csv(p, index=False)
        paths.append(str(p))
    rc = ReproduceConfig(datasets=tuple(paths), horizons=(24, 48), model=str(tmp_path / "m"),
                         context=64, split="0.7,0.1,0.2", out=str(tmp_path / "res"),
                         search=SearchConfig(ratios=(0.2, 0.5), emas=(0.5,), calib_samples=128,
                                             val_samples=64),
                         prune=PruneConfig(batch_size=64), lrs=(1e-4,), ft_train_samples=256,
                         ft_val_samples=64, baselines=("seasonal_naive", "dlinear"),
                         transfer=((paths[0], paths[1]),))
    out = run(rc, log=lambda m: None)
    md = (tmp_path / "res" / "accuracy.md").read_text()
    assert "prune-then-finetune beats full fine-tuning in" in md
    assert (tmp_path / "res" / "mse_vs_params.png").stat().st_size > 1000
    assert (tmp_path / "res" / "search_curves.png").stat().st_size > 1000
    # the exact command, non-default flags included, and every search trial are stated
    assert "--lr 0.0001" in md and "--search-ratios 0.2,0.5" in md and "--ft-train-samples 256" in md
    assert "r=0.2 a=0.5:" in md and "r=0.5 a=0.5:" in md
    r = out["results"][paths[0]]
    for key in ("zero_shot", "finetuned_dense", "pruned_finetuned"):
        assert set(r[key]) == {"24", "48"}
    assert set(r["pruned"]) == {"24"}  # before fine-tuning: the first horizon only
    assert r["params_pruned"] < r["params_dense"]
    assert set(r["baselines"]) == {"seasonal_naive", "dlinear"}
    assert len(out["transfer"]) == 1
    s = json.loads((tmp_path / "res" / "accuracy.json").read_text())["summary"]
    assert s["n"] == 4
    assert "--split 0.7,0.1,0.2" in md and "--ft-val-samples 64" in md
    # both arms validated the rolled-out forecast at the longest horizon
    assert r["finetune_dense"]["val_horizon"] == r["finetune_pruned"]["val_horizon"] == 48
    # every cell where fine-tuning lost to zero-shot is named, and no other
    worse = {(c["dataset"], c["horizon"], c["arm"]) for c in s["worse_than_zero_shot"]}
    assert worse == {(name, h, arm) for name, rr in out["results"].items() for h in (24, 48)
                     for arm in ("finetuned_dense", "pruned_finetuned")
                     if rr[arm][str(h)]["mse"] > rr["zero_shot"][str(h)]["mse"]}
    assert "fine-tuning is never worse than zero-shot at any horizon: **" + ("no" if worse else "yes") in md
    # a rerun skips finished datasets
    again = run(rc, log=lambda m: None)
    assert again["results"][paths[0]]["timings"] == r["timings"]
    # a fresh clone has the committed results but not models/: the report still renders,
    # keeping the transfer figure measured earlier
    import shutil
    shutil.rmtree(tmp_path / "res" / "models")
    (tmp_path / "res" / "accuracy.md").unlink()
    fresh = run(rc, log=lambda m: None)
    assert fresh["transfer"] == out["transfer"]
    assert (tmp_path / "res" / "accuracy.md").exists()


def _one_dataset(tmp_path):
    """A tiny TimesFM 2.5 saved at tmp_path/m and one generated series A.csv (returned)."""
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction
    torch.manual_seed(0)
    cfg = {k: v for k, v in TINY_TIMESFM25.items() if k != "model_type"}
    TimesFm2_5ModelForPrediction(TimesFm2_5Config(**cfg)).save_pretrained(tmp_path / "m")
    p = tmp_path / "A.csv"
    synthetic_frame(n=1600, channels=1).to_csv(p, index=False)
    return p


def _small_config(tmp_path, p, baselines) -> dict:
    return dict(datasets=(str(p),), horizons=(24,), model=str(tmp_path / "m"), context=64,
                split="0.7,0.1,0.2", out=str(tmp_path / "res"),
                search=SearchConfig(ratios=(0.3,), emas=(0.5,), calib_samples=128, val_samples=64),
                prune=PruneConfig(batch_size=64), lrs=(1e-4,), ft_train_samples=128,
                ft_val_samples=64, baselines=baselines, transfer=())


def test_reproduce_resumes_finished_phases(tmp_path, monkeypatch):
    """A reproduction interrupted inside a dataset keeps its finished phases."""
    import pytest

    import tsprune.reproduce as rp
    p = _one_dataset(tmp_path)
    rc = ReproduceConfig(**_small_config(tmp_path, p, ("seasonal_naive",)))
    calls = {"search": 0}
    real = rp.search

    def boom(*a, **k):
        calls["search"] += 1
        raise KeyboardInterrupt
    monkeypatch.setattr(rp, "search", boom)
    with pytest.raises(KeyboardInterrupt):
        run(rc, log=lambda m: None)
    partial = json.loads((tmp_path / "res" / "runs" / "A.partial.json").read_text())["done"]
    assert "zero_shot" in partial and "finetune_dense" in partial and "search" not in partial

    def counting(*a, **k):
        calls["search"] += 1
        return real(*a, **k)
    monkeypatch.setattr(rp, "search", counting)
    out = run(rc, log=lambda m: None)
    assert calls["search"] == 2
    r = out["results"][str(p)]
    assert r["zero_shot"] == partial["zero_shot"]
    assert not (tmp_path / "res" / "runs" / "A.partial.json").exists()


def test_reproduce_phases_split_across_runs(tmp_path, monkeypatch):
    """--phases: two runs share one dataset's phases (merged, locked writes); a final run
    without --phases computes nothing again and renders the report."""
    import pytest

    import tsprune.reproduce as rp
    p = _one_dataset(tmp_path)
    base = _small_config(tmp_path, p, ("seasonal_naive", "dlinear"))
    with pytest.raises(Exception, match="--phases"):
        ReproduceConfig(**base, phases=("zero_shot", "bogus"))
    chain = run(ReproduceConfig(**base, phases=("search", "pruned_eval", "finetune_pruned")),
                log=lambda m: None)
    assert chain["results"] == {}
    assert not (tmp_path / "res" / "accuracy.md").exists()
    partial = tmp_path / "res" / "runs" / "A.partial.json"
    done = json.loads(partial.read_text())["done"]
    assert {"search", "pruned_eval", "finetune_pruned"} <= set(done) and "zero_shot" not in done
    run(ReproduceConfig(**base, phases=("zero_shot", "finetune_dense", "seasonal_naive")),
        log=lambda m: None)
    done = json.loads(partial.read_text())["done"]
    assert {"search", "finetune_pruned", "zero_shot", "seasonal_naive"} <= set(done)  # merged
    assert "dlinear" not in done
    timings = json.loads(partial.read_text())["timings"]
    assert set(timings) >= {"search", "finetune_pruned", "zero_shot", "seasonal_naive"}

    def never(*a, **k):
        raise AssertionError("a finished phase ran again")
    monkeypatch.setattr(rp, "search", never)
    monkeypatch.setattr(rp, "finetune", never)
    out = run(ReproduceConfig(**base), log=lambda m: None)
    r = out["results"][str(p)]
    assert r["pruned_finetuned"] == done["finetune_pruned"]["metrics"]
    assert set(r["timings"]) == set(timings) | {"dlinear", "total"}
    assert r["baselines"]["dlinear"]["24"]["mse"] > 0
    assert (tmp_path / "res" / "accuracy.md").exists() and not partial.exists()
    assert not list((tmp_path / "res" / "runs").glob("*.lock"))


def test_reproduce_fine_tuning_stopped_mid_phase_continues_from_its_checkpoint(tmp_path, monkeypatch):
    """A run stopped inside fine-tuning (hours for `small`) keeps the fine-tuning's own
    checkpoint; the next run continues it (the same result as an uninterrupted run) and
    removes it once the phase is done."""
    import pytest

    import importlib

    ftm = importlib.import_module("tsprune.train.finetune")  # the module (tsprune.train.finetune is also a function)
    p = _one_dataset(tmp_path)
    base = _small_config(tmp_path, p, ("seasonal_naive",))
    want = run(ReproduceConfig(**{**base, "out": str(tmp_path / "ref")}, phases=("finetune_dense",)),
               log=lambda m: None)
    assert want["results"] == {} and not (tmp_path / "ref" / "checkpoints").exists()
    ref = json.loads((tmp_path / "ref" / "runs" / "A.partial.json").read_text())["done"]["finetune_dense"]

    real_save = ftm._Ckpt.save

    def stop_after_first_save(self, *a, **k):
        real_save(self, *a, **k)
        raise KeyboardInterrupt
    monkeypatch.setattr(ftm._Ckpt, "save", stop_after_first_save)
    monkeypatch.setattr(ftm._Ckpt, "__init__", _every_step(ftm._Ckpt.__init__))
    with pytest.raises(KeyboardInterrupt):
        run(ReproduceConfig(**base, phases=("finetune_dense",)), log=lambda m: None)
    ck = tmp_path / "res" / "checkpoints" / "A-finetune_dense"
    assert ck.is_dir() and any(ck.iterdir())
    monkeypatch.undo()
    real_load, loaded = ftm._Ckpt.load, []

    def load(self):
        st = real_load(self)
        loaded.append(st is not None)
        return st
    monkeypatch.setattr(ftm._Ckpt, "load", load)
    run(ReproduceConfig(**base, phases=("finetune_dense",)), log=lambda m: None)
    assert loaded == [True]                       # continued from the checkpoint, not from step 0
    got = json.loads((tmp_path / "res" / "runs" / "A.partial.json").read_text())["done"]["finetune_dense"]
    assert got["ft"]["lr"] == ref["ft"]["lr"] and got["ft"]["val_loss"] == pytest.approx(ref["ft"]["val_loss"])
    assert got["metrics"]["24"] == pytest.approx(ref["metrics"]["24"])
    assert not (tmp_path / "res" / "checkpoints").exists()


def _every_step(init):
    """_Ckpt.__init__ with a checkpoint after every step (every_s = 0)."""
    def wrapped(self, path, every_s):
        init(self, path, 0.0)
    return wrapped


def test_finished_phases_survive_a_new_config_field_at_its_default():
    """The phases' fingerprint holds the settings that differ from their defaults, so a
    field added with a default (PruneConfig.align was) leaves finished work valid, while
    any changed setting still tells runs apart."""
    from tsprune.phases import settings_of as _settings
    base = ReproduceConfig(datasets=("A",), horizons=(96, 336), model="small", lrs=(1e-4,))
    s = _settings(base)
    assert s == {"datasets": ("A",), "horizons": (96, 336), "model": "small", "lrs": (1e-4,)}
    assert _settings(ReproduceConfig(**{**base.__dict__, "prune": PruneConfig(align=16)}))["prune"] == {"align": 16}
    assert _settings(ReproduceConfig(**{**base.__dict__, "search": SearchConfig(val_samples=7)})) != s


def test_prune_and_frontier_fingerprints_ignore_fields_left_at_their_defaults(tmp_path):
    """`tsprune prune --resume` and the frontier keep finished phases under the same rule."""
    from tsprune.data import DataConfig
    from tsprune.frontier.job import FrontierConfig, _fingerprint_of
    from tsprune.pipeline import RunConfig, _fingerprint
    run = RunConfig(out=str(tmp_path / "o"), data=DataConfig(path=str(tmp_path / "missing.csv")))
    fp = _fingerprint(run)
    assert "prune" not in fp and "out" not in fp and str(fp["data"]["path"]) == str(tmp_path / "missing.csv")
    aligned = RunConfig(out=run.out, data=run.data, prune=PruneConfig(align=16))
    assert _fingerprint(aligned)["prune"] == {"align": 16}
    f1, f2 = FrontierConfig(run=run), FrontierConfig(run=run, budgets=("speedup=2",))
    assert _fingerprint_of(f1)["frontier"] == {} and _fingerprint_of(f2)["frontier"] == {"budgets": ("speedup=2",)}
