"""seasonal_naive, DLinear, train_dlinear, evaluate_forecaster."""
import numpy as np
import pandas as pd
import pytest
import torch

from tsprune.baselines import (DLinear, evaluate_forecaster, evaluate_seasonal_naive,
                               seasonal_naive, train_dlinear)
from tsprune.data import DataConfig, prepare_frame
from tsprune.errors import UserError
from tsprune.metrics import mse


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: threads only add contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_seasonal_naive_values():
    x = torch.arange(10.0).reshape(1, 10)
    assert seasonal_naive(x, 5, 3).tolist() == [[7.0, 8.0, 9.0, 7.0, 8.0]]
    assert seasonal_naive(x, 3).tolist() == [[9.0, 9.0, 9.0]]
    assert seasonal_naive(x.numpy(), 4, 10).tolist() == [[0.0, 1.0, 2.0, 3.0]]
    assert isinstance(seasonal_naive(x.numpy(), 2), np.ndarray)
    with pytest.raises(UserError, match="season: got 11"):
        seasonal_naive(x, 2, 11)
    with pytest.raises(UserError, match="horizon: got 0"):
        seasonal_naive(x, 0)


def periodic(n=600, period=24, cols=2):
    t = np.arange(n)
    data = {f"c{i}": np.sin(2 * np.pi * t / period + i) for i in range(cols)}
    return pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="h"), **data})


def test_seasonal_naive_is_exact_on_periodic_data():
    p = prepare_frame(periodic(), DataConfig(None, split="0.6,0.2,0.2", context=48, horizon=30))
    assert p.season == 24
    out = evaluate_seasonal_naive(p.windows("test"), p.season, horizons=[10])
    assert out["mse"] < 1e-10 and out["windows"] == len(p.windows("test"))
    assert evaluate_seasonal_naive(p.windows("test"), None)["mse"] > 0.1


def test_dlinear_decomposition():
    model = DLinear(context=40, horizon=8, kernel=5)
    x = torch.randn(3, 40)
    seasonal, trend = model.decompose(x)
    torch.testing.assert_close(seasonal + trend, x)
    torch.testing.assert_close(trend[:, 10], x[:, 8:13].mean(1))
    torch.testing.assert_close(trend[:, 0], (3 * x[:, 0] + x[:, 1] + x[:, 2]) / 5)  # edge padding
    assert model(x).shape == (3, 8) and model(torch.randn(2, 5, 40)).shape == (2, 5, 8)
    assert DLinear(40, 8, kernel=4).decompose(x)[1].shape == x.shape  # even kernel
    const = torch.full((2, 40), 3.0)
    torch.testing.assert_close(model(const), torch.full((2, 8), 3.0))  # init: window mean


def test_train_dlinear_learns_and_restores_best():
    df = periodic(n=500)
    df["c1"] += np.linspace(0, 3, 500)
    p = prepare_frame(df, DataConfig(None, split="0.6,0.2,0.2", context=48, horizon=12))
    torch.manual_seed(1)
    model = train_dlinear(p, epochs=3, lr=1e-2, batch_size=128, progress=False, seed=0)
    hist = model.history
    assert 1 <= len(hist) <= 3 and not model.training
    test = p.windows("test")
    got = evaluate_forecaster(model, test, batch_size=100)
    naive = evaluate_seasonal_naive(test, None)
    assert got["mse"] < 0.2 * naive["mse"]
    x, y = test.as_tensors()
    with torch.no_grad():
        assert got["mse"] == pytest.approx(mse(model(x), y), rel=1e-6)
    best = min(h["val_mse"] for h in hist)
    val = evaluate_forecaster(model, p.windows("val"))
    assert val["mse"] == pytest.approx(best, rel=1e-5)
    again = train_dlinear(p, epochs=3, lr=1e-2, batch_size=128, progress=False, seed=0)
    torch.testing.assert_close(again.trend.weight, model.trend.weight)  # deterministic


def test_train_dlinear_arguments():
    p = prepare_frame(periodic(), DataConfig(None, split="0.6,0.2,0.2", context=48, horizon=12))
    with pytest.raises(UserError, match="lr: got 0"):
        train_dlinear(p, lr=0, progress=False)
    with pytest.raises(UserError, match="epochs: got 1.5"):
        train_dlinear(p, epochs=1.5, progress=False)
    with pytest.raises(UserError, match="context=400"):
        train_dlinear(p, context=400, progress=False)
    m = train_dlinear(p, context=24, horizon=6, epochs=1, max_train_windows=50, progress=False)
    assert (m.context, m.horizon) == (24, 6)


def test_evaluate_forecaster_longer_forecast_and_bad_shape():
    p = prepare_frame(periodic(), DataConfig(None, split="0.6,0.2,0.2", context=48, horizon=12))
    test = p.windows("test")
    ref = evaluate_seasonal_naive(test, 24)
    longer = evaluate_forecaster(lambda x: seasonal_naive(x, 20, 24), test)
    assert longer["mse"] == pytest.approx(ref["mse"])
    with pytest.raises(ValueError, match="expected"):
        evaluate_forecaster(lambda x: x[:, :3], test)
