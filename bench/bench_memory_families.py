"""Memory and time of each family at its published size on CPU (issue 18, part 3).

For each family, smallest first, a random init of its smallest published checkpoint's
configuration is written by tsprune's save path (``from_config(cfg).save(dir)``, in a child
process) and loaded through ``tsprune.load`` as a user's checkpoint would be, in a second,
fresh child. TTM uses the real checkpoint in ../shared/models when granite-tsfm is installed.
The measuring child reuses bench/bench_memory.py's helpers (``Phases``: per-phase peak RSS by
``/proc/self/clear_refs`` + VmHWM, seconds). Phases:

  load      tsprune.load + touching every parameter (weights that stay memory-mapped count)
  forward   model.forecast of a batch of 8 contexts (512, or the family's maximum when
            smaller), horizon 96 (rolled out where one pass predicts fewer steps); then
            forward_again, the same call once more (without first-call costs)
  fwd_bwd   the family's native loss on the same batch, weights frozen, input requiring
            grad, then backward: the activation term of one scoring step (bench_memory's
            one_batch)

Every family's record in bench/results/memory_families.json is written as soon as it
finishes, with the configuration and where each value came from. Threads: 1 by default
(``--threads N``); the run is meant for ``nice -n 19`` on a shared machine, so its seconds
are upper bounds.

    nice -n 19 python bench/bench_memory_families.py [--only a,b] [--threads 1]
    python bench/bench_memory_families.py --table     # the markdown table of the stored JSON
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import Phases, _status, activation_estimate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "memory_families.json"
TTM_DIR = ROOT.parent / "shared" / "models" / "granite-timeseries-ttm-r2-512-96"
CONTEXT, HORIZON, BATCH = 512, 96, 8
MEMORY_LIMIT = 18 << 30  # skip a backward step whose estimate is above this

_MIXTURE = {"_target_": "uni2ts.distribution.mixture.MixtureOutput", "components": [
    {"_target_": "uni2ts.distribution.student_t.StudentTOutput"},
    {"_target_": "uni2ts.distribution.normal.NormalFixedScaleOutput", "scale": 0.001},
    {"_target_": "uni2ts.distribution.negative_binomial.NegativeBinomialOutput"},
    {"_target_": "uni2ts.distribution.log_normal.LogNormalOutput"}]}
_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]

# name, checkpoint id, config (None: a real checkpoint), where the values come from,
# the optional module it needs. Smallest first.
FAMILIES = [
    {"family": "ttm", "checkpoint": "ibm-granite/granite-timeseries-ttm-r2 (512-96, main)",
     "config": None, "needs": "tsfm_public",
     "install": "pip install --no-deps granite-tsfm==0.3.11",
     "source": "the real checkpoint in ../shared/models/granite-timeseries-ttm-r2-512-96"},
    {"family": "patchtst", "checkpoint": "transformers PatchTSTForPrediction (defaults)",
     "config": {"model_type": "patchtst", "architectures": ["PatchTSTForPrediction"],
                "context_length": CONTEXT, "prediction_length": HORIZON},
     "source": {"*": "transformers PatchTSTConfig defaults (d_model 128, 3 layers, 4 heads, "
                     "ffn 512, patch 1, stride 1, batchnorm)",
                "context_length": "the task (issue 18: context 512)",
                "prediction_length": "the task's horizon 96 (default 24)"}},
    {"family": "moirai", "checkpoint": "Salesforce/moirai-1.0-R-small",
     "config": {"d_model": 384, "num_layers": 6, "patch_sizes": [8, 16, 32, 64, 128],
                "max_seq_len": 512, "attn_dropout_p": 0.0, "dropout_p": 0.0, "scaling": True,
                "distr_output": _MIXTURE},
     "source": {"*": "tests/test_parity_moirai.py FULL (the Moirai paper's small model: 6 layers "
                     "of 384, 6 heads; uni2ts config keys, patch sizes and mixture as its SMALL)",
                "note": "no official config.json is in ../shared/reference (its README)"}},
    {"family": "chronos_bolt", "checkpoint": "amazon/chronos-bolt-small", "needs": "chronos",
     "install": "pip install 'tsprune[chronos]'",
     "config": {"architectures": ["ChronosBoltModelForForecasting"], "model_type": "t5",
                "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
                "num_decoder_layers": 6, "num_heads": 8, "relative_attention_num_buckets": 32,
                "relative_attention_max_distance": 128, "dense_act_fn": "relu",
                "feed_forward_proj": "relu", "is_gated_act": False, "dropout_rate": 0.1,
                "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
                "vocab_size": 2,
                "chronos_config": {"context_length": 2048, "prediction_length": 64,
                                   "input_patch_size": 16, "input_patch_stride": 16,
                                   "quantiles": _QUANTILES, "use_reg_token": True}},
     "source": {"*": "amazon/chronos-bolt-small's config.json as published (a T5-efficient-small: "
                     "6+6 layers of 512, 8 heads of 64, FFN 2048, ReLU; chronos_config context "
                     "2048, 64 steps, patch 16); not checkable offline: the measured parameter "
                     "count (published: 48M) is the check",
                "keys": "tests/test_family_chronos_bolt.py TINY (the key set)"}},
    {"family": "timer_xl", "checkpoint": "thuml/timer-base-84m",
     "config": {"model_type": "timer", "architectures": ["TimerForPrediction"],
                "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": 1024,
                "initializer_range": 0.02, "input_token_len": 96, "intermediate_size": 2048,
                "max_position_embeddings": 10000, "num_attention_heads": 8,
                "num_hidden_layers": 8, "output_token_lens": [96], "rope_theta": 10000,
                "use_cache": True},
     "source": {"*": "tests/test_parity_timer_xl.py FULL (tsprune's TimerConfig = "
                     "configuration_timer.py defaults, with the 84M checkpoint's patch 96 and "
                     "one 96-step head)",
                "note": "no official config.json is in ../shared/reference (its README)"}},
    {"family": "time_moe", "checkpoint": "Maple728/TimeMoE-50M",
     "config": {"model_type": "time_moe", "architectures": ["TimeMoeForPrediction"],
                "apply_aux_loss": True, "attention_dropout": 0.0, "hidden_act": "silu",
                "hidden_size": 384, "horizon_lengths": [1, 8, 32, 64], "initializer_range": 0.02,
                "input_size": 1, "intermediate_size": 1536, "max_position_embeddings": 4096,
                "num_attention_heads": 12, "num_experts": 8, "num_experts_per_tok": 2,
                "num_hidden_layers": 12, "num_key_value_heads": 12, "rms_norm_eps": 1e-06,
                "rope_theta": 10000, "router_aux_loss_factor": 0.02,
                "tie_word_embeddings": False, "use_cache": True, "use_dense": False},
     "source": {"*": "tests/test_parity_time_moe.py FULL (12 layers of 384, 12 heads, 8 experts "
                     "top-2, heads 1/8/32/64; 113M parameters, 50M active)",
                "note": "no official config.json is in ../shared/reference (its README)"}},
    {"family": "timesfm2_5", "checkpoint": "google/timesfm-2.5-200m-pytorch",
     "config": {"model_type": "timesfm2_5", "architectures": ["TimesFm2_5ModelForPrediction"]},
     "source": {"*": "transformers TimesFm2_5Config defaults, as bench/bench_memory.py (hidden "
                     "1280, 20 layers, 16 heads of 80, intermediate 1280, patch 32, horizon 128, "
                     "output_quantile_len 1024, flip invariance on)"}},
    {"family": "timesfm2", "checkpoint": "google/timesfm-2.0-500m-pytorch",
     "config": {"model_type": "timesfm", "architectures": ["TimesFmModelForPrediction"]},
     "source": {"*": "transformers TimesFmConfig defaults (checked in the venv: 50 layers, "
                     "hidden 1280, 16 heads of 80, intermediate 1280, patch 32, horizon 128, "
                     "context_length 512, 9 quantiles); the published checkpoint's own "
                     "context_length is 2048, which changes no weight"}},
]


# ---- child: build, then measure ---------------------------------------------------------
def _entry(name: str) -> dict:
    return next(f for f in FAMILIES if f["family"] == name)


def build(name: str, d: str) -> None:
    """A random init at the published size, written by tsprune's save path."""
    import torch

    from tsprune.model import from_config
    torch.manual_seed(0)
    from_config(dict(_entry(name)["config"])).save(d)


