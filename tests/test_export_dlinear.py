"""A DLinear baseline exported with the TSFM graphs' contract: input `context` (batch, L),
outputs `point` (batch, H) [and `quantiles` (batch, H, Q), the point repeated], per-window
normalisation inside the graph; onnxruntime matches torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import context_batch, one_thread  # noqa: F401  (one_thread: autouse)

from tsprune.baselines.dlinear import DLinear

pytest.importorskip("onnxruntime")


def _trained_like(context=96, horizon=24, instance_norm=True):
    torch.manual_seed(0)
    m = DLinear(context, horizon, kernel=25, instance_norm=instance_norm)
    with torch.no_grad():  # weights away from the initial mean-forecast
        for layer in (m.seasonal, m.trend):
            layer.weight.add_(0.01 * torch.randn_like(layer.weight))
            layer.bias.add_(0.1 * torch.randn_like(layer.bias))
    return m.eval()


@pytest.mark.parametrize("levels", [(), (0.1, 0.5, 0.9)])
def test_dlinear_graph_contract_and_parity(tmp_path, levels):
    import onnx
    import onnxruntime as ort

    from tsprune.export.dlinear import export_dlinear
    from tsprune.export.graph import io_spec
    m = _trained_like()
    info = export_dlinear(m, tmp_path / "d.onnx", levels=levels, metadata={"columns": ["x"]})
    assert info["max_abs_err"] < 1e-4
    spec = io_spec(onnx.load(str(tmp_path / "d.onnx")))
    assert [(n, t) for n, t, _ in spec["inputs"]] == [("context", "FLOAT")]
    assert spec["inputs"][0][2][1] == 96 and isinstance(spec["inputs"][0][2][0], str)  # dynamic batch
    names = [n for n, _, _ in spec["outputs"]]
    assert names == (["point", "quantiles"] if levels else ["point"])
    s = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    x = context_batch(5, 96, seed=3) * 40 + 500  # raw units far from z-scores
    outs = s.run(None, {"context": x.numpy()})
    with torch.no_grad():
        ref = m(x).numpy()
    assert outs[0].shape == (5, 24) and np.abs(outs[0] - ref).max() < 1e-3
    if levels:
        assert outs[1].shape == (5, 24, 3) and np.array_equal(outs[1][..., 1], outs[0])
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "d.onnx")).metadata_props}
    assert meta["family"] == "dlinear" and "instance normalisation inside the graph" in meta["normalisation"]
    assert meta["columns"] == '["x"]'


def test_instance_norm_makes_the_forecast_equivariant():
    m = _trained_like()
    x = context_batch(3, 96, seed=1)
    with torch.no_grad():
        a, b = m(x), m(x * 7.0 + 30.0)
    assert torch.allclose(b, a * 7.0 + 30.0, atol=1e-3)
