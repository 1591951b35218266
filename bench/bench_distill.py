"""Recovery of a heavily pruned nano on ETTh1 (context 512, horizon 96): plain fine-tuning
against distillation from the dense teacher, at equal wall time.

    OMP_NUM_THREADS=1 nice -n 5 python bench/bench_distill.py --seeds 0,1,2 --budget 60 \\
        --out bench/results/distill.json     # writes distill.json and distill.md beside it

The pruned model: the fixed plan of bench/bench_latency.py (heads 2/1/1/1 of 4, FFN
320/256/192/256 of 1024 per layer: 1,747,456 of 4,041,216 parameters kept). Every arm trains
on the same training windows (a seeded subset of ETTh1's train split), validates on the
same validation windows at h96, and gets the same fine-tuning time budget (time_budget_s,
lr probes and validations included) and the same learning rate (default 3e-4, the pruned
model's rate from ../shared/PRUNING-NOTES.md); each seed changes the batch order, the same
for every arm of that seed. Arms:
  * finetune: FinetuneConfig(distill="off"), plain fine-tuning;
  * distill-auto: distill="auto" (w probed over 0, 0.5, 1 inside the budget, then the full run);
  * distill-W: a fixed mixing weight W (--weights, e.g. 1.0 or 0.5).
The teacher is chosen once by choose_teacher between the zero-shot dense model and the dense
model fine-tuned once (lr 3e-5, one epoch, the dense recipe of the notes); its forecasts of
the training windows are cached once (reported: seconds, bytes) and shared by every
distillation run. That teacher pass is not counted in the fine-tuning budget (the pipeline
runs it as its own phase); its time is reported beside. Test MSE is over every ETTh1 test
window (z-scored, all 7 channels), unless --test-samples.

Skips with a reason (exit 0) when ../shared/data (ETTh1) is absent.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HEADS = (2, 1, 1, 1)             # heads kept per layer (of 4), as bench/bench_latency.py
FFN = (320, 256, 192, 256)       # FFN neurons kept per layer (of 1024)


def pruned_nano(dense):
    """``dense`` (nano) cut to the fixed plan HEADS / FFN."""
    from tsprune.prune import Plan, apply
    from tsprune.prune.masks import MaskSet
    s = dense.family.structure(dense.module)
    ms = MaskSet(dense.module, s.linears())
    for b, keep_h, keep_f in zip(s.blocks, HEADS, FFN):
        a, f = b.attention[0], b.ffn[0]
        ms.m_out[a.v][keep_h * a.v_head_dim:] = 0
        ms.m_out[f.inputs[0]][keep_f:] = 0
    n = dense.num_params()
    return apply(dense, Plan(dense.family.name, ms.to_json(), n, n))


def _md(res: dict) -> str:
    s = res["setup"]
    lines = ["# Recovery of a pruned nano: plain fine-tuning vs distillation at equal wall time", "",
             f"Machine: {s['machine']}; torch {s['torch']}, {s['threads']} thread(s). Date: {s['date']}.", "",
             "Command:", "", "```", s["command"], "```", "",
             f"nano on ETTh1 (`ett` split, context 512, horizon 96), pruned to the fixed plan of "
             f"bench/bench_latency.py (heads {list(HEADS)}, FFN {list(FFN)}): {s['params_pruned']:,} of "
             f"{s['params_dense']:,} parameters kept ({1 - s['params_pruned'] / s['params_dense']:.1%} pruned). "
             f"Every arm: the same {s['train_windows']:,} training windows, {s['val_windows']:,} validation "
             f"windows at h96, lr {s['lr']}, batch {s['batch_size']}, validation every {s['val_every']} steps, "
             f"patience {s['patience']}, and the same fine-tuning budget of **{s['budget_s']:g} s** "
             f"(probes and validations included). Test MSE over {s['test_windows']:,} test windows.", "",
             f"Teacher: `{res['teacher']['name']}` chosen by validation MSE at h96 "
             f"({', '.join(f'{k} {v:.4f}' for k, v in res['teacher']['val_mse'].items())}); "
             f"its forecasts of the training windows cached once in {res['teacher']['cache_s']:.1f} s "
             f"({res['teacher']['cache_bytes'] / 1e6:.1f} MB), outside the budget"
             + (f"; dense fine-tuning for the teacher candidate took {res['teacher']['dense_ft_s']:.1f} s"
                if res["teacher"].get("dense_ft_s") else "") + ".", "",
             f"Reference points: zero-shot dense test MSE {res['reference']['zero_shot']:.4f}, "
             f"pruned before recovery {res['reference']['pruned']:.4f}"
             + (f", fine-tuned dense {res['reference']['finetuned_dense']:.4f}"
                if res["reference"].get("finetuned_dense") is not None else "") + ".", "",
             "| seed | arm | test MSE | steps | chosen w | best step | stopped | fine-tune s |",
             "|---:|---|---:|---:|---:|---:|---|---:|"]
    for r in res["runs"]:
        w = "-" if r["w"] is None else f"{r['w']:g}"
        lines.append(f"| {r['seed']} | {r['arm']} | {r['test_mse']:.4f} | {r['steps']} | {w} | "
                     f"{r['best_step']} | {r['stopped']} | {r['seconds']:.1f} |")
    lines += ["", "| arm | runs | mean test MSE | sd | min | max |", "|---|---:|---:|---:|---:|---:|"]
    for arm, v in res["summary"].items():
        lines.append(f"| {arm} | {v['n']} | {v['mean']:.4f} | {v['sd']:.4f} | {v['min']:.4f} | {v['max']:.4f} |")
    lines += ["", res.get("reading", ""), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=float, default=60.0, help="fine-tuning time budget per run (s)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weights", default="1.0", help="fixed mixing weights to run besides auto (comma list; '' none)")
    ap.add_argument("--no-auto", action="store_true", help="skip the distill-auto arm")
    ap.add_argument("--train-samples", type=int, default=8192)
    ap.add_argument("--val-samples", type=int, default=1024)
    ap.add_argument("--test-samples", type=int, default=0, help="0: every test window")
    ap.add_argument("--val-every", type=int, default=25)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--probe-steps", type=int, default=15, help="steps per w probe of distill-auto")
    ap.add_argument("--no-dense-teacher", action="store_true",
                    help="skip fine-tuning the dense model: the zero-shot dense model is the only teacher")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/distill.json")
    a = ap.parse_args()

    from tsprune.data import DataConfig, ett_path
    path = ett_path("ETTh1")
    if path is None:
        print("SKIP: ../shared/data/ETTh1 is absent (the benchmark needs the real ETTh1 table)")
        return 0
    import torch

    from tsprune.data import prepare
    from tsprune.evaluation import evaluate
    from tsprune.model import load
    from tsprune.train import FinetuneConfig, finetune
    from tsprune.train.distill import choose_teacher, teacher_cache

    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    fixed = [float(w) for w in a.weights.split(",") if w.strip()]
    data = prepare(DataConfig(path, context=512, horizon=96, split="ett"))
    train = data.windows("train").subset(a.train_samples, seed=1234)
    val = data.windows("val").subset(a.val_samples, seed=1235)
    test = data.windows("test", stride=1)
    if a.test_samples:
        test = test.subset(a.test_samples, seed=123)
    dense = load("nano")
    pruned = pruned_nano(dense)
    res: dict = {"setup": {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{platform.platform()}), shared with other jobs",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "OMP_NUM_THREADS=1 nice -n 5 python " + " ".join(sys.argv),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "params_dense": dense.num_params(), "params_pruned": pruned.num_params(),
        "train_windows": len(train), "val_windows": len(val), "test_windows": len(test),
        "lr": a.lr, "batch_size": 64, "val_every": a.val_every, "patience": a.patience, "budget_s": a.budget,
        "probe_steps": a.probe_steps}, "runs": [], "summary": {}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(res, indent=1))
        out.with_suffix(".md").write_text(_md(res))

    def test_mse(m) -> float:
        return float(evaluate(m, test, [96], show_progress=False)["mse"])

    ref = {"zero_shot": test_mse(dense), "pruned": test_mse(pruned)}
    print("reference", ref, flush=True)
    candidates = {"zero_shot": dense}
    teacher_info: dict = {}
    if not a.no_dense_teacher:
        tuned = dense.clone()
        t = time.time()
        finetune(tuned, train, val, FinetuneConfig(lr=(3e-5,), epochs=1, val_every=0, patience=1, lr_probe_steps=0,
                                                   train_samples=None, val_samples=None), show_progress=False)
        teacher_info["dense_ft_s"] = round(time.time() - t, 1)
        ref["finetuned_dense"] = test_mse(tuned)
        candidates["finetuned_dense"] = tuned
    name, scores = choose_teacher(candidates, val)
    t = time.time()
    cache = teacher_cache(candidates[name], train)
    teacher_info.update(name=name, val_mse=scores, cache_s=round(time.time() - t, 1), cache_bytes=cache.nbytes)
    res["teacher"], res["reference"] = teacher_info, ref
    print("teacher", teacher_info, flush=True)
    save()

    arms = [("finetune", "off")] + ([] if a.no_auto else [("distill-auto", "auto")]) + \
        [(f"distill-{w:g}", w) for w in fixed]
    for seed in seeds:
        for arm, distill in arms:
            cfg = FinetuneConfig(lr=(a.lr,), epochs=100, batch_size=64, patience=a.patience, train_samples=None,
                                 val_samples=None, seed=seed, val_every=a.val_every, time_budget_s=a.budget,
                                 lr_probe_steps=a.probe_steps, distill=distill)
            m = pruned.clone()
            r = finetune(m, train, val, cfg, show_progress=False, teacher=None if distill == "off" else cache)
            row = {"seed": seed, "arm": arm, "test_mse": test_mse(m), "steps": r.steps_run, "w": r.distill_weight,
                   "best_step": r.best_step, "stopped": r.stopped, "seconds": round(r.seconds, 1),
                   "val_best": r.val_loss, "trials": r.trials}
            res["runs"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "trials"}), flush=True)
            res["summary"] = {}
            for arm_name, _ in arms:
                v = [x["test_mse"] for x in res["runs"] if x["arm"] == arm_name]
                if v:
                    res["summary"][arm_name] = {"n": len(v), "mean": statistics.fmean(v),
                                                "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                                                "min": min(v), "max": max(v)}
            save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
