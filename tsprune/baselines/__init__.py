"""Reference forecasters to compare pruned models against.

seasonal_naive (no training) and DLinear (seconds of CPU training). A
supervised PatchTST belongs here too, as its own module with a
`train_patchtst(prepared, ...)` beside `train_dlinear`.
Run `python -m tsprune.baselines ETTh1 ...` for the benchmark table.
"""
from tsprune.baselines.dlinear import DLinear, train_dlinear
from tsprune.baselines.evaluate import evaluate_forecaster
from tsprune.baselines.naive import evaluate_seasonal_naive, seasonal_naive

__all__ = ["seasonal_naive", "evaluate_seasonal_naive", "DLinear", "train_dlinear",
           "evaluate_forecaster"]
