"""report.json / report.md / report.html from a synthetic report dict, and the pipeline's
report helpers (sample forecasts, ONNX Runtime latency)."""
from __future__ import annotations

import base64
import json
import math
import re
import struct

import pytest
import torch

from tsprune.report import forecast_samples, render_html, render_markdown, write_reports
from tsprune.report.html import generic
from tsprune.report.samples import band_levels, pick_windows


def example_report(*, search: bool = True, onnx: bool = True, quantiles: bool = True) -> dict:
    """A report dict shaped like `tsprune prune`'s: 6 layers, 3 pruning epochs, 2 horizons."""
    H, hist = 96, 288

    def metric(mse, mae):
        return {"mse": mse, "mae": mae, "windows": 2786,
                "by_horizon": {"48": {"mse": mse * 0.8, "mae": mae * 0.9}, "96": {"mse": mse, "mae": mae}}}

    dense = [{"layer": i, "heads": 16, "kv_heads": 16, "qk_dim": 80, "v_dim": 80, "ffn": 1280,
              "params": 6_553_600} for i in range(6)]
    pruned = [{"layer": i, "heads": 16 - i, "kv_heads": 16 - i, "qk_dim": 80 - 7 * i, "v_dim": 72 - 5 * i,
               "ffn": 1280 - 150 * i, "params": 6_553_600 - 700_000 * i} for i in range(6)]
    history, sp = [], 0.0
    for e in range(1, 4):
        for s in range(1, 9):
            sp += 0.012
            history.append({"epoch": e, "step": s, "train_loss": 0.62 + 0.01 * s - 0.02 * e,
                            "zeroed": 40, "alive_channels": 20000 - 320 * ((e - 1) * 8 + s),
                            "total_channels": 20000, "sparsity": sp, "time_s": 3.0 * s})
        history.append({"epoch": e, "val_loss": [0.71, 0.69, 0.7][e - 1], "sparsity": sp,
                        "alive_channels": 20000 - 320 * 8 * e, "time_s": 30.0 * e})
    t = torch.arange(hist + H, dtype=torch.float32)
    windows, points_d, points_p, q_d, q_p = [], [], [], [], []
    for w in range(4):
        y = torch.sin(2 * math.pi * (t + 7 * w) / 24) + 0.002 * t
        windows.append({"item": 1000 * w, "channel": w % 2, "column": f"col{w % 2}", "row": 9000 + 37 * w,
                        "context": y[:hist].tolist(), "truth": y[hist:].tolist()})
        pd_, pp = (y[hist:] * 0.8).tolist(), (y[hist:] * 0.9).tolist()
        points_d.append(pd_)
        points_p.append(pp)
        q_d.append([[v - 0.5, v - 0.2, v + 0.2, v + 0.5] for v in pd_])
        q_p.append([[v - 0.4, v - 0.15, v + 0.15, v + 0.4] for v in pp])
    fc = {"dense": {"point": points_d}, "pruned": {"point": points_p}}
    if quantiles:
        fc["dense"].update(levels=[0.1, 0.3, 0.7, 0.9], quantiles=q_d)
        fc["pruned"].update(levels=[0.1, 0.3, 0.7, 0.9], quantiles=q_p)
    r = {
        "tsprune_version": "0.1.0",
        "command": "tsprune prune --data ETTh1.csv.gz --horizon 96 --export onnx --out runs/x",
        "family": "timesfm2_5", "model": "nano",
        "data": {"path": "/data/ETTh1.csv.gz", "columns": ["HUFL", "OT"], "rows": 17420,
                 "split_rows": [8640, 11520, 14400], "freq": "h", "season": 24, "context": 512,
                 "horizon": H, "train_horizon": H, "missing": "no missing values",
                 "windows": {"train": 16000, "val": 5000, "test": 5500}},
        "params": {"dense": 40_000_000, "pruned": 31_000_000},
        "sparsity": 0.225,
        "metrics": {"zero_shot": metric(0.412, 0.421), "finetuned_dense": metric(0.395, 0.410),
                    "pruned": metric(0.455, 0.441), "pruned_finetuned": metric(0.389, 0.405)},
        "baselines": {"seasonal_naive": {**metric(0.62, 0.51), "season": 24},
                      "dlinear": metric(0.401, 0.415)},
        "prune": {"config": {"ratio": 0.1, "ema": 0.5, "max_epochs": 3, "macro_batch_effective": 2000,
                             "steps_per_epoch": 8, "scorer": "fused", "best_val_loss": 0.69},
                  "best_epoch": 2, "history": history},
        "finetune": {"pruned": {"lr": 3e-5, "val_loss": 0.66, "val_loss_before": 0.69, "epochs_run": 2,
                                "trials": [{"lr": 1e-5, "val_loss": 0.67, "epochs": 2, "improved": True},
                                           {"lr": 3e-5, "val_loss": 0.66, "epochs": 2, "improved": True}],
                                "history": [], "seconds": 120.0},
                     "dense": None},
        "structure": {"dense": dense, "pruned": pruned},
        "samples": {"horizon": H, "history": hist, "units": "z-scored", "windows": windows,
                    "forecasts": fc},
        "onnx": None,
        "timings": {"load": 3.1, "zero_shot_eval": 20.0, "prune_score": 400.0, "finetune_pruned": 300.0,
                    "export_onnx": 30.0, "total": 760.0},
        "versions": {"tsprune": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "threads": 2},
        "config": {"prune": {"ratio": None}, "seed": 0},
    }
    if onnx:
        r["onnx"] = {"path": "model.onnx", "opset": 18, "outputs": ["point", "quantiles"], "bytes": 124_000_000,
                     "max_abs_err": 2.4e-6, "providers": ["CPUExecutionProvider"],
                     "latency_ms": {"1": {"median_ms": 12.5, "min_ms": 11.9, "runs": 20},
                                    "64": {"median_ms": 410.2, "min_ms": 400.0, "runs": 5},
                                    "threads": 2, "provider": "CPUExecutionProvider"}}
    if search:  # the shape tsprune.search and the pipeline write
        trials = [{"ratio": ra, "ema": a, "val_loss": 0.7 - ra + a / 10, "sparsity": 2 * ra, "params": 1000,
                   "best_epoch": 1, "curve": [{"epoch": 1, "step": s, "sparsity": s / 100} for s in range(8)]}
                  for ra in (0.05, 0.1) for a in (0.2, 0.5)]
        r["search"] = {"chosen": {"ratio": 0.1, "ema": 0.2, "val_loss": 0.62, "sparsity": 0.2, "lr": 3e-5},
                       "grids": {"ratio": [0.05, 0.1], "ema": [0.2, 0.5], "calib_samples": 8192,
                                 "val_samples": 2048, "lr": [1e-5, 3e-5]},
                       "trials": trials, "lr_trials": r["finetune"]["pruned"]["trials"], "seconds": 321.0}
    return r