def child(model_dir: str, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    ph = Phases()

    def imports():  # the runtime and the upstream classes, so that "load" is the weights
        import transformers

        from tsprune.families import detect
        from tsprune.model import read_config
        fam = detect(read_config(Path(model_dir)))
        for arch in read_config(Path(model_dir)).get("architectures") or []:
            getattr(transformers, arch, None)  # transformers imports its modeling file lazily
        for mod in {"chronos_bolt": ["chronos"], "ttm": ["tsfm_public"]}.get(fam.name, []):
            importlib.import_module(mod)
    ph.run("import", imports)
    base = _status()["VmRSS"]
    from tsprune.model import load

    def load_and_touch():
        m = load(model_dir)
        for p in m.module.parameters():  # page in weights the loader left memory-mapped
            p.detach().sum()
        return m
    model = ph.run("load", load_and_touch)
    fam, mod = model.family, model.module
    max_ctx = fam.max_context(mod)
    ctx = min(CONTEXT, max_ctx) if max_ctx else CONTEXT
    out_h = fam.output_horizon(mod)
    loss_h = min(HORIZON, out_h) if out_h else HORIZON
    g = torch.Generator().manual_seed(0)
    t = torch.arange(ctx + HORIZON, dtype=torch.float32)
    series = torch.sin(t / 24 * 6.2832)[None] + 0.1 * torch.randn(BATCH, ctx + HORIZON, generator=g)
    context, target = series[:, :ctx].contiguous(), series[:, ctx:ctx + loss_h].contiguous()

    fc = ph.run("forward", lambda: model.forecast(context, HORIZON))
    assert fc.point.shape == (BATCH, HORIZON) and torch.isfinite(fc.point).all()
    ph.run("forward_again", lambda: model.forecast(context, HORIZON))  # without first-call costs

    def fwd_bwd():  # bench_memory's one_batch: weights frozen, autograd through the input
        for p in mod.parameters():
            p.requires_grad_(False)
        mod.eval()
        c = context.clone().requires_grad_(True)
        loss = fam.loss(mod, c, target)
        loss.backward()
        return float(loss)
    loss = ph.run("fwd_bwd", fwd_bwd)
    return {"params": sum(p.numel() for p in mod.parameters()),
            "weights_bytes": sum(p.numel() * p.element_size() for p in mod.parameters()),
            "buffers_bytes": sum(b.numel() * b.element_size() for b in mod.buffers()),
            "checkpoint_bytes": sum(f.stat().st_size for f in Path(model_dir).iterdir() if f.is_file()),
            "rss_after_import": base, "phases": ph.rows, "peak_resettable": ph.resettable,
            "context": ctx, "horizon": HORIZON, "batch": BATCH, "loss_horizon": loss_h,
            "output_horizon": out_h, "loss": loss, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "loadavg": list(os.getloadavg())}


# ---- parent ---------------------------------------------------------------------------------
def skip_reason(entry: dict) -> str | None:
    need = entry.get("needs")
    if need and importlib.util.find_spec(need) is None:
        return f"{need} is not installed in this environment ({entry['install']})"
    if entry["family"] == "ttm" and not (TTM_DIR / "config.json").exists():
        return f"the TTM r2 checkpoint is not at {TTM_DIR}"
    return None


def memory_estimate(entry: dict) -> int | None:
    """timesfm2 only: 2 x fp32 weights (counted on the meta device) + one batch of
    activations (bench_memory.activation_estimate, written for TimesFM 2.5's decoder, whose
    layout TimesFM 2.0 shares)."""
    if entry["family"] != "timesfm2":
        return None
    import torch
    from transformers import TimesFmConfig, TimesFmModelForPrediction
    cfg = TimesFmConfig()
    with torch.device("meta"):
        n = sum(p.numel() for p in TimesFmModelForPrediction(cfg).parameters())
    return 2 * 4 * n + activation_estimate(cfg, BATCH, CONTEXT)


def measure(entry: dict, threads: int) -> dict:
    rec = {"family": entry["family"], "checkpoint": entry["checkpoint"], "config": entry["config"],
           "config_source": entry["source"]}
    why = skip_reason(entry)
    if why:
        return {**rec, "skipped": why}
    est = memory_estimate(entry)
    if est is not None:
        rec["memory_estimate_bytes"] = est
        if est > MEMORY_LIMIT:
            return {**rec, "skipped": f"estimated {est / 2**30:.1f} GiB > {MEMORY_LIMIT / 2**30:.0f} GiB"}
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory(prefix="tsprune-memfam-") as tmp:
        if entry["config"] is None:
            d = str(TTM_DIR)
        else:
            d = str(Path(tmp) / entry["family"])
            subprocess.run(me + ["--build", entry["family"], d], check=True)
        r = subprocess.run(me + ["--child", d, "--threads", str(threads)], capture_output=True, text=True)
    if r.returncode:
        return {**rec, "failed": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}"}
    return {**rec, **json.loads(r.stdout.strip().splitlines()[-1])}


def _mb(b: int) -> str:
    return f"{b / 2**20:,.0f} MB"


def markdown_table(results: dict) -> str:
    """One row per family: params, fp32 weights, load s and peak, forward and forward +
    backward (batch 8) s and peak RSS; skipped families say why."""
    lines = ["| family | checkpoint | params | fp32 weights | RSS after imports | load s (peak RSS) | context | "
             "forward b8 s, first / again (peak RSS) | fwd+bwd b8 s (peak RSS) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in FAMILIES:
        r = results.get(f["family"])
        if r is None:
            continue
        if "phases" not in r:
            lines.append(f"| {r['family']} | {r['checkpoint']} | - | - | "
                         f"{'skipped' if 'skipped' in r else 'failed'}: "
                         f"{r.get('skipped') or r.get('failed')} | | | | |")
            continue
        ph = {p["phase"]: p for p in r["phases"]}
        cell = lambda k: f"{ph[k]['seconds']:.2f} ({_mb(ph[k]['peak'])})"  # noqa: E731
        fwd = (f"{ph['forward']['seconds']:.2f} / {ph['forward_again']['seconds']:.2f} "
               f"({_mb(max(ph['forward']['peak'], ph['forward_again']['peak']))})")
        lines.append(f"| {r['family']} | {r['checkpoint']} | {r['params'] / 1e6:.2f}M | "
                     f"{_mb(r['weights_bytes'])} | {_mb(r['rss_after_import'])} | {cell('load')} | "
                     f"{r['context']} | {fwd} | {cell('fwd_bwd')} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated families (default: all, smallest first)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="print the stored JSON's table and exit")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    results = json.loads(a.out.read_text()) if a.out.exists() else {}
    if a.table:
        print(markdown_table(results))
        return
    names = [f["family"] for f in FAMILIES]
    only = a.only.split(",") if a.only else names
    bad = [n for n in only if n not in names]
    if bad:
        sys.exit(f"--only: unknown families {bad}; allowed: {names}")
    for name in [n for n in names if n in only]:
        print(f"{name} ...", file=sys.stderr, flush=True)
        results[name] = measure(_entry(name), a.threads)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1) + "\n")  # after each family
        print(markdown_table({name: results[name]}).splitlines()[-1], file=sys.stderr, flush=True)
    print(markdown_table(results))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--build":
        build(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[4]))))
    else:
        main(sys.argv[1:])
