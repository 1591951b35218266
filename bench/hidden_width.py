"""Hidden-width pruning on nano: how norms should treat fewer channels, and what the hidden
axis is worth at a FLOPs budget.

    python bench/hidden_width.py [--out bench/results/hidden_width.json]   # ~15 min, 2 cores

Bundled ``nano`` on ETTh1 (``ett`` split, context 512, horizon 96). Every plan is scored
to ``--budget`` (default flops=0.5, FLOPs of the optimized ONNX graph) with the paper's
Taylor-Fisher scores, cost-aware, on ``--calib`` training windows; nothing is fine-tuned.
Arms:

* ``channels``: heads, V dims and FFN neurons only (the default axes);
* ``hidden_kept`` / ``hidden_dense``: the hidden width too, scored and sliced with the
  RMSNorms computing over the kept channels (weights as they were) or with their weights
  times sqrt(d / d_kept) (what they computed with the pruned channels at zero);
* ``*_as_other``: each hidden plan sliced with the other normalisation (same channels:
  the effect of the choice alone).

For each: the native loss on ``--val`` validation windows, test MSE/MAE on every
``--test-stride``-th test window, parameters and FLOPs kept; then ONNX Runtime latency
(CPU, one thread, batch 64, interleaved) of the dense, ``channels`` and ``hidden_kept``
graphs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from tsprune.data import DataConfig, ett_path, prepare
from tsprune.evaluation import evaluate
from tsprune.export.profile import deployed_profile
from tsprune.model import load
from tsprune.prune import PruneConfig, apply, score
from tsprune.prune.engine import masked_loss


def _norm_scale(family, scale: str | None) -> None:
    """Make ``family`` describe its residual stream with norm_scale ``scale`` (None: its own)."""
    if "hidden_width" in vars(family):
        del family.hidden_width
    if scale is not None:
        own = type(family).hidden_width
        family.hidden_width = lambda module: dataclasses.replace(own(family, module), norm_scale=scale)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/hidden_width.json")
    ap.add_argument("--budget", default="flops=0.5")
    ap.add_argument("--calib", type=int, default=2048)
    ap.add_argument("--val", type=int, default=1024)
    ap.add_argument("--test-stride", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-latency", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    model = load("nano")
    family = model.family
    data = prepare(DataConfig(ett_path("ETTh1"), context=512, horizon=96, split="ett"))
    train, val = data.windows("train"), data.windows("val").subset(a.val, seed=1)
    test = data.windows("test", stride=a.test_stride)
    profile = deployed_profile(model, 512, 96)
    res: dict = {"model": "nano", "data": f"ETTh1 (ett split), context 512, horizon 96; {len(test)} test "
                 f"windows (stride {a.test_stride}), {len(val)} val windows", "budget": a.budget,
                 "calib_windows": a.calib, "arms": {}}

    def measure(name: str, m, plan=None) -> None:
        row = {"val_loss": masked_loss(m, None, val), **evaluate(m, test, show_progress=False),
               "params": m.num_params(), "hidden": (m.manifest or {}).get("hidden")}
        if plan is not None:
            meas = plan.config["measured"]
            row.update(kept_params=meas["kept_params"], kept_flops=meas["kept_flops"])
        res["arms"][name] = row
        print(name, json.dumps(row), flush=True)

    measure("dense", model)
    cfg = PruneConfig(budget=a.budget, calib_samples=a.calib, val_samples=a.val, macro_batch=256)
    plans, pruned = {}, {}
    for name, hidden, scale in (("channels", False, None), ("hidden_kept", True, "kept"),
                                ("hidden_dense", True, "dense")):
        _norm_scale(family, scale)
        t = time.time()
        plans[name] = score(model, train, val, dataclasses.replace(cfg, hidden=hidden), show_progress=False,
                            profile=profile)
        pruned[name] = apply(model, plans[name])
        measure(name, pruned[name], plans[name])
        res["arms"][name]["score_s"] = round(time.time() - t, 1)
    for name, other in (("hidden_kept", "dense"), ("hidden_dense", "kept")):
        _norm_scale(family, other)
        measure(f"{name}_as_{other}", apply(model, plans[name]), plans[name])
    _norm_scale(family, None)

    if not a.no_latency:
        from tsprune.export import export_onnx
        from tsprune.export.speed import interleaved_latency, speedups
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for name, m in (("dense", model), ("channels", pruned["channels"]),
                            ("hidden_kept", pruned["hidden_kept"])):
                paths[name] = Path(tmp) / f"{name}.onnx"
                r = export_onnx(m, paths[name], context=512, horizon=96)
                res["arms"][name]["onnx_max_abs_err"] = r["max_abs_err"]
            lat = interleaved_latency(paths, context=512, batch=64, threads=1)
        res["latency_batch64_1thread"] = lat
        res["speedup_vs_dense"] = speedups(lat, "dense")
        print(json.dumps(lat), json.dumps(res["speedup_vs_dense"]), flush=True)
    res["wall_s"] = round(time.time() - t0, 1)
    res["torch_threads"] = a.threads
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
