"""split_rows, parse_split, default_season (with property tests)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsprune.data import default_season, parse_split, rows_per_month, split_rows
from tsprune.errors import UserError


@pytest.mark.parametrize("freq,expected", [
    ("h", (8640, 11520, 14400)),
    ("15min", (34560, 46080, 57600)),
    ("30min", (17280, 23040, 28800)),
    ("D", (360, 480, 600)),
    ("MS", (12, 16, 20)),
])
def test_ett_split(freq, expected):
    assert split_rows(20000 * 4, "ett", freq) == expected


def test_ett_split_errors():
    with pytest.raises(UserError, match="needs 20 months = 14400 rows.*has 14399"):
        split_rows(14399, "ett", "h")
    with pytest.raises(UserError, match="frequency divides 30 days"):
        split_rows(10**6, "ett", None)
    with pytest.raises(UserError, match="this one: 7min"):
        split_rows(10**6, "ett", "7min")


def test_tslib_ratio_convention():
    assert split_rows(1000, "0.7,0.1,0.2") == (700, 800, 1000)
    assert split_rows(1001, "0.7,0.1,0.2") == (700, 801, 1001)  # val takes the rest
    assert split_rows(1000, "0.5,0.1,0.2") == (500, 600, 800)  # sum < 1: tail unused


@pytest.mark.parametrize("bad", ["0.7,0.1", "0.8,0.2,0.2", "0.7,0,0.3", "-0.1,0.5,0.5",
                                 "a,b,c", "nan,0.1,0.1", "etc", 3])
def test_parse_split_rejects(bad):
    with pytest.raises(UserError, match="split: got"):
        parse_split(bad)


def test_parse_split_accepts():
    assert parse_split("ETT") == "ett"
    assert parse_split(" 0.6, 0.2 ,0.2") == (0.6, 0.2, 0.2)
    assert parse_split((0.6, 0.2, 0.2)) == (0.6, 0.2, 0.2)


def test_split_too_small_for_ratios():
    with pytest.raises(UserError, match="at least one of the 4 rows"):
        split_rows(4, "0.7,0.1,0.2")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(10, 10**6), a=st.integers(1, 98), b=st.integers(1, 98), c=st.integers(1, 98))
def test_ratio_split_properties(n, a, b, c):
    if a + b + c > 100:
        return
    spec = f"{a / 100},{b / 100},{c / 100}"
    try:
        tr, va, te = split_rows(n, spec)
    except UserError:
        tr, te = int(n * (a / 100)), int(n * (c / 100))
        va = n - tr - te if a + b + c == 100 else int(n * (b / 100))
        assert min(tr, va, te) < 1
        return
    assert 0 < tr < va < te <= n
    assert tr == int(n * a / 100) and te - va == int(n * c / 100)
    if a + b + c == 100:
        assert te == n


@pytest.mark.parametrize("freq,season", [
    ("h", 24), ("15min", 96), ("30min", 48), ("10min", 144), ("D", 7), ("W-SUN", 52),
    ("MS", 12), ("ME", 12), ("B", 5), ("QS-JAN", 4), ("2h", 12), ("7min", None),
    ("YS-JAN", None), ("2D", None), (None, None),
])
def test_default_season(freq, season):
    assert default_season(freq) == season


def test_rows_per_month():
    assert rows_per_month("h") == 720 and rows_per_month("15min") == 2880


def test_auto_split_picks_ett_when_20_months_fit():
    from tsprune.data.split import resolve_split, split_rows
    assert resolve_split(17420, "auto", "h") == "ett"
    assert split_rows(17420, "auto", "h") == (8640, 11520, 14400)
    assert resolve_split(8760, "auto", "h") == (0.7, 0.1, 0.2)
    assert split_rows(1000, "auto", None) == (700, 800, 1000)
