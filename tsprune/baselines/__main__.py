"""Baseline table: python -m tsprune.baselines ETTh1 ETTh2 ETTm1 ETTm2 --context 512 --horizon 96

Each dataset is a benchmark name (found by tsprune.data.ett_path) or a file
path. Prints test MSE/MAE (z-scored, every window, stride 1, every channel) of
the last-value and seasonal naive forecasts and of DLinear, and DLinear's
training time (wall and CPU seconds).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from tsprune.baselines import evaluate_forecaster, evaluate_seasonal_naive, train_dlinear
from tsprune.data import DataConfig, ett_path, prepare
from tsprune.errors import exit_status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tsprune.baselines", description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--horizon", type=int, default=96)
    ap.add_argument("--split", default="ett")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: DLinear is tiny; 0 keeps torch's default)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'data':8} {'naive mse':>9} {'mae':>6} {'seas. mse':>9} {'mae':>6} "
          f"{'DLinear mse':>11} {'mae':>6} {'epochs':>6} {'train s':>7} {'cpu s':>6}")

    def table():
        for name in args.datasets:
            path = ett_path(name) or name
            data = prepare(DataConfig(path, split=args.split, context=args.context,
                                      horizon=args.horizon))
            test = data.windows("test")
            last = evaluate_seasonal_naive(test, None)
            seas = evaluate_seasonal_naive(test, data.season)
            start, cpu = time.perf_counter(), time.process_time()
            model = train_dlinear(data, epochs=args.epochs, lr=args.lr,
                                  batch_size=args.batch_size, seed=args.seed,
                                  progress=not args.no_progress)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            dl = evaluate_forecaster(model, test)
            print(f"{name:8} {last['mse']:9.4f} {last['mae']:6.4f} {seas['mse']:9.4f} "
                  f"{seas['mae']:6.4f} {dl['mse']:11.4f} {dl['mae']:6.4f} "
                  f"{len(model.history):6d} {seconds:7.1f} {cpu:6.1f}", flush=True)

    return exit_status(table)


if __name__ == "__main__":
    sys.exit(main())
