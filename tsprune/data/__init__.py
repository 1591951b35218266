"""Data for tsprune: load a table, fill gaps, split (TSLib protocol), z-score, window.

    cfg = DataConfig("ETTh1.csv.gz", context=512, horizon=96)
    data = prepare(cfg)                       # Prepared
    test = data.windows("test")               # WindowDataset, channel-major
    for ctx, tgt in test.batches(1024):       # (B, L), (B, H) float32
        ...
"""
from tsprune.data.missing import MissingReport, fill_missing
from tsprune.data.prepare import (
    ETT_NAMES, DataConfig, Prepared, ett_path, prepare, prepare_frame, shared_data_dirs,
)
from tsprune.data.split import default_season, parse_split, rows_per_month, split_rows
from tsprune.data.table import infer_freq, load_table, select_targets, set_date_index
from tsprune.data.windows import WindowDataset, count_windows

__all__ = [
    "DataConfig", "Prepared", "prepare", "prepare_frame", "load_table", "select_targets",
    "set_date_index", "infer_freq", "split_rows", "parse_split", "rows_per_month",
    "default_season", "fill_missing", "MissingReport", "WindowDataset", "count_windows",
    "ett_path", "shared_data_dirs", "ETT_NAMES",
]
