"""Peak memory and scoring throughput of pruning a full-size TimesFM 2.5 on CPU.

The model is a random init of the published TimesFM 2.5 200M configuration (transformers'
TimesFm2_5Config defaults: hidden 1280, 20 layers, 16 heads of 80, intermediate 1280,
patch 32, horizon 128, output_quantile_len 1024), written with save_pretrained and loaded
through tsprune.load, as a user's checkpoint would be. Data: a slice of ETTh1 (or
synthetic windows when it is absent), context 512, horizon 96, batch 8.

The measurement runs in a child process (a fresh interpreter, nothing else resident).
Per phase it resets the peak RSS (``echo 5 > /proc/self/clear_refs``) and reads
/proc/self/status VmHWM afterwards, so each phase has its own peak; the run's peak is the
largest of them (the reset also resets ru_maxrss, which is used only where clear_refs is
unavailable). Phases: import, load, data, one_batch (a plain forward + backward of
one batch, the activation term), score (a few macro-batch steps, one epoch, validation),
apply (surgery on a copy).

Target: peak RSS - RSS after imports <= 2 x fp32 weights + one batch of activations,
where one batch of activations is measured (phase one_batch: its peak over its start) and
estimated analytically (see ``activation_estimate``).

    python bench/bench_memory.py [--json]           # prints the table (and the raw JSON)
    pytest bench/bench_memory.py -m memory -s       # the same, with the target asserted
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

CONTEXT, HORIZON, BATCH = 512, 96, 8
CALIB, VAL, MIN_STEPS = 48, 16, 3  # windows: 3 macro-batch steps of 16 (2 backward passes each)
# TSPRUNE_BENCH_TRIM=1: after each phase call malloc_trim and record the RSS, to tell live
# memory from free heap that glibc keeps (a diagnosis; it lowers the next phase's start)
TRIM = os.environ.get("TSPRUNE_BENCH_TRIM") == "1"


# ---- child: the measurement -------------------------------------------------------------
def _status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out


def _trim() -> int:
    """RSS after glibc returns its free heap pages (malloc_trim): what is live, without the
    allocator's retained free memory."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _status()["VmRSS"]


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class Phases:
    def __init__(self):
        self.rows: list[dict] = []
        self.resettable = _reset_peak()

    def run(self, name: str, fn):
        before = _status()["VmRSS"]
        _reset_peak()
        t = time.perf_counter()
        result = fn()
        s = _status()
        self.rows.append({"phase": name, "rss_before": before, "peak": s["VmHWM"], "rss_after": s["VmRSS"],
                          "anon_after": s["RssAnon"], "file_after": s["RssFile"],
                          "rss_trimmed": _trim() if TRIM else None,
                          "seconds": round(time.perf_counter() - t, 2)})
        return result


