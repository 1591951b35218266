"""DataConfig, prepare / prepare_frame, Prepared.windows, WindowDataset, ETT files."""
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsprune.data import (DataConfig, WindowDataset, count_windows, ett_path, prepare,
                          prepare_frame)
from tsprune.errors import UserError


def frame(n=200, cols=("a", "b", "c"), freq="h", seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(cols))).cumsum(0), columns=list(cols))
    df.insert(0, "date", pd.date_range("2022-01-01", periods=n, freq=freq))
    return df


def cfg(**kw):
    base = dict(path=None, split="0.6,0.2,0.2", context=16, horizon=4)
    return DataConfig(**{**base, **kw})


@pytest.mark.parametrize("field,value", [
    ("context", 0), ("horizon", -1), ("stride", 1.5), ("context", True), ("season", 0),
    ("split", "0.9,0.2,0.1"), ("target", ()), ("target", ("a", "a")), ("date_col", ""),
    ("path", 3),
])
def test_config_validation_names_field(field, value):
    with pytest.raises(UserError, match=f"^{field}: got"):
        cfg(**{field: value})


def test_config_normalises():
    c = cfg(target="a, b", context=np.int64(8), path="x.csv")
    assert c.target == ("a", "b") and c.context == 8 and type(c.context) is int
    assert str(c.path) == "x.csv"
    with pytest.raises(AttributeError):
        c.context = 3  # frozen


def test_prepare_from_file_and_zscore_uses_train_only(tmp_path):
    df = frame()
    df.loc[150:, "a"] += 1000.0  # a shift after the train split must not move the stats
    df.to_csv(tmp_path / "d.csv.gz", index=False)
    p = prepare(cfg(path=tmp_path / "d.csv.gz"))
    tr = p.split[0]
    assert p.split == (120, 160, 200) and p.columns == ("a", "b", "c")
    raw = df[["a", "b", "c"]].to_numpy()
    np.testing.assert_allclose(p.mean, raw[:tr].mean(0))
    np.testing.assert_allclose(p.std, raw[:tr].std(0))
    assert p.values.dtype == np.float32 and p.values.shape == (200, 3)
    np.testing.assert_allclose(p.values[:tr].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(p.values[:tr].std(0), 1, atol=1e-5)
    assert p.values[150:, 0].mean() > 10
    np.testing.assert_allclose(p.denormalize(p.values[:, 1], 1), raw[:, 1], rtol=1e-5)
    # the hourly season (24) is longer than the context (16): seasonal naive repeats the
    # last value, and the summary says so
    assert p.freq == "h" and p.season is None and "no missing" in p.summary()
    assert "season (24 rows) is longer than --context 16" in p.summary()


def test_season_override_and_targets():
    p = prepare_frame(frame(), cfg(target=("c",), season=12))
    assert p.columns == ("c",) and p.season == 12 and p.values.shape == (200, 1)


def test_missing_report_exposed():
    df = frame()
    df.loc[[0, 50, 51], "b"] = np.nan
    p = prepare_frame(df, cfg())
    assert p.missing.interpolated == {"b": 2} and p.missing.edge_filled == {"b": 1}
    assert "b: 3 missing" in p.summary()
    assert not np.isnan(p.values).any()


def test_zero_variance_channel_in_train():
    df = frame()
    df.loc[:119, "b"] = 3.0
    with pytest.raises(UserError, match=r"\['b'\] are constant in the train split"):
        prepare_frame(df, cfg())


def test_single_row_and_missing_target(tmp_path):
    with pytest.raises(UserError, match="1 row"):
        prepare_frame(frame(1), cfg())
    with pytest.raises(UserError, match="target: got 'z'"):
        prepare_frame(frame(), cfg(target="z"))
    df = frame()
    df["s"] = ["x"] * 200
    with pytest.raises(UserError, match="'s' is not numeric"):
        prepare_frame(df, cfg(target="s"))
    with pytest.raises(UserError, match="path: got None"):
        prepare(cfg())


def test_no_window_fits():
    with pytest.raises(UserError, match="context=118, horizon=4.*train split \\(120 rows"):
        prepare_frame(frame(), cfg(context=118, horizon=4))
    with pytest.raises(UserError, match="context=16, horizon=41.*val split \\(40 rows"):
        prepare_frame(frame(), cfg(horizon=41))
    p = prepare_frame(frame(), cfg())
    with pytest.raises(UserError, match="context=130, horizon=4.*train"):
        p.windows("train", context=130)
    with pytest.raises(UserError, match="split: got 'dev'"):
        p.windows("dev")


def test_ett_split_without_dates_is_refused():
    with pytest.raises(UserError, match="split: got 'ett'"):
        prepare_frame(frame().drop(columns="date"), cfg(split="ett"))


def test_tslib_window_boundaries():
    p = prepare_frame(frame(), cfg())
    tr, va, te = p.split
    for name, start, end in (("train", 0, tr), ("val", tr, va), ("test", va, te)):
        ds = p.windows(name)
        first = max(start, 16)
        assert ds.per_channel == end - first - 4 + 1
        assert ds.locate(0) == (0, first)
        assert ds.locate(ds.per_channel - 1) == (0, end - 4)  # last target ends at split end
        assert ds.locate(ds.per_channel) == (1, first)  # channel-major
        ctx, tgt = ds[0]
        np.testing.assert_array_equal(tgt.numpy(), p.values[first:first + 4, 0])
        np.testing.assert_array_equal(ctx.numpy(), p.values[first - 16:first, 0])
    test = p.windows("test")
    assert test.locate(0)[1] == va  # first test target row == test split start
    c, row = test.locate(-1)
    np.testing.assert_array_equal(test[-1][1].numpy(), p.values[row:row + 4, c])


def test_windows_share_memory_and_batches_match_items():
    p = prepare_frame(frame(), cfg())
    ds = p.windows("train", stride=3)
    assert ds.view.untyped_storage().data_ptr() == p.series.untyped_storage().data_ptr()
    x, y = ds.as_tensors()
    assert x.shape == (len(ds), 16) and y.shape == (len(ds), 4) and x.is_contiguous()
    for i in (0, 5, len(ds) - 1):
        torch.testing.assert_close(ds[i][0], x[i])
        torch.testing.assert_close(ds[i][1], y[i])
    got = torch.cat([b[0] for b in ds.batches(7)])
    torch.testing.assert_close(got, x)
    shuffled = list(ds.batches(7, shuffle=True, seed=1))
    assert [len(b[0]) for b in shuffled][:-1] == [7] * (len(shuffled) - 1)
    assert sorted(torch.cat([b[0] for b in shuffled])[:, 0].tolist()) == sorted(x[:, 0].tolist())
    again = torch.cat([b[0] for b in ds.batches(7, shuffle=True, seed=1)])
    torch.testing.assert_close(again, torch.cat([b[0] for b in shuffled]))
    assert sum(len(b[0]) for b in ds.batches(7, drop_last=True)) == len(ds) // 7 * 7
    assert ds.n_batches(7) == len(shuffled)
    assert torch.utils.data.default_collate([ds[0], ds[1]])[0].shape == (2, 16)


def test_subset():
    ds = prepare_frame(frame(), cfg()).windows("train")
    sub = ds.subset(10, seed=3)
    assert len(sub) == 10 and ds.subset(10, seed=3).index.tolist() == sub.index.tolist()
    assert sub.index.tolist() == sorted(sub.index.tolist())
    x, _ = sub.as_tensors()
    for i in range(10):
        torch.testing.assert_close(sub[i][0], ds[int(sub.index[i])][0])
        torch.testing.assert_close(x[i], sub[i][0])
    assert len(sub.subset(4)) == 4 and ds.subset(10**6) is ds
    assert sub.channels().tolist() == (sub.index // ds.per_channel).tolist()
    with pytest.raises(UserError, match="n: got 0"):
        ds.subset(0)
    with pytest.raises(IndexError):
        sub[10]


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 60), c=st.integers(1, 3), L=st.integers(1, 10), H=st.integers(1, 10),
       s=st.integers(1, 5), first=st.integers(0, 20))
