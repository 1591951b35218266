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
# in run order; search -> pruned_eval -> finetune_pruned depend on each other, the rest do not
PHASES = ("zero_shot", "finetune_dense", "search", "pruned_eval", "finetune_pruned",
          "seasonal_naive", "dlinear", "patchtst")


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
    phases: tuple[str, ...] | None = None

    def __post_init__(self):
        for p in self.phases or ():
            if p not in PHASES:
                raise bad_arg("--phases", p, ", ".join(PHASES))
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


class _Progress:
    """Finished phases of one dataset in ``runs/NAME.partial.json`` (atomic writes), so an
    interrupted reproduction continues where it stopped; the settings must match.

    Several processes may work on one dataset (``--phases``): every write happens under a
    lock and merges with what the others wrote, and reads see their finished phases."""

    def __init__(self, path: Path, fingerprint: dict, fresh: bool):
        self.path = path
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        if fresh:
            path.unlink(missing_ok=True)

    def _read(self) -> dict:
        if self.path.exists():
            st = json.loads(self.path.read_text())
            if st.get("fingerprint") == self.fingerprint:
                return st["done"]
        return {}

    def __contains__(self, key) -> bool:
        return key in self._read()

    def __getitem__(self, key):
        return self._read()[key]

    def timings(self) -> dict:
        return dict(self._read().get("timings", {}))

    def put(self, key, value, seconds: float) -> None:
        import fcntl
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            state[key] = value
            state["timings"] = {**state.get("timings", {}), key: seconds}
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "done": state}, default=float))
            os.replace(tmp, self.path)


