"""ONNX Runtime latency of dense vs pruned TimesFM 2.5 graphs: fp32, fp16 and int8, at
batch 1 and at a serving batch of 64 series, with each graph's FLOPs beside its speedup.

    pytest bench/bench_latency.py                 # ~4 min on 2 busy CPU cores

Models. Dense: the bundled ``nano`` checkpoint when it is installed, else a randomly
initialised model of the same config (latency and FLOPs do not depend on the weights).
Pruned: a fixed uneven plan that keeps 5 of 16 attention heads and 1,024 of 4,096 FFN
neurons (heads 2/1/1/1, FFN 320/256/192/256 per layer), what an aggressive tsprune run
leaves. Real runs instead: TSPRUNE_BENCH_DENSE=DIR and TSPRUNE_BENCH_PRUNED=DIR (e.g.
the ``model/`` of a ``tsprune prune --compare-finetune`` output).

Graphs: ``tsprune.export.variants`` (optimized adapter graph, opset 23, dynamic context),
context 512, horizon 96. Accuracy deltas (sidecars) on ETTh1 test windows (OT channel)
when ../shared/data is there, else synthetic windows. TSPRUNE_BENCH_REFERENCE=1 adds the
dense fp32 graph of the family's reference code (the export before the adapter: slow to
trace). Threads: TSPRUNE_BENCH_THREADS (default 1: one intra-op thread is steadier on a
shared machine; the ratios are what to read).

Timing: every round runs each graph once, in a rotating order (interleaved, so that load
changes hit all graphs alike); a row reports the median and minimum over rounds. FLOPs
are the MatMul/Gemm/Attention FLOPs of the graph (tsprune.export.flops) per series.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")

CONTEXT, HORIZON = 512, 96
BATCHES = (1, 64)
ROUNDS = {1: 40, 64: 12}
THREADS = int(os.environ.get("TSPRUNE_BENCH_THREADS", "1"))
ETTH1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ETTh1.csv.gz"
HEADS = (2, 1, 1, 1)             # heads kept per layer (of 4)
FFN = (320, 256, 192, 256)       # FFN neurons kept per layer (of 1024)


@dataclass
class Graph:
    model: str          # dense | pruned
    variant: str        # fp32 | fp16 | int8 | reference
    path: Path
    info: dict
    times: dict = field(default_factory=dict)   # batch -> [seconds]

    @property
    def name(self) -> str:
        return f"{self.model} {self.variant}"

    @property
    def flops(self) -> int:
        return int(self.info["flops"]["per_series"])


def _dense():
    from tsprune.model import bundled_path, from_config, load
    if os.environ.get("TSPRUNE_BENCH_DENSE"):
        return load(os.environ["TSPRUNE_BENCH_DENSE"]), "TSPRUNE_BENCH_DENSE"
    if bundled_path("nano") is not None:
        return load("nano"), "bundled nano"
    from tsprune.pretrain.config import PretrainConfig
    torch.manual_seed(0)
    cfg = {"model_type": "timesfm2_5", **PretrainConfig().model_overrides()}
    return from_config(cfg), "random init, nano config (bundled nano not installed)"


def _pruned(dense):
    """A fixed uneven plan: heads and FFN neurons per layer as HEADS / FFN."""
    from tsprune.model import load
    from tsprune.prune import Plan, apply
    from tsprune.prune.masks import MaskSet
    if os.environ.get("TSPRUNE_BENCH_PRUNED"):
        return load(os.environ["TSPRUNE_BENCH_PRUNED"]), "TSPRUNE_BENCH_PRUNED"
    s = dense.family.structure(dense.module)
    ms = MaskSet(dense.module, s.linears())
    for b, keep_h, keep_f in zip(s.blocks, HEADS, FFN):
        a, f = b.attention[0], b.ffn[0]
        ms.m_out[a.v][keep_h * a.v_head_dim:] = 0
        ms.m_out[f.inputs[0]][keep_f:] = 0
    n = dense.num_params()
    plan = Plan(dense.family.name, ms.to_json(), n, n)
    return apply(dense, plan), f"fixed plan: heads {HEADS}, FFN {FFN} per layer"


def _windows():
    from tsprune.export.variants import Windows
    if not ETTH1.exists():
        return Windows.synthetic(256, CONTEXT, HORIZON)
    from tsprune.data import DataConfig, prepare
    data = prepare(DataConfig(path=ETTH1, target=("OT",), context=CONTEXT, horizon=HORIZON))
    return Windows.from_dataset(data.windows("test"), 256, source="ETTh1.csv.gz (OT)")


@pytest.fixture(scope="session")
def graphs(tmp_path_factory):
    from tsprune.export.variants import VariantConfig, export_variant
    out = tmp_path_factory.mktemp("latency")
    dense, dense_src = _dense()
    pruned, pruned_src = _pruned(dense)
    windows = _windows()
    result = []
    t0 = time.time()
    for label, model in (("dense", dense), ("pruned", pruned)):
        kw = dict(context=CONTEXT, horizon=HORIZON, windows=windows)
        fp32 = out / f"{label}_fp32.onnx"
        result.append(Graph(label, "fp32", fp32, export_variant(model, fp32, VariantConfig(opset=23), **kw)))
        p = out / f"{label}_int8.onnx"
        result.append(Graph(label, "int8", p, export_variant(model, p, VariantConfig(opset=23, quantize="int8"),
                                                             base=fp32, **kw)))
        p = out / f"{label}_fp16.onnx"
        result.append(Graph(label, "fp16", p, export_variant(model, p, VariantConfig(opset=23, precision="fp16"),
                                                             **kw)))
    if os.environ.get("TSPRUNE_BENCH_REFERENCE"):
        p = out / "dense_reference.onnx"
        cfg = VariantConfig(opset=18, graph="reference", dynamic_context=False)
        result.append(Graph("dense", "reference", p, export_variant(dense, p, cfg, context=CONTEXT,
                                                                    horizon=HORIZON, windows=windows)))
    _NOTES.update(dense=f"{dense_src}, {dense.num_params():,} params",
                  pruned=f"{pruned_src}, {pruned.num_params():,} params",
                  windows=windows.source, export_s=round(time.time() - t0, 1), threads=THREADS)
    return result


_NOTES: dict = {}
_GRAPHS: list[Graph] = []


def _session(path):
    from tsprune.export.runtime import make_session
    return make_session(path, device="cpu", threads=THREADS)


@pytest.mark.parametrize("batch", BATCHES)
def test_latency(batch, graphs, benchmark, bench_report):
    rng = np.random.default_rng(batch)
    x = (rng.standard_normal((batch, CONTEXT)).cumsum(1) * 0.1 + 3).astype(np.float32)
    sessions = [_session(g.path) for g in graphs]
    for s in sessions:                         # warm-up: allocations, first-run kernels
        s.run(None, {"context": x})
    times = [[] for _ in graphs]
    state = {"round": 0}

    def one_round():
        k = state["round"]
        state["round"] += 1
        order = list(range(len(graphs)))
        order = order[k % len(order):] + order[:k % len(order)]   # rotate the start
        for i in order:
            t = time.perf_counter()
            sessions[i].run(None, {"context": x})
            times[i].append(time.perf_counter() - t)

    benchmark.group = f"ORT latency batch {batch}"
    benchmark.pedantic(one_round, rounds=ROUNDS[batch], iterations=1, warmup_rounds=0)
    for g, t in zip(graphs, times):
        g.times[batch] = t
        bench_report.add(f"ORT CPU latency, batch {batch}, {THREADS} thread(s), interleaved "
                         f"(ratio: vs dense fp32)", g.name, statistics.median(t), work=batch,
                         unit="series", baseline=(g.model, g.variant) == ("dense", "fp32"), min_seconds=min(t))
    for g in graphs:
        if g not in _GRAPHS:
            _GRAPHS.append(g)
    assert all(np.isfinite(g.info["accuracy"]["mse_onnx"]) for g in graphs)


@pytest.fixture(scope="session", autouse=True)
def _speedup_table(request):
    """Print, after bench/conftest.py's table: pruned vs dense per precision and batch,
    beside the FLOPs ratio, sizes and accuracy."""
    plugin = _SpeedupTable()
    request.config.pluginmanager.register(plugin, "tsprune_latency_table")
    yield


class _SpeedupTable:
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        for line in speedup_lines():
            terminalreporter.write_line(line)


def speedup_lines() -> list[str]:
    if not _GRAPHS:
        return []
    by = {(g.model, g.variant): g for g in _GRAPHS}
    out = ["", "dense vs pruned, ONNX Runtime CPU (bench/bench_latency.py)"]
    out += [f"  {k}: {v}" for k, v in _NOTES.items()]
    head = "".join(f"  {'b' + str(b) + ' speedup med / min':>24}" for b in BATCHES)
    out.append(f"  {'graph':<16} {'MB':>6} {'MFLOP/series':>12} {'FLOPs ratio':>11}{head}"
               f"  {'MSE torch -> onnx':>19}")
    for variant in ("fp32", "fp16", "int8", "reference"):
        for model in ("dense", "pruned"):
            g = by.get((model, variant))
            if g is None:
                continue
            d = by[("dense", "fp32" if variant == "reference" else variant)]
            cells = ""
            for b in BATCHES:
                if b in g.times and b in d.times:
                    med = statistics.median(d.times[b]) / statistics.median(g.times[b])
                    cells += f"  {med:>14.2f}x / {min(d.times[b]) / min(g.times[b]):.2f}x"
                else:
                    cells += f"  {'':>24}"
            acc = g.info["accuracy"]
            out.append(f"  {model + ' ' + variant:<16} {g.info['bytes'] / 1e6:>6.2f} {g.flops / 1e6:>12.2f} "
                       f"{d.flops / g.flops:>10.2f}x{cells}  {acc['mse_torch']:>8.4f} -> {acc['mse_onnx']:.4f}")
    out.append("  FLOPs ratio and speedup: dense (same precision) / row. The issue's target: pruned >= 3x "
               "faster than dense at equal batch, within 1.3x of its FLOPs ratio, MSE no worse than the "
               "dense fine-tuned model (needs real checkpoints: TSPRUNE_BENCH_DENSE / _PRUNED).")
    return out
