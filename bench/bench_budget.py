"""Pruning to a budget: what cost-aware ranking is worth, before any recovery.

    python bench/bench_budget.py [--budget params=0.5] [--calib-samples 4096] [--val-samples 512]
        [--criteria taylor_fisher,taylor,magnitude]

Bundled nano on ETTh1 (../shared/data, `ett` split, all 7 columns, context 512, horizon 96). For each
criterion, with and without cost-aware ranking: the plan at the budget (one scoring
epoch over --calib-samples train windows, the CLI's quick default), its measured kept
parameters and FLOPs (the optimized ONNX graph's forecast, tsprune.export.profile) and the
masked model's validation loss (--val-samples windows) before recovery. Prints one row
per arm and writes bench/results/budget.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ETTh1.csv.gz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="params=0.5")
    ap.add_argument("--calib-samples", type=int, default=4096)
    ap.add_argument("--val-samples", type=int, default=512)
    ap.add_argument("--criteria", default="taylor_fisher")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "budget.json"))
    a = ap.parse_args(argv)
    if not DATA.exists():
        raise SystemExit(f"needs {DATA} (../shared/data)")
    from tsprune.data import DataConfig, prepare
    from tsprune.export.profile import deployed_profile
    from tsprune.model import load
    from tsprune.prune import PruneConfig, score

    model = load("nano")
    data = prepare(DataConfig(path=DATA, context=512, horizon=96, split="ett"))
    train, val = data.windows("train"), data.windows("val")
    profile = deployed_profile(model, 512, 96)
    rows = []
    for crit in a.criteria.split(","):
        for aware in (True, False):
            t0 = time.time()
            cfg = PruneConfig(budget=a.budget, criterion=crit, cost_aware=aware,
                              calib_samples=a.calib_samples, val_samples=a.val_samples)
            plan = score(model, train, val, cfg, show_progress=False, profile=profile)
            m = plan.config["measured"]
            dense_val = plan.history[0]["val_loss"]
            row = {"criterion": crit, "cost_aware": aware, "budget": m["budget"], "kept_params": m["kept_params"],
                   "kept_flops": m["kept_flops"], "speedup_flops": 1.0 / m["kept_flops"], "val_loss": m["val_loss"],
                   "val_loss_dense": dense_val, "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(f"{crit:>13} cost-aware={str(aware):5}  kept params {m['kept_params']:.4f}  "
                  f"kept FLOPs {m['kept_flops']:.4f} ({1 / m['kept_flops']:.2f}x)  val loss {m['val_loss']:.4f} "
                  f"(dense {dense_val:.4f})  {row['seconds']} s", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"model": "nano", "data": "ETTh1 (ett split, all 7 columns, context 512, horizon 96)",
                                       "calib_samples": a.calib_samples, "val_samples": a.val_samples,
                                       "torch_threads": torch.get_num_threads(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