def run_dataset(name: str, cfg: ReproduceConfig, log=print) -> dict:
    torch.manual_seed(cfg.seed)
    t_ds = time.time()
    path = _path(name)
    stem = Path(name).name.split(".")[0]
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
    fp = {k: v for k, v in dataclasses.asdict(cfg).items()
          if k not in ("force", "datasets", "out", "phases")}
    done = _Progress(Path(cfg.out) / "runs" / f"{stem}.partial.json", {**fp, "dataset": str(path)},
                     fresh=cfg.force)
    models = Path(cfg.out) / "models"
    missing: list[str] = []

    class _Skip(Exception):
        pass

    def phase(key, fn):
        """Run fn() once; its JSON result is kept, so a rerun skips it. With --phases, a
        phase not asked for and not finished (by this or another process) is left out."""
        if key in done:
            log(f"[{name}] {key}: done earlier")
            return done[key]
        if cfg.phases is not None and key not in cfg.phases:
            missing.append(key)
            raise _Skip(key)
        t = time.time()
        log(f"[{name}] {key} ...")
        value = fn()
        secs = round(time.time() - t, 1)
        done.put(key, value, secs)
        log(f"[{name}] {key} done in {secs:.0f}s")
        return value

    def optional(key, fn):
        try:
            return phase(key, fn)
        except _Skip:
            return None

    ft_cfg = FinetuneConfig(lr=cfg.lrs or tuple(fam.lr_grid), train_samples=cfg.ft_train_samples,
                            val_samples=cfg.ft_val_samples, seed=cfg.seed)

    def ft_json(r):
        return {"lr": r.lr, "trials": r.trials, "val_loss": r.val_loss, "val_loss_before": r.val_loss_before}

    res = {"dataset": name, "path": str(path), "family": fam.name, "model": cfg.model,
           "context": cfg.context, "train_horizon": train_h, "horizons": list(cfg.horizons),
           "windows": {"train": len(train), "val": len(val)}, "params_dense": model.num_params()}
    res["zero_shot"] = optional("zero_shot", lambda: _eval_all(model, data, cfg.horizons, "zero-shot"))

    def dense_ft():
        dense = model.clone()
        ftd = finetune(dense, train, val, ft_cfg, show_progress=not is_quiet())
        return {"ft": ft_json(ftd), "metrics": _eval_all(dense, data, cfg.horizons, "fine-tuned dense")}
    d = optional("finetune_dense", dense_ft)
    if d is not None:
        res["finetune_dense"], res["finetuned_dense"] = d["ft"], d["metrics"]

    plan_path = models / f"{stem}-{fam.name}-plan.json"

    def do_search():
        sr = search(model, train, val, dataclasses.replace(cfg.prune, seed=cfg.seed), cfg.search,
                    show_progress=not is_quiet())
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        sr.plan.save(plan_path)
        return sr.to_json()
    model_dir = models / f"{stem}-{fam.name}-pruned"
    try:
        res["search"] = phase("search", do_search)
        from tsprune.prune import Plan
        pruned = apply(model, Plan.load(plan_path))
        res["params_pruned"] = pruned.num_params()
        res["sparsity"] = 1 - pruned.num_params() / model.num_params()
        res["structure"] = pruned.describe()
        # before fine-tuning: the first horizon only (a diagnostic)
        res["pruned"] = phase("pruned_eval", lambda: _eval_all(pruned, data, cfg.horizons[:1], "pruned"))

        def pruned_ft():
            ftp = finetune(pruned, train, val, ft_cfg, show_progress=not is_quiet())
            pruned.save(model_dir)
            return {"ft": ft_json(ftp), "metrics": _eval_all(pruned, data, cfg.horizons, "pruned+fine-tuned")}
        p = phase("finetune_pruned", pruned_ft)
        res["finetune_pruned"], res["pruned_finetuned"] = p["ft"], p["metrics"]
        res["search"]["chosen"]["lr"] = p["ft"]["lr"]
        res["search"]["grids"]["lr"] = list(ft_cfg.lr)
        res["pruned_model_dir"] = str(model_dir)
    except _Skip:
        pass  # the rest of this chain needs the skipped phase
    base: dict[str, dict] = {}
    if "seasonal_naive" in cfg.baselines:
        from tsprune.baselines import evaluate_seasonal_naive
        base["seasonal_naive"] = optional("seasonal_naive", lambda: {str(h): evaluate_seasonal_naive(
            data.windows("test", horizon=h, stride=1), data.season) for h in cfg.horizons})
    if "dlinear" in cfg.baselines:
        from tsprune.baselines import train_dlinear
        base["dlinear"] = optional("dlinear", lambda: _trained_baseline(train_dlinear, data, cfg))
    if "patchtst" in cfg.baselines:
        from tsprune.baselines.patchtst import train_patchtst
        base["patchtst"] = optional("patchtst", lambda: _trained_baseline(train_patchtst, data, cfg))
    if missing:
        left = [k for k in missing if k not in done]  # others may have finished some meanwhile
        log(f"[{name}] not finished here (--phases {','.join(cfg.phases or ())}): "
            + (f"{', '.join(left)} still to run" if left else "the other phases are finished now")
            + "; a run without --phases completes the dataset and renders the report")
        return None
    timings = done.timings()
    res["baselines"] = {k: {h: {"mse": v["mse"], "mae": v["mae"], **({"params": v["params"]} if "params" in v else {})}
                            for h, v in d.items()} for k, d in base.items()}
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 1)
    res["timings"] = timings
    res["wall_s_this_run"] = round(time.time() - t_ds, 1)
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
        if r is None:
            continue
        tmp = f.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(r, indent=1, default=float))
        os.replace(tmp, f)
        f.with_suffix(".partial.json").unlink(missing_ok=True)
        f.with_suffix(".partial.lock").unlink(missing_ok=True)
        results[name] = r
    if len(results) < len(cfg.datasets):
        log("some datasets are not finished (--phases): the report is rendered by a run that finishes them")
        return {"results": results, "transfer": []}
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
    earlier = {}
    prev = Path(cfg.out) / "accuracy.json"
    if prev.exists():
        earlier = {(t["source"], t["target"], t["horizon"]): t
                   for t in json.loads(prev.read_text()).get("transfer", [])}
    for a, b in cfg.transfer:
        if a not in results or b not in results:
            continue
        if not Path(results[a]["pruned_model_dir"]).exists():
            # models/ is not committed: keep the figure measured when the model existed
            if (a, b, h) in earlier:
                log(f"transfer {a}->{b}: pruned model {results[a]['pruned_model_dir']} not found; "
                    f"keeping the earlier figure (rerun {a} with --force to recompute)")
                out.append(earlier[(a, b, h)])
            else:
                log(f"transfer {a}->{b}: pruned model {results[a]['pruned_model_dir']} not found; "
                    f"skipped (rerun {a} with --force)")
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