def png_size(b64: str) -> tuple[int, int]:
    """(width, height) from a base64 PNG's IHDR chunk."""
    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def images(html: str) -> dict[str, tuple[int, int]]:
    return {alt: png_size(b64) for alt, b64 in
            re.findall(r'<img class="chart" alt="([^"]*)" src="data:image/png;base64,([^"]+)"', html)}


def test_html_has_every_section_and_chart():
    html = render_html(example_report())
    for sec in ("accuracy", "forecasts", "structure", "pruning", "fine-tuning", "size-and-latency",
                "search", "data", "timings", "command-and-versions"):
        assert f'<section id="{sec}">' in html, sec
    imgs = images(html)
    assert set(imgs) == {"forecasts of sample test windows", "per-layer structure, dense vs pruned",
                         "pruning curve"}
    for alt, (w, h) in imgs.items():
        assert w >= 600 and h >= 200, (alt, w, h)
    # self-contained: no scripts, no external resources
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "tsprune prune --data ETTh1.csv.gz --horizon 96 --export onnx --out runs/x" in html
    assert "2.13.0+cpu" in html and "12.50 ms" in html and "410.20 ms" in html


def test_accuracy_table_highlights_the_best_per_column():
    html = render_html(example_report())
    table = re.search(r'<section id="accuracy">.*?</table>', html, re.S).group(0)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    assert len(rows) == 1 + 6  # header + 4 model rows + 2 baselines
    best_rows = [re.search(r'<td class="l">([^<]*)</td>', r).group(1) for r in rows[1:] if 'class="best"' in r]
    # pruned + fine-tuned has the lowest MSE and MAE at both horizons: 4 highlighted cells
    assert best_rows == ["pruned + fine-tuned"]
    assert rows[-1].count('class="best"') == 0
    assert re.findall(r'class="best">([^<]*)<', rows[4]) == ["0.3112", "0.3645", "0.3890", "0.4050"]
    assert "h=48" in rows[0] and "h=96" in rows[0]
    assert '<tr class="sep">' in table  # the rule between foundation models and baselines


