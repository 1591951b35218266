"""`tsprune prune`: the whole job, from a pretrained TSFM and a dataset to a pruned,
fine-tuned model directory, an ONNX graph and a report, written atomically to --out.

    zero-shot (dense) -> [fine-tuned dense] -> score (plan.json) -> apply (surgery)
    -> pruned -> fine-tune -> pruned+fine-tuned -> baselines -> save -> ONNX -> report
"""
from __future__ import annotations

import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tsprune import __version__
from tsprune.atomic import atomic_dir, check_out
from tsprune.data import DataConfig, prepare
from tsprune.errors import UserError, bad_arg
from tsprune.evaluate import evaluate
from tsprune.model import load
from tsprune.progress import is_quiet, set_quiet
from tsprune.prune import PruneConfig, apply, score
from tsprune.runlog import RunLog, log_to_file, log_to_stderr
from tsprune.search import SearchConfig  # noqa: F401  (type of RunConfig.search)
from tsprune.train import FinetuneConfig, finetune

log = logging.getLogger("tsprune")

DEFAULT_MODEL = "nano"


def default_data_path() -> Path | None:
    """The real dataset bundled with tsprune for the default job (see its DATA_CARD.md)."""
    d = Path(__file__).resolve().parent / "resources" / "data"
    files = sorted(d.glob("*.csv.gz")) if d.is_dir() else []
    return files[0] if files else None


@dataclass(frozen=True)
class RunConfig:
    """One `tsprune prune` job. Each field is one CLI flag (see tsprune.cli)."""

    out: str
    data: DataConfig
    model: str = DEFAULT_MODEL
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    search: "SearchConfig | None" = None
    do_finetune: bool = True
    compare_finetune: bool = False
    export: tuple[str, ...] = ()
    export_model: str = "auto"  # what --export writes: auto (tsprune.recommend), tsfm or dlinear
    opset: int = 18
    dlinear: bool = True
    seed: int = 0
    command: str = ""
    log_file: str | None = None
    quiet: bool = False
    verbose: bool = False
    resume: bool = False
    device: str = "auto"

    def __post_init__(self):
        for e in self.export:
            if e not in ("onnx",):
                raise bad_arg("--export", e, "'onnx'")
        from tsprune.recommend import export_choice
        export_choice(self.export_model, None, have_dlinear=self.dlinear)
        if not isinstance(self.opset, int) or not 18 <= self.opset <= 23:
            raise bad_arg("--opset", self.opset, "an integer from 18 to 23")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise bad_arg("--seed", self.seed, "an integer from 0 to 2**63 - 1")
        if "onnx" in self.export:
            from tsprune.export.runtime import import_ort
            try:
                import_ort()
            except ImportError as e:
                raise UserError(f"--export onnx: {e}") from None
        if self.device not in ("auto", "cpu", "cuda"):
            raise bad_arg("--device", self.device, "auto, cpu or cuda")
        check_out(self.out)


def _metrics(d: dict) -> dict:
    out = {"mse": d["mse"], "mae": d["mae"], "windows": d["windows"]}
    if "by_horizon" in d:
        out["by_horizon"] = {str(k): v for k, v in d["by_horizon"].items()}
    return out


def _with_lr_grid(ft_cfg, fam):
    import dataclasses
    from tsprune.train.lr_grid import default_lr_grid
    return ft_cfg if ft_cfg.lr is not None else dataclasses.replace(ft_cfg, lr=default_lr_grid(fam))


def _search_report(search_json, ft) -> dict | None:
    if search_json is None:
        return None
    out = dict(search_json)
    if ft is not None:
        out["grids"]["lr"] = list(dict.fromkeys(t["lr"] for t in ft["trials"]))  # probes + the full run
        out["lr_trials"] = ft["trials"]
        out["chosen"]["lr"] = ft["lr"]
    return out


def _quantile_levels(model, dataset) -> tuple:
    """The quantile levels the model's forecast carries (empty when it has none)."""
    c, _ = dataset.gather(torch.arange(1))
    return tuple(model.forecast(c, 1).levels)


