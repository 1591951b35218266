"""Missing-value policy: fill gaps, report what was filled, refuse what cannot be filled.

Policy (applied to the target columns, over the whole table, before the split):
- interior NaNs are interpolated linearly in time (by timestamp with a
  DatetimeIndex, by row otherwise);
- leading and trailing NaNs take the nearest valid value;
- a column that is entirely NaN, or holds +-inf, raises UserError;
- missing *rows* (gaps between timestamps) are not inserted: rows are used as
  they are, and the number of irregular steps is reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tsprune.data.table import _as_numeric, _not_numeric, fixed_step
from tsprune.errors import UserError


@dataclass(frozen=True)
class MissingReport:
    """What `fill_missing` did. Counts are per column, only columns with a count > 0.

    rows: rows in the table; interpolated: interior NaNs filled by interpolation;
    edge_filled: leading/trailing NaNs filled with the nearest value;
    irregular_steps: consecutive timestamps whose step differs from the frequency.
    """

    rows: int
    interpolated: dict = field(default_factory=dict)
    edge_filled: dict = field(default_factory=dict)
    irregular_steps: int = 0

    @property
    def filled(self) -> int:
        """Total number of values filled."""
        return sum(self.interpolated.values()) + sum(self.edge_filled.values())

    def lines(self) -> list[str]:
        """Human-readable lines for a report (empty when nothing happened)."""
        out = []
        for name in dict.fromkeys([*self.interpolated, *self.edge_filled]):
            i, e = self.interpolated.get(name, 0), self.edge_filled.get(name, 0)
            out.append(f"{name}: {i + e} missing of {self.rows} "
                       f"({i} interpolated, {e} filled at the edges)")
        if self.irregular_steps:
            out.append(f"{self.irregular_steps} irregular time steps (gaps kept as they are)")
        return out

    def __str__(self) -> str:
        return "; ".join(self.lines()) or "no missing values"


def _irregular_steps(index, freq) -> int:
    step = fixed_step(freq)
    if not isinstance(index, pd.DatetimeIndex) or step is None or len(index) < 2:
        return 0
    return int((np.diff(index.values) != step.to_timedelta64()).sum())


def fill_missing(df: pd.DataFrame, columns, freq=None) -> tuple[np.ndarray, MissingReport]:
    """Fill the NaNs of `columns` by the module policy.

    Returns (values float64 (N, C), MissingReport). Raises UserError for a
    non-numeric value, an all-NaN column or an infinity, naming the column.
    """
    data = {}
    for name in columns:
        num, n_failed, first = _as_numeric(df[name])
        if num is None or n_failed:
            raise _not_numeric(name, df[name], first, "data")
        data[name] = num.to_numpy(dtype=np.float64)
    frame = pd.DataFrame(data, index=df.index)
    values = frame.to_numpy()
    inf = np.isinf(values)
    if inf.any():
        c = int(np.flatnonzero(inf.any(axis=0))[0])
        row = int(np.flatnonzero(inf[:, c])[0])
        raise UserError(f"data: column {columns[c]!r} has {int(inf[:, c].sum())} infinite "
                        f"value(s) (first at row {row}); remove or replace them")
    nan = np.isnan(values)
    interpolated, edge = {}, {}
    if nan.any():
        empty = [n for n, all_nan in zip(columns, nan.all(axis=0)) if all_nan]
        if empty:
            raise UserError(f"data: column {empty[0]!r} has no values (all missing); "
                            "choose other targets")
        valid = ~nan
        first_valid = valid.argmax(axis=0)
        last_valid = len(values) - 1 - valid[::-1].argmax(axis=0)
        rows = np.arange(len(values))[:, None]
        inside = nan & (rows > first_valid) & (rows < last_valid)
        for c, name in enumerate(columns):
            n_in, n_edge = int(inside[:, c].sum()), int((nan[:, c] & ~inside[:, c]).sum())
            if n_in:
                interpolated[name] = n_in
            if n_edge:
                edge[name] = n_edge
        method = "time" if isinstance(frame.index, pd.DatetimeIndex) else "linear"
        frame = frame.interpolate(method=method, limit_area="inside").ffill().bfill()
        values = frame.to_numpy()
    report = MissingReport(len(values), interpolated, edge, _irregular_steps(df.index, freq))
    return values, report
