"""Faults: a real `tsprune prune` killed with SIGKILL leaves the earlier output of the same
--out intact; --resume continues an interrupted run; two runs never share a work dir;
the same seed gives the same plan and metrics."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY_TIMESFM25, synthetic_frame
from tsprune.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction
    d = tmp_path_factory.mktemp("faults")
    torch.manual_seed(0)
    cfg = {k: v for k, v in TINY_TIMESFM25.items() if k != "model_type"}
    TimesFm2_5ModelForPrediction(TimesFm2_5Config(**cfg)).save_pretrained(d / "m")
    synthetic_frame(n=1500, channels=1).to_csv(d / "s.csv", index=False)
    return d


def _args(env, out, *extra):
    return ["prune", "--model", str(env / "m"), "--data", str(env / "s.csv"), "--context", "128",
            "--horizon", "24", "--split", "0.7,0.1,0.2", "--out", str(out), "--quiet",
            "--no-dlinear", "--ratio", "0.3", *extra]


def test_same_seed_same_plan_and_metrics(env, tmp_path):
    assert main(_args(env, tmp_path / "a", "--seed", "3")) == 0
    assert main(_args(env, tmp_path / "b", "--seed", "3")) == 0
    pa = json.loads((tmp_path / "a" / "plan.json").read_text())
    pb = json.loads((tmp_path / "b" / "plan.json").read_text())
    assert pa["masks"] == pb["masks"]
    ra = json.loads((tmp_path / "a" / "report.json").read_text())
    rb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert ra["metrics"] == rb["metrics"] and ra["baselines"] == rb["baselines"]
    assert not (tmp_path / "a" / "checkpoints").exists()
    assert not (tmp_path / "a" / "state.json").exists()


def test_sigkill_keeps_the_previous_output(env, tmp_path):
    out = tmp_path / "X"
    assert main(_args(env, out)) == 0
    before = (out / "report.json").read_text()
    exe = Path(sys.executable).with_name("tsprune")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tsprune.cli"]
    for delay in (1.0, 2.5, 4.0, 6.0, 9.0):  # kill at different phases of a real run
        p = subprocess.Popen(cmd + _args(env, out, "--seed", "7"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        now = (out / "report.json").read_text()
        if now != before:
            # the only other allowed state: the new run got past its final rename (the commit
            # point) before the kill, so its output is complete
            assert "--seed 7" in json.loads(now)["command"]
            assert {"model", "plan.json", "report.md", "report.html"} <= {q.name for q in out.iterdir()}
            before = now
        assert (out / "model" / "model.safetensors").exists()
        assert not (out / "state.json").exists() and not (out / "checkpoints").exists()
    # the next run repairs whatever the killed one left, and finishes
    assert main(_args(env, out, "--seed", "7")) == 0
    assert not list(tmp_path.glob(".X.*"))


def test_resume_continues_an_interrupted_run(env, tmp_path, monkeypatch):
    out = tmp_path / "R"
    import tsprune.train  # noqa: F401
    ftmod = sys.modules["tsprune.train.finetune"]  # the package re-exports the function
    orig = ftmod.validate
    calls = {"n": 0}

    def boom(*a, **k):  # interrupt the fine-tuning after its first validation
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return orig(*a, **k)
    monkeypatch.setattr(ftmod, "validate", boom)
    assert main(_args(env, out, "--finetune-epochs", "2", "--lr", "1e-4")) == 130
    monkeypatch.setattr(ftmod, "validate", orig)
    work = tmp_path / ".R.partial"
    assert work.exists() and (work / "plan.json").exists() and not out.exists()
    state = json.loads((work / "state.json").read_text())
    assert "score" in state["done"] and "finetune_pruned" not in state["done"]
    # other settings: refused; the same settings with --resume: continues, skipping scoring
    import tsprune.pipeline as pl
    called = {"score": 0}
    real_score = pl.score

    def counting(*a, **k):
        called["score"] += 1
        return real_score(*a, **k)
    monkeypatch.setattr(pl, "score", counting)
    assert main(_args(env, out, "--finetune-epochs", "3", "--lr", "1e-4", "--resume")) == 2
    assert main(_args(env, out, "--finetune-epochs", "2", "--lr", "1e-4", "--resume")) == 0
    assert called["score"] == 0
    assert (out / "report.json").exists() and not work.exists()
    ref = tmp_path / "ref"
    assert main(_args(env, ref, "--finetune-epochs", "2", "--lr", "1e-4")) == 0
    r1 = json.loads((out / "report.json").read_text())
    r2 = json.loads((ref / "report.json").read_text())
    assert r1["metrics"] == r2["metrics"]
