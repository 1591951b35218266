"""The exported graph's serving contract (tsprune.export.sanitize), through onnxruntime:
NaN and inf are missing values, filled inside the graph; any finite float32 context gives
finite forecasts; ordinary contexts are untouched (parity with torch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TINY_TIMESFM25, context_batch

ort = pytest.importorskip("onnxruntime")

L, H = 96, 16


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from tsprune.export import export_onnx
    from tsprune.model import from_config
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    path = tmp_path_factory.mktemp("g") / "m.onnx"
    export_onnx(m, path, context=L, horizon=H, dynamic_context=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    run = lambda x: sess.run(None, {"context": np.asarray(x, dtype=np.float32)})  # noqa: E731
    run.path = path
    return m, run


def _ffill(x: np.ndarray) -> np.ndarray:
    """The documented fill: last observed value, leading gaps the first observed one."""
    out = x.astype(np.float64).copy()
    for r in out:
        ok = np.isfinite(r)
        if not ok.any():
            r[:] = 0
            continue
        idx = np.where(ok, np.arange(len(r)), -1)
        idx = np.maximum.accumulate(idx)
        first = np.argmax(ok)
        idx[idx < 0] = first
        r[:] = r[idx]
    return out.astype(np.float32)


def test_ordinary_context_is_unchanged(graph):
    m, run = graph
    x = context_batch(3, L).numpy()
    want = m.forecast(torch.from_numpy(x), H).point.numpy()
    np.testing.assert_allclose(run(x)[0], want, atol=1e-4)


def test_gaps_are_filled_inside_the_graph(graph):
    m, run = graph
    x = context_batch(4, L, seed=1).numpy()
    x[0, 10:20] = np.nan           # interior gap
    x[1, :7] = np.nan              # leading gap
    x[2, -5:] = np.inf             # trailing inf
    x[3, ::3] = -np.inf            # scattered -inf
    got = run(x)
    assert all(np.isfinite(o).all() for o in got)
    want = m.forecast(torch.from_numpy(_ffill(x)), H).point.numpy()
    np.testing.assert_allclose(got[0], want, atol=1e-4)


def test_fill_matches_the_documented_fill_on_random_gaps():
    """fill_gaps (the graph's fill, in torch) against the loop above, on rows with random
    gaps of every kind, odd lengths, all-missing and all-present rows."""
    from tsprune.export.sanitize import fill_gaps
    rng = np.random.default_rng(0)
    for length in (1, 2, 7, 96, 333):
        x = rng.standard_normal((9, length)).astype(np.float32)
        x[rng.random(x.shape) < rng.random((9, 1))] = np.nan
        x[0], x[1, -1:] = np.nan, np.inf
        x[2] = rng.standard_normal(length)
        t = torch.from_numpy(x)
        ok = torch.isfinite(t)
        got = fill_gaps(torch.where(ok, t, torch.zeros_like(t)), ok).numpy()
        np.testing.assert_array_equal(got, _ffill(x))


def test_gaps_are_filled_at_another_context_length(graph):
    """The graph's context axis is dynamic: the fill holds at a length it was not traced at."""
    m, run = graph
    n = L // 2 + 3
    x = context_batch(3, n, seed=2).numpy()
    x[0, 5:9] = np.nan
    x[1, :4] = -np.inf
    x[2, ::2] = np.nan
    want = m.forecast(torch.from_numpy(_ffill(x)), H).point.numpy()
    np.testing.assert_allclose(run(x)[0], want, atol=1e-4)


def test_all_missing_row_is_finite(graph):
    _, run = graph
    x = np.full((2, L), np.nan, dtype=np.float32)
    x[1] = np.inf
    assert all(np.isfinite(o).all() for o in run(x))


@pytest.mark.parametrize("value", [1e30, 3e38, -3e38, 3.4028235e38, 1e-30, 0.0, 1e10])
def test_constant_contexts_of_any_size_forecast_finite_and_near_the_constant(graph, value):
    _, run = graph
    x = np.full((1, L), value, dtype=np.float32)
    point = run(x)[0]
    assert np.isfinite(point).all()
    np.testing.assert_allclose(point, value, rtol=1e-2, atol=1e-6)


def test_huge_values_scale_exactly(graph):
    """A series times 2^100 forecasts its forecast times 2^100 (the scaling is exact)."""
    _, run = graph
    x = context_batch(2, L, seed=3).numpy()
    small = run(x)
    big = run(x * np.float32(2.0 ** 100))
    for s, b in zip(small, big):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b / np.float32(2.0 ** 100), s, rtol=1e-5, atol=1e-5)


def test_random_float32_contexts_are_finite(graph):
    _, run = graph
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=(16, L), dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)  # every bit pattern: NaNs, infs, subnormals, 3e38
    assert all(np.isfinite(o).all() for o in run(x))
    mixed = np.where(rng.random((8, L)) < 0.5, 3e38, -3e38).astype(np.float32)
    assert all(np.isfinite(o).all() for o in run(mixed))
    # a dynamic context axis: other lengths too
    assert all(np.isfinite(o).all() for o in run(x[:, : L // 2 - 5]))


def test_full_disk_while_writing_a_variant_leaves_nothing(graph, tmp_path, monkeypatch):
    """Out of disk space while writing (onnx.save raises ENOSPC): OSError, no file, no
    work directory, no sidecar. (The int8 variant starts from the exported graph: no trace.)"""
    import errno
    import os

    import onnx

    from tsprune.export.variants import VariantConfig, export_variant
    m, run = graph

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(onnx, "save", full)
    with pytest.raises(OSError) as e:
        export_variant(m, tmp_path / "q.onnx", VariantConfig(quantize="int8", dynamic_context=True),
                       context=L, horizon=H, base=run.path)
    assert e.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())
