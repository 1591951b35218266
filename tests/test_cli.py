"""The `tsprune` command line, end to end, as a user runs it (subprocess, real console
script): user errors exit 2 with one line and leave no output directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import cli, context_batch, one_line_error, save_tiny_timesfm25, synthetic_frame

ROOT = Path(__file__).resolve().parents[1]


def tsprune(*args, cwd=None, timeout=900):
    exe = Path(sys.executable).with_name("tsprune")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tsprune.cli"]
    env = {**os.environ, "TSPRUNE_QUIET": "1"}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_timesfm25(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "series.csv"
    synthetic_frame(n=1600, channels=2).to_csv(p, index=False)
    return p


def _one_line_error(r, *needles):
    """one_line_error for a finished subprocess."""
    one_line_error((r.returncode, r.stdout, r.stderr), *needles)


def test_end_to_end_on_generated_series(tiny_dir, csv_path, tmp_path):
    out = tmp_path / "X"
    r = tsprune("prune", "--model", tiny_dir, "--data", csv_path, "--context", 128, "--horizon", 24,
                "--split", "0.7,0.1,0.2", "--ratio", 0.3, "--export", "onnx", "--export-model", "tsfm",
                "--out", out,
                "--lr", "1e-4,1e-5", "--compare-finetune", "--quiet", "--val-samples", 256,
                "--train-samples", 512)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["params"]["pruned"] < rep["params"]["dense"]
    assert 0 < rep["sparsity"] < 1
    for k in ("zero_shot", "pruned", "pruned_finetuned", "finetuned_dense"):
        assert set(rep["metrics"][k]) >= {"mse", "mae"}
    for k in ("seasonal_naive", "dlinear"):
        assert set(rep["baselines"][k]) >= {"mse", "mae"}
    assert rep["onnx"]["max_abs_err"] < 1e-4
    assert rep["timings"]["total"] > 0
    assert (out / "report.md").exists() and (out / "plan.json").exists()
    assert rep["prune"]["scope"].startswith("heads, V (and Q/K) dims of ")  # which units the run pruned
    assert f"Pruned units: {rep['prune']['scope']}." in (out / "report.md").read_text()
    assert not list(tmp_path.glob(".X.tmp-*"))
    # the saved model reloads to identical outputs, and ONNX matches torch within 1e-4
    from tsprune.model import load
    m = load(out / "model")
    x = context_batch(3, 128)
    p1 = m.forecast(x, 24).point
    assert torch.equal(load(out / "model").forecast(x, 24).point, p1)
    import onnxruntime as ort
    s = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    o = s.run(None, {"context": x.numpy()})[0]
    assert abs(o - p1.numpy()).max() < 1e-4
    # inspect reads both
    r = tsprune("inspect", out / "model", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["pruned"] is True
    r = tsprune("inspect", out / "model.onnx")
    assert r.returncode == 0 and "timesfm2_5" in r.stdout


def test_user_errors_exit_2_without_output(tiny_dir, csv_path, tmp_path):
    """The issue's four cases and a few more; one real subprocess, the rest in-process."""
    out = tmp_path / "X"
    base = ["prune", "--model", tiny_dir, "--context", 128, "--horizon", 24, "--split", "0.7,0.1,0.2",
            "--out", out, "--quiet"]
    _one_line_error(tsprune(*base, "--data", tmp_path / "nope.csv"), "--data", "nope.csv")
    bad = tmp_path / "text.csv"
    df = synthetic_frame(n=600, channels=1)
    df["name"] = "abc"
    df.to_csv(bad, index=False)
    one_line_error(cli(*base, "--data", bad, "--target", "name"), "name")
    one_line_error(cli(*[a if a != 24 else 5000 for a in base], "--data", csv_path), "horizon")
    one_line_error(cli(*base, "--data", csv_path, "--ratio", 1.5), "--ratio", "1.5")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    one_line_error(cli(*base[:-3], "--data", csv_path, "--out", blocker / "X", "--quiet"), "--out")
    one_line_error(cli("prune", "--model", tmp_path, "--data", csv_path, "--out", out), "--model")
    one_line_error(cli("prune", "--model", tiny_dir, "--data", csv_path, "--out", out,
                       "--context", 128, "--split", "ett"), "split")
    assert not out.exists()
    assert not list(tmp_path.glob(".X.*"))


def test_end_to_end_on_etth1(tiny_dir, tmp_path):
    """The issue's acceptance command on ETTh1 (a tiny TimesFM 2.5 saved with save_pretrained;
    window subsampling keeps it short; every test window is still evaluated)."""
    from tsprune.data import DataConfig, ett_path, prepare
    from tsprune.evaluation import evaluate
    from tsprune.model import load
    path = ett_path("ETTh1")
    if path is None:
        pytest.skip("ETTh1 not found: ../shared/data is absent (set TSPRUNE_SHARED to its folder)")
    out = tmp_path / "X"
    r = tsprune("prune", "--model", tiny_dir, "--data", path, "--horizon", 96, "--export", "onnx",
                "--out", out, "--quiet", "--calib-samples", 512, "--train-samples", 512,
                "--val-samples", 256, "--no-dlinear")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["data"]["split_rows"] == [8640, 11520, 14400] and rep["data"]["split"] == "ett"
    assert rep["data"]["windows"]["test"] == 7 * (2880 - 96 + 1)
    assert rep["params"]["pruned"] < rep["params"]["dense"]
    assert rep["onnx"]["max_abs_err"] < 1e-4
    # the saved model, reloaded, reproduces the report's test figure over every test window
    data = prepare(DataConfig(path, context=512, horizon=96, split="ett"))
    got = evaluate(load(out / "model"), data.windows("test", horizon=96, stride=1), show_progress=False)
    assert got["mse"] == pytest.approx(rep["metrics"]["pruned_finetuned"]["mse"], rel=1e-5)
