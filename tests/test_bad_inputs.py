"""Bad input corpus: every bad table, model directory, ONNX file, output path or numeric
flag gives exit code 2 and ONE line on stderr that names the argument or the value, no
traceback, and leaves nothing behind (neither --out nor a hidden ``.NAME.*`` sibling).

The CLI runs in-process (``tsprune.cli.main(argv)`` returns the exit code; stdout and
stderr are redirected, which also works inside hypothesis examples, where pytest's
function-scoped capsys cannot be used). An exception other than a UserError escapes
``main`` and fails the test with its traceback, which is exactly the bug being looked for.

Missing values are not an error: interior gaps are interpolated and reported (see
tsprune.data.missing); only an all-missing column or an infinity is refused.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import cli, copy_model, one_line_error, save_tiny_timesfm25, synthetic_frame

FAST = ["--context", "64", "--horizon", "16", "--split", "0.7,0.1,0.2", "--quiet", "--no-finetune",
        "--no-dlinear", "--max-epochs", "1", "--macro-batch", "64", "--batch-size", "32",
        "--val-samples", "32", "--calib-samples", "128"]
# TSPRUNE_FUZZ_EXAMPLES=N: a longer, randomised fuzz run (CI: a fixed 60 examples per test)
FUZZ = int(os.environ.get("TSPRUNE_FUZZ_EXAMPLES", "0"))


def fuzz_settings(n: int):
    return settings(max_examples=FUZZ or n, deadline=None, derandomize=not FUZZ, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


HYPO = fuzz_settings(60)


def assert_nothing_left(out: Path) -> None:
    assert not out.exists(), out
    left = sorted(p.name for p in out.parent.glob(f".{out.name}*"))
    assert not left, left


# ---- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_timesfm25(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    synthetic_frame(n=600, channels=2).to_csv(d / "good.csv", index=False)
    synthetic_frame(n=2000, channels=1).to_csv(d / "long.csv", index=False)
    synthetic_frame(n=1, channels=2).to_csv(d / "one_row.csv", index=False)
    return d


@pytest.fixture(scope="module")
def broken_model(tiny_dir, tmp_path_factory) -> Path:
    """A copy of the tiny model whose safetensors file is cut in half."""
    d = tmp_path_factory.mktemp("broken") / "m"
    copy_model(tiny_dir, d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return d


def _prune(model, data, out, *extra):
    return cli("prune", "--model", model, "--data", data, "--out", out, *FAST, *extra)


# ---- tables -----------------------------------------------------------------------------
def test_interior_nan_is_interpolated_and_reported(tiny_dir, tmp_path):
    """The documented policy: interior gaps are interpolated, edges take the nearest value;
    the run succeeds and the report says what was filled."""
    df = synthetic_frame(n=600, channels=2)
    df.loc[100:110, "x0"] = np.nan
    df.loc[0:2, "x1"] = np.nan
    data = tmp_path / "gaps.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "run"
    rc, stdout, err = _prune(tiny_dir, data, out)
    assert rc == 0, err
    assert "wrote" in stdout
    missing = json.loads((out / "report.json").read_text())["data"]["missing"]
    assert "x0: 11 missing" in missing and "11 interpolated" in missing, missing
    assert "x1: 3 missing" in missing and "3 filled at the edges" in missing, missing
    assert not list(tmp_path.glob(".run*"))


def _set(col, rows, value):
    def f(df):
        df = df.copy()
        if isinstance(value, str):
            df[col] = df[col].astype(object)
        df.loc[rows, col] = value
        return df
    return f


def _swap_dates(df):
    df = df.copy()
    df.loc[[10, 11], "date"] = df.loc[[11, 10], "date"].to_numpy()
    return df


def _dup_date(df):
    df = df.copy()
    df.loc[10, "date"] = df.loc[9, "date"]
    return df


BAD_TABLES = {
    # name: (frame -> frame, or raw bytes), needles in the error line
    "all_nan_column": (_set("x0", slice(None), np.nan), ["'x0'", "no values"]),
    "infinity": (_set("x1", 5, np.inf), ["'x1'", "infinite", "row 5"]),
    "minus_infinity": (_set("x1", 7, -np.inf), ["'x1'", "infinite", "row 7"]),
    "string_in_numbers": (_set("x1", 7, "oops"), ["'x1'", "'oops'", "not numeric"]),
    "bad_date": (_set("date", 3, "notadate"), ["date", "'notadate'"]),
    "duplicate_timestamps": (_dup_date, ["date", "duplicate"]),
    "unsorted_timestamps": (_swap_dates, ["date", "not sorted"]),
    "single_row": (lambda df: df.iloc[:1], ["1 row"]),
    "header_only": (lambda df: df.iloc[:0], ["no data rows"]),
    "zero_variance": (_set("x1", slice(None), 3.0), ["'x1'", "constant"]),
    "empty_file": (b"", ["empty"]),
    "not_gzip": (b"\x1f\x8bnot really gzip" * 10, ["cannot read"]),
}


@pytest.mark.parametrize("name", sorted(BAD_TABLES))
def test_bad_table(name, tiny_dir, tmp_path):
    make, needles = BAD_TABLES[name]
    data = tmp_path / (f"{name}.csv.gz" if name == "not_gzip" else f"{name}.csv")
    if isinstance(make, bytes):
        data.write_bytes(make)
    else:
        make(synthetic_frame(n=600, channels=2)).to_csv(data, index=False)
    out = tmp_path / "X"
    one_line_error(_prune(tiny_dir, data, out), *needles)
    assert_nothing_left(out)


@pytest.mark.parametrize("args,needles", [
    (["--target", "nope"], ["target", "'nope'", "'x0'"]),
    (["--target", "x0", "x0"], ["target", "repeats"]),
    (["--date-col", "when"], ["date_col", "'when'"]),
])
def test_bad_columns(args, needles, tiny_dir, data_dir, tmp_path):
    out = tmp_path / "X"
    one_line_error(_prune(tiny_dir, data_dir / "good.csv", out, *args), *needles)
    assert_nothing_left(out)


@pytest.mark.parametrize("data,args,needles", [
    ("good.csv", ["--horizon", "5000"], ["horizon=5000", "no window fits"]),
    ("good.csv", ["--context", "5000"], ["context=5000", "train split"]),
    ("good.csv", ["--horizon", "100"], ["horizon=100", "val split"]),  # fits train, not val
    ("long.csv", ["--context", "1024"], ["--context", "1024", "at most 512"]),  # the model's limit
])
def test_window_longer_than_split_or_model(data, args, needles, tiny_dir, data_dir, tmp_path):
    out = tmp_path / "X"
    one_line_error(_prune(tiny_dir, data_dir / data, out, *args), *needles)
    assert_nothing_left(out)


def test_missing_data_file(tiny_dir, tmp_path):
    out = tmp_path / "X"
    one_line_error(_prune(tiny_dir, tmp_path / "nope.csv", out), "--data", "nope.csv")
    (tmp_path / "d").mkdir()
    one_line_error(_prune(tiny_dir, tmp_path / "d", out), "path")  # a directory
    assert_nothing_left(out)


def test_huge_stride_is_one_window_per_channel(tiny_dir, data_dir):
    """A stride past the end used to overflow int64 inside unfold (a traceback)."""
    rc, out, err = cli("eval", "--model", tiny_dir, "--data", data_dir / "good.csv", "--context", 64,
                       "--horizon", 16, "--split", "0.7,0.1,0.2", "--stride", 10**20, "--quiet")
    assert rc == 0, err
    assert "(2 windows" in out  # 2 channels x 1 window


_cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["", "n/a", "1e999", "-0", "abc", " 3 "]),
)


@st.composite
def _tables(draw):
    n = draw(st.integers(0, 90))
    cols = draw(st.integers(1, 3))
    frame = {}
    if draw(st.booleans()):
        dates = pd.date_range("2021-01-01", periods=n, freq="h").astype(str).tolist()
        if n > 3 and draw(st.booleans()):
            i = draw(st.integers(1, n - 1))
            dates[i] = dates[i - 1] if draw(st.booleans()) else "not a date"
        frame["date"] = dates
    t = np.arange(n)
    for c in range(cols):
        col = list(np.sin(t / (3.0 + c)) + 0.01 * t)
        for _ in range(draw(st.integers(0, 4))):
            if n:
                col[draw(st.integers(0, n - 1))] = draw(_cells)
        frame[f"c{c}"] = col
    return pd.DataFrame(frame)


@given(df=_tables())
@HYPO
def test_fuzzed_tables_succeed_or_fail_in_one_line(df, tiny_dir, tmp_path):
    data = tmp_path / "fuzz.csv"
    df.to_csv(data, index=False)
    rc, out, err = cli("eval", "--model", tiny_dir, "--data", data, "--context", 16, "--horizon", 4,
                       "--split", "0.6,0.2,0.2", "--quiet")
    if rc == 0:
        assert "test MSE" in out and not err.strip(), err
    else:
        one_line_error((rc, out, err))


# ---- model directories ------------------------------------------------------------------
def _weights_variant(kind: str, data: bytes) -> bytes:
    if kind == "truncated_half":
        return data[: len(data) // 2]
    if kind == "truncated_4_bytes":
        return data[:4]
    if kind == "zero_bytes":
        return b""
    if kind == "garbage":
        return b"\x00" * 8 + bytes(range(256)) * 4
    if kind == "header_json":
        b = bytearray(data)
        b[10:20] = b"}}}}}}}}}}"
        return bytes(b)
    if kind == "truncated_last_byte":
        return data[:-1]
    raise ValueError(kind)


WEIGHT_KINDS = ["truncated_half", "truncated_4_bytes", "zero_bytes", "garbage", "header_json",
                "truncated_last_byte"]


@pytest.mark.parametrize("kind", WEIGHT_KINDS)
def test_corrupted_safetensors(kind, tiny_dir, data_dir, tmp_path):
    m = copy_model(tiny_dir, tmp_path / "m")
    w = m / "model.safetensors"
    w.write_bytes(_weights_variant(kind, w.read_bytes()))
    out = tmp_path / "X"
    one_line_error(_prune(m, data_dir / "good.csv", out), "model.safetensors")
    assert_nothing_left(out)
    one_line_error(cli("eval", "--model", m, "--data", data_dir / "good.csv", "--context", 64,
                       "--horizon", 16, "--quiet"), "model.safetensors")
    onnx = tmp_path / "m.onnx"
    one_line_error(cli("export", "--model", m, "--out", onnx, "--context", 64, "--horizon", 16,
                       "--quiet"), "model.safetensors")
    assert_nothing_left(onnx)
    one_line_error(cli("inspect", m), "model.safetensors")


def test_unknown_family_lists_the_supported(tiny_dir, data_dir, tmp_path):
    from tsprune.families import supported
    m = copy_model(tiny_dir, tmp_path / "m")
    cfg = json.loads((m / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (m / "config.json").write_text(json.dumps(cfg))
    for res in (cli("inspect", m), _prune(m, data_dir / "good.csv", tmp_path / "X")):
        line = one_line_error(res, "'llama'", "supported")
        for fam in supported():
            assert fam in line
    assert_nothing_left(tmp_path / "X")


@pytest.mark.parametrize("edit,needles", [
    (lambda c: c.update(hidden_size=-3), ["cannot load", "negative dimension"]),
    (lambda c: c.update(num_attention_heads="x"), ["cannot load", "num_attention_heads"]),
    (lambda c: c.pop("model_type") and c.pop("architectures"), ["not a supported family"]),
    ("{not json", ["config.json", "not valid JSON"]),
    (None, ["config.json", "does not exist"]),
])
def test_bad_config_json(edit, needles, tiny_dir, data_dir, tmp_path):
    m = copy_model(tiny_dir, tmp_path / "m")
    if edit is None:
        (m / "config.json").unlink()
    elif isinstance(edit, str):
        (m / "config.json").write_text(edit)
    else:
        cfg = json.loads((m / "config.json").read_text())
        edit(cfg)
        (m / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "X"
    one_line_error(_prune(m, data_dir / "good.csv", out), *needles)
    assert_nothing_left(out)
    one_line_error(cli("eval", "--model", m, "--data", data_dir / "good.csv", "--context", 64,
                       "--horizon", 16, "--quiet"), *needles)


# ---- ONNX files -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_file(tiny_dir, tmp_path_factory) -> tuple[bytes, int]:
    """(bytes of a tiny exported graph, length of its leading part up to the metadata)."""
    import onnx
    p = tmp_path_factory.mktemp("onnx") / "m.onnx"
    rc, _, err = cli("export", "--model", tiny_dir, "--out", p, "--context", 64, "--horizon", 16,
                     "--quiet")
    assert rc == 0, err
    data = p.read_bytes()
    head = onnx.load_from_string(data)
    del head.metadata_props[:], head.functions[:]  # the fields serialised after the graph
    prefix = head.SerializeToString()
    assert data.startswith(prefix)
    return data, len(prefix)


@given(frac=st.floats(0.0, 1.0, exclude_max=True))
@fuzz_settings(40)
def test_truncated_onnx_is_one_line(frac, onnx_file, tmp_path):
    """Cut anywhere before the trailing metadata: `inspect` (table or --json) refuses it.
    (A cut inside the trailing metadata_props leaves a valid graph with fewer metadata
    entries: protobuf has no length or checksum to tell; see docs/reliability.md.)"""
    data, graph_end = onnx_file
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: int(frac * graph_end)])
    one_line_error(cli("inspect", cut), "cut.onnx", "not a readable ONNX file")
    one_line_error(cli("inspect", cut, "--json"), "cut.onnx", "not a readable ONNX file")


def test_onnx_where_a_model_directory_is_expected(onnx_file, data_dir, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(onnx_file[0][:1000])
    out = tmp_path / "X"
    one_line_error(_prune(bad, data_dir / "good.csv", out), "--model", "bad.onnx")
    assert_nothing_left(out)
    one_line_error(cli("eval", "--model", bad, "--data", data_dir / "good.csv", "--context", 64,
                       "--horizon", 16), "--model", "bad.onnx")
    one_line_error(cli("export", "--model", bad, "--out", tmp_path / "o.onnx"), "--model", "bad.onnx")
    assert_nothing_left(tmp_path / "o.onnx")


# ---- output paths -----------------------------------------------------------------------
def test_unwritable_outputs(tiny_dir, data_dir, tmp_path):
    """As root, permissions do not bind: unwritable means under a regular file or in /proc."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    good = data_dir / "good.csv"
    for out in (afile / "sub", afile / "a" / "b", afile):
        one_line_error(_prune(tiny_dir, good, out), "--out", str(out))
    assert afile.read_text() == "x"
    for out in ("/proc/tsprune-out", "/proc/tsprune-a/b"):
        one_line_error(_prune(tiny_dir, good, out), "--out", "/proc/tsprune-")
        assert not Path(out).exists()
    one_line_error(_prune(tiny_dir, good, tmp_path / "X", "--log-file", afile / "log.txt"),
                   "--log-file", "log.txt")
    assert_nothing_left(tmp_path / "X")
    for out in (afile / "m.onnx", Path("/proc/tsprune.onnx"), Path("/proc/tsprune-a/m.onnx"), tmp_path):
        one_line_error(cli("export", "--model", tiny_dir, "--out", out, "--context", 64), "--out")
    (tmp_path / "dir.onnx").mkdir()
    one_line_error(cli("export", "--model", tiny_dir, "--out", tmp_path / "dir.onnx", "--context", 64),
                   "--out", "is a directory")
    assert not list(tmp_path.glob(".*"))


