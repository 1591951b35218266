"""Time a finished frontier run's graphs again against its dense graph:

    python bench/tools/retime.py runs/ablation [--batch 64] [--passes 3]

For a run whose latency pass shared the machine with other work: every fp32 graph in
RUN/graphs is timed interleaved with RUN/graphs/dense.onnx (ONNX Runtime, one thread), in
``--passes`` independent passes, and the speed-up tsprune reports (median CPU time per
run at one thread: tsprune.export.speed.speedups) is printed per pass, with the wall
median-latency ratio beside it so that the two can be compared. Prints a markdown table; writes nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tsprune.export.speed import interleaved_latency, speedups


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--passes", type=int, default=3)
    a = ap.parse_args(argv)
    run = Path(a.run)
    rep = json.loads((run / "frontier.json").read_text())
    graphs = {p.name[:-len(".onnx")]: p for p in sorted((run / "graphs").glob("*.onnx"))
              if not p.name.endswith(".int8.onnx")}
    if "dense" not in graphs:
        raise SystemExit(f"retime: no dense.onnx in {run / 'graphs'}")
    cpu, median = {}, {}
    for i in range(a.passes):
        lat = interleaved_latency(graphs, context=rep["data"]["context"], batch=a.batch, rounds=30, seed=i)
        for k, v in speedups(lat, "dense").items():
            cpu.setdefault(k, []).append(v)
        for k, v in speedups(lat, "dense", "median_ms").items():
            median.setdefault(k, []).append(v)
    print(f"| graph | speed-up, median CPU time ({a.passes} passes, b{a.batch}) | wall median-latency ratio |")
    print("|---|---|---|")
    for k in graphs:
        if k != "dense":
            print(f"| {k} | {' / '.join(f'{x:.2f}x' for x in cpu[k])} | "
                  f"{' / '.join(f'{x:.2f}x' for x in median[k])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
