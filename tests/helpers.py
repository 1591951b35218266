"""Shared test helpers: tiny models of each family and synthetic data, all offline."""
from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tsprune.prune.masks import HIDDEN, MaskSet, attach

TINY_TIMESFM25 = dict(
    model_type="timesfm2_5", patch_length=32, context_length=512, horizon_length=128,
    num_hidden_layers=2, hidden_size=64, intermediate_size=96, head_dim=16,
    num_attention_heads=4, num_key_value_heads=4, output_quantile_len=32,
    use_continuous_quantile_head=False, force_flip_invariance=False, infer_is_positive=False,
)


def synthetic_frame(n: int = 3000, channels: int = 2, freq: str = "h", seed: int = 0) -> pd.DataFrame:
    """Seasonal series with trend and noise, a date column, `channels` numeric columns."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cols = {}
    for c in range(channels):
        cols[f"x{c}"] = (np.sin(2 * math.pi * t / 24 + c) + 0.3 * np.sin(2 * math.pi * t / 168)
                         + 0.001 * t * (c + 1) + 0.2 * rng.standard_normal(n))
    df = pd.DataFrame(cols)
    df.insert(0, "date", pd.date_range("2020-01-01", periods=n, freq=freq))
    return df


def context_batch(b: int = 4, length: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    return (torch.randn(b, length, generator=g).cumsum(1) * 0.1
            + torch.sin(2 * math.pi * t / 24)[None] + torch.randn(b, 1, generator=g))


def random_masks(model, structure, frac: float = 0.3, seed: int = 0) -> MaskSet:
    """Zero a random fraction of every mask (in and out) of the structure's Linears."""
    g = torch.Generator().manual_seed(seed)
    ms = MaskSet(model, structure.linears())
    for _, _, m in ms.units():
        m[torch.rand(m.numel(), generator=g) < frac] = 0.0
    return ms


def masked_forecast(tsmodel, masks: MaskSet, context, horizon):
    with torch.no_grad(), attach(tsmodel.module, masks, "apply"):
        return tsmodel.family.forecast(tsmodel.module.eval(), context, horizon)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one torch thread avoids oversubscription on a shared CPU (restored
    after the module). Autouse in every test module that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def two_series_windows(n: int, context: int, horizon: int, stride: int, seed: int = 0,
                       periods: tuple[int, int] = (5, 7), trend: float = 0.0):
    """WindowDataset over sin(t / periods[0]) and cos(t / periods[1]) + trend * t / n, each
    with N(0, 0.1^2) noise, ``n`` steps; the first target at ``context``."""
    from tsprune.data.windows import WindowDataset
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    s = torch.stack([torch.sin(t / periods[0]) + 0.1 * torch.randn(n, generator=g),
                     torch.cos(t / periods[1]) + trend * t / n + 0.1 * torch.randn(n, generator=g)])
    return WindowDataset(s, context, n, context, horizon, stride=stride)


def sine_windows(rows: int, seed: int, horizon: int, stride: int, context: int = 128):
    """WindowDataset over two noisy period-24 sines of ``rows`` steps, the first target at
    ``context``."""
    from tsprune.data.windows import WindowDataset
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(rows, dtype=torch.float32)
    series = torch.stack([torch.sin(2 * torch.pi * t / 24) + 0.1 * torch.randn(rows, generator=g)
                          for _ in range(2)])
    return WindowDataset(series, first_target=context, end=rows, context=context, horizon=horizon,
                         stride=stride)


# ---- a tiny TimesFM 2.5 and a task for it ----------------------------------------------
def tiny_timesfm25(cfg: dict = TINY_TIMESFM25):
    """transformers' TimesFm2_5ModelForPrediction of ``cfg`` (a config.json dict), seeded."""
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction
    torch.manual_seed(0)
    c = {k: v for k, v in cfg.items() if k != "model_type"}
    return TimesFm2_5ModelForPrediction(TimesFm2_5Config(**c)).eval()


