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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tsprune.baselines import evaluate_forecaster, evaluate_seasonal_naive, train_dlinear
from tsprune.baselines.patchtst import train_patchtst
from tsprune.data import DataConfig, ett_path, prepare
from tsprune.errors import UserError, bad_arg
from tsprune.evaluation import evaluate, evaluate_horizons
from tsprune.model import load
from tsprune.phases import Phase, PhaseStore, run_phases, settings_of
from tsprune.progress import is_quiet
from tsprune.prune import Plan, PruneConfig, apply
from tsprune.reproduce_report import write_accuracy_report
from tsprune.search import SearchConfig, search
from tsprune.train import FinetuneConfig, finetune
from tsprune.train.lr_grid import default_lr_grid

HORIZONS = (96, 192, 336, 720)
# the phases a user may name in --phases (PHASE_LIST below declares them, in run order)
PHASES = ("zero_shot", "finetune_dense", "search", "pruned_eval", "finetune_pruned",
          "seasonal_naive", "dlinear", "patchtst")


@dataclass(frozen=True)
class ReproduceConfig:
    """datasets: ETT names (read from ../shared/data) or file paths. Fields map to flags."""

    datasets: tuple[str, ...] = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
    horizons: tuple[int, ...] = HORIZONS
    model: str = "nano"
    context: int = 512
    split: str = "auto"
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


class DatasetJob:
    """The state of one dataset of a reproduction, filled in by its phases (PHASES)."""

    def __init__(self, name: str, cfg: ReproduceConfig):
        self.name, self.cfg = name, cfg
        self.path = _path(name)
        self.stem = Path(name).name.split(".")[0]
        self.results: dict = {}
        self.show = not is_quiet()
        self.model = self.data = self.pruned = None

    @property
    def plan_path(self) -> Path:
        return Path(self.cfg.out) / "models" / f"{self.stem}-{self.model.family.name}-plan.json"

    @property
    def model_dir(self) -> Path:
        return Path(self.cfg.out) / "models" / f"{self.stem}-{self.model.family.name}-pruned"

    def checkpoint(self, phase: str) -> Path:
        """Where ``phase``'s fine-tuning keeps its resumable state (tsprune.train.finetune):
        a run stopped mid-phase continues from there; removed when the phase is done."""
        return Path(self.cfg.out) / "checkpoints" / f"{self.stem}-{phase}"

    def finetune(self, model, phase: str):
        ck = self.checkpoint(phase)
        r = finetune(model, self.train, self.ft_val, self.ft_cfg, show_progress=self.show, checkpoint=ck)
        self.drop_checkpoint(phase)
        return r

    def drop_checkpoint(self, phase: str) -> None:
        """Remove ``phase``'s fine-tuning state (tsprune's own files), and the checkpoints
        directory once it is empty."""
        ck = self.checkpoint(phase)
        shutil.rmtree(ck, ignore_errors=True)
        try:
            ck.parent.rmdir()
        except OSError:
            pass

    def eval_all(self, model, horizons, desc) -> dict:
        """Every test window of every horizon, from one rollout per window (evaluate_horizons)."""
        return evaluate_horizons(model, self.data, horizons, desc=desc, show_progress=self.show)


def _ft_json(r) -> dict:
    return {"lr": r.lr, "trials": r.trials, "val_loss": r.val_loss, "val_loss_before": r.val_loss_before,
            "val_horizon": r.val_horizon}


def _setup(j: DatasetJob) -> None:
    cfg = j.cfg
    H = max(cfg.horizons)
    j.data = prepare(DataConfig(j.path, context=cfg.context, horizon=H, split=cfg.split))
    j.model = load(cfg.model)
    fam = j.model.family
    if not fam.autoregressive:
        raise UserError(f"reproduce: family {fam.name} rolls out per horizon; run `tsprune prune` "
                        f"once per horizon instead")
    j.train_h = min(fam.output_horizon(j.model.module) or H, H)
    j.train = j.data.windows("train", horizon=j.train_h)
    j.val = j.data.windows("val", horizon=j.train_h)
    # fine-tuning validates the rolled-out forecast at the longest horizon asked for (both arms
    # alike), so that a model which overshoots at h720 is not kept for its h96 patch
    j.ft_val = j.data.windows("val", horizon=H)
    j.ft_cfg = FinetuneConfig(lr=cfg.lrs or default_lr_grid(fam), train_samples=cfg.ft_train_samples,
                              val_samples=cfg.ft_val_samples, seed=cfg.seed)


def _zero_shot(j: DatasetJob) -> dict:
    return j.eval_all(j.model, j.cfg.horizons, "zero-shot")


def _finetune_dense(j: DatasetJob) -> dict:
    dense = j.model.clone()
    ftd = j.finetune(dense, "finetune_dense")
    return {"ft": _ft_json(ftd), "metrics": j.eval_all(dense, j.cfg.horizons, "fine-tuned dense")}


def _search(j: DatasetJob) -> dict:
    j.drop_checkpoint("finetune_pruned")   # a new plan: a stopped fine-tuning of the old one is stale
    sr = search(j.model, j.train, j.val, dataclasses.replace(j.cfg.prune, seed=j.cfg.seed), j.cfg.search,
                show_progress=j.show)
    j.plan_path.parent.mkdir(parents=True, exist_ok=True)
    sr.plan.save(j.plan_path)
    return sr.to_json()


