"""Hidden-width pruning of a LayerNorm PatchTST: should its norms compute over the kept
channels with their weights as they were ("kept") or times sqrt(d / d_kept) ("dense")?

    python bench/hidden_width_patchtst.py [--out bench/results/hidden_width_patchtst.json]

No PatchTST checkpoint is reachable here, so one is trained: a LayerNorm PatchTST (d_model
64, 3 layers, 4 heads, FFN 128, patches of 16 with stride 8, context 96, horizon 24,
``--pre-norm`` or post-norm) on the ETTh1 training windows (``ett`` split, every channel),
Adam 1e-3, ``--steps`` batches of 64. Then, for each choice, the hidden width is scored
with it (Taylor-Fisher, cost-aware, to ``--budget``, no fine-tuning) and the plan is also
sliced with the other choice (same channels: the effect of the choice alone); and, since a
budget may take few residual channels, the quarter and the half of them with the smallest
weight norms (every writer's row and reader's column) are cut with each choice, nothing
else pruned. Reported:
the native loss on validation windows and the test MSE / MAE (stride ``--test-stride``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from tsprune.data import DataConfig, ett_path, prepare
from tsprune.evaluation import evaluate
from tsprune.model import from_config
from tsprune.prune import Plan, PruneConfig, apply, score
from tsprune.prune.criteria import MagnitudeImportance
from tsprune.prune.engine import masked_loss
from tsprune.prune.masks import HIDDEN, MaskSet

CONFIG = dict(model_type="patchtst", architectures=["PatchTSTForPrediction"], num_input_channels=1,
              context_length=96, patch_length=16, patch_stride=8, num_hidden_layers=3, d_model=64,
              num_attention_heads=4, ffn_dim=128, prediction_length=24, norm_type="layernorm",
              pooling_type=None)


def _norm_scale(family, scale: str | None) -> None:
    """Make ``family`` describe its residual stream with norm_scale ``scale`` (None: its own)."""
    if "hidden_width" in vars(family):
        del family.hidden_width
    if scale is not None:
        own = type(family).hidden_width
        family.hidden_width = lambda module: dataclasses.replace(own(family, module), norm_scale=scale)


def train(model, windows, steps: int, seed: int = 0) -> None:
    """Adam 1e-3 on the family's native loss, ``steps`` random batches of 64 windows."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.module.parameters(), lr=1e-3)
    model.module.train()
    for _ in range(steps):
        c, t = windows.gather(torch.randint(len(windows), (64,), generator=g))
        loss = model.family.loss(model.module, c, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.module.eval()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/hidden_width_patchtst.json")
    ap.add_argument("--budget", default="flops=0.5")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--val", type=int, default=1024)
    ap.add_argument("--test-stride", type=int, default=4)
    ap.add_argument("--pre-norm", action="store_true", help="pre-norm layers (default: post-norm)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    torch.manual_seed(0)
    model = from_config({**CONFIG, "pre_norm": a.pre_norm})
    family = model.family
    data = prepare(DataConfig(ett_path("ETTh1"), context=96, horizon=24, split="ett"))
    train_w, val = data.windows("train"), data.windows("val").subset(a.val, seed=1)
    test = data.windows("test", stride=a.test_stride)
    train(model, train_w, a.steps)
    res: dict = {"model": {k: v for k, v in CONFIG.items() if k not in ("model_type", "architectures")}
                 | {"pre_norm": a.pre_norm, "trained_steps": a.steps, "params": model.num_params()},
                 "data": f"ETTh1 (ett split), context 96, horizon 24; {len(test)} test windows "
                         f"(stride {a.test_stride}), {len(val)} val windows",
                 "budget": a.budget, "calib_windows": a.calib, "arms": {}}

    def measure(name: str, m, plan=None) -> None:
        row = {"val_loss": masked_loss(m, None, val), **evaluate(m, test, show_progress=False),
               "params": m.num_params(), "hidden": (m.manifest or {}).get("hidden")}
        if plan is not None:
            row.update(kept_flops=plan.config["measured"]["kept_flops"])
        res["arms"][name] = row
        print(name, json.dumps(row), flush=True)

    measure("dense", model)
    cfg = PruneConfig(budget=a.budget, hidden=True, calib_samples=a.calib, val_samples=a.val, macro_batch=256)
    plans = {}
    for scale in ("kept", "dense"):
        _norm_scale(family, scale)
        plans[scale] = score(model, train_w, val, cfg, show_progress=False)
        measure(f"hidden_{scale}", apply(model, plans[scale]), plans[scale])
    for scale, other in (("kept", "dense"), ("dense", "kept")):
        _norm_scale(family, other)
        measure(f"hidden_{scale}_as_{other}", apply(model, plans[scale]), plans[scale])
    for frac in (0.25, 0.5):
        masks = MaskSet(model.module, family.structure(model.module).linears(), family.hidden_width(model.module))
        norms = MagnitudeImportance(masks, model.module).imp[(HIDDEN, "out")]
        masks.m_hidden[norms.argsort()[: int(frac * norms.numel())]] = 0.0
        plan = Plan(family.name, masks.to_json(), model.num_params(), model.num_params())
        for scale in ("kept", "dense"):
            _norm_scale(family, scale)
            measure(f"cut{int(frac * 100)}_{scale}", apply(model, plan))
    _norm_scale(family, None)
    res["wall_s"] = round(time.time() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
