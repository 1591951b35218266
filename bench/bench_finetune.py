"""Dense fine-tuning of the bundled nano on ETTh1 (context 512, h96): the paper's recipe
(one epoch, lr 3e-5, one validation) against the budgeted recipe (tsprune.train defaults:
lr probes over 1e-5..1e-3, validation every 100 steps at h96, patience 3, best weights kept,
up to 10 epochs). Test MSE over every test window and fine-tuning wall time.

    OMP_NUM_THREADS=1 python bench/bench_finetune.py --train-samples 8192 --out bench/results/finetune.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from tsprune.data import DataConfig, ett_path, prepare
from tsprune.evaluation import evaluate
from tsprune.model import load
from tsprune.train import FinetuneConfig, finetune

OLD = dict(lr=(3e-5,), epochs=1, patience=1, val_every=0, lr_probe_steps=0, val_metric="loss")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-samples", type=int, default=8192)
    ap.add_argument("--val-samples", type=int, default=2048)
    ap.add_argument("--test-samples", type=int, default=0, help="0: every test window")
    ap.add_argument("--recipes", default="old,new")
    ap.add_argument("--budget", type=float, help="time_budget_s of the new recipe")
    ap.add_argument("--out", default="bench/results/finetune.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = prepare(DataConfig(ett_path("ETTh1"), context=512, horizon=96, split="ett"))
    train, val = data.windows("train"), data.windows("val")
    test = data.windows("test", stride=1)
    if a.test_samples:
        test = test.subset(a.test_samples, seed=123)
    base = load("nano")
    res = {"setup": {"train_windows": len(train), "train_samples": a.train_samples,
                     "val_samples": a.val_samples, "test_windows": len(test),
                     "threads": torch.get_num_threads(), "torch": torch.__version__}}
    t = time.time()
    res["zero_shot"] = {"test_mse": evaluate(base, test, show_progress=False)["mse"],
                        "eval_s": round(time.time() - t, 1)}
    print("zero-shot", res["zero_shot"], flush=True)
    for name in a.recipes.split(","):
        kw = dict(OLD) if name == "old" else ({"time_budget_s": a.budget} if a.budget else {})
        cfg = FinetuneConfig(train_samples=a.train_samples, val_samples=a.val_samples, **kw)
        m = base.clone()
        r = finetune(m, train, val, cfg, show_progress=True)
        mse = evaluate(m, test, show_progress=False)["mse"]
        res[name] = {"config": {k: v for k, v in kw.items()}, "test_mse": mse, "finetune_s": round(r.seconds, 1),
                     "lr": r.lr, "steps_run": r.steps_run, "best_step": r.best_step, "stopped": r.stopped,
                     "epochs_run": r.epochs_run, "val_before": r.val_loss_before, "val_best": r.val_loss,
                     "val_metric": r.val_metric,
                     "probes": [(t["lr"], t["val_loss"]) for t in r.trials if "probe_steps" in t]}
        print(name, json.dumps(res[name]), flush=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