def test_html_without_optional_parts():
    r = example_report(search=False, onnx=False, quantiles=False)
    r["metrics"]["finetuned_dense"] = None
    r["metrics"]["pruned_finetuned"] = None
    del r["baselines"]["dlinear"]
    r.pop("samples")
    html = render_html(r)
    assert '<section id="search">' not in html and '<section id="forecasts">' not in html
    assert "fine-tuned dense" not in html and "ORT CPU latency" not in html
    assert len(images(html)) == 2
    # the smallest possible report still renders
    assert "<h1>" in render_html({"metrics": {}, "baselines": {}})


def test_html_escapes_text():
    r = example_report()
    r["command"] = "tsprune prune --out '<b>x</b>'"
    r["data"]["columns"] = ["a<script>"]
    html = render_html(r)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "a<script>" not in html


def test_search_section():
    html = render_html(example_report())
    sec = re.search(r'<section id="search">.*?</section>', html, re.S).group(0)
    assert "8 records" in sec  # each trial's curve is collapsed
    assert re.findall(r'class="best">([^<]*)<', sec) == ["0.6200", "0.6600"]  # trials, lr_trials
    assert "| 0.1 | 0.2 | 0.6200 | 0.200 |" in render_markdown(example_report())


def test_generic_renders_any_json():
    html = generic({"grid": {"lr": [1e-5, 3e-5]}, "trials": [{"a": 1, "b": 0.5}, {"a": 2, "c": "x"}],
                    "note": "<i>"})
    assert html.count("<table") == 3  # outer key/value, nested grid, trials
    assert "&lt;i&gt;" in html and "1e-05, 3e-05" in html
    assert generic([]) == "" and generic(None) == "-"


def test_write_reports_writes_three_files(tmp_path):
    r = example_report()
    write_reports(r, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["samples"]["horizon"] == 96
    md = (tmp_path / "report.md").read_text()
    assert "| pruned + fine-tuned | 31,000,000 | 0.3890 | 0.4050 |" in md
    assert "batch 64: 410.20 ms" in md
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert render_markdown(r) == md


def test_pick_windows_and_band_levels():
    assert pick_windows(10, 4) == [0, 3, 6, 9]
    assert pick_windows(3, 4) == [0, 1, 2]
    assert pick_windows(0, 4) == [] and pick_windows(5, 1) == [2]
    assert band_levels([0.1 * i for i in range(1, 10)]) == pytest.approx([0.1, 0.2, 0.8, 0.9])
    assert band_levels([0.5]) == [] and band_levels([0.1, 0.9]) == [0.1, 0.9]


def test_forecast_samples_on_a_tiny_model():
    from helpers import TINY_TIMESFM25, synthetic_frame

    import tsprune
    data = tsprune.prepare_frame(synthetic_frame(900), tsprune.DataConfig(None, context=64, horizon=16,
                                                                          split="0.6,0.2,0.2"))
    test = data.windows("test")
    model = tsprune.from_config(dict(TINY_TIMESFM25))
    s = forecast_samples({"dense": model, "pruned": model}, test, n=4)
    assert s["horizon"] == 16 and s["history"] == 48 and len(s["windows"]) == 4
    assert {w["column"] for w in s["windows"]} == {"x0", "x1"}  # spans both channels
    w0 = s["windows"][0]
    c, t = test[w0["item"]]
    assert w0["context"] == pytest.approx(c[-48:].tolist(), abs=1e-4)
    assert w0["truth"] == pytest.approx(t.tolist(), abs=1e-4)
    f = s["forecasts"]["pruned"]
    assert len(f["point"]) == 4 and len(f["point"][0]) == 16
    assert f["levels"] == pytest.approx([0.1, 0.2, 0.8, 0.9])
    assert len(f["quantiles"][0][0]) == 4
    c1, _ = test[s["windows"][1]["item"]]
    assert f["point"][1] == pytest.approx(model.forecast(c1[None], 16).point[0].tolist(), abs=1e-3)
    assert len(json.dumps(s)) < 20_000
    html = render_html({"samples": s, "metrics": {}, "baselines": {}})
    assert "forecasts of sample test windows" in html


def test_ort_latency(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from tsprune.report import ort_latency
    x = helper.make_tensor_value_info("context", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("point", TensorProto.FLOAT, ["batch", 8])
    g = helper.make_graph([helper.make_node("Relu", ["context"], ["point"])], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    lat = ort_latency(path, context=8, batches=(1, 64), budget_s=0.5, max_runs=5)
    assert set(lat) >= {"1", "64", "threads", "provider"}
    for b in ("1", "64"):
        assert 1 <= lat[b]["runs"] <= 5 and 0 < lat[b]["min_ms"] <= lat[b]["median_ms"]