def save_tiny_timesfm25(path: Path) -> Path:
    """tiny_timesfm25() saved with save_pretrained at ``path`` (a model directory)."""
    tiny_timesfm25().save_pretrained(path)
    return path


def tiny_task(rows: int, train: int, val: int = 64):
    """(model, train, val): a seeded tiny TimesFM 2.5 TSModel and seeded subsets of the
    train and val windows (context 128, horizon 24) of a one-channel synthetic series."""
    from tsprune.data import DataConfig, prepare_frame
    from tsprune.model import from_config
    torch.manual_seed(0)
    m = from_config(TINY_TIMESFM25)
    data = prepare_frame(synthetic_frame(n=rows, channels=1),
                         DataConfig(None, split="0.7,0.1,0.2", context=128, horizon=24))
    return m, data.windows("train").subset(train), data.windows("val").subset(val)


def copy_model(src: Path, dst: Path) -> Path:
    """Copy the files of model directory ``src`` into a new directory ``dst``."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


# ---- the command line, in process --------------------------------------------------------
def cli(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `tsprune ARGS`, in this process."""
    from tsprune.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def one_line_error(res, *needles) -> str:
    """Assert exit 2 and a single stderr line containing every needle; return the line."""
    rc, _, err = res
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("tsprune: error: "), lines[0]
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


# ---- checks every family adapter passes ------------------------------------------------
def plan_forecast(m, plan, x, horizon):
    """The forecast of ``m`` under the plan's masks (its extra units, e.g. removed experts or
    a patch size, applied to a copy first): what apply(m, plan) must reproduce."""
    if plan.extra:
        m = m.clone()
        m.family.apply_extra(m.module, plan.extra)
    hidden = m.family.hidden_width(m.module) if HIDDEN in plan.masks else None
    return masked_forecast(m, MaskSet.from_json(m.module, plan.masks, hidden), x, horizon)


def reloads_and_replays(m, plan, p, x, horizon: int, tmp_path: Path, field: str = "point"):
    """p = apply(m, plan), saved and loaded back, is pruned, describes itself the same and
    forecasts (``field``) identically; the plan saved as JSON replays on a fresh copy of m
    to the same forecast. Returns the reloaded model."""
    from tsprune.model import load
    from tsprune.prune import Plan, apply
    want = getattr(p.forecast(x, horizon), field)
    p.save(tmp_path / "pruned")
    q = load(tmp_path / "pruned")
    assert q.pruned and q.describe() == p.describe()
    assert torch.equal(getattr(q.forecast(x, horizon), field), want)
    plan.save(tmp_path / "plan.json")
    again = apply(copy.deepcopy(m), Plan.load(tmp_path / "plan.json"))
    assert torch.equal(getattr(again.forecast(x, horizon), field), want)
    return q


def scorers_agree(m, train, val, **cfg):
    """Score m with the fused and the reference scorer, PruneConfig(**cfg): the same masks
    and extra units, and the first epoch zeroed something. Returns the fused plan."""
    from tsprune.prune import PruneConfig, score
    fused = score(m, train, val, PruneConfig(**cfg, scorer="fused"), show_progress=False)
    ref = score(m, train, val, PruneConfig(**cfg, scorer="reference"), show_progress=False)
    assert fused.masks == ref.masks and fused.extra == ref.extra
    assert next(h for h in fused.history if "step" in h)["zeroed"] > 0
    return fused


def exports_to_onnx(model, path: Path, context: int, horizon: int, outputs=("point",), **kw) -> dict:
    """export_onnx with its parity check: max_abs_err < 1e-4 and the graph's outputs named
    ``outputs``; skipped without onnxruntime. Returns export_onnx's report."""
    pytest.importorskip("onnxruntime")
    from tsprune.export import export_onnx
    r = export_onnx(model, path, context=context, horizon=horizon, **kw)
    assert r["max_abs_err"] < 1e-4 and r["outputs"] == list(outputs)
    return r


def bench_tool(name: str):
    """bench/tools/NAME.py as a module (the bench tools are scripts, not a package)."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "bench" / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
