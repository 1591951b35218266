"""Measured speed-up of exported graphs against a reference graph, in ONNX Runtime.

    interleaved_latency({"dense": "d.onnx", "p1": "p1.onnx"}, context=512, batch=64)
    -> {"dense": {"median_ms", "min_ms", "runs"}, "p1": {...}, "_setup": {...}}
    speedups(lat, "dense") -> {"p1": 2.4}      (ratio of median CPU times at one thread: see speedups)
    speedup_of("p1.onnx", "d.onnx", context=512, batch=64) -> 2.4   (one graph against the dense one)
    timed_passes({...}, context=512, batch=64) -> as interleaved_latency, medians over PASSES passes

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
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    shuffle = random.Random(seed)
    t_start = time.perf_counter()
    for r in range(max(int(rounds), int(max_rounds))):
        shuffle.shuffle(order)
        for k in order:
            c0, t0 = time.process_time(), time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        if r + 1 >= rounds and time.perf_counter() - t_start >= min_s:
            break
    out: dict = {k: {"median_ms": round(statistics.median(v) * 1e3, 3),
                     "min_ms": round(min(v) * 1e3, 3), "runs": len(v),
                     "cpu_median_ms": round(statistics.median(cpu[k]) * 1e3, 3)} for k, v in times.items()}
    out["_setup"] = {"batch": int(batch), "context": int(context), "threads": int(threads),
                     "provider": provider, "rounds": len(times[order[0]]), "interleaved": True}
    return out


#: independent interleaved passes behind a speed-up that a budget is judged by (the final graph
#: of `prune --budget speedup=S`, every frontier point; calibrate.CONFIRM for the calibration).
#: One pass of 30 rounds is not enough on a loaded machine: a frontier graph calibrated at
#: 3.08x timed 2.83x in one later pass, with two other jobs on the VM's two cores
PASSES = 3


def timed_passes(paths: dict[str, str | Path], *, passes: int = PASSES, **kw) -> dict:
    """``passes`` independent interleaved_latency runs (seeds 0, 1, ...) merged into one result
    of the same shape: every statistic of a graph is the median over the passes (``runs``
    their sum), each pass's ``median_ms`` and ``cpu_median_ms`` are kept as ``*_passes``, and
    ``_setup`` records ``passes``. ``min_s`` (interleaved_latency's time floor, 3 s)
    is shared by the passes; ``rounds`` is each pass's. A burst of load that slows one pass moves the medians
    less than it moves that pass."""
    if int(passes) < 1:
        raise ValueError(f"timed_passes: passes must be >= 1, got {passes}")
    min_s = kw.pop("min_s", 3.0) / int(passes)  # the time floor is for all passes together
    runs = [interleaved_latency(paths, seed=i, min_s=min_s, **kw) for i in range(int(passes))]
    out: dict = {}
    for k in runs[0]:
        if k.startswith("_"):
            continue
        out[k] = {st: round(statistics.median(r[k][st] for r in runs), 3) for st in ("median_ms", "cpu_median_ms")}
        out[k]["min_ms"] = min(r[k]["min_ms"] for r in runs)
        out[k]["runs"] = sum(r[k]["runs"] for r in runs)
        for st in ("median_ms", "cpu_median_ms"):
            out[k][f"{st}_passes"] = [r[k][st] for r in runs]
    out["_setup"] = {**runs[0]["_setup"], "rounds": min(r["_setup"]["rounds"] for r in runs),
                     "passes": int(passes)}
    return out


def speedup_stat(latency: dict) -> str:
    """The latency statistic speed-ups compare (see speedups)."""
    st = latency.get("_setup", {})
    cpu_only = st.get("threads") == 1 and st.get("provider", "CPUExecutionProvider") == "CPUExecutionProvider"
    return "cpu_median_ms" if cpu_only and all("cpu_median_ms" in v for k, v in latency.items()
                                                 if not k.startswith("_")) else "median_ms"


def speedups(latency: dict, reference: str, stat: str | None = None) -> dict[str, float]:
    """Latency ratios reference / graph, for every graph timed with the reference.

    ``stat`` (default: speedup_stat): with one intra-op thread on the CPU provider, the
    median *CPU time* of each run (ONNX Runtime computes on the calling thread, so the
    process's CPU time is the graph's work, and time the process spends descheduled by
    other jobs is not counted); otherwise the median wall latency. Measured on the 2-core
    VM with three other jobs running, five passes of 30 rounds over the same two graphs
    gave CPU-time ratios of 2.05-2.07x, median wall ratios of 2.01-2.10x, and fastest-run
    wall ratios of 1.17-3.66x. ``stat="median_ms"`` or ``"min_ms"`` asks for wall time."""
    stat = stat or speedup_stat(latency)
    ref = latency[reference][stat]
    return {k: round(ref / v[stat], 4) for k, v in latency.items()
            if not k.startswith("_") and v[stat] > 0}


def pass_speedups(latency: dict, reference: str, stat: str | None = None) -> dict[str, list[float]]:
    """Each pass's own speed-up over ``reference``, per graph, from a timed_passes result (the
    spread behind its medians); {} for a single interleaved_latency result."""
    stat = stat or speedup_stat(latency)
    ref = latency[reference].get(f"{stat}_passes")
    if not ref:
        return {}
    return {k: [round(r / x, 4) for r, x in zip(ref, v[f"{stat}_passes"])]
            for k, v in latency.items() if not k.startswith("_") and k != reference}


def speedup_of(graph: str | Path, dense: str | Path, *, context: int, batch: int, threads: int = 1,
               rounds: int = 30, seed: int = 0) -> float:
    """The speed-up of one graph against the dense graph, timed interleaved in one pass (a
    calibration candidate: tsprune.export.calibrate; another ``seed`` for another pass)."""
    lat = interleaved_latency({"dense": dense, "cand": graph}, context=context, batch=batch, threads=threads,
                              rounds=rounds, seed=seed)
    return speedups(lat, "dense")["cand"]
