"""Reading a table: file formats, the date column, the frequency, target columns.

The public functions here work on plain pandas objects; `tsprune.data.prepare`
chains them into a normalised, split, windowed data set.
"""
from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

from tsprune.data.sniff import check_parse, csv_format
from tsprune.errors import UserError, bad_arg

# Column names taken as the date column, case-insensitive, in this order.
DATE_NAMES = ("date", "datetime", "timestamp", "time", "ds", "dt")

_SUFFIXES = ((".csv.gz", "csv"), (".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"))


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in _SUFFIXES:
        if name.endswith(suffix):
            return kind
    raise bad_arg("path", str(path), "a .csv, .csv.gz or .parquet file")


def _read(path: Path, kind: str) -> pd.DataFrame:
    if not path.exists():
        raise bad_arg("path", str(path), "an existing file")
    if not path.is_file():
        raise bad_arg("path", str(path), "a file, not a directory")
    if path.stat().st_size == 0:
        raise UserError(f"path: {str(path)!r} is empty (0 bytes)")
    try:
        if kind == "csv":
            opts = csv_format(path)  # separator and decimal mark (";" and "1,5" too)
            df = pd.read_csv(path, **opts)  # .gz decompressed by suffix
            if not opts:
                check_parse(df, path)
            elif opts != {"sep": ","}:
                df.attrs["notes"] = [f"read with separator {opts['sep']!r}"
                                     + (" and decimal comma" if opts.get("decimal") == "," else "")]
            return df
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"path: {str(path)!r} has no columns (an empty CSV)") from None
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # parser, decoding, gzip, arrow
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"path: cannot read {str(path)!r} as {kind}: {type(exc).__name__}: {detail}"
        ) from exc


def load_table(path, *, date_col: str | None = None) -> pd.DataFrame:
    """Read a CSV, CSV.gz or parquet file (chosen by suffix) into a DataFrame.

    The date column (`date_col`, else detected by `set_date_index`) becomes a
    sorted, duplicate-free DatetimeIndex; without one the index stays a
    RangeIndex. `df.attrs["freq"]` holds the inferred frequency (an offset
    alias such as "h" or "15min", or None) and `df.attrs["date_col"]` the name.
    Raises UserError for a bad suffix, a missing, empty or unreadable file,
    a table without data rows, and every date-column problem.
    """
    path = Path(path)
    df = _read(path, _file_kind(path))
    if len(df) == 0:
        raise UserError(f"path: {str(path)!r} has a header but no data rows")
    return set_date_index(df, date_col=date_col)


