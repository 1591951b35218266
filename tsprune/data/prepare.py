"""DataConfig -> Prepared: a loaded, cleaned, split, z-scored series ready for windows."""
from __future__ import annotations

import operator
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tsprune.data.missing import MissingReport, fill_missing
from tsprune.data.split import default_season, parse_split, resolve_split, split_rows
from tsprune.data.table import infer_freq, load_table, select_targets, set_date_index
from tsprune.data.windows import WindowDataset, count_windows
from tsprune.errors import UserError, bad_arg

SPLITS = ("train", "val", "test")


def _positive_int(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        raise bad_arg(name, value, "a positive integer" + (" or None" if allow_none else ""))
    return number


@dataclass(frozen=True)
class DataConfig:
    """What to read and how to window it.

    path: .csv, .csv.gz or .parquet file (None only with `prepare_frame`);
    target: column names to forecast (None: every numeric column; a string
    "a,b" is split at commas); date_col: the date column (None: detected);
    split: "ett" (12/4/4 months), "auto" ("ett" when the table holds 20 months, else
    0.7/0.1/0.2) or ratios "0.7,0.1,0.2";
    context L, horizon H, stride: window shape, in rows;
    season: seasonal period for baselines (None: inferred from the frequency).
    """

    path: str | os.PathLike | None
    target: tuple[str, ...] | None = None
    date_col: str | None = None
    split: str = "auto"
    context: int = 512
    horizon: int = 96
    stride: int = 1
    season: int | None = None
    test_stride: int = 1  # evaluation: every test_stride-th test window (1: every one, the protocol)

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if self.path is not None:
            if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
                raise bad_arg("path", self.path, "a file path")
            put("path", Path(self.path))
        target = self.target
        if target is not None:
            if isinstance(target, str):
                target = [t.strip() for t in target.split(",")]
            try:
                target = tuple(target)
            except TypeError:
                raise bad_arg("target", self.target, "column names") from None
            if not target or not all(isinstance(t, str) and t for t in target):
                raise bad_arg("target", self.target, "one or more non-empty column names")
            if len(set(target)) != len(target):
                raise bad_arg("target", self.target, "column names without repeats")
            put("target", target)
        if self.date_col is not None and (not isinstance(self.date_col, str) or not self.date_col):
            raise bad_arg("date_col", self.date_col, "a column name or None")
        parse_split(self.split)
        for name in ("context", "horizon", "stride"):
            put(name, _positive_int(name, getattr(self, name)))
        put("test_stride", _positive_int("--test-stride", self.test_stride))
        put("season", _positive_int("season", self.season, allow_none=True))


@dataclass(frozen=True, eq=False)
class Prepared:
    """A z-scored multivariate series with its split; `windows()` makes datasets.

    values: (N, C) float32, z-scored with train statistics; columns: names (C);
    mean, std: (C,) float64 train statistics (x = values * std + mean);
    freq: pandas offset alias or None; split: (train_end, val_end, test_end);
    missing: what the missing-value policy filled; season: default seasonal
    period; index: the timestamps (DatetimeIndex) or None.
    """

    config: DataConfig
    values: np.ndarray
    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    freq: str | None
    split: tuple[int, int, int]
    missing: MissingReport
    season: int | None
    index: pd.DatetimeIndex | None = None
    split_spec: str = ""  # the split actually used ("ett" or "a,b,c"), "auto" resolved
    notes: tuple[str, ...] = ()  # what reading the table did beyond the plain parse
    series: torch.Tensor = field(init=False, repr=False)  # (C, N) float32, shared by windows

    def __post_init__(self):
        object.__setattr__(self, "series", torch.from_numpy(np.ascontiguousarray(self.values.T)))

    def split_range(self, split: str) -> tuple[int, int]:
        """[start, end) rows of "train", "val" or "test"."""
        if split not in SPLITS:
            raise bad_arg("split", split, f"one of {SPLITS}")
        bounds = (0, *self.split)
        i = SPLITS.index(split)
        return bounds[i], bounds[i + 1]

    def windows(self, split: str, *, context=None, horizon=None, stride=None) -> WindowDataset:
        """Windows whose targets lie in `split` (TSLib: val/test contexts reach back
        into the previous split, so the first target is the split's first row).
        Defaults come from the config. UserError when no window fits."""
        L = _positive_int("context", self.config.context if context is None else context)
        H = _positive_int("horizon", self.config.horizon if horizon is None else horizon)
        S = _positive_int("stride", self.config.stride if stride is None else stride)
        start, end = self.split_range(split)
        first = max(start, L)
        if count_windows(first, end, H, S) < 1:
            need = f"context + horizon <= {end - start}" if split == "train" else \
                f"horizon <= {end - start} and context <= {start}"
            raise UserError(
                f"context/horizon: got context={L}, horizon={H}; no window fits the {split} "
                f"split ({end - start} rows, rows {start}..{end}); need {need}"
            )
        return WindowDataset(self.series, first, end, L, H, S, columns=self.columns)

    def denormalize(self, x, channel: int):
        """Undo the z-score of `channel` on an array or tensor."""
        return x * float(self.std[channel]) + float(self.mean[channel])

    def summary(self) -> str:
        """A few lines describing the data, for reports."""
        tr, va, te = self.split
        return "\n".join([
            f"{len(self.values)} rows x {len(self.columns)} channels ({', '.join(self.columns)}), "
            f"frequency {self.freq}, season {self.season}",
            f"split rows train {tr} / val {va - tr} / test {te - va} (unused after row {te}: "
            f"{len(self.values) - te})",
            f"missing values: {self.missing}",
        ] + [f"note: {n}" for n in self.notes])


def prepare_frame(df: pd.DataFrame, cfg: DataConfig) -> Prepared:
    """Prepare an in-memory DataFrame (its path field is ignored). See `prepare`."""
    df = set_date_index(df, date_col=cfg.date_col)
    if len(df) < 2:
        raise UserError(f"data: the table has {len(df)} row(s); a split needs many more")
    index = df.index if isinstance(df.index, pd.DatetimeIndex) else None
    freq = infer_freq(index)
    notes = list(df.attrs.get("notes", []))
    targets = select_targets(df, cfg.target, notes)
    values, report = fill_missing(df, targets, freq)
    spec = resolve_split(len(values), cfg.split, freq)
    split = split_rows(len(values), spec, freq)
    spec_s = spec if isinstance(spec, str) else ",".join(f"{r:g}" for r in spec)
    train = values[: split[0]]
    flat = [name for name, p in zip(targets, np.ptp(train, axis=0)) if p == 0]
    if flat:
        raise UserError(
            f"data: column(s) {flat} are constant in the train split (zero variance, "
            "cannot be z-scored); choose other targets"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = train.mean(axis=0), train.std(axis=0)  # ddof=0 as sklearn's StandardScaler
        normed = ((values - mean) / std).astype(np.float32)
    for i, name in enumerate(targets):
        if not (np.isfinite(mean[i]) and np.isfinite(std[i]) and std[i] > 0):
            raise UserError(f"data: column {name!r} has train statistics that are not finite "
                            f"(mean {mean[i]:.3g}, std {std[i]:.3g}; values up to "
                            f"{np.nanmax(np.abs(train[:, i])):.3g}); rescale the column")
        if not np.isfinite(normed[:, i]).all():
            row = int(np.flatnonzero(~np.isfinite(normed[:, i]))[0])
            raise UserError(f"data: column {name!r}: value {values[row, i]:.3g} at row {row} is "
                            f"outside float32 once z-scored (train std {std[i]:.3g}); rescale or "
                            "clean the column")
    if cfg.test_stride > 1:
        notes.append(f"test windows: every {cfg.test_stride}th (--test-stride {cfg.test_stride}), "
                     "not every window as the protocol asks: a quick evaluation only")
    season = cfg.season if cfg.season is not None else default_season(freq)
    if season is not None and season > cfg.context:
        if cfg.season is not None:
            raise bad_arg("--season", cfg.season, f"at most --context ({cfg.context})")
        notes.append(f"the {freq} data's season ({season} rows) is longer than --context "
                     f"{cfg.context}: the seasonal-naive baseline repeats the last value")
        season = None
    out = Prepared(cfg, normed, tuple(targets), mean, std, freq, split, report, season, index,
                   spec_s, tuple(notes))
    for name in SPLITS:  # fail now, not at the first use, when no window fits
        out.windows(name)
    return out


def prepare(cfg: DataConfig) -> Prepared:
    """Load `cfg.path`, fill missing values, split, z-score with train statistics.

    Raises UserError for every problem with the file or the config.
    """
    if cfg.path is None:
        raise bad_arg("path", None, "a file path (or use prepare_frame for a DataFrame)")
    return prepare_frame(load_table(cfg.path, date_col=cfg.date_col), cfg)


ETT_NAMES = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")


def shared_data_dirs() -> list[Path]:
    """Where benchmark data is looked for: $TSPRUNE_SHARED (or its data/), then ../shared/data."""
    dirs = []
    env = os.environ.get("TSPRUNE_SHARED")
    if env:
        dirs += [Path(env) / "data", Path(env)]
    repo = Path(__file__).resolve().parents[2]
    dirs.append(repo.parent / "shared" / "data")
    return dirs


def ett_path(name: str) -> Path | None:
    """Path of a benchmark file such as "ETTh1" (.csv.gz, .csv or .parquet), or None."""
    stem = name
    for suffix in (".csv.gz", ".csv", ".parquet"):
        stem = stem.removesuffix(suffix)
    for folder in shared_data_dirs():
        for suffix in (".csv.gz", ".csv", ".parquet"):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None