def _versions() -> dict:
    import importlib.metadata as md
    import onnx
    import transformers
    ort = "not installed"
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            ort = f"{md.version(dist)} ({dist})"
            break
        except md.PackageNotFoundError:
            continue
    return {"tsprune": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort, "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def run(cfg: RunConfig) -> dict:
    """Run the job; returns the report (also written as report.json / .md / .html)."""
    was_quiet = is_quiet()
    set_quiet(was_quiet or cfg.quiet)
    from tsprune.distributed import init_from_env, world
    device = init_from_env(cfg.device)
    rank, n = world()
    if n > 1 and cfg.resume:
        raise bad_arg("--resume", True, "a single-process run (resume is not supported under torchrun)")
    try:
        with log_to_file(cfg.log_file if rank == 0 else None), log_to_stderr(cfg.verbose and rank == 0):
            if rank != 0:
                set_quiet(True)
                return _run_worker(cfg, device)
            report = _run(cfg, device)
            if n > 1:
                from tsprune.distributed import barrier
                barrier()  # the workers wait for rank 0's evaluation and output
            return report
    finally:
        set_quiet(was_quiet)


def _windows(cfg: RunConfig, model, data):
    fam, mod = model.family, model.module
    L, H = cfg.data.context, cfg.data.horizon
    max_ctx = fam.max_context(mod)
    if max_ctx is not None and L > max_ctx:
        raise bad_arg("--context", L, f"at most {max_ctx} for this {fam.name} model")
    out_h = fam.output_horizon(mod)
    train_h = min(H, out_h) if (out_h and fam.autoregressive) else H
    return train_h, data.windows("train", horizon=train_h), data.windows("val", horizon=train_h)


def _run_worker(cfg: RunConfig, device) -> dict:
    """Ranks > 0 under torchrun: the same collective phases as rank 0 (dense fine-tuning,
    scoring or search, pruned fine-tuning), no evaluation and no output."""
    torch.manual_seed(cfg.seed)
    model = load(cfg.model)
    model.module.to(device)
    data = prepare(cfg.data)
    fam = model.family
    _, train, val = _windows(cfg, model, data)
    from tsprune.train.validation import val_windows
    val_ft = val_windows(data, val, cfg.data.horizon)  # fine-tuning validates at --horizon
    ft_cfg = cfg.finetune if cfg.search is None else _with_lr_grid(cfg.finetune, fam)
    if cfg.compare_finetune:
        finetune(model.clone(), train, val_ft, ft_cfg, show_progress=False)
    if cfg.search is not None:
        from tsprune.search import search
        plan = search(model, train, val, cfg.prune, cfg.search, show_progress=False).plan
    else:
        plan = score(model, train, val, cfg.prune, show_progress=False)
    pruned = apply(model, plan)
    if cfg.do_finetune:
        finetune(pruned, train, val_ft, ft_cfg, show_progress=False)
    from tsprune.distributed import barrier
    barrier()
    return {}


class _Phases:
    """Results of finished phases in ``state.json`` inside the work directory, so that
    ``--resume`` skips them; the settings' fingerprint must match."""

    def __init__(self, work: Path, fingerprint: dict, resume: bool):
        import json
        self.file = work / "state.json"
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.done: dict = {}
        if resume and self.file.exists():
            st = json.loads(self.file.read_text())
            if st.get("fingerprint") != self.fingerprint:
                raise UserError("--resume: the interrupted run in "
                                f"{work} used other settings; rerun without --resume to start over")
            self.done = st["done"]

    def get(self, name: str):
        return self.done.get(name)

    def put(self, name: str, result) -> None:
        import json
        import os
        self.done[name] = result
        tmp = self.file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "done": self.done}, default=float))
        os.replace(tmp, self.file)


def _fingerprint(cfg: RunConfig) -> dict:
    """What a resumed run must share with the interrupted one."""
    d = asdict(cfg)
    for k in ("out", "command", "log_file", "quiet", "verbose", "resume"):
        d.pop(k, None)
    try:
        st = Path(cfg.data.path).stat()
        d["data_file"] = [st.st_size, int(st.st_mtime)]
    except (OSError, TypeError):
        pass
    return d