def activation_estimate(cfg, batch: int, context: int) -> int:
    """Bytes autograd keeps for one forward of `batch` windows (fp32), by counting the
    tensors each layer saves for backward: tokens N = batch * context / patch; per decoder
    layer ~ 2 RMSNorm inputs + q, k, v (after RoPE and norms) + attention output + fc1 input
    + fc1 output + activation output (~10 N x D, intermediate = D here) + attention
    probabilities (batch x heads x T x T); plus the input residual block (N x 2 x patch ->
    N x D) and the output block (N x D -> N x horizon x (1 + quantiles)), ~4 N x D +
    N x horizon x 10. With force_flip_invariance the model also runs on -x: twice the
    windows."""
    t = context // cfg.patch_length
    n = batch * t * (2 if getattr(cfg, "force_flip_invariance", False) else 1)
    d, f = cfg.hidden_size, cfg.intermediate_size
    per_layer = (8 * n * d + 2 * n * f + n // t * cfg.num_attention_heads * t * t) * 4
    head = (4 * n * d + n * cfg.horizon_length * (1 + len(cfg.quantiles))) * 4
    return cfg.num_hidden_layers * per_layer + head


def child(model_dir: str) -> dict:
    import torch
    torch.set_num_threads(int(os.environ.get("TSPRUNE_BENCH_THREADS", "2")))
    ph = Phases()

    def imports():  # the runtime, model classes included, so that "load" is the weights
        from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction  # noqa: F401

        import tsprune  # noqa: F401
        import tsprune.families.timesfm2_5  # noqa: F401
        from tsprune.prune import apply, score  # noqa: F401
    ph.run("import", imports)
    base = _status()["VmRSS"]

    from tsprune.data import DataConfig, ett_path, prepare
    from tsprune.model import load
    from tsprune.prune import PruneConfig, apply, score

    def load_and_touch():
        m = load(model_dir)
        for p in m.module.parameters():  # page in weights that the loader left memory-mapped
            p.detach().sum()
        return m
    model = ph.run("load", load_and_touch)
    cfg = model.module.config
    weights = sum(p.numel() * p.element_size() for p in model.module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.module.buffers())

    def data():
        path = ett_path("ETTh1")
        if path is not None:
            d = prepare(DataConfig(path, context=CONTEXT, horizon=HORIZON, split="ett"))
            return "ETTh1", d.windows("train"), d.windows("val")
        import numpy as np
        import pandas as pd
        from tsprune.data import prepare_frame
        t = np.arange(20000)
        df = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=len(t), freq="h"),
                           "x": np.sin(t / 24 * 2 * math.pi) + 0.1 * np.random.default_rng(0).standard_normal(len(t))})
        d = prepare_frame(df, DataConfig(None, context=CONTEXT, horizon=HORIZON, split="0.7,0.1,0.2"))
        return "synthetic", d.windows("train"), d.windows("val")
    source, train, val = ph.run("data", data)

    def one_batch():  # the activation term: plain autograd through one batch, weights frozen
        c, t = train.gather(torch.arange(BATCH))
        for p in model.module.parameters():
            p.requires_grad_(False)
        c = c.clone().requires_grad_(True)
        loss = model.family.loss(model.module, c, t)
        loss.backward()
        return float(loss)
    ph.run("one_batch", one_batch)

    steps: list[dict] = []
    pcfg = PruneConfig(batch_size=BATCH, calib_samples=CALIB, val_samples=VAL, max_epochs=1, seed=0,
                       min_steps=MIN_STEPS)
    plan = ph.run("score", lambda: score(model, train, val, pcfg, show_progress=False,
                                         log=lambda r: steps.append(r) if "step" in r else None))
    pruned = ph.run("apply", lambda: apply(model, plan))
    step_s = [b["time_s"] - a["time_s"] for a, b in zip([{"time_s": 0.0}] + steps[:-1], steps)]
    macro = math.ceil(CALIB / len(steps)) if steps else 0
    steady = step_s[1:] or step_s
    return {
        "source": source, "params": sum(p.numel() for p in model.module.parameters()),
        "params_pruned": pruned.num_params(), "weights_bytes": weights, "buffers_bytes": buffers,
        "rss_after_import": base, "phases": ph.rows, "peak_resettable": ph.resettable,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "activation_estimate": activation_estimate(cfg, BATCH, CONTEXT),
        "steps": len(steps), "windows_per_step": macro, "step_seconds": step_s,
        "windows_per_s_all": round(CALIB / sum(step_s), 3) if step_s else None,
        "windows_per_s_steady": round(macro * len(steady) / sum(steady), 3) if steady else None,
        "threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "context": CONTEXT, "horizon": HORIZON, "batch": BATCH,
        "calib_samples": CALIB, "val_samples": VAL,
    }


# ---- parent: build the checkpoint, run the child, judge ---------------------------------
def build_checkpoint(d: Path) -> None:
    """save_pretrained of a random TimesFM 2.5 with the published (default) config."""
    import torch
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction
    torch.manual_seed(0)
    TimesFm2_5ModelForPrediction(TimesFm2_5Config()).save_pretrained(d)