# ---- numeric flags ----------------------------------------------------------------------
def _open01(v):
    return 0 < v < 1


# flag -> (kind, valid); a valid value gets past validation and fails on the one-row table
PRUNE_FLAGS = {
    "--ratio": (float, _open01), "--ema": (float, lambda v: 0 < v <= 1),
    "--max-sparsity": (float, _open01), "--expert-threshold": (float, lambda v: 0 <= v < 1),
    "--search-ratios": (float, _open01), "--search-emas": (float, lambda v: 0 < v <= 1),
    "--lr": (float, _open01),
    "--max-epochs": (int, lambda v: v >= 1), "--macro-batch": (int, lambda v: v >= 1),
    "--batch-size": (int, lambda v: v >= 1), "--calib-samples": (int, lambda v: v >= 1),
    "--val-samples": (int, lambda v: v >= 1), "--search-calib-samples": (int, lambda v: v >= 1),
    "--search-val-samples": (int, lambda v: v >= 1), "--finetune-epochs": (int, lambda v: v >= 1),
    "--opset": (int, lambda v: 18 <= v <= 23), "--seed": (int, lambda v: 0 <= v < 2**63),
    "--context": (int, lambda v: v >= 1), "--horizon": (int, lambda v: v >= 1),
    "--stride": (int, lambda v: v >= 1), "--season": (int, lambda v: v >= 1),
}
EXPORT_FLAGS = {
    "--context": (int, lambda v: 1 <= v <= 65536), "--horizon": (int, lambda v: 1 <= v <= 65536),
    "--opset": (int, lambda v: 18 <= v <= 23),
}
_NOT_NUMBERS = ["", "abc", "0x10", "--", "1_000x", "1 2"]