def _run(cfg: RunConfig, device=None) -> dict:
    torch.manual_seed(cfg.seed)
    show = not is_quiet()
    timings: dict[str, float] = {}
    t_all = time.time()

    def timed(name):
        class _T:
            def __enter__(s):
                s.t = time.time()
                log.info("%s ...", name)

            def __exit__(s, *exc):
                timings[name] = round(time.time() - s.t, 2)
                if exc[0] is None:
                    log.info("%s done in %.1fs", name, timings[name])
        return _T()

    # cheap checks first, so that a bad --model fails before the data is read
    from tsprune.model import resolve
    resolve(cfg.model)
    with atomic_dir(cfg.out, resume=cfg.resume) as tmp:
        ph = _Phases(tmp, _fingerprint(cfg), cfg.resume)
        ck = tmp / "checkpoints"
        rl = RunLog(tmp / "log.jsonl")
        try:
            with timed("load"):
                model = load(cfg.model)
                if device is not None:
                    model.module.to(device)
                data = prepare(cfg.data)
            fam, mod = model.family, model.module
            L, H = cfg.data.context, cfg.data.horizon
            train_h, train, val = _windows(cfg, model, data)
            from tsprune.train.validation import val_windows
            val_ft = val_windows(data, val, H)  # fine-tuning validates at --horizon (rolled out)
            from tsprune.distributed import world
            if world()[1] > 1:
                ck = None  # checkpoints are for single-process --resume
            test = data.windows("test", stride=1)  # TSLib: every test window
            horizons = [H]
            metrics: dict[str, dict | None] = {}
            if ph.get("zero_shot") is None:
                with timed("zero_shot_eval"):
                    ph.put("zero_shot", _metrics(evaluate(model, test, horizons, desc="zero-shot")))
            metrics["zero_shot"] = ph.get("zero_shot")
            ft_dense = None
            if cfg.compare_finetune:
                if ph.get("finetune_dense") is None:
                    with timed("finetune_dense"):
                        dense = model.clone()
                        ftd = finetune(dense, train, val_ft, cfg.finetune if cfg.search is None else
                                       _with_lr_grid(cfg.finetune, fam), show_progress=show,
                                       log=rl.phase("finetune_dense"),
                                       checkpoint=ck and ck / "finetune_dense")
                    with timed("finetuned_dense_eval"):
                        ph.put("finetune_dense", {"ft": ftd.to_json(), "metrics": _metrics(
                            evaluate(dense, test, horizons, desc="fine-tuned dense"))})
                    del dense
                ft_dense = ph.get("finetune_dense")["ft"]
                metrics["finetuned_dense"] = ph.get("finetune_dense")["metrics"]
            from tsprune.prune import Plan
            search_json = None
            ft_cfg = cfg.finetune
            if cfg.search is not None and ft_cfg.lr is None:  # lr is chosen by validation too
                ft_cfg = _with_lr_grid(ft_cfg, fam)
            if ph.get("score") is None:
                if cfg.search is not None:
                    from tsprune.search import search
                    with timed("search"):
                        search_res = search(model, train, val, cfg.prune, cfg.search,
                                            show_progress=show, log=rl.phase("search"))
                        plan = search_res.plan
                        search_json = search_res.to_json()
                else:
                    with timed("prune_score"):
                        plan = score(model, train, val, cfg.prune, show_progress=show,
                                     log=rl.phase("prune"), checkpoint=ck and ck / "score")
                plan.save(tmp / "plan.json")
                ph.put("score", {"search": search_json})
            plan = Plan.load(tmp / "plan.json")
            search_json = ph.get("score")["search"]
            with timed("prune_apply"):
                pruned = apply(model, plan)
            if ph.get("pruned_eval") is None:
                with timed("pruned_eval"):
                    ph.put("pruned_eval", _metrics(evaluate(pruned, test, horizons, desc="pruned")))
            metrics["pruned"] = ph.get("pruned_eval")
            ft = None
            metrics["pruned_finetuned"] = None
            if cfg.do_finetune:
                if ph.get("finetune_pruned") is None:
                    with timed("finetune_pruned"):
                        ftp = finetune(pruned, train, val_ft, ft_cfg, show_progress=show,
                                       log=rl.phase("finetune_pruned"),
                                       checkpoint=ck and ck / "finetune_pruned")
                        pruned.save(tmp / "checkpoints" / "pruned_finetuned")
                    ph.put("finetune_pruned", ftp.to_json())
                else:
                    pruned = load(tmp / "checkpoints" / "pruned_finetuned")
                    if device is not None:
                        pruned.module.to(device)
                ft = ph.get("finetune_pruned")
                if ph.get("pruned_finetuned_eval") is None:
                    with timed("pruned_finetuned_eval"):
                        ph.put("pruned_finetuned_eval", _metrics(evaluate(pruned, test, horizons,
                                                                          desc="pruned+fine-tuned")))
                metrics["pruned_finetuned"] = ph.get("pruned_finetuned_eval")
            with timed("samples"):  # a few test windows for the report's forecast plots
                from tsprune.report import forecast_samples
                samples = forecast_samples({"dense": model, "pruned": pruned}, test, n=4)
            baselines = {}
            with timed("baselines"):
                from tsprune.baselines import evaluate_seasonal_naive, train_dlinear
                from tsprune.baselines.evaluate import evaluate_forecaster
                baselines["seasonal_naive"] = _metrics(evaluate_seasonal_naive(
                    test, data.season, horizons=horizons))
                baselines["seasonal_naive"]["season"] = data.season
                if cfg.dlinear:
                    # per-window normalisation: the DLinear --export-model can deploy (tsprune.recommend)
                    dl = train_dlinear(data, L, H, seed=cfg.seed, progress=show, instance_norm=True)
                    baselines["dlinear"] = _metrics(evaluate_forecaster(dl, test, horizons=horizons))
            with timed("save"):
                pruned.save(tmp / "model", extra={"dataset": {
                    "columns": list(data.columns), "mean": data.mean.tolist(),
                    "std": data.std.tolist()}})
            from tsprune import recommend  # issue 20: which model to deploy, on validation
            with timed("recommend"):
                rec = recommend.for_run(cfg, data, pruned, dl if cfg.dlinear else None,
                                        finetuned=metrics["pruned_finetuned"] is not None)
            onnx_info = None
            if "onnx" in cfg.export and recommend.export_choice(cfg.export_model, rec,
                                                                have_dlinear=cfg.dlinear) == "dlinear":
                with timed("export_onnx"):
                    onnx_info = recommend.export_run_dlinear(dl, tmp / "model.onnx", opset=cfg.opset, data=data,
                                                             levels=_quantile_levels(pruned, test))
                with timed("onnx_latency"):
                    from tsprune.report import ort_latency
                    onnx_info["latency_ms"] = ort_latency(tmp / "model.onnx", context=L, batches=(1, 64),
                                                          budget_s=4.0)
            elif "onnx" in cfg.export:
                from tsprune.export import export_onnx
                with timed("export_onnx"):
                    onnx_info = export_onnx(pruned, tmp / "model.onnx", context=L, horizon=H,
                                            opset=cfg.opset, metadata={
                                                "columns": list(data.columns),
                                                "normalisation": "instance normalisation inside the graph; "
                                                                 "train z-score stats in zscore_mean/zscore_std",
                                                "zscore_mean": data.mean.tolist(),
                                                "zscore_std": data.std.tolist(),
                                                "quantiles": list(_quantile_levels(pruned, test))})
                    onnx_info["path"] = "model.onnx"
                    onnx_info["model"] = "tsfm"
                with timed("onnx_latency"):
                    from tsprune.report import ort_latency
                    onnx_info["latency_ms"] = ort_latency(tmp / "model.onnx", context=L,
                                                          batches=(1, 64), budget_s=4.0)
            timings["total"] = round(time.time() - t_all, 2)
            report = {
                "tsprune_version": __version__,
                "command": cfg.command,
                "family": fam.name,
                "model": str(cfg.model),
                "data": {"path": str(cfg.data.path), "columns": list(data.columns),
                         "rows": int(len(data.values)), "split_rows": list(data.split),
                         "split": data.split_spec,
                         "freq": data.freq, "season": data.season, "context": L, "horizon": H,
                         "train_horizon": train_h, "missing": str(data.missing),
                         "windows": {"train": len(train), "val": len(val), "test": len(test)}},
                "params": {"dense": plan.params_dense, "pruned": pruned.num_params()},
                "sparsity": 1.0 - pruned.num_params() / plan.params_dense,
                "metrics": metrics,
                "baselines": baselines,
                "prune": {"config": plan.config, "best_epoch": plan.best_epoch,
                          "history": plan.history, "extra": plan.extra},
                "finetune": {"pruned": ft, "dense": ft_dense},
                "structure": {"dense": model.describe(), "pruned": pruned.describe()},
                "samples": samples,
                "search": _search_report(search_json, ft),
                "onnx": onnx_info,
                "recommendation": rec.to_json(),
                "timings": timings,
                "versions": _versions(),
                "config": {"prune": asdict(cfg.prune), "finetune": asdict(cfg.finetune),
                           "export_model": cfg.export_model, "do_finetune": cfg.do_finetune, "compare_finetune": cfg.compare_finetune,
                           "seed": cfg.seed},
            }
            rl({"metrics": metrics, "baselines": baselines, "params": report["params"],
                "sparsity": report["sparsity"], "timings": timings}, phase="summary")
            from tsprune.report import write_reports
            write_reports(report, tmp)
            # the output holds results only: checkpoints and phase state go
            import shutil
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
            (tmp / "state.json").unlink(missing_ok=True)
        finally:
            rl.close()
    return report


def describe_user_error(e: Exception) -> str:
    return str(e)


__all__ = ["RunConfig", "run", "default_data_path", "UserError"]
_ = sys
