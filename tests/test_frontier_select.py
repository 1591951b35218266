"""The frontier's Pareto set, `--pick` and the interleaved speed-up measurement."""
import pytest

from tsprune.errors import UserError
from tsprune.frontier.select import parse_pick, pareto, pick

PTS = [
    {"name": "a", "speedup": 1.5, "mse": 0.370, "mae": 0.40, "params": 0.7},
    {"name": "b", "speedup": 2.1, "mse": 0.372, "mae": 0.41, "params": 0.5},
    {"name": "c", "speedup": 2.0, "mse": 0.380, "mae": 0.42, "params": 0.5},   # dominated by b
    {"name": "d", "speedup": 3.2, "mse": 0.390, "mae": 0.43, "params": 0.3},
    {"name": "e", "speedup": 3.2, "mse": 0.395, "mae": 0.43, "params": 0.3},   # dominated by d
]
REFS = {"dense_ft": {"mse": 0.373, "mae": 0.41}, "dense_zs": {"mse": 0.396, "mae": 0.44}}


def test_pareto_drops_dominated_points_fastest_first():
    assert pareto(PTS) == ["d", "b", "a"]


def test_pareto_keeps_ties():
    pts = [{"name": "x", "speedup": 2.0, "mse": 0.5}, {"name": "y", "speedup": 2.0, "mse": 0.5}]
    assert sorted(pareto(pts)) == ["x", "y"]


@pytest.mark.parametrize("text,expected", [
    ("mse<=dense_ft", "b"),                 # fastest model at least as accurate as dense FT
    ("mse<=dense_ft*1.02", "b"),            # 0.3805 bound: d (0.390) is out
    ("mse<=dense_ft*1.05", "d"),
    ("speedup>=2", "b"),                    # most accurate model at least 2x faster
    ("speedup>=3", "d"),
    ("speedup>=2, mse<=dense_zs", "d"),     # an error bound: the fastest that satisfies both
    ("params<=0.5", "b"),
    ("mse<=0.3", None),
])
def test_pick(text, expected):
    got = pick(PTS, parse_pick(text), REFS)
    assert (got["name"] if got else None) == expected


@pytest.mark.parametrize("text", ["", "mse", "mse<dense", "speedup>=dense_ft", "latency<=3", "mse<=x*2",
                                  "mse=<0.4"])
def test_bad_pick_names_the_flag(text):
    with pytest.raises(UserError, match="--pick"):
        parse_pick(text)


def test_interleaved_latency_times_every_graph_equally(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from tsprune.export.speed import interleaved_latency, speedups

    def graph(path, width):  # x (B, 16) @ W (16, width): a cheap and an expensive graph
        import numpy as np
        w = helper.make_tensor("w", TensorProto.FLOAT, [16, width], np.ones(16 * width, dtype=np.float32))
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", width])], [w])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
        return path

    lat = interleaved_latency({"big": graph(tmp_path / "big.onnx", 4096), "small": graph(tmp_path / "s.onnx", 8)},
                              context=16, batch=64, rounds=5, min_s=0.0)
    assert lat["big"]["runs"] == lat["small"]["runs"] == lat["_setup"]["rounds"] == 5
    s = speedups(lat, "big")
    assert s["big"] == 1.0 and s["small"] > 1.0 and "_setup" not in s
    # one thread on the CPU provider: median CPU time per run (not slowed by other processes);
    # wall medians on request, and by default with more threads (CPU time sums over threads)
    assert lat["small"]["cpu_median_ms"] > 0
    assert s["small"] == round(lat["big"]["cpu_median_ms"] / lat["small"]["cpu_median_ms"], 4)
    assert speedups(lat, "big", "median_ms")["small"] == round(lat["big"]["median_ms"] / lat["small"]["median_ms"], 4)
    two = {**lat, "_setup": {**lat["_setup"], "threads": 2}}
    assert speedups(two, "big") == speedups(lat, "big", "median_ms")
    # independent passes, merged: medians over the passes, each pass kept, runs summed
    import statistics

    from tsprune.export.speed import timed_passes
    paths = {"big": tmp_path / "big.onnx", "small": tmp_path / "s.onnx"}
    merged = timed_passes(paths, passes=3, context=16, batch=64, rounds=5, min_s=0.0)
    assert merged["_setup"]["passes"] == 3 and merged["_setup"]["rounds"] == 5
    for k in paths:
        assert merged[k]["runs"] == 15 and len(merged[k]["cpu_median_ms_passes"]) == 3
        assert merged[k]["cpu_median_ms"] == round(statistics.median(merged[k]["cpu_median_ms_passes"]), 3)
        assert merged[k]["median_ms"] == round(statistics.median(merged[k]["median_ms_passes"]), 3)
    assert speedups(merged, "big")["small"] > 1.0
    from tsprune.export.speed import pass_speedups
    per = pass_speedups(merged, "big")["small"]
    assert per == [round(b / x, 4) for b, x in zip(merged["big"]["cpu_median_ms_passes"],
                                                    merged["small"]["cpu_median_ms_passes"])]
    assert pass_speedups(lat, "big") == {}  # one pass: nothing to spread
    with pytest.raises(ValueError, match="passes"):
        timed_passes(paths, passes=0, context=16, batch=64)
