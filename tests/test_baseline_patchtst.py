"""train_patchtst: the supervised PatchTST baseline (tiny sizes, synthetic data)."""
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed")

from helpers import synthetic_frame  # noqa: E402
from tsprune.baselines.evaluate import evaluate_forecaster  # noqa: E402
from tsprune.baselines.patchtst import train_patchtst  # noqa: E402
from tsprune.data import DataConfig, prepare_frame  # noqa: E402
from tsprune.errors import UserError  # noqa: E402


def _data():
    return prepare_frame(synthetic_frame(1500, channels=2),
                         DataConfig(None, context=96, horizon=24, split="0.7,0.1,0.2"))


def test_trains_beats_the_mean_and_is_a_tsprune_model(tmp_path):
    data = _data()
    before = torch.get_num_threads()
    m = train_patchtst(data, epochs=3, windows_per_epoch=512, batch_size=64, d_model=8,
                       ffn_dim=16, layers=2, dropout=0.0, threads=1, progress=False)
    assert torch.get_num_threads() == before
    assert 1 <= len(m.history) <= 3 and all(h["val_mse"] > 0 for h in m.history)
    test = data.windows("test")
    r = evaluate_forecaster(m, test)
    assert r["mse"] < 1.0                      # z-scored data: the mean forecast scores ~1
    assert m(test.gather(torch.arange(3))[0]).shape == (3, 24)
    tm = m.tsmodel()
    assert tm.family.name == "patchtst"
    tm.save(tmp_path / "pt")
    from tsprune.model import load
    x = test.gather(torch.arange(4))[0]
    assert torch.equal(load(tmp_path / "pt").forecast(x, 24).point, m(x))


def test_bad_arguments():
    data = _data()
    with pytest.raises(UserError, match="heads"):
        train_patchtst(data, d_model=10, heads=4)
    with pytest.raises(UserError, match="windows_per_epoch"):
        train_patchtst(data, windows_per_epoch=0)
