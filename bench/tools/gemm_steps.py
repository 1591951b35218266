"""ONNX Runtime's CPU GEMM time against the width a pruned Linear keeps:

    OMP_NUM_THREADS=1 python bench/tools/gemm_steps.py [--rows 1024] [--k 256]

Times one MatMul x (rows, K) @ W (K, N) in ONNX Runtime (CPU provider, one intra-op
thread, median CPU time of 200 runs) for a range of output widths N, then of input widths
K, and prints a markdown table. A pruned Linear keeps an arbitrary number of output
features; this shows what each kept width costs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _matmul(k: int, n: int) -> bytes:
    from onnx import TensorProto, helper
    w = helper.make_tensor("w", TensorProto.FLOAT, [k, n], np.random.default_rng(0).standard_normal(k * n)
                           .astype(np.float32))
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _time(k: int, n: int, rows: int, runs: int = 200) -> float:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    s = ort.InferenceSession(_matmul(k, n), so, providers=["CPUExecutionProvider"])
    x = {"x": np.random.default_rng(1).standard_normal((rows, k)).astype(np.float32)}
    s.run(None, x)
    ts = []
    for _ in range(runs):
        c = time.process_time()
        s.run(None, x)
        ts.append(time.process_time() - c)
    return statistics.median(ts) * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1024, help="rows of x (batch 64 x 16 patches)")
    ap.add_argument("--k", type=int, default=256, help="the other width (nano's d_model)")
    a = ap.parse_args(argv)
    widths = (16, 17, 24, 29, 32, 33, 48, 49, 64, 80, 81, 96, 128)
    print(f"| width | output width N (K={a.k}): us | input width K (N={a.k}): us |")
    print("|---:|---:|---:|")
    for w in widths:
        print(f"| {w} | {_time(a.k, w, a.rows):.0f} | {_time(w, a.k, a.rows):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
