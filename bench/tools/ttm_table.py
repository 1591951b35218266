"""The tables of bench/results/ttm_r2.md from the runs' report.json (and frontier.json) files.

    python bench/tools/ttm_table.py runs            # reads runs/ttm-<DS>-head, runs/ttm-<DS>-mixers,
                                                    # runs/frontier-<DS> for DS in ETTh1 ETTh2 ETTm1 ETTm2

Per dataset: zero-shot, full fine-tune, prune-then-finetune head only (the paper's mode) and
with the mixer MLPs (validation-stopped), DLinear and seasonal naive, each on every test
window; then which prune-then-finetune row beats full fine-tuning, and the frontier points
(budgets, measured ONNX Runtime speed-up, FLOPs ratio) where a frontier run exists. Missing
runs are listed as missing, never filled in.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _row(name: str, params, m: dict) -> str:
    p = f"{params:,}" if isinstance(params, int) else (params or "")
    return f"| {name} | {p} | {m['mse']:.4f} | {m['mae']:.4f} |"


def dataset_section(runs: Path, ds: str) -> tuple[list[str], dict]:
    head, mix = _read(runs / f"ttm-{ds}-head" / "report.json"), _read(runs / f"ttm-{ds}-mixers" / "report.json")
    out = [f"## {ds}, horizon 96", ""]
    if head is None and mix is None:
        return out + ["Not run.", ""], {}
    base = head or mix
    met, dense = base["metrics"], base["params"]["dense"]
    out += ["| row | params | MSE | MAE |", "|---|---:|---:|---:|",
            _row("zero-shot", dense, met["zero_shot"]), _row("full fine-tune", dense, met["finetuned_dense"])]
    ft = met["finetuned_dense"]["mse"]
    verdict = {}
    for label, rep in (("prune-then-finetune, head only (the paper)", head),
                       ("prune-then-finetune, with mixer MLPs", mix)):
        if rep is None:
            out.append(f"| {label} | missing | | |")
            continue
        pr = rep["params"]["pruned"]
        pft = rep["metrics"]["pruned_finetuned"]
        # the dense arms must be the same in both runs (same data, seed and budget)
        assert abs(rep["metrics"]["finetuned_dense"]["mse"] - ft) < 1e-9, (ds, label)
        out.append(_row(f"{label}", f"{pr:,} ({-100 * (1 - pr / dense):+.1f}%)", pft))
        verdict[label] = pft["mse"] - ft
    out += [_row("DLinear (trained from scratch)", None, base["baselines"]["dlinear"]),
            _row(f"seasonal naive (season {base['baselines']['seasonal_naive'].get('season', '?')})", None,
                 base["baselines"]["seasonal_naive"]), ""]
    for label, d in verdict.items():
        word = "beats" if d < 0 else ("ties" if d == 0 else "loses to")
        out.append(f"- {label} {word} full fine-tuning by {abs(d):.5f} MSE ({100 * d / ft:+.3f}%).")
    rec = (mix or head)["recommendation"]
    out += [f"- The report recommends: {rec['deploy']} (validation MSE "
            + ", ".join(f"{k} {v:.4f}" for k, v in rec["val_mse"].items()) + ").", ""]
    fr = _read(runs / f"frontier-{ds}" / "frontier.json")
    if fr is not None:
        out += _frontier(fr)
    return out, verdict


def _frontier(fr: dict) -> list[str]:
    d = fr["dense"]
    lat = d["latency_ms"]
    out = [f"Budgets (`--frontier`, mixers on, distillation; dense fine-tuned {d['finetuned']['mse']:.4f}; "
           f"dense ORT latency fp32 b1 {lat['fp32/b1']:.3f} ms, b64 {lat['fp32/b64']:.3f} ms):", "",
           "| point | params kept | FLOPs ratio | speed-up fp32 b1 | fp32 b64 | int8 b64 | budget met | test MSE | vs dense FT |",
           "|---|---:|---:|---:|---:|---:|:-:|---:|---:|"]
    ft = d["finetuned"]["mse"]
    for p in fr["points"]:
        cal = (fr["calibration"].get(p["criterion"], {}).get(p["budget"]) or {}).get("candidate", "")
        ratio = f"{1 / float(cal.split('=')[1]):.2f}" if cal.startswith("flops=") else "-"
        out.append(f"| {p['name']} | {100 * p['params']:.1f}% | {ratio} | {p.get('speedup_fp32/b1', 0):.2f}x | "
                   f"{p.get('speedup_fp32/b64', 0):.2f}x | {p.get('speedup_int8/b64', 0):.2f}x | "
                   f"{'-' if p['budget'] == 'paper' else ('yes' if p.get('met') else 'NO')} | {p['mse']:.4f} | "
                   f"{100 * (p['mse'] / ft - 1):+.1f}% |")
    return out + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", help="the directory holding ttm-<DS>-head, ttm-<DS>-mixers, frontier-<DS>")
    a = ap.parse_args(argv)
    runs = Path(a.runs)
    wins, done = 0, 0
    for ds in DATASETS:
        lines, verdict = dataset_section(runs, ds)
        print("\n".join(lines))
        if verdict:
            done += 1
            wins += any(v < 0 for v in verdict.values())
    print(f"Prune-then-finetune (either mode) beats full fine-tuning on {wins} of {done} datasets run "
          f"(target: at least 3 of 4).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