def _to_datetime(col: pd.Series) -> pd.Series:
    """Parse to datetimes; values that do not parse become NaT (never raises)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = pd.to_datetime(col, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            out = pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns]")
        if out[col.notna()].isna().any():  # format inferred from the first value; retry mixed
            try:
                out = pd.to_datetime(col, errors="coerce", format="mixed")
            except (ValueError, TypeError, OverflowError):
                pass
    return out


def _is_text(col: pd.Series) -> bool:
    return ptypes.is_string_dtype(col) or ptypes.is_object_dtype(col)


def _detect_date_col(df: pd.DataFrame) -> str | None:
    lower = {str(c).lower(): c for c in df.columns}
    named = [lower[n] for n in DATE_NAMES if n in lower]
    for name in named:
        col = df[name]
        if ptypes.is_datetime64_any_dtype(col):
            return name
        if not _is_text(col):
            continue  # e.g. a numeric "time" column: data, not a date
        parsed = _to_datetime(col)
        if parsed.notna().any():
            failed = (parsed.isna() & col.notna()).to_numpy()
            if failed.any():  # partly parses: a broken date column, say so
                row = int(np.flatnonzero(failed)[0])
                raise UserError(
                    f"date column {name!r}: value {col.iloc[row]!r} at row {row} is not a "
                    "date; fix the value or name the date column with date_col"
                )
            return name
    for name in df.columns:
        col = df[name]
        if ptypes.is_datetime64_any_dtype(col):
            return name
        if not _is_text(col) or col.isna().all():
            continue
        head = col.dropna().iloc[:20]
        if _to_datetime(head).notna().all() and _to_datetime(col)[col.notna()].notna().all():
            return name
    return None


def set_date_index(df: pd.DataFrame, *, date_col: str | None = None) -> pd.DataFrame:
    """Return a copy of `df` indexed by its date column (see `load_table`).

    An existing DatetimeIndex is kept (date_col must then be None or its name).
    Unsorted timestamps, duplicates and empty or unparseable dates raise
    UserError: the file is never sorted silently, because the split is by row.
    """
    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    if isinstance(df.index, pd.DatetimeIndex) and (date_col is None or date_col == df.index.name):
        name = df.index.name
        stamps = df.index
    else:
        if date_col is not None and date_col not in df.columns:
            raise bad_arg("date_col", date_col, f"one of the columns {list(df.columns)}")
        name = date_col if date_col is not None else _detect_date_col(df)
        if name is None:
            df, name = assemble_calendar(df)
        if name is None:
            df = df.reset_index(drop=True)
            df.attrs.update(freq=None, date_col=None)
            return df
        raw = df[name]
        parsed = raw if ptypes.is_datetime64_any_dtype(raw) else _to_datetime(raw)
        bad = parsed.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(
                f"date column {name!r}: {int(bad.sum())} value(s) are empty or not dates "
                f"(first: {raw.iloc[row]!r} at row {row})"
            )
        stamps = pd.DatetimeIndex(parsed, name=name)
        notes = list(df.attrs.get("notes", []))
        df = df.drop(columns=[name])
        df.index = stamps
        df.attrs["notes"] = notes
    df, stamps = drop_exact_duplicates(df, stamps, name)
    check_timestamps(stamps, name)
    df.attrs.update(freq=infer_freq(stamps), date_col=name)
    return df


CALENDAR_PARTS = ("year", "month", "day", "hour", "minute", "second")
# columns that say when, not what: never forecast unless named with --target
CALENDAR_NAMES = CALENDAR_PARTS + ("weekday", "dayofweek", "day_of_week", "dow", "week",
                                   "weekofyear", "dayofyear", "day_of_year", "quarter")
INDEX_NAMES = ("no", "no.", "index", "idx", "id", "row", "rowid", "row_id", "")


def assemble_calendar(df: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """A table without a date column whose time is spread over year, month, day (and
    hour, minute, second) columns: those become one timestamp column "timestamp" (the
    parts are dropped; a note in df.attrs["notes"] says so). Else (df, None)."""
    lower = {str(c).strip().lower(): c for c in df.columns}
    if not all(k in lower for k in ("year", "month", "day")):
        return df, None
    parts = [k for k in CALENDAR_PARTS if k in lower]
    cols = [lower[k] for k in parts]
    frame = pd.DataFrame({k: pd.to_numeric(df[lower[k]], errors="coerce") for k in parts})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            stamps = pd.to_datetime(frame, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            stamps = pd.Series(pd.NaT, index=df.index)
    bad = stamps.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"date columns {cols}: row {row} ({', '.join(f'{c}={df[c].iloc[row]}' for c in cols)}) "
                        "is not a valid date; fix it or name the date column with --date-col")
    name = "timestamp" if "timestamp" not in df.columns else "timestamp_"
    out = df.drop(columns=cols)
    out.insert(0, name, stamps.to_numpy())
    out.attrs["notes"] = list(df.attrs.get("notes", [])) + [
        f"timestamp assembled from the columns {', '.join(map(str, cols))}"]
    return out, name


def drop_exact_duplicates(df: pd.DataFrame, stamps: pd.DatetimeIndex, name) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """Drop rows that repeat an earlier row exactly (same timestamp, same values) and note
    how many; rows that share a timestamp with other values are refused (the first pair
    named): which one is right cannot be guessed."""
    dup = stamps.duplicated(keep="first")
    if not dup.any():
        return df, stamps
    flat = df.reset_index(drop=True)
    flat.insert(0, "__stamp__", stamps.asi8)
    same = flat.duplicated(keep="first").to_numpy()
    conflict = dup & ~same
    if conflict.any():
        i = int(np.flatnonzero(conflict)[0])
        j = int(np.flatnonzero(stamps == stamps[i])[0])
        raise UserError(f"date column {name!r}: conflicting duplicate timestamp {stamps[i]} at rows "
                        f"{j} and {i} (different values; {int(conflict.sum())} such row(s)); keep "
                        "one row per timestamp")
    n = int(dup.sum())
    notes = list(df.attrs.get("notes", []))
    keep = ~np.asarray(dup)
    df = df.iloc[keep]
    df.attrs["notes"] = notes + [f"dropped {n} exact duplicate row(s) (same timestamp, same values)"]
    return df, stamps[keep]


def check_timestamps(stamps: pd.DatetimeIndex, name=None) -> None:
    """UserError if `stamps` has NaT, is not increasing, or repeats a timestamp."""
    if stamps.hasnans:
        raise UserError(f"date column {name!r}: has empty timestamps")
    values = stamps.asi8
    steps = np.diff(values)
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0]) + 1
        raise UserError(
            f"date column {name!r}: timestamps are not sorted ({stamps[i]} at row {i} comes "
            f"after {stamps[i - 1]} at row {i - 1}); sort the file by time first"
        )
    if (steps == 0).any():
        i = int(np.flatnonzero(steps == 0)[0]) + 1
        count = int((steps == 0).sum())
        raise UserError(
            f"date column {name!r}: {count} duplicate timestamp(s) (first: {stamps[i]} at rows "
            f"{i - 1} and {i}); keep one row per timestamp"
        )


def _freqstr(value) -> str | None:
    if value is None:
        return None
    return to_offset(value).freqstr


def infer_freq(stamps) -> str | None:
    """Pandas offset alias of a DatetimeIndex: `pd.infer_freq`, else the median step.

    Returns None without a DatetimeIndex or with fewer than 2 rows.
    """
    if not isinstance(stamps, pd.DatetimeIndex) or len(stamps) < 2:
        return None
    if len(stamps) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 FutureWarning about the return type
            try:
                found = pd.infer_freq(stamps)
            except (TypeError, ValueError):
                found = None
        if found:
            return _freqstr(found)
    step = pd.Timedelta(np.median(np.diff(stamps.values).astype("timedelta64[ns]").astype(np.int64)), unit="ns")
    if step <= pd.Timedelta(0):
        return None
    day = pd.Timedelta(days=1)
    if step % day == pd.Timedelta(0):
        return f"{step // day}D"
    return _freqstr(step)


def fixed_step(freq: str | None) -> pd.Timedelta | None:
    """The constant step of a frequency alias ("h" -> 1 hour, "W" -> 7 days), else None."""
    if freq is None:
        return None
    off = to_offset(freq)
    if isinstance(off, offsets.Week):
        return pd.Timedelta(days=7 * off.n)
    if isinstance(off, (offsets.Tick, offsets.Day)):
        return pd.Timedelta(off)
    return None


def _as_numeric(col: pd.Series):
    """(float64 Series, number of values that failed, first failing row or None)."""
    if ptypes.is_bool_dtype(col):
        return None, len(col), 0
    if ptypes.is_numeric_dtype(col):
        return col.astype("float64"), 0, None
    num = pd.to_numeric(col, errors="coerce").astype("float64")
    failed = num.isna() & col.notna()
    n_failed = int(failed.sum())
    first = int(np.flatnonzero(failed.to_numpy())[0]) if n_failed else None
    return num, n_failed, first


def _not_numeric(name: str, col: pd.Series, first: int | None, arg: str) -> UserError:
    where = f" (value {col.iloc[first]!r} at row {first})" if first is not None else ""
    return UserError(f"{arg}: column {name!r} is not numeric{where}; numeric columns are required")


def _is_row_counter(num: pd.Series) -> bool:
    """Integers that step by exactly +1 from row to row: a row number, not a series."""
    v = num.to_numpy()
    if len(v) < 3 or not np.isfinite(v).all() or (v != np.round(v)).any():
        return False
    return bool((np.diff(v) == 1).all())


def _not_a_target(name: str, num: pd.Series) -> str | None:
    """Why a numeric column is left out of the default targets (None: it is a target)."""
    low = name.strip().lower()
    if low in INDEX_NAMES or low.startswith("unnamed:"):
        return "an index column"
    if low in CALENDAR_NAMES:
        return "a calendar column"
    if _is_row_counter(num):
        return "a row counter (steps of exactly 1)"
    return None


def select_targets(df: pd.DataFrame, targets=None, notes: list | None = None) -> list[str]:
    """Names of the columns to forecast.

    targets=None: every numeric column (bool excluded). A text column whose
    values all parse as numbers counts as numeric; one where most values parse
    but some do not (a stray "n/a!") raises UserError naming the value; a
    mostly non-numeric text column (a label) is skipped. Named targets must
    exist (UserError listing the columns) and be numeric (UserError).
    """
    columns = [str(c) for c in df.columns]
    if targets is not None:
        if isinstance(targets, str):
            targets = [targets]
        targets = [str(t) for t in targets]
        missing = [t for t in targets if t not in columns]
        if missing:
            raise bad_arg("target", missing[0] if len(missing) == 1 else missing,
                          f"column names among {columns}")
        for name in targets:
            num, n_failed, first = _as_numeric(df[name])
            if num is None or n_failed:
                raise _not_numeric(name, df[name], first, "target")
        return targets
    chosen, skipped, text = [], [], []
    for name in columns:
        col = df[name]
        num, n_failed, first = _as_numeric(col)
        if num is None:
            text.append(name)
            continue
        if n_failed == 0:
            why = _not_a_target(name, num)
            if why:
                skipped.append(f"{name!r} ({why})")
            else:
                chosen.append(name)
        elif n_failed * 2 < int(col.notna().sum()):  # mostly numbers: a corrupt numeric column
            raise _not_numeric(name, col, first, "data")
        else:
            text.append(name)
    if notes is not None:
        if text:
            notes.append(f"dropped text column(s) {', '.join(map(repr, text))}: not numeric")
        if skipped and chosen:
            notes.append(f"not forecast: {', '.join(skipped)}; name them with --target to forecast them")
    if not chosen and skipped:
        raise UserError(f"data: no numeric columns to forecast among {columns} (left out: "
                        f"{', '.join(skipped)}); name the targets with --target")
    if not chosen:
        raise UserError(f"data: no numeric columns to forecast among {columns}")
    return chosen
