"""Measured speed-up of exported graphs against a reference graph, in ONNX Runtime.

    interleaved_latency({"dense": "d.onnx", "p1": "p1.onnx"}, context=512, batch=64)
    -> {"dense": {"median_ms", "min_ms", "runs"}, "p1": {...}, "_setup": {...}}
    speedups(lat, "dense") -> {"p1": 2.4}      (ratio of the fastest runs: see speedups)

Interleaved timing: every round runs each graph once, in an order shuffled per round, so
that a machine that slows down or speeds up (other processes, frequency scaling, a
neighbour's job) moves every graph's timings alike and the ratios stay fair. One
warm-up run per graph first. The sessions use ``threads`` intra-op threads (1 by default,
the issue's protocol: it measures the graph, not the machine's parallelism) and one
inter-op thread. Inputs are fixed random walks: latency depends on shapes, not values.
"""
from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import numpy as np

from tsprune.export.runtime import import_ort


def _session(path, threads: int, provider: str):
    ort = import_ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=[provider])


def interleaved_latency(paths: dict[str, str | Path], *, context: int, batch: int, threads: int = 1,
                        rounds: int = 15, min_s: float = 3.0, max_rounds: int = 400, seed: int = 0,
                        provider: str = "CPUExecutionProvider") -> dict:
    """Median latency of each graph over at least ``rounds`` interleaved rounds, and more
    while the rounds have taken less than ``min_s`` seconds in all (small batches run in
    milliseconds: a few rounds would measure the noise), at most ``max_rounds``."""
    if not paths:
        raise ValueError("interleaved_latency: no graphs to time")
    sessions = {k: _session(p, threads, provider) for k, p in paths.items()}
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((int(batch), int(context))).cumsum(1) * 0.1).astype(np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():  # warm-up: allocations, first-run kernels
        s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    shuffle = random.Random(seed)
    t_start = time.perf_counter()
    for r in range(max(int(rounds), int(max_rounds))):
        shuffle.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
        if r + 1 >= rounds and time.perf_counter() - t_start >= min_s:
            break
    out: dict = {k: {"median_ms": round(statistics.median(v) * 1e3, 3),
                     "min_ms": round(min(v) * 1e3, 3), "runs": len(v)} for k, v in times.items()}
    out["_setup"] = {"batch": int(batch), "context": int(context), "threads": int(threads),
                     "provider": provider, "rounds": len(times[order[0]]), "interleaved": True}
    return out


def speedups(latency: dict, reference: str, stat: str = "min_ms") -> dict[str, float]:
    """Latency ratios reference / graph, for every graph timed with the reference.

    ``stat`` is the fastest run of each graph by default: other processes only ever add
    time to a run, so the minimum over interleaved rounds is the estimate that survives a
    busy machine. Measured on the 2-core VM with two other jobs running, three passes over
    the same graphs gave median ratios of 1.73-3.37x for one pruned graph and minimum
    ratios of 1.85-2.13x; two graphs of identical structure differed by 15% in median
    ratio within one pass. On a quiet machine the two agree. ``stat="median_ms"`` gives
    the median ratio."""
    ref = latency[reference][stat]
    return {k: round(ref / v[stat], 4) for k, v in latency.items()
            if not k.startswith("_") and v[stat] > 0}
