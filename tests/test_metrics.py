"""mse, mae and the streaming ForecastMetrics."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsprune.errors import UserError
from tsprune.metrics import ForecastMetrics, mae, mse


def test_simple_functions_numpy_and_torch():
    pred, true = np.array([[1.0, 2.0], [3.0, 5.0]]), np.zeros((2, 2))
    assert mse(pred, true) == pytest.approx((1 + 4 + 9 + 25) / 4)
    assert mae(torch.tensor(pred, dtype=torch.float32), true) == pytest.approx(11 / 4)
    with pytest.raises(ValueError, match="shape"):
        mse(pred, np.zeros(3))


def test_float64_accumulation():
    big = torch.full((4, 3), 1e4, dtype=torch.float32)
    m = ForecastMetrics()
    for _ in range(1000):
        m.update(big + 1, big)
    assert m.mse() == 1.0 and m.count == 4000


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=5), st.integers(1, 6), st.integers(0, 99))
def test_streaming_equals_batch_and_prefixes(sizes, H, seed):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(sum(sizes), H))
    true = rng.normal(size=(sum(sizes), H))
    m, start = ForecastMetrics(), 0
    for n in sizes:
        m.update(pred[start:start + n], true[start:start + n])
        start += n
    assert m.mse() == pytest.approx(mse(pred, true))
    assert m.mae() == pytest.approx(mae(pred, true))
    for h in range(1, H + 1):
        assert m.mse(h) == pytest.approx(mse(pred[:, :h], true[:, :h]))
        assert m.mae(h) == pytest.approx(mae(pred[:, :h], true[:, :h]))


def test_trailing_dims_and_result():
    pred, true = torch.randn(5, 4, 3), torch.randn(5, 4, 3)
    m = ForecastMetrics()
    m.update(pred, true)
    out = m.result(horizons=[2, 4])
    assert out["mse"] == pytest.approx(mse(pred, true)) and out["windows"] == 15
    assert out["by_horizon"][2]["mae"] == pytest.approx(mae(pred[:, :2], true[:, :2]))


def test_errors():
    m = ForecastMetrics()
    with pytest.raises(ValueError, match="no batches"):
        m.mse()
    m.update(np.zeros((2, 4)), np.ones((2, 4)))
    with pytest.raises(UserError, match=r"horizon: got 5; expected an integer in \[1, 4\]"):
        m.mse(5)
    with pytest.raises(ValueError, match="horizon 3 differs"):
        m.update(np.zeros((2, 3)), np.ones((2, 3)))