def measure() -> dict:
    with tempfile.TemporaryDirectory(prefix="tsprune-mem-") as tmp:
        d = Path(tmp) / "timesfm2_5"
        # the checkpoint is written by another child so the measured one starts clean
        subprocess.run([sys.executable, __file__, "--build", str(d)], check=True)
        r = subprocess.run([sys.executable, __file__, "--child", str(d)], check=True,
                           capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def judge(res: dict) -> dict:
    mb = 1 << 20
    w = res["weights_bytes"]
    ob = next(p for p in res["phases"] if p["phase"] == "one_batch")
    act_measured = ob["peak"] - ob["rss_before"]
    act = max(act_measured, res["activation_estimate"])
    # clear_refs resets ru_maxrss too: the run's peak is the largest phase peak
    peak = max([p["peak"] for p in res["phases"]] + [0 if res["peak_resettable"] else res["ru_maxrss"]])
    budget = 2 * w + act
    return {"weights_mb": w / mb, "act_measured_mb": act_measured / mb,
            "act_estimate_mb": res["activation_estimate"] / mb, "peak_mb": peak / mb,
            "peak_over_import_mb": (peak - res["rss_after_import"]) / mb, "budget_mb": budget / mb,
            "ok": peak - res["rss_after_import"] <= budget}


def table(res: dict) -> str:
    mb = 1 << 20
    j = judge(res)
    lines = [f"TimesFM 2.5 random init, {res['params']:,} parameters ({j['weights_mb']:.0f} MB fp32), "
             f"data {res['source']}, context {res['context']}, horizon {res['horizon']}, batch {res['batch']}, "
             f"{res['threads']} threads, load average {res['loadavg'][0]:.1f}, "
             f"GLIBC_TUNABLES={res['glibc_tunables']}",
             "MB per phase: RSS before, peak (VmHWM), peak - before, RSS after (anon + file-backed), "
             "RSS after malloc_trim (with TSPRUNE_BENCH_TRIM=1)",
             f"{'phase':<10} {'before':>7} {'peak':>7} {'delta':>7} {'after':>7} {'anon':>7} {'file':>7} "
             f"{'trimmed':>8} {'seconds':>8}"]
    for p in res["phases"]:
        lines.append(f"{p['phase']:<10} {p['rss_before'] / mb:>7.0f} {p['peak'] / mb:>7.0f} "
                     f"{(p['peak'] - p['rss_before']) / mb:>7.0f} {p['rss_after'] / mb:>7.0f} "
                     f"{p['anon_after'] / mb:>7.0f} {p['file_after'] / mb:>7.0f} "
                     f"{'-' if p['rss_trimmed'] is None else round(p['rss_trimmed'] / mb):>8} "
                     f"{p['seconds']:>8.1f}")
    lines += [
        f"whole run peak (max of the phase peaks) {j['peak_mb']:.0f} MB; RSS after imports "
        f"{res['rss_after_import'] / mb:.0f} MB; peak over imports {j['peak_over_import_mb']:.0f} MB",
        f"one batch of activations: measured {j['act_measured_mb']:.0f} MB, estimated "
        f"{j['act_estimate_mb']:.0f} MB",
        f"target: peak over imports <= 2 x weights + activations = {j['budget_mb']:.0f} MB -> "
        f"{'met' if j['ok'] else 'MISSED'} ({j['peak_over_import_mb'] / j['weights_mb']:.2f} x weights)",
        f"scoring: {res['steps']} steps of {res['windows_per_step']} windows, "
        f"{res['windows_per_s_all']} windows/s over all steps, {res['windows_per_s_steady']} "
        f"windows/s after the first; step seconds {res['step_seconds']}",
        f"pruned to {res['params_pruned']:,} parameters",
    ]
    return "\n".join(lines)


@pytest.mark.memory
def test_prune_full_size_timesfm25_memory():
    res = measure()
    print("\n" + table(res))
    j = judge(res)
    assert res["peak_resettable"], "per-phase peaks need /proc/self/clear_refs"
    assert j["ok"], table(res)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--build":
        build_checkpoint(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
    elif any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
    elif [a for a in sys.argv[1:] if a != "--json"]:
        sys.exit(f"bench_memory.py: unknown argument(s) {[a for a in sys.argv[1:] if a != '--json']}; "
                 f"allowed: --json, --help")
    else:
        res = measure()
        print(table(res))
        if "--json" in sys.argv:
            print(json.dumps(res, indent=1))