def _values(kind):
    if kind is float:
        nums = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                         st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-320, 1 - 1e-16]))
        return st.one_of(nums.map(repr), st.sampled_from(_NOT_NUMBERS + ["1e400", "-1e400", "nan"]))
    ints = st.one_of(st.integers(-2**70, 2**70), st.integers(-3, 30), st.sampled_from([2**63 - 1, 2**63]))
    return st.one_of(ints.map(str), st.sampled_from(_NOT_NUMBERS + ["nan", "inf", "1.5", "1e3"]))


def _expect(kind, valid, text) -> bool:
    """Whether `text` is a valid value of the flag."""
    try:
        v = float(text) if kind is float else int(text)
    except ValueError:
        return False
    return bool(valid(v)) if not (isinstance(v, float) and math.isnan(v)) else False


@given(data=st.data())
@HYPO
def test_prune_numeric_flags(data, tiny_dir, data_dir, tmp_path):
    flag = data.draw(st.sampled_from(sorted(PRUNE_FLAGS)), label="flag")
    kind, valid = PRUNE_FLAGS[flag]
    text = data.draw(_values(kind), label="value")
    out = tmp_path / "X"
    res = cli("prune", "--model", tiny_dir, "--data", data_dir / "one_row.csv", "--out", out, "--quiet",
              "--search", f"{flag}={text}")
    if _expect(kind, valid, text):
        one_line_error(res, "1 row")  # got past the flag, stopped by the table
    else:
        line = one_line_error(res, flag.lstrip("-"))
        assert "got" in line or "invalid" in line or "argument" in line, line
    assert_nothing_left(out)