def test_window_count_formula(n, c, L, H, s, first):
    first = max(first, L)
    end = first + n
    series = torch.arange(c * (end + 3), dtype=torch.float32).reshape(c, end + 3)
    expected = max(0, (end - first - H) // s + 1)
    assert count_windows(first, end, H, s) == expected
    if expected == 0:
        return
    ds = WindowDataset(series, first, end, L, H, s)
    assert len(ds) == c * expected
    last_c, last_row = ds.locate(len(ds) - 1)
    assert last_c == c - 1 and last_row + H <= end < last_row + H + s
    ctx, tgt = ds[len(ds) - 1]
    assert tgt.tolist() == series[c - 1, last_row:last_row + H].tolist()
    assert ctx.tolist() == series[c - 1, last_row - L:last_row].tolist()


ETT = {"ETTh1": (8640, 2880, 2880), "ETTm1": (34560, 11520, 11520)}


@pytest.mark.data
@pytest.mark.parametrize("name", ["ETTh1", "ETTh2", "ETTm1", "ETTm2"])
def test_ett_files(name):
    path = ett_path(name)
    if path is None:
        pytest.skip(f"{name} not found in ../shared/data or $TSPRUNE_SHARED")
    p = prepare(DataConfig(path, context=512, horizon=96))
    tr, va, te = p.split
    sizes = (8640, 2880, 2880) if name.startswith("ETTh") else (34560, 11520, 11520)
    assert (tr, va - tr, te - va) == sizes
    assert p.columns == ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
    assert p.missing.filled == 0 and p.missing.irregular_steps == 0
    test = p.windows("test")
    assert test.locate(0) == (0, va) and len(test) == 7 * (sizes[2] - 96 + 1)
    assert len(p.windows("train")) == 7 * (sizes[0] - 512 - 96 + 1)


def test_ett_path_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TSPRUNE_SHARED", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "Toy.csv").write_text("a\n1\n")
    assert ett_path("Toy") == tmp_path / "data" / "Toy.csv"
    assert ett_path("NoSuchSet") is None


def test_gaps_in_a_parquet_file_are_filled_and_reported(tmp_path):
    df = frame()
    df.loc[10:12, "a"] = np.nan
    df.loc[199, "c"] = np.nan
    df.to_parquet(tmp_path / "g.parquet")
    p = prepare(cfg(path=tmp_path / "g.parquet"))
    assert p.missing.interpolated == {"a": 3} and p.missing.edge_filled == {"c": 1}
    assert np.isfinite(p.values).all()
