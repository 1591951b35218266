"""bench/results/frontier.md from the frontier runs of several datasets:

    for ds in ETTh1 ETTh2 ETTm1 ETTm2; do
      tsprune prune --data ../shared/data/$ds.csv.gz --split ett --horizon 96 \
        --frontier speedup=2,3 --recover distill --pick "mse<=dense_ft" --out runs/frontier/$ds
    done
    python bench/tools/frontier_table.py runs/frontier/ETTh1 runs/frontier/ETTh2 ... \
      --plots bench/results > bench/results/frontier.md

Reads each run's frontier.json; prints one table of every point (dataset, budget, measured
speed-up, FLOPs ratio, test MSE against dense fine-tuning) and the issue's targets checked
per dataset (the FLOPs ratio is the dense model's FLOPs over the plan's measured kept FLOPs).
--plots copies each run's frontier.png to DIR/frontier-<dataset>.png.
Several runs of one dataset (the same command with --seed 0, 1, 2) add a table of each
budget's mean over the runs, with the targets checked on the means.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def _flops_ratio(run: Path, rep: dict, p: dict) -> float | None:
    """Dense FLOPs over the point's kept FLOPs, as its plan measured them (the cost model's
    FLOPs of one forecast); the candidate budget's 1/fraction for runs whose plan is gone.
    The plan keeps at most the budget (and less with --align), so 1/budget understates it."""
    if p.get("flops"):  # recorded by the run itself
        return 1.0 / float(p["flops"])
    choice = rep["calibration"].get(p["criterion"], {}).get(p["budget"]) or {}
    plan = run / choice["plan"] if choice.get("plan") else None
    if plan is not None and plan.is_file():
        kept = (json.loads(plan.read_text()).get("config", {}).get("measured") or {}).get("kept_flops")
        if kept:
            return 1.0 / float(kept)
    cand = choice.get("candidate", "")
    return 1.0 / float(cand.split("=")[1]) if cand.startswith("flops=") else None


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--plots", help="copy each run's frontier.png here as frontier-<dataset>.png")
    a = ap.parse_args(argv)
    rows, checks = [], []
    seeds: dict[tuple[str, str], list[tuple[float, float, float]]] = {}  # (dataset, budget) -> per run
    for run in map(Path, a.runs):
        rep = json.loads((run / "frontier.json").read_text())
        ds = Path(rep["data"]["path"]).name.split(".")[0]
        ft = rep["dense"]["finetuned"]["mse"]
        if a.plots:
            shutil.copy2(run / "frontier.png", Path(a.plots) / f"frontier-{ds}.png")
        best = {2: None, 3: None}
        ratio_ok = True
        for p in sorted(rep["points"], key=lambda p: p["speedup"] or 0):
            fr = _flops_ratio(run, rep, p)
            eff = p["speedup"] / fr if (fr and p["speedup"]) else None
            ratio_ok &= eff is None or eff >= 0.8
            rel = p["mse"] / ft - 1
            rows.append(f"| {ds} | {p['name']} | {p['params']:.1%} | {p['speedup']:.2f}x | "
                        f"{'-' if fr is None else f'{fr:.2f}x'} | {'-' if eff is None else f'{eff:.2f}'} | "
                        f"{_x(p.get('speedup_fp32/b1'))} | {_x(p.get('speedup_int8/b64'))} | "
                        f"{p['mse']:.4f} | {ft:.4f} | {rel:+.1%} | {'*' if p['pareto'] else ''} |")
            for s in best:
                if p["speedup"] >= s and (best[s] is None or rel < best[s]):
                    best[s] = rel
        t2 = best[2] is not None and best[2] <= 0
        t3 = best[3] is not None and best[3] <= 0.02
        checks.append((ds, best, t2, t3, ratio_ok, rep["timings"]["total"]))
        for p in rep["points"]:
            seeds.setdefault((ds, p["budget"]), []).append((p["mse"], ft, p["speedup"]))
    print("| dataset | model | params kept | speed-up fp32 b64 | FLOPs ratio | speed-up / FLOPs ratio | "
          "fp32 b1 | int8 b64 | test MSE | dense FT MSE | vs dense FT | Pareto |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
    print("\n".join(rows))
    print("\n| dataset | best MSE vs dense FT at >= 2x | target 1 (<= 0%) | at >= 3x | target 2 (<= +2%) | "
          "speed-up >= 0.8 x FLOPs ratio | frontier wall time |")
    print("|---|---:|:-:|---:|:-:|:-:|---:|")
    for ds, best, t2, t3, ok, secs in checks:
        def f(x):
            return "-" if x is None else f"{x:+.1%}"
        print(f"| {ds} | {f(best[2])} | {'met' if t2 else 'missed'} | {f(best[3])} | {'met' if t3 else 'missed'} | "
              f"{'met' if ok else 'missed'} | {secs:.0f} s |")
    if any(len(v) > 1 for v in seeds.values()):
        _seed_means(seeds)
    return 0


def _seed_means(seeds: dict) -> None:
    """Several runs of one dataset (e.g. --seed 0, 1, 2): each budget's mean test MSE against
    the mean of the runs' own dense fine-tuning, the per-run spread, and the targets on the means."""
    print("\n| dataset | budget | runs | measured speed-ups | mean test MSE | mean dense FT MSE | "
          "mean vs dense FT | per run | target |")
    print("|---|---|---:|---|---:|---:|---:|---|:-:|")
    for (ds, budget), runs in seeds.items():
        if len(runs) < 2:
            continue
        mse = sum(r[0] for r in runs) / len(runs)
        ft = sum(r[1] for r in runs) / len(runs)
        rel = mse / ft - 1
        limit = {"speedup=2": 0.0, "speedup=3": 0.02}.get(budget)
        fast = all(r[2] is not None and r[2] >= float(budget.split("=")[1]) for r in runs) \
            if budget.startswith("speedup=") else True
        met = "-" if limit is None else ("met" if rel <= limit and fast else "missed")
        print(f"| {ds} | {budget} | {len(runs)} | {', '.join(_x(r[2]) for r in runs)} | {mse:.4f} | {ft:.4f} | "
              f"{rel:+.1%} | {', '.join(f'{r[0] / r[1] - 1:+.1%}' for r in runs)} | {met} |")


if __name__ == "__main__":
    raise SystemExit(main())