@given(data=st.data())
@HYPO
def test_export_numeric_flags(data, broken_model, tmp_path):
    flag = data.draw(st.sampled_from(sorted(EXPORT_FLAGS)), label="flag")
    kind, valid = EXPORT_FLAGS[flag]
    text = data.draw(_values(kind), label="value")
    out = tmp_path / "m.onnx"
    res = cli("export", "--model", broken_model, "--out", out, "--quiet", f"{flag}={text}")
    if _expect(kind, valid, text):
        one_line_error(res, "model.safetensors")  # got past the flag, stopped by the weights
    else:
        one_line_error(res, flag)
    assert_nothing_left(out)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "nan", "inf", "1e400", "-0.0", "abc"])
def test_ratio_outside_open_unit_interval(value, tiny_dir, data_dir, tmp_path):
    out = tmp_path / "X"
    one_line_error(_prune(tiny_dir, data_dir / "good.csv", out, f"--ratio={value}"), "--ratio")
    assert_nothing_left(out)


def test_train_samples_must_be_positive(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "X"
    one_line_error(_prune(tiny_dir, data_dir / "one_row.csv", out, "--train-samples=0"),
                   "--train-samples")



def test_failed_run_leaves_no_created_parents(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "a" / "b" / "X"
    one_line_error(_prune(tiny_dir, data_dir / "one_row.csv", out), "1 row")
    assert not (tmp_path / "a").exists()
