"""`tsprune prune --frontier`: one model per budget, each met, measured, exported with
parity, the Pareto set and --pick; bad frontier flags are one-line errors."""
import json

import pytest
import torch

from helpers import cli, one_line_error, save_tiny_timesfm25, synthetic_frame

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_timesfm25(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "series.csv"
    synthetic_frame(n=1400, channels=1).to_csv(p, index=False)
    return p


def _args(tiny_dir, csv_path, out, *extra):
    return ("prune", "--model", tiny_dir, "--data", csv_path, "--context", 128, "--horizon", 24,
            "--split", "0.7,0.1,0.2", "--out", out, "--quiet", "--no-dlinear", "--calib-samples", 128,
            "--val-samples", 64, "--train-samples", 128, "--lr", "1e-4", "--lr-probe-steps", 0,
            "--finetune-epochs", 1, "--test-stride", 5, *extra)


@pytest.mark.slow
def test_frontier_meets_every_params_budget_and_picks(tiny_dir, csv_path, tmp_path):
    from tsprune.model import load
    out = tmp_path / "F"
    rc, stdout, err = cli(*_args(tiny_dir, csv_path, out, "--frontier", "params=0.95,0.85",
                                 "--pick", "speedup>=0.01", "--no-paper-plan", "--latency-batch", 8))
    assert rc == 0, err
    rep = json.loads((out / "frontier.json").read_text())
    names = {p["budget"]: p for p in rep["points"]}
    assert set(names) == {"params=0.95", "params=0.85"}
    dense = rep["dense"]["params"]
    for b, p in names.items():
        frac = float(b.split("=")[1])
        assert p["params_count"] <= frac * dense            # met, as built
        assert p["params_count"] > 0.5 * frac * dense        # not absurdly below it
        assert p["mse"] is not None and p["mae"] is not None
        assert 0 < p["flops"] < 1  # the plan's measured FLOPs of one forecast, kept fraction
        for key in ("fp32/b1", "fp32/b8", "int8/b1", "int8/b8"):
            assert p[f"speedup_{key}"] > 0
        # medians over three independent passes, each pass's ratio kept beside the median
        assert len(p["speedup_passes"]) == 3 and min(p["speedup_passes"]) <= p["speedup"] * 1.001
        # the saved model reloads and its graph matches it (export_onnx checked parity)
        m = load(out / "models" / p["name"])
        assert m.num_params() == p["params_count"]
        assert (out / "graphs" / f"{p['name']}.onnx").exists()
        assert (out / "graphs" / f"{p['name']}.int8.onnx").exists()
    assert rep["pareto"] and set(rep["pareto"]) <= {p["name"] for p in rep["points"]}
    assert rep["picked"] in rep["pareto"] or rep["picked"] in {p["name"] for p in rep["points"]}
    # --pick is judged on validation, not on the test score it then reports: with no error
    # bound, the most accurate on the validation windows wins
    assert rep["pick_on"] == "validation" and rep["dense_val"]["dense_ft"]["mse"] > 0
    assert all(p["val_mse"] > 0 and p["val_mae"] > 0 for p in rep["points"])
    assert rep["picked"] == min(rep["points"], key=lambda p: (p["val_mse"], -p["speedup"]))["name"]
    assert "judged on the 64 validation windows" in (out / "frontier.md").read_text()
    assert (out / "deploy" / "model.onnx").exists() and (out / "frontier.md").exists()
    assert (out / "frontier.png").exists()
    assert rep["speedup_measure"]["passes"] == 3 and "medians over 3 independent passes" in (out / "frontier.md").read_text()
    # the deployed model reloads with outputs identical to the frontier's copy
    a, b = load(out / "deploy" / "model"), load(out / "models" / rep["picked"])
    x = torch.randn(2, 128).cumsum(1)
    assert torch.equal(a.forecast(x, 24).point, b.forecast(x, 24).point)
    assert "Pareto set" in stdout
    assert "| FLOPs kept |" in (out / "frontier.md").read_text()


@pytest.mark.parametrize("extra,needles", [
    (("--frontier", "speedup=0.5"), ("--budget", "speedup=0.5")),
    (("--frontier", "speedup=2,params=0.5"), ("--frontier", "one measure")),
    (("--frontier", "2,3"), ("--frontier",)),
    (("--frontier", "speedup=2", "--pick", "fast"), ("--pick", "fast")),
    (("--frontier", "speedup=2", "--criterion", "taylor,random"), ("--criteria", "random")),
    (("--frontier", "speedup=2", "--budget", "params=0.5"), ("--budget", "--frontier")),
    (("--pick", "speedup>=2"), ("--pick", "only with --frontier")),
    (("--recover", "both"), ("--recover", "both")),
    (("--frontier", "speedup=2", "--latency-batch", "0"), ("--latency-batch",)),
])
def test_bad_frontier_flags_are_one_line_errors(tiny_dir, csv_path, tmp_path, extra, needles):
    out = tmp_path / "bad"
    one_line_error(cli(*_args(tiny_dir, csv_path, out, *extra)), *needles)
    assert not out.exists()


@pytest.mark.slow
def test_frontier_speedup_budget_is_calibrated_on_timed_graphs(tiny_dir, csv_path, tmp_path):
    """speedup=S: the candidates of one scoring run (FLOPs 1/S x the calibration ladder) are
    exported and timed against the dense graph, loosest first, until one is fast enough;
    the point records what was tried, and its model is the chosen candidate's."""
    from tsprune.export.calibrate import MARGIN, candidates
    out = tmp_path / "S"
    rc, _, err = cli(*_args(tiny_dir, csv_path, out, "--frontier", "speedup=1.3", "--no-paper-plan",
                            "--no-int8", "--latency-batch", 8))
    assert rc == 0, err
    rep = json.loads((out / "frontier.json").read_text())
    p, = rep["points"]
    cal = rep["calibration"]["taylor_fisher"]["speedup=1.3"]
    tried = cal["calibration"]
    assert [t["candidate"] for t in tried] == candidates(1.3)[:len(tried)]
    assert cal["met"] == any(t["speedup"] >= 1.3 for t in tried)
    if cal["met"]:
        assert cal["candidate"] == tried[-1]["candidate"]
        assert all(t["speedup"] < 1.3 * (1 + MARGIN) for t in tried[:-1])
    plan = json.loads((out / cal["plan"]).read_text())
    assert plan["params_pruned"] == p["params_count"]
    assert not list((out / "graphs").glob("calib-*"))  # the timed candidates are not left behind
