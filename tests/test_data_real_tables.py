"""Real tables as users bring them: separators and decimal marks, exact and conflicting
duplicates, time spread over calendar columns, index and row-number columns, text
columns, statistics that overflow, a context shorter than the season."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import synthetic_frame
from tsprune.data import DataConfig, prepare, prepare_frame
from tsprune.errors import UserError

CFG = dict(split="0.7,0.1,0.2", context=48, horizon=8)


def _write(df: pd.DataFrame, path, **kw):
    df.to_csv(path, index=False, **kw)
    return path


# ---- separator and decimal mark ---------------------------------------------------------
@pytest.mark.parametrize("sep,decimal", [(";", ","), (";", "."), ("\t", "."), ("|", ","), (",", ".")])
def test_separator_and_decimal_mark_are_detected(sep, decimal, tmp_path):
    df = synthetic_frame(n=400, channels=2)
    ref = prepare_frame(df, DataConfig(None, **CFG))
    path = _write(df, tmp_path / "t.csv", sep=sep, decimal=decimal)
    got = prepare(DataConfig(path, **CFG))
    assert got.columns == ("x0", "x1") and got.freq == "h"
    if sep != ",":
        assert got.notes[0].startswith(f"read with separator {sep!r}"), got.notes
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-5, atol=1e-5)


def test_separator_detected_in_gzip(tmp_path):
    df = synthetic_frame(n=400, channels=2)
    path = _write(df, tmp_path / "t.csv.gz", sep=";", decimal=",")
    assert prepare(DataConfig(path, **CFG)).columns == ("x0", "x1")


def test_inconsistent_separator_is_refused_not_misparsed(tmp_path):
    """A ';' file whose lines split differently: refused, never read as one text column."""
    df = synthetic_frame(n=400, channels=2)
    path = _write(df, tmp_path / "t.csv", sep=";", decimal=",")
    lines = path.read_text().splitlines()
    lines[5] += ";extra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="one column"):
        prepare(DataConfig(path, **CFG))


def test_mixed_decimal_marks_are_refused(tmp_path):
    df = synthetic_frame(n=400, channels=2)
    path = _write(df, tmp_path / "t.csv", sep=";", decimal=",")
    text = path.read_text().splitlines()
    text[3] = text[3].replace(",", ".", 1)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(UserError, match="decimal"):
        prepare(DataConfig(path, **CFG))


# ---- duplicates -------------------------------------------------------------------------
def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path):
    df = synthetic_frame(n=400, channels=2)
    dup = pd.concat([df.iloc[:11], df.iloc[10:11], df.iloc[10:11], df.iloc[11:]], ignore_index=True)
    got = prepare_frame(dup, DataConfig(None, **CFG))
    assert len(got.values) == 400
    assert any("dropped 2 exact duplicate row(s)" in n for n in got.notes), got.notes


def test_conflicting_duplicates_are_refused_naming_the_first(tmp_path):
    df = synthetic_frame(n=400, channels=2)
    bad = df.iloc[10:11].copy()
    bad["x0"] += 1.0
    dup = pd.concat([df.iloc[:11], bad, df.iloc[11:]], ignore_index=True)
    with pytest.raises(UserError, match=r"conflicting duplicate timestamp 2020-01-01 10:00:00 at rows 10 and 11"):
        prepare_frame(dup, DataConfig(None, **CFG))


# ---- calendar, index and text columns ---------------------------------------------------
def _calendar_table(n=400):
    """The layout of a standard air-quality table: No, year, month, day, hour, values, a
    text wind direction."""
    df = synthetic_frame(n=n, channels=2)
    t = df.pop("date")
    return pd.DataFrame({"No": np.arange(1, n + 1), "year": t.dt.year, "month": t.dt.month,
                         "day": t.dt.day, "hour": t.dt.hour, **df,
                         "cbwd": np.where(np.arange(n) % 2, "NW", "SE")})


def test_calendar_columns_become_the_timestamp(tmp_path):
    got = prepare(DataConfig(_write(_calendar_table(), tmp_path / "pm.csv"), **CFG))
    assert got.columns == ("x0", "x1")
    assert got.freq == "h" and got.season == 24
    assert str(got.index[0]) == "2020-01-01 00:00:00"
    notes = " | ".join(got.notes)
    assert "timestamp assembled from the columns year, month, day, hour" in notes
    assert "'No' (an index column)" in notes
    assert "dropped text column(s) 'cbwd'" in notes


def test_invalid_calendar_date_is_one_line(tmp_path):
    df = _calendar_table()
    df.loc[7, "month"] = 13
    with pytest.raises(UserError, match=r"row 7 .*month=13"):
        prepare(DataConfig(_write(df, tmp_path / "pm.csv"), **CFG))


@pytest.mark.parametrize("name,values", [
    ("Unnamed: 0", None), ("index", None), ("counter", None), ("hour", "hours"), ("weekday", "days")])
def test_index_and_calendar_columns_are_not_targets_unless_named(name, values):
    df = synthetic_frame(n=400, channels=1)
    t = df["date"]
    col = {None: np.arange(400), "hours": t.dt.hour, "days": t.dt.day_of_week}[values]
    df.insert(1, name, col)
    got = prepare_frame(df, DataConfig(None, **CFG))
    assert got.columns == ("x0",)
    assert any(repr(name) in n and "not forecast" in n for n in got.notes), got.notes
    named = prepare_frame(df, DataConfig(None, target=(name, "x0"), **CFG)) if values else None
    assert named is None or named.columns == (name, "x0")


def test_only_index_columns_is_one_line():
    df = pd.DataFrame({"No": np.arange(300)})
    with pytest.raises(UserError, match="'No' \\(an index column\\).*--target"):
        prepare_frame(df, DataConfig(None, **CFG))


# ---- statistics and windows -------------------------------------------------------------
def test_non_finite_train_statistics_name_the_column():
    df = synthetic_frame(n=400, channels=2)
    df["x1"] = df["x1"] * 1e300
    with pytest.raises(UserError, match="'x1' has train statistics that are not finite"):
        prepare_frame(df, DataConfig(None, **CFG))


def test_context_shorter_than_the_season():
    """The default season longer than --context: naive repeats the last value, with a note
    (no error naming a season the user never typed); an explicit --season is refused
    naming --season."""
    df = synthetic_frame(n=400, channels=1)
    got = prepare_frame(df, DataConfig(None, split="0.7,0.1,0.2", context=1, horizon=8))
    assert got.season is None
    assert any("longer than --context 1" in n for n in got.notes), got.notes
    with pytest.raises(UserError, match=r"--season: got 6; expected at most --context \(4\)"):
        prepare_frame(df, DataConfig(None, split="0.7,0.1,0.2", context=4, horizon=8, season=6))


def test_test_stride_takes_every_nth_window_and_says_so():
    df = synthetic_frame(n=400, channels=1)
    full = prepare_frame(df, DataConfig(None, **CFG))
    quick = prepare_frame(df, DataConfig(None, test_stride=5, **CFG))
    assert len(quick.windows("test", stride=5)) == -(-len(full.windows("test", stride=1)) // 5)
    assert any("--test-stride 5" in n for n in quick.notes) and not full.notes
    with pytest.raises(UserError, match="--test-stride"):
        DataConfig(None, test_stride=0, **CFG)
