"""`tsprune inspect`: dense and pruned model directories, an ONNX graph, bad paths."""
from __future__ import annotations

import json

import pytest
from helpers import TINY_TIMESFM25

from tsprune.cli import main
from tsprune.inspect import inspect_info, inspect_path
from tsprune.model import from_config
from tsprune.prune import Plan, apply
from tsprune.prune.masks import MaskSet


def _plan(m) -> Plan:
    """Layer 0 loses V heads 1 and 3; layer 1 loses 40 FFN channels."""
    s = m.family.structure(m.module)
    ms = MaskSet(m.module, s.linears())
    a0, f1 = s.blocks[0].attention[0], s.blocks[1].ffn[0]
    dv = a0.v_head_dim
    for h in (1, 3):
        ms.m_out[a0.v][h * dv:(h + 1) * dv] = 0
    ms.m_out[f1.inputs[0]][:40] = 0
    n = m.num_params()
    return Plan("timesfm2_5", ms.to_json(), n, n)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect")
    dense = from_config(dict(TINY_TIMESFM25))
    dense.save(d / "dense")
    pruned = apply(dense, _plan(dense))
    pruned.save(d / "pruned")
    return d, dense, pruned


def test_dense_model_dir(models):
    d, dense, _ = models
    info = inspect_info(d / "dense")
    assert info["kind"] == "model" and not info["pruned"] and info["params"] == dense.num_params()
    assert info["layers"] == dense.describe() and "params_dense" not in info
    assert info["block_params"] == sum(r["params"] for r in info["layers"])
    text = inspect_path(d / "dense")
    assert f"timesfm2_5 (dense), {dense.num_params():,} parameters" in text
    assert text.splitlines()[2].split() == ["layer", "heads", "kv_heads", "qk_dim", "v_dim", "ffn", "params"]


def test_pruned_model_dir_against_dense(models):
    d, dense, pruned = models
    info = inspect_info(d / "pruned")
    assert info["pruned"] and info["params"] == pruned.num_params() < dense.num_params()
    assert info["params_dense"] == dense.num_params()
    assert info["sparsity"] == pytest.approx(1 - pruned.num_params() / dense.num_params())
    assert info["dense_layers"] == dense.describe()
    assert info["layers"][0]["heads"] == 2 and info["layers"][1]["ffn"] == 96 - 40
    text = inspect_path(d / "pruned")
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.strip()[:1].isdigit()}
    assert rows["0"][1] == "2/4" and rows["1"][5] == "56/96" and rows["1"][1] == "4"
    j = json.loads(inspect_path(d / "pruned", as_json=True))
    assert j["layers"] == pruned.describe()


def test_onnx_graph_per_layer(models, tmp_path):
    from tsprune.export import export_onnx
    _, _, pruned = models
    path = tmp_path / "m.onnx"
    export_onnx(pruned, path, context=64, horizon=16, check=False)
    info = inspect_info(path)
    assert info["kind"] == "onnx" and info["metadata"]["family"] == "timesfm2_5"
    # the default graph has a dynamic context, like `tsprune export`
    assert info["inputs"] == {"context": ["batch", "context"]} and info["outputs"]["point"] == ["batch", 16]
    assert int(info["metadata"]["model_params"]) == pruned.num_params()
    assert info["ops"]["MatMul"] >= 12
    layers = info["layers"]
    assert [r["layer"] for r in layers] == [0, 1]
    # the graph's Linear weights are the pruned model's, layer by layer
    assert [r["params"] for r in layers] == [r["params"] for r in pruned.describe()]
    assert any(x.endswith(":56x64") for x in layers[1]["shapes"])  # the cut FFN, out x in
    text = inspect_path(path)
    assert "ONNX opset 18" in text and "layer  linears" in text


@pytest.mark.parametrize("bad, msg", [
    ("{d}/missing", "does not exist"),
    ("{d}/missing.onnx", "does not exist"),
    ("{d}", "has no config.json"),
    ("{d}/file.csv", "is a file but not an .onnx graph"),
    ("{d}/junk.onnx", "is not a readable ONNX file"),
    ("no-such-bundled-model", "neither a directory nor a bundled model"),
])
def test_bad_path_one_line_exit_2(tmp_path, capsys, bad, msg):
    (tmp_path / "file.csv").write_text("a,b\n1,2\n")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    assert main(["inspect", bad.format(d=tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("tsprune: error: inspect: ") and msg in err


def test_cli_json(models, capsys):
    d, dense, _ = models
    assert main(["inspect", str(d / "dense"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == dense.num_params()
