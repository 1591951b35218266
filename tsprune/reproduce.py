"""`tsprune reproduce`: the paper's comparison on ETT, one command.

For each dataset and horizon (standard protocol: context L, z-scored, every test window,
all channels): zero-shot (dense), full fine-tune (dense, lr by validation), prune-then-
finetune ((r, alpha) by validation of the pruned model, then lr by validation), DLinear and
PatchTST trained from scratch per horizon, and seasonal naive. Autoregressive families use
one pruned model per dataset for all horizons (trained on the model's output patch).
Results are written per dataset as they finish (a rerun skips finished datasets), then
rendered as bench/results/accuracy.md with a PNG of MSE against parameters.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tsprune.data import DataConfig, ett_path, prepare
from tsprune.errors import UserError, bad_arg
from tsprune.evaluate import evaluate, evaluate_horizons
from tsprune.model import load
from tsprune.progress import is_quiet
from tsprune.prune import PruneConfig, apply
from tsprune.search import SearchConfig, search
from tsprune.train import FinetuneConfig, finetune

HORIZONS = (96, 192, 336, 720)


@dataclass(frozen=True)
class ReproduceConfig:
    """datasets: ETT names (read from ../shared/data) or file paths. Fields map to flags."""

    datasets: tuple[str, ...] = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
    horizons: tuple[int, ...] = HORIZONS
    model: str = "nano"
    context: int = 512
    split: str = "ett"
    out: str = "bench/results"
    search: SearchConfig = SearchConfig()
    prune: PruneConfig = PruneConfig()
    lrs: tuple[float, ...] | None = None
    ft_train_samples: int | None = None
    ft_val_samples: int | None = 4096
    baselines: tuple[str, ...] = ("seasonal_naive", "dlinear", "patchtst")
    transfer: tuple[tuple[str, str], ...] = (("ETTh1", "ETTh2"), ("ETTm1", "ETTm2"))
    seed: int = 0
    force: bool = False

    def __post_init__(self):
        if not self.datasets:
            raise bad_arg("--datasets", self.datasets, "one or more dataset names")
        if not self.horizons or any(h < 1 for h in self.horizons):
            raise bad_arg("--horizons", self.horizons, "positive integers")
        for b in self.baselines:
            if b not in ("seasonal_naive", "dlinear", "patchtst"):
                raise bad_arg("--baselines", b, "seasonal_naive, dlinear, patchtst")


def _path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    found = ett_path(name)
    if found is None:
        raise UserError(f"--datasets: {name!r} is neither a file nor an ETT name found in ../shared/data")
    return found


def _eval_all(model, data, horizons, desc) -> dict:
    """Every test window of every horizon, from one rollout per window (evaluate_horizons)."""
    return evaluate_horizons(model, data, horizons, desc=desc, show_progress=not is_quiet())


def run_dataset(name: str, cfg: ReproduceConfig, log=print) -> dict:
    torch.manual_seed(cfg.seed)
    t_ds = time.time()
    timings: dict[str, float] = {}
    path = _path(name)
    H = max(cfg.horizons)
    data = prepare(DataConfig(path, context=cfg.context, horizon=H, split=cfg.split))
    model = load(cfg.model)
    fam = model.family
    out_h = fam.output_horizon(model.module)
    if not fam.autoregressive:
        raise UserError(f"reproduce: family {fam.name} rolls out per horizon; run `tsprune prune` "
                        f"once per horizon instead")
    train_h = min(out_h or H, H)
    train = data.windows("train", horizon=train_h)
    val = data.windows("val", horizon=train_h)
    res = {"dataset": name, "path": str(path), "family": fam.name, "model": cfg.model,
           "context": cfg.context, "train_horizon": train_h, "horizons": list(cfg.horizons),
           "windows": {"train": len(train), "val": len(val)}, "params_dense": model.num_params()}

    def phase(key):
        class _P:
            def __enter__(s):
                s.t = time.time()
                log(f"[{name}] {key} ...")

            def __exit__(s, *e):
                timings[key] = round(time.time() - s.t, 1)
                log(f"[{name}] {key} done in {timings[key]:.0f}s")
        return _P()

    ft_cfg = FinetuneConfig(lr=cfg.lrs or tuple(fam.lr_grid), train_samples=cfg.ft_train_samples,
                            val_samples=cfg.ft_val_samples, seed=cfg.seed)
    with phase("zero_shot"):
        res["zero_shot"] = _eval_all(model, data, cfg.horizons, "zero-shot")
    with phase("finetune_dense"):
        dense = model.clone()
        ftd = finetune(dense, train, val, ft_cfg, show_progress=not is_quiet())
        res["finetune_dense"] = {"lr": ftd.lr, "trials": ftd.trials, "val_loss": ftd.val_loss,
                                 "val_loss_before": ftd.val_loss_before}
    with phase("finetuned_dense_eval"):
        res["finetuned_dense"] = _eval_all(dense, data, cfg.horizons, "fine-tuned dense")
    del dense
    with phase("search"):
        sr = search(model, train, val, dataclasses.replace(cfg.prune, seed=cfg.seed), cfg.search,
                    show_progress=not is_quiet())
        res["search"] = sr.to_json()
    with phase("apply"):
        pruned = apply(model, sr.plan)
        res["params_pruned"] = pruned.num_params()
        res["sparsity"] = 1 - pruned.num_params() / model.num_params()
        res["structure"] = pruned.describe()
    with phase("pruned_eval"):  # before fine-tuning: the first horizon only (a diagnostic)
        res["pruned"] = _eval_all(pruned, data, cfg.horizons[:1], "pruned")
    with phase("finetune_pruned"):
        ftp = finetune(pruned, train, val, ft_cfg, show_progress=not is_quiet())
        res["finetune_pruned"] = {"lr": ftp.lr, "trials": ftp.trials, "val_loss": ftp.val_loss,
                                  "val_loss_before": ftp.val_loss_before}
        res["search"]["chosen"]["lr"] = ftp.lr
        res["search"]["grids"]["lr"] = list(ft_cfg.lr)
    with phase("pruned_finetuned_eval"):
        res["pruned_finetuned"] = _eval_all(pruned, data, cfg.horizons, "pruned+fine-tuned")
    model_dir = Path(cfg.out) / "models" / f"{name}-{fam.name}-pruned"
    pruned.save(model_dir)
    res["pruned_model_dir"] = str(model_dir)
    base: dict[str, dict] = {}
    if "seasonal_naive" in cfg.baselines:
        from tsprune.baselines import evaluate_seasonal_naive
        with phase("seasonal_naive"):
            base["seasonal_naive"] = {str(h): evaluate_seasonal_naive(
                data.windows("test", horizon=h, stride=1), data.season) for h in cfg.horizons}
    if "dlinear" in cfg.baselines:
        from tsprune.baselines import train_dlinear
        with phase("dlinear"):
            base["dlinear"] = _trained_baseline(train_dlinear, data, cfg)
    if "patchtst" in cfg.baselines:
        try:
            from tsprune.baselines.patchtst import train_patchtst
        except ImportError:
            train_patchtst = None
            log(f"[{name}] PatchTST baseline not available; skipped")
        if train_patchtst is not None:
            with phase("patchtst"):
                base["patchtst"] = _trained_baseline(train_patchtst, data, cfg)
    res["baselines"] = {k: {h: {"mse": v["mse"], "mae": v["mae"], **({"params": v["params"]} if "params" in v else {})}
                            for h, v in d.items()} for k, d in base.items()}
    timings["total"] = round(time.time() - t_ds, 1)
    res["timings"] = timings
    return res


def _trained_baseline(train, data, cfg: ReproduceConfig) -> dict:
    """{horizon: test metrics and "params"} of a baseline that ``train(data, context,
    horizon, seed=, progress=)`` fits per horizon."""
    from tsprune.baselines import evaluate_forecaster
    out = {}
    for h in cfg.horizons:
        model = train(data, cfg.context, h, seed=cfg.seed, progress=not is_quiet())
        out[str(h)] = evaluate_forecaster(model, data.windows("test", horizon=h, stride=1))
        out[str(h)]["params"] = sum(p.numel() for p in model.parameters())
    return out


def run(cfg: ReproduceConfig, log=print) -> dict:
    out = Path(cfg.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    results = {}
    for name in cfg.datasets:
        f = out / "runs" / f"{Path(name).name.split('.')[0]}.json"
        if f.exists() and not cfg.force:
            log(f"[{name}] already done ({f}); skipping (use --force to rerun)")
            results[name] = json.loads(f.read_text())
            continue
        r = run_dataset(name, cfg, log)
        tmp = f.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(r, indent=1, default=float))
        os.replace(tmp, f)
        results[name] = r
    transfer = run_transfer(cfg, results, log)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "processor": platform.processor() or platform.machine()}
    from tsprune.reproduce_report import write_accuracy_report
    write_accuracy_report(results, transfer, cfg, machine, out)
    return {"results": results, "transfer": transfer}


def run_transfer(cfg: ReproduceConfig, results: dict, log=print) -> list[dict]:
    """Zero-shot transfer: a model pruned and fine-tuned on A, evaluated on B's test split,
    against the dense model zero-shot on B (first horizon only)."""
    out = []
    h = min(cfg.horizons)
    for a, b in cfg.transfer:
        if a not in results or b not in results:
            continue
        d = prepare(DataConfig(_path(b), context=cfg.context, horizon=h, split=cfg.split))
        spec = load(results[a]["pruned_model_dir"])
        r = evaluate(spec, d.windows("test", horizon=h, stride=1), desc=f"transfer {a}->{b}",
                     show_progress=not is_quiet())
        out.append({"source": a, "target": b, "horizon": h, "specialized_mse": r["mse"],
                    "specialized_mae": r["mae"], "dense_zero_shot_mse": results[b]["zero_shot"][str(h)]["mse"],
                    "dense_zero_shot_mae": results[b]["zero_shot"][str(h)]["mae"]})
        log(f"transfer {a}->{b} h{h}: specialized {r['mse']:.4f} vs dense zero-shot "
            f"{out[-1]['dense_zero_shot_mse']:.4f}")
    return out
