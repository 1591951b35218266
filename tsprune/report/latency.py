"""Median onnxruntime CPU latency of an exported graph, within a small time budget.

    ort_latency("model.onnx", context=512, batches=(1, 64))
    -> {"1": {"median_ms", "min_ms", "runs"}, "64": {...}, "threads", "provider"}

One warm-up run per batch size, then up to ``max_runs`` timed runs while the batch's
share of ``budget_s`` lasts (at least one). Inputs are fixed random walks, so the figure
depends on the graph, the batch, the thread count and the machine, not on the data.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from tsprune.export.runtime import import_ort


def ort_latency(path, *, context: int, batches=(1, 64), budget_s: float = 4.0,
                max_runs: int = 20, threads: int | None = None) -> dict:
    ort = import_ort()

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads is None:
        threads = torch.get_num_threads()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    out: dict = {"threads": int(threads), "provider": "CPUExecutionProvider",
                 "budget_s": budget_s}
    share = budget_s / max(len(batches), 1)
    for b in batches:
        x = (rng.standard_normal((int(b), int(context))).cumsum(1) * 0.1).astype(np.float32)
        sess.run(None, {name: x})  # warm-up: allocations, first-run kernels
        times: list[float] = []
        t_start = time.perf_counter()
        while len(times) < max_runs:
            t0 = time.perf_counter()
            sess.run(None, {name: x})
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - t_start + times[-1] > share:
                break
        out[str(int(b))] = {"median_ms": round(statistics.median(times) * 1e3, 3),
                            "min_ms": round(min(times) * 1e3, 3), "runs": len(times)}
    return out
