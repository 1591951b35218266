"""load_table, date detection, frequency, target selection, missing values."""
import gzip

import numpy as np
import pandas as pd
import pytest

from tsprune.data import fill_missing, infer_freq, load_table, select_targets, set_date_index
from tsprune.errors import UserError


def frame(n=50, freq="h", cols=("a", "b")):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(n, len(cols))), columns=list(cols))
    df.insert(0, "date", pd.date_range("2021-01-01", periods=n, freq=freq).astype(str))
    return df


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_load_formats(tmp_path, suffix):
    df = frame()
    path = tmp_path / f"t{suffix}"
    df.to_parquet(path) if suffix == ".parquet" else df.to_csv(path, index=False)
    out = load_table(path)
    assert isinstance(out.index, pd.DatetimeIndex) and out.index.name == "date"
    assert list(out.columns) == ["a", "b"]
    assert out.attrs["freq"] == "h"
    np.testing.assert_allclose(out.to_numpy(), df[["a", "b"]].to_numpy())


def test_parquet_datetime_dtype_and_index(tmp_path):
    df = frame()
    df["date"] = pd.to_datetime(df["date"])
    df.to_parquet(tmp_path / "c.parquet")
    assert load_table(tmp_path / "c.parquet").attrs["freq"] == "h"
    df.set_index("date").to_parquet(tmp_path / "i.parquet")
    assert load_table(tmp_path / "i.parquet").index.name == "date"


def test_date_detection_by_name_and_by_content(tmp_path):
    df = frame().rename(columns={"date": "Timestamp"})
    df.to_csv(tmp_path / "a.csv", index=False)
    assert load_table(tmp_path / "a.csv").attrs["date_col"] == "Timestamp"
    df = frame().rename(columns={"date": "when"})[["a", "when", "b"]]
    df.to_csv(tmp_path / "b.csv", index=False)
    assert load_table(tmp_path / "b.csv").attrs["date_col"] == "when"
    frame()[["a", "b"]].to_csv(tmp_path / "c.csv", index=False)
    out = load_table(tmp_path / "c.csv")
    assert out.attrs["freq"] is None and isinstance(out.index, pd.RangeIndex)


def test_explicit_date_col(tmp_path):
    df = frame()
    df["other"] = df["date"]
    df.to_csv(tmp_path / "a.csv", index=False)
    assert load_table(tmp_path / "a.csv", date_col="other").attrs["date_col"] == "other"
    with pytest.raises(UserError, match="date_col: got 'nope'"):
        load_table(tmp_path / "a.csv", date_col="nope")


