"""Export pruning plans of one model and time them side by side against the dense graph:

    python bench/tools/plan_speed.py A=runs/x/plans/taylor_fisher/flops0p375.json \
        B=runs/y/plans/taylor_fisher/flops0p375.json [--model nano] [--passes 3]

Each NAME=PLAN is applied to the model (default: the bundled nano), exported to ONNX
(context 512, horizon 96, fp32) in a temporary directory, and every graph is timed
interleaved with the dense graph (ONNX Runtime, CPU, one thread, batch 64, 30 rounds per
pass). Prints per graph: FLOPs kept (the plan's measured fraction), the speed-up per pass
(median CPU time per run: tsprune.export.speed.speedups) and speed-up / FLOPs ratio
(of the median pass). Used to compare plans that differ only in their widths (--align).
Writes nothing outside the temporary directory.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tsprune.export import export_onnx
from tsprune.export.speed import interleaved_latency, speedups
from tsprune.model import load
from tsprune.prune import Plan, apply


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("plans", nargs="+", metavar="NAME=PLAN")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--horizon", type=int, default=96)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--passes", type=int, default=3)
    a = ap.parse_args(argv)
    model = load(a.model)
    named = dict(x.split("=", 1) for x in a.plans)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"dense": Path(tmp) / "dense.onnx"}
        export_onnx(model, graphs["dense"], context=a.context, horizon=a.horizon, check=False)
        flops = {}
        for name, path in named.items():
            plan = Plan.load(path)
            flops[name] = plan.config.get("measured", {}).get("kept_flops")
            graphs[name] = Path(tmp) / f"{name}.onnx"
            export_onnx(apply(model, plan), graphs[name], context=a.context, horizon=a.horizon, check=False)
        runs: dict[str, list[float]] = {}
        for i in range(a.passes):
            lat = interleaved_latency(graphs, context=a.context, batch=a.batch, rounds=30, seed=i)
            for k, v in speedups(lat, "dense").items():
                runs.setdefault(k, []).append(v)
    print(f"| plan | FLOPs kept | speed-up, median CPU time ({a.passes} passes, b{a.batch}) | speed-up / FLOPs ratio |")
    print("|---|---:|---|---:|")
    for name in named:
        f, med = flops[name], statistics.median(runs[name])
        ratio = "-" if not f else f"{med * f:.2f}"
        print(f"| {name} | {'-' if f is None else f'{f:.4f}'} | {' / '.join(f'{x:.2f}x' for x in runs[name])} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