def _apply(j: DatasetJob) -> None:
    j.pruned = apply(j.model, Plan.load(j.plan_path))


def _pruned_eval(j: DatasetJob) -> dict:
    # before fine-tuning: the first horizon only (a diagnostic)
    return j.eval_all(j.pruned, j.cfg.horizons[:1], "pruned")


def _finetune_pruned(j: DatasetJob) -> dict:
    ftp = j.finetune(j.pruned, "finetune_pruned")
    j.pruned.save(j.model_dir)
    return {"ft": _ft_json(ftp), "metrics": j.eval_all(j.pruned, j.cfg.horizons, "pruned+fine-tuned")}


def _seasonal_naive(j: DatasetJob) -> dict:
    return {str(h): evaluate_seasonal_naive(j.data.windows("test", horizon=h, stride=1), j.data.season)
            for h in j.cfg.horizons}


def _baseline(train_fn):
    return lambda j: _trained_baseline(train_fn, j.data, j.cfg)


def _wants(baseline: str):
    return lambda j: baseline in j.cfg.baselines


#: One dataset of the reproduction, in run order. The search -> apply -> pruned_eval /
#: finetune_pruned chain depends on the search; the other phases stand alone, so several
#: processes can share a dataset (--phases).
PHASE_LIST = (
    Phase("setup", _setup, persist=False),
    Phase("zero_shot", _zero_shot),
    Phase("finetune_dense", _finetune_dense),
    Phase("search", _search),
    Phase("apply", _apply, needs=("search",), persist=False),
    Phase("pruned_eval", _pruned_eval, needs=("apply",)),
    Phase("finetune_pruned", _finetune_pruned, needs=("apply",)),
    Phase("seasonal_naive", _seasonal_naive, when=_wants("seasonal_naive")),
    Phase("dlinear", _baseline(train_dlinear), when=_wants("dlinear")),
    Phase("patchtst", _baseline(train_patchtst), when=_wants("patchtst")),
)


def run_dataset(name: str, cfg: ReproduceConfig, log=print) -> dict | None:
    """One dataset's phases; its result, or None when --phases left some unfinished."""
    torch.manual_seed(cfg.seed)
    t_ds = time.time()
    job = DatasetJob(name, cfg)
    fp = {k: v for k, v in settings_of(cfg).items() if k not in ("force", "datasets", "out", "phases")}
    store = PhaseStore(Path(cfg.out) / "runs" / f"{job.stem}.partial.json",
                       {**fp, "dataset": str(job.path)}, fresh=cfg.force)
    if cfg.force:
        for phase in ("finetune_dense", "finetune_pruned"):
            job.drop_checkpoint(phase)
    done = run_phases(PHASE_LIST, job, store, only=cfg.phases, say=log, label=name)
    if done.left_out:
        left = [k for k in done.left_out if k in PHASES and k not in store]
        log(f"[{name}] not finished here (--phases {','.join(cfg.phases or ())}): "
            + (f"{', '.join(left)} still to run" if left else "the other phases are finished now")
            + "; a run without --phases completes the dataset and renders the report")
        return None
    r, model = job.results, job.model
    res = {"dataset": name, "path": str(job.path), "family": model.family.name, "model": cfg.model,
           "context": cfg.context, "train_horizon": job.train_h, "horizons": list(cfg.horizons),
           "windows": {"train": len(job.train), "val": len(job.val)}, "params_dense": model.num_params(),
           "zero_shot": r["zero_shot"], "finetune_dense": r["finetune_dense"]["ft"],
           "finetuned_dense": r["finetune_dense"]["metrics"], "search": r["search"]}
    pruned = job.pruned
    res["params_pruned"] = pruned.num_params()
    res["sparsity"] = 1 - pruned.num_params() / model.num_params()
    res["structure"] = pruned.describe()
    res["pruned"] = r["pruned_eval"]
    res["finetune_pruned"], res["pruned_finetuned"] = r["finetune_pruned"]["ft"], r["finetune_pruned"]["metrics"]
    res["search"]["chosen"]["lr"] = r["finetune_pruned"]["ft"]["lr"]
    res["search"]["grids"]["lr"] = list(job.ft_cfg.lr)
    res["pruned_model_dir"] = str(job.model_dir)
    res["baselines"] = {k: {h: {"mse": v["mse"], "mae": v["mae"], **({"params": v["params"]} if "params" in v else {})}
                            for h, v in r[k].items()} for k in ("seasonal_naive", "dlinear", "patchtst")
                        if k in cfg.baselines}
    timings = store.timings()
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 1)
    res["timings"] = timings
    res["wall_s_this_run"] = round(time.time() - t_ds, 1)
    return res


def _trained_baseline(train, data, cfg: ReproduceConfig) -> dict:
    """{horizon: test metrics and "params"} of a baseline that ``train(data, context,
    horizon, seed=, progress=)`` fits per horizon."""
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
        PhaseStore(f.with_suffix(".partial.json"), {}).remove()
        results[name] = r
    if len(results) < len(cfg.datasets):
        log("some datasets are not finished (--phases): the report is rendered by a run that finishes them")
        return {"results": results, "transfer": []}
    transfer = run_transfer(cfg, results, log)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "processor": platform.processor() or platform.machine()}
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
