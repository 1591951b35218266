"""Export variants in ONNX Runtime (fp32 + onnxslim, int8, fp16), their sidecars with
parity and accuracy deltas, the Triton repository, and CLI argument errors.

Two torch exports in all of a 2-layer TimesFM 2.5 with flip invariance: fp32 (dynamic
context, a 2-step rollout, opset 23) and fp16 (1 layer, fixed context, one step, opset
18); the int8 variant and the Triton repository reuse the fp32 graph."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

from helpers import TINY_TIMESFM25, context_batch  # noqa: E402
from tsprune.cli import main  # noqa: E402
from tsprune.export.variants import VariantConfig, Windows, export_variant, sidecar_path  # noqa: E402
from tsprune.model import from_config  # noqa: E402

CONTEXT, HORIZON = 256, 160   # 160 > the model's 128-step output: two rollout steps
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ETTh1.csv.gz"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return from_config({**TINY_TIMESFM25, "force_flip_invariance": True})


@pytest.fixture(scope="module")
def windows():
    """Real ETTh1 test windows when ../shared/data is there, else synthetic ones."""
    if not SHARED_DATA.exists():
        return Windows.synthetic(128, CONTEXT, HORIZON)
    from tsprune.data import DataConfig, prepare
    data = prepare(DataConfig(path=SHARED_DATA, target=("OT",), context=CONTEXT, horizon=HORIZON))
    return Windows.from_dataset(data.windows("test"), 128, source="ETTh1.csv.gz")


@pytest.fixture(scope="module")
def fp32(model, windows, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "m.onnx"
    cfg = VariantConfig(opset=23, simplify=True)
    info = export_variant(model, path, cfg, context=CONTEXT, horizon=HORIZON, windows=windows,
                          metadata={"columns": ["OT"]})
    return path, info


def _sidecar_ok(path, info):
    side = json.loads(sidecar_path(path).read_text())
    assert side == json.loads(json.dumps(info))
    acc = side["accuracy"]
    for k in ("mse_torch", "mse_onnx", "mse_delta", "mse_rel_delta", "mae_delta", "windows"):
        assert np.isfinite(acc[k]), k
    assert acc["mse_delta"] == pytest.approx(acc["mse_onnx"] - acc["mse_torch"])
    assert side["flops"]["per_series"] > 0 and not side["flops"]["unknown"]
    return side


def test_fp32_variant_parity_accuracy_and_graph(model, fp32, windows):
    path, info = fp32
    side = _sidecar_ok(path, info)
    assert side["parity"]["max_abs_err"] < 1e-4
    assert set(side["parity"]["by_context"]) == {"123", "256", "273"}   # dynamic context checked
    assert abs(side["accuracy"]["mse_rel_delta"]) < 1e-5
    assert side["accuracy"]["source"] == windows.source
    assert side["simplify"]["requested"] and side["simplify"]["applied"]
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"Attention", "RMSNormalization"} <= ops                      # opset 23 native ops
    assert not any(n.metadata_props for n in proto.graph.node)           # debug info stripped
    shapes = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input]
    assert shapes == [["batch", "context"]]
    # one initializer per weight: the rollout and the flip pass share them
    params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer)
    assert params <= model.num_params() * 1.02
    assert path.stat().st_size < model.num_params() * 4 * 1.3
    meta = {e.key: e.value for e in proto.metadata_props}
    assert meta["family"] == "timesfm2_5" and meta["dynamic_context"] == "true"
    assert json.loads(meta["columns"]) == ["OT"]


def test_int8_variant_from_fp32_graph(model, fp32, windows, tmp_path):
    base, _ = fp32
    path = tmp_path / "m_int8.onnx"
    info = export_variant(model, path, VariantConfig(opset=23, quantize="int8"), context=CONTEXT,
                          horizon=HORIZON, windows=windows, base=base)
    side = _sidecar_ok(path, info)
    assert side["steps"][0] == {"step": "export", "reused": str(base)}
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(path)).graph.node}
    assert path.stat().st_size < base.stat().st_size / 2
    assert 0 < side["parity"]["max_abs_err"] < 0.5
    assert abs(side["accuracy"]["mse_rel_delta"]) < 0.05


def test_fp16_variant(windows, tmp_path):
    """A 1-layer model, fixed context and one decode step (a small graph to trace), opset 18."""
    torch.manual_seed(0)
    model = from_config({**TINY_TIMESFM25, "num_hidden_layers": 1, "force_flip_invariance": True})
    path = tmp_path / "m_fp16.onnx"
    short = Windows(windows.context, windows.target[:, :96], windows.source)
    info = export_variant(model, path, VariantConfig(opset=18, precision="fp16", dynamic_context=False),
                          context=CONTEXT, horizon=96, windows=short)
    side = _sidecar_ok(path, info)
    assert side["steps"][0]["precision"] == "fp16"                      # traced in half precision
    assert side["io"]["inputs"][0][1] == "FLOAT"                         # float32 in and out
    proto = onnx.load(str(path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert side["parity"]["max_abs_err"] < 0.05
    assert abs(side["accuracy"]["mse_rel_delta"]) < 0.01


def test_base_graph_must_match(model, fp32, tmp_path):
    base, _ = fp32
    with pytest.raises(ValueError, match="does not match"):
        export_variant(model, tmp_path / "x.onnx", VariantConfig(opset=18, quantize="int8"),
                       context=CONTEXT, horizon=HORIZON, base=base)


def test_triton_repository(fp32, tmp_path):
    pytest.importorskip("tritonclient", reason="tritonclient is not installed: add it to the dev extra")
    from tsprune.export.triton import check_config, parse_config, write_repo
    base, _ = fp32
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)                                 # other models stay
    r = write_repo(base, repo, "tiny", sidecar=sidecar_path(base), max_batch_size=32, instances=2, device="cpu")
    assert r["validated"].startswith("parsed")
    assert (repo / "other").is_dir()
    assert sorted(p.name for p in (repo / "tiny").iterdir()) == [  # the marker: tsprune wrote it
        ".tsprune-output", "1", "config.pbtxt", "model.onnx.json"]
    assert (repo / "tiny" / "1" / "model.onnx").read_bytes() == base.read_bytes()
    cfg = parse_config((repo / "tiny" / "config.pbtxt").read_text())
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("context", [-1])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("point", [HORIZON]), ("quantiles", [HORIZON, 9])]
    assert cfg.HasField("dynamic_batching") and cfg.instance_group[0].count == 2
    assert check_config(cfg, repo / "tiny" / "1" / "model.onnx") == []
    cfg.output[1].dims[:] = [HORIZON, 10]
    cfg.input[0].name = "x"
    problems = check_config(cfg, base)
    assert any("input names" in p for p in problems) and any("quantiles: dims" in p for p in problems)


def test_triton_config_without_batching_keeps_batch_axis(fp32):
    from tsprune.export.graph import io_spec
    from tsprune.export.triton import config_text
    text = config_text("m", io_spec(onnx.load(str(fp32[0]))), max_batch_size=0)
    assert "dims: [ -1, -1 ]" in text and "dynamic_batching" not in text


@pytest.mark.parametrize("args,needle", [
    (["--precision", "fp8"], "--precision"),
    (["--quantize", "int4"], "--quantize"),
    (["--precision", "fp16", "--quantize", "int8"], "--quantize"),
    (["--opset", "17"], "--opset"),
    (["--format", "triton", "--instances", "0"], "--instances"),
])
def test_cli_bad_variant_values_exit_2_with_one_line(args, needle, tmp_path, capsys):
    out = tmp_path / ("m.onnx" if "triton" not in args else "repo")
    rc = main(["export", "--model", "does-not-matter", "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_onnx_forecast_matches_model_on_new_lengths(model, fp32):
    """The dynamic context axis: lengths the parity check did not use."""
    from tsprune.export.runtime import make_session
    sess = make_session(fp32[0], device="cpu")
    for length in (64, 100):
        x = context_batch(2, length, seed=length)
        point = sess.run(["point"], {"context": x.numpy()})[0]
        np.testing.assert_allclose(point, model.forecast(x, HORIZON).point.numpy(), atol=1e-4, rtol=1e-4)
