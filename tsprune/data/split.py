"""Train/validation/test split by rows, and the default seasonal period.

Splits are contiguous and in time order: train = rows [0, train_end),
val = [train_end, val_end), test = [val_end, test_end). Rows after test_end
are unused (the ETT files have 17,420 rows; the "ett" split uses 14,400).
"""
from __future__ import annotations

import math

import pandas as pd
from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

from tsprune.data.table import fixed_step
from tsprune.errors import UserError, bad_arg

ETT_MONTHS = (12, 4, 4)  # train/val/test months, 30-day months as in TSLib
_DAYS_PER_MONTH = 30
_RATIO_HELP = ('"ett", "auto" or three ratios train,val,test such as "0.7,0.1,0.2" '
               '(each > 0, sum <= 1)')
AUTO_RATIOS = (0.7, 0.1, 0.2)


def parse_split(split) -> str | tuple[float, float, float]:
    """"ett" -> "ett"; "auto" -> "auto"; "0.7,0.1,0.2" (or a 3-sequence) -> (0.7, 0.1, 0.2).
    Else UserError."""
    if isinstance(split, str) and split.strip().lower() in ("ett", "auto"):
        return split.strip().lower()
    try:
        parts = split.split(",") if isinstance(split, str) else list(split)
        ratios = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise bad_arg("split", split, _RATIO_HELP) from None
    if len(ratios) != 3 or not all(math.isfinite(r) and r > 0 for r in ratios) \
            or sum(ratios) > 1 + 1e-9:
        raise bad_arg("split", split, _RATIO_HELP)
    return ratios


def rows_per_month(freq: str | None) -> int:
    """Rows in a 30-day month at `freq` (hourly 720, 15-min 2880, daily 30, monthly 1)."""
    if freq is not None:
        off = to_offset(freq)
        if isinstance(off, (offsets.MonthBegin, offsets.MonthEnd)) and off.n == 1:
            return 1
        step = fixed_step(freq)
        month = pd.Timedelta(days=_DAYS_PER_MONTH)
        if step is not None and month % step == pd.Timedelta(0):
            return month // step
    raise bad_arg("split", "ett", f"a table whose frequency divides 30 days (this one: {freq}); "
                  'without a regular date column use ratios such as "0.7,0.1,0.2"')


def _ett_fits(n_rows: int, freq: str | None) -> bool:
    try:
        return n_rows >= sum(ETT_MONTHS) * rows_per_month(freq)
    except UserError:
        return False


def resolve_split(n_rows: int, split, freq: str | None = None):
    """What "auto" means for this table: "ett" when it holds 20 months, else 0.7/0.1/0.2."""
    spec = parse_split(split)
    if spec == "auto":
        return "ett" if _ett_fits(n_rows, freq) else AUTO_RATIOS
    return spec


def split_rows(n_rows: int, split="ett", freq: str | None = None) -> tuple[int, int, int]:
    """Row indices (train_end, val_end, test_end) of a contiguous split.

    "auto": "ett" when the table holds 20 months at its frequency, else 0.7/0.1/0.2.
    "ett": 12/4/4 months of 30 days at `freq` (hourly: 8640/2880/2880 rows,
    15-min: 34560/11520/11520); the table needs at least 20 such months.
    Ratios (a, b, c): train = int(n*a), test = int(n*c); val = n - train - test
    when a + b + c == 1 (TSLib), else int(n*b). Each part gets >= 1 row.
    """
    spec = parse_split(split)
    if spec == "auto":
        spec = "ett" if _ett_fits(n_rows, freq) else AUTO_RATIOS
    if spec == "ett":
        month = rows_per_month(freq)
        train, val, test = (m * month for m in ETT_MONTHS)
        if n_rows < train + val + test:
            raise UserError(
                f"split: 'ett' needs {sum(ETT_MONTHS)} months = {train + val + test} rows at "
                f"frequency {freq}; the table has {n_rows}; use ratios such as \"0.7,0.1,0.2\""
            )
    else:
        a, b, c = spec
        train, test = int(n_rows * a), int(n_rows * c)
        val = n_rows - train - test if abs(a + b + c - 1) < 1e-9 else int(n_rows * b)
        if min(train, val, test) < 1:
            raise bad_arg("split", split,
                          f"ratios that give every split at least one of the {n_rows} rows "
                          f"(got train/val/test = {train}/{val}/{test} rows)")
    return train, train + val, train + val + test


def default_season(freq: str | None) -> int | None:
    """Seasonal period implied by a frequency.

    Sub-daily steps that divide a day: one day (hourly 24, 30-min 48, 15-min 96,
    10-min 144); daily 7; business-daily 5; weekly 52; monthly 12; quarterly 4;
    anything else None.
    """
    if freq is None:
        return None
    off = to_offset(freq)
    if isinstance(off, offsets.BusinessDay) and off.n == 1:
        return 5
    if isinstance(off, (offsets.MonthBegin, offsets.MonthEnd)) and off.n == 1:
        return 12
    if isinstance(off, (offsets.QuarterBegin, offsets.QuarterEnd)) and off.n == 1:
        return 4
    step = fixed_step(freq)
    if step is None:
        return None
    day = pd.Timedelta(days=1)
    if step < day and day % step == pd.Timedelta(0):
        return day // step
    if step == day:
        return 7
    if step == 7 * day:
        return 52
    return None
