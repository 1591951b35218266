"""Reference forecasters to compare pruned models against.

seasonal_naive (no training), DLinear (seconds of CPU training) and a supervised
PatchTST trained from scratch (`train_patchtst`, about two CPU-minutes on ETTh1).
Run `python -m tsprune.baselines ETTh1 ...` for the benchmark table.
"""
from tsprune.baselines.dlinear import DLinear, train_dlinear
from tsprune.baselines.evaluate import evaluate_forecaster
from tsprune.baselines.naive import evaluate_seasonal_naive, seasonal_naive
from tsprune.baselines.patchtst import SupervisedPatchTST, train_patchtst

__all__ = ["seasonal_naive", "evaluate_seasonal_naive", "DLinear", "train_dlinear",
           "evaluate_forecaster", "SupervisedPatchTST", "train_patchtst"]
