"""bench/tools/taylor_csv.py: the public electricity series of issue 20, rebuilt from pmdarima."""

import pytest
from helpers import bench_tool


def _tool():
    return bench_tool("taylor_csv")


def test_taylor_csv_is_twelve_weeks_of_half_hours(tmp_path):
    pytest.importorskip("pmdarima", reason="pmdarima (which ships the Taylor series) is not installed: pip install pmdarima")
    import pandas as pd

    out = tmp_path / "taylor.csv"
    assert _tool().main([str(out)]) == 0
    df = pd.read_csv(out, parse_dates=["date"])
    assert list(df.columns) == ["date", "demand_mw"]
    assert len(df) == 4032 and df["demand_mw"].notna().all()
    assert str(df["date"].iloc[0]) == "2000-06-05 00:00:00"   # a Monday
    assert str(df["date"].iloc[-1]) == "2000-08-27 23:30:00"  # a Sunday
    assert df["date"].iloc[0].dayofweek == 0 and df["date"].iloc[-1].dayofweek == 6
    assert df["demand_mw"].iloc[0] == 22262.0  # pmdarima's documented first value


def test_taylor_csv_never_overwrites(tmp_path, capsys):
    out = tmp_path / "mine.csv"
    out.write_text("the user's own file\n")
    assert _tool().main([str(out)]) == 2
    assert out.read_text() == "the user's own file\n"
    assert "never overwrites" in capsys.readouterr().err
