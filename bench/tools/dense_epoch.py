"""Wall time of one full-data dense fine-tuning epoch (issue 17: "the frontier run for one
dataset takes at most 3 dense fine-tuning epochs of wall time"):

    OMP_NUM_THREADS=1 python bench/tools/dense_epoch.py ETTh1 [--model nano]

Every train window of the ETT split (context 512, the model's output patch), lr 1e-4, one
epoch, no lr probes, validated once at the end on 512 windows at h96. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from tsprune import load
from tsprune.data import DataConfig, ett_path, prepare
from tsprune.train import FinetuneConfig, finetune


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--model", default="nano")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    path = ett_path(a.dataset)
    if path is None:
        raise SystemExit(f"dense_epoch: {a.dataset!r} not found in ../shared/data")
    data = prepare(DataConfig(path, context=512, horizon=96, split="ett"))
    m = load(a.model)
    train = data.windows("train", horizon=min(m.family.output_horizon(m.module) or 96, 96))
    val = data.windows("val", horizon=96)
    t0 = time.time()
    r = finetune(m, train, val, FinetuneConfig(lr=1e-4, epochs=1, val_every=0, lr_probe_steps=0,
                                               val_samples=512, patience=1), show_progress=False)
    print(json.dumps({"dataset": a.dataset, "model": a.model, "train_windows": len(train),
                      "epoch_wall_s": round(time.time() - t0, 1), "val_mse": r.val_loss}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