@pytest.mark.parametrize("name,content,match", [
    ("x.txt", b"a,b\n1,2\n", "expected a .csv, .csv.gz or .parquet"),
    ("empty.csv", b"", "empty"),
    ("header.csv", b"date,a\n", "no data rows"),
    ("blank.csv", b"\n\n", "no columns"),
    ("bad.csv.gz", b"not gzip at all", "cannot read"),
    ("bad.parquet", b"PAR1 garbage", "cannot read"),
    ("bad.csv", b'a,b\n1,"2\n', "cannot read"),
])
def test_bad_files(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=match):
        load_table(tmp_path / name)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="expected an existing file"):
        load_table(tmp_path / "none.csv")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(UserError, match="not a directory"):
        load_table(tmp_path / "d.csv")


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(frame(500).to_csv(index=False).encode())
    (tmp_path / "t.csv.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="cannot read"):
        load_table(tmp_path / "t.csv.gz")


def test_unsorted_and_duplicate_timestamps():
    df = frame(10)
    swapped = df.iloc[[0, 1, 3, 2, 4]]
    with pytest.raises(UserError, match="not sorted.*row 3"):
        set_date_index(swapped)
    dup = pd.concat([df.iloc[:3], df.iloc[2:5]])  # row 2 repeated exactly: dropped, counted
    out = set_date_index(dup)
    assert len(out) == 5 and out.attrs["notes"] == [
        "dropped 1 exact duplicate row(s) (same timestamp, same values)"]
    dup.iloc[3, 1] += 1.0  # the same timestamp with another value: refused, rows named
    with pytest.raises(UserError, match="conflicting duplicate timestamp .* at rows 2 and 3"):
        set_date_index(dup)


def test_bad_dates():
    df = frame(10)
    df.loc[4, "date"] = "not a date"
    with pytest.raises(UserError, match="'not a date' at row 4"):
        set_date_index(df)
    df.loc[4, "date"] = None
    with pytest.raises(UserError, match="empty or not dates"):
        set_date_index(df)


@pytest.mark.parametrize("freq,expected", [("h", "h"), ("15min", "15min"), ("D", "D"),
                                           ("W", "W-SUN"), ("MS", "MS"), ("10min", "10min")])
def test_infer_freq(freq, expected):
    assert infer_freq(pd.date_range("2020-01-06", periods=30, freq=freq)) == expected


def test_infer_freq_median_step_with_gaps():
    idx = pd.date_range("2020-01-01", periods=30, freq="h").delete([5, 6, 17])
    assert infer_freq(idx) == "h"
    assert infer_freq(pd.DatetimeIndex(["2020-01-01"])) is None
    assert infer_freq(None) is None


def test_select_targets():
    df = set_date_index(frame(cols=("a", "b", "c")))
    df["label"] = ["x", "y"] * 25
    df["flag"] = True
    assert select_targets(df) == ["a", "b", "c"]
    assert select_targets(df, ["c", "a"]) == ["c", "a"]
    assert select_targets(df, "b") == ["b"]
    with pytest.raises(UserError, match=r"target: got 'zz'.*'a', 'b', 'c', 'label'"):
        select_targets(df, ["a", "zz"])
    with pytest.raises(UserError, match="'label' is not numeric"):
        select_targets(df, ["label"])


def test_numbers_as_text_and_stray_strings(tmp_path):
    df = frame(20)
    df["a"] = df["a"].astype(str)
    assert select_targets(set_date_index(df)) == ["a", "b"]
    df.loc[7, "a"] = "oops"
    df.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(UserError, match="'a' is not numeric \\(value 'oops' at row 7\\)"):
        select_targets(load_table(tmp_path / "s.csv"))


def test_fill_missing_interior_edges_and_report():
    df = set_date_index(frame(10))
    df.iloc[0, 0] = df.iloc[9, 0] = np.nan  # edges of a
    df.iloc[4, 1] = np.nan  # interior of b
    values, report = fill_missing(df, ["a", "b"], "h")
    assert not np.isnan(values).any()
    assert values[0, 0] == df.iloc[1, 0] and values[9, 0] == df.iloc[8, 0]
    assert values[4, 1] == pytest.approx((df.iloc[3, 1] + df.iloc[5, 1]) / 2)
    assert report.interpolated == {"b": 1} and report.edge_filled == {"a": 2}
    assert report.filled == 3 and "b: 1 missing of 10 (1 interpolated" in str(report)


def test_interpolation_is_linear_in_time():
    idx = pd.DatetimeIndex(["2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 04:00"])
    df = pd.DataFrame({"a": [0.0, np.nan, 4.0]}, index=idx)
    values, report = fill_missing(df, ["a"], "h")
    assert values[1, 0] == pytest.approx(1.0)
    assert report.irregular_steps == 1


@pytest.mark.parametrize("bad,match", [(np.inf, "infinite"), (-np.inf, "infinite")])
def test_infinities_refused(bad, match):
    df = set_date_index(frame(10))
    df.iloc[3, 1] = bad
    with pytest.raises(UserError, match=f"'b' has 1 {match}.*row 3"):
        fill_missing(df, ["a", "b"])


def test_all_nan_column_refused():
    df = set_date_index(frame(10))
    df["b"] = np.nan
    with pytest.raises(UserError, match="'b' has no values"):
        fill_missing(df, ["a", "b"])
