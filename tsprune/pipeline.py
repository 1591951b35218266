"""`tsprune prune`: the whole job, from a pretrained TSFM and a dataset to a pruned,
fine-tuned model directory, an ONNX graph and a report, written atomically to --out.

    zero-shot (dense) -> [fine-tuned dense] -> score (plan.json) -> apply (surgery)
    -> pruned -> [teacher] -> fine-tune -> pruned+fine-tuned -> baselines -> save -> ONNX -> report

Recovery (--recover, i.e. FinetuneConfig.distill): "finetune" ("off", the default)
fine-tunes the pruned model on the target; "distill" first runs the teacher phase (the
dense model, zero-shot or fine-tuned with --compare-finetune, whichever validates better at
--horizon, forecasts every training window once; resumable) and fine-tunes with the
teacher term (tsprune.train.distill).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata as md
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tsprune import __version__
from tsprune.atomic import check_out
from tsprune.baselines import evaluate_forecaster, evaluate_seasonal_naive, train_dlinear
from tsprune.data import DataConfig, prepare
from tsprune.distributed import barrier, broadcast_int, init_from_env, world
from tsprune.errors import UserError, bad_arg
from tsprune.evaluation import evaluate
from tsprune.export import export_onnx
from tsprune.export.calibrate import calibrate
from tsprune.export.calibrate import candidates as speed_candidates
from tsprune.export.profile import deployed_profile
from tsprune.export.runtime import import_ort
from tsprune.export.speed import pass_speedups, speedup_of, speedup_stat, speedups, timed_passes
from tsprune.model import load, resolve
from tsprune.phases import Phase, PhaseStore, run_job, run_phases, settings_of
from tsprune.progress import is_quiet, set_quiet
from tsprune.prune import Plan, PruneConfig, apply, score
from tsprune.prune.budget import Budget
from tsprune.prune.to_budget import score_to_budgets
from tsprune.report import forecast_samples, ort_latency, write_reports
from tsprune.runlog import RunLog, log_to_file, log_to_stderr
from tsprune.safety import check_run
from tsprune.search import SearchConfig, search
from tsprune.train import FinetuneConfig, finetune
from tsprune.train.distill import TeacherCache, choose_teacher, teacher_cache, weights
from tsprune.train.finetune import DEFAULT_MAX_EPOCHS, training_windows, validation_windows
from tsprune.train.lr_grid import default_lr_grid
from tsprune.train.validation import val_windows
from tsprune import recommend

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
        recommend.export_choice(self.export_model, None, have_dlinear=self.dlinear)
        if not isinstance(self.opset, int) or not 18 <= self.opset <= 23:
            raise bad_arg("--opset", self.opset, "an integer from 18 to 23")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise bad_arg("--seed", self.seed, "an integer from 0 to 2**63 - 1")
        if "onnx" in self.export:
            try:  # import_ort loads onnxruntime (optional) only now
                import_ort()
            except ImportError as e:
                raise UserError(f"--export onnx: {e}") from None
        self.prune.check_budget_options()
        if self.search is not None and self.prune.budget is not None:
            raise bad_arg("--search", True, "not with --budget (the budget fixes the sparsity)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise bad_arg("--device", self.device, "auto, cpu or cuda")
        if self.finetune.distill != "off" and not self.do_finetune:
            raise bad_arg("--recover", "distill", "finetune with --no-finetune (nothing is recovered)")
        check_out(self.out)
        check_run(self)  # --out/--log-file never overlap an input


def _metrics(d: dict) -> dict:
    out = {"mse": d["mse"], "mae": d["mae"], "windows": d["windows"]}
    if "by_horizon" in d:
        out["by_horizon"] = {str(k): v for k, v in d["by_horizon"].items()}
    return out


def _with_lr_grid(ft_cfg, fam):
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
    import onnx  # lazy: only the report needs it (and the API must not load it for nothing)
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
    device = init_from_env(cfg.device)
    rank, n = world()
    if n > 1 and cfg.resume:
        raise bad_arg("--resume", True, "a single-process run (resume is not supported under torchrun)")
    try:
        with log_to_file(cfg.log_file if rank == 0 else None), log_to_stderr(cfg.verbose and rank == 0):
            if rank != 0:
                # ranks > 0: the same phases with evaluation and output switched off
                set_quiet(True)
                torch.manual_seed(cfg.seed)
                job = Job(cfg, device, worker=True)
                run_phases(PHASES, job, PhaseStore.in_memory(), worker=True)
                barrier()
                return {}
            report = _run(cfg, device)
            if n > 1:
                barrier()  # the workers wait for rank 0's evaluation and output
            return report
    finally:
        set_quiet(was_quiet)


def _windows(cfg: RunConfig, model, data):
    fam, mod = model.family, model.module
    out_h = fam.output_horizon(mod)
    H = cfg.data.horizon
    train_h = min(H, out_h) if (out_h and fam.autoregressive) else H
    return train_h, data.windows("train", horizon=train_h), data.windows("val", horizon=train_h)


class Job:
    """The state of one `tsprune prune` job, filled in by its phases (see PHASES)."""

    def __init__(self, cfg: RunConfig, device=None, *, work: Path | None = None, worker: bool = False):
        self.cfg, self.device, self.work, self.worker = cfg, device, work, worker
        self.show = not is_quiet()
        self.results: dict = {}
        self.rl = RunLog(work / "log.jsonl") if work is not None else None
        # checkpoints are for single-process --resume
        self.ck = work / "checkpoints" if work is not None and world()[1] == 1 else None
        self.model = self.data = self.train = self.val = self.test = None
        self.plan = self.pruned = self.dense = self.dlinear = self.rec = None
        self.teacher = None  # tsprune.train.distill.TeacherCache (--recover distill)

    def phase_log(self, name: str):
        return self.rl.phase(name) if self.rl is not None else None

    def checkpoint(self, name: str):
        return self.ck / name if self.ck is not None else None

    def to_device(self, model):
        if self.device is not None:
            model.module.to(self.device)
        return model

    def ft_config(self):
        """Fine-tuning settings; under --search the lr is chosen by validation too."""
        cfg = self.cfg
        if cfg.search is not None and cfg.finetune.lr is None:
            return _with_lr_grid(cfg.finetune, self.model.family)
        return cfg.finetune

    def evaluate(self, model, desc: str) -> dict:
        return _metrics(evaluate(model, self.test, [self.cfg.data.horizon], desc=desc))


# ---- the phases of `tsprune prune` ------------------------------------------------------

def _load(j: Job) -> None:
    j.model = j.to_device(load(j.cfg.model))
    j.data = prepare(j.cfg.data)
    j.model.check_context(j.cfg.data.context)
    k = j.cfg.prune.drop_blocks
    if k:  # before any work: the family supports depth pruning and keeps a block
        n = len(j.model.family.block_paths(j.model.module))
        if k >= n:
            raise bad_arg("--drop-blocks", k, f"an integer from 0 to {n - 1} (this model has {n} blocks)")
    if j.cfg.prune.hidden:  # before any work: the family can prune its hidden width
        j.model.family.hidden_width(j.model.module)
    j.train_h, j.train, j.val = _windows(j.cfg, j.model, j.data)
    j.val_ft = val_windows(j.data, j.val, j.cfg.data.horizon)  # fine-tuning validates at --horizon
    j.test = j.data.windows("test", stride=j.cfg.data.test_stride)  # TSLib: every window (1)


def _zero_shot(j: Job) -> dict:
    return j.evaluate(j.model, "zero-shot")


def _finetune_dense(j: Job) -> dict:
    j.dense = j.model.clone()
    cfg = dataclasses.replace(j.ft_config(), distill="off")  # the dense model has no teacher
    ft = finetune(j.dense, j.train, j.val_ft, cfg, show_progress=j.show, log=j.phase_log("finetune_dense"),
                  checkpoint=j.checkpoint("finetune_dense"))
    if not j.worker:
        j.dense.save(j.work / "checkpoints" / "dense_finetuned")
    return ft.to_json()


def _restore_dense(j: Job, _result) -> None:
    if j.dense is None and (j.work / "checkpoints" / "dense_finetuned").exists():
        j.dense = j.to_device(load(j.work / "checkpoints" / "dense_finetuned"))


def _finetuned_dense_eval(j: Job) -> dict:
    metrics = j.evaluate(j.dense, "fine-tuned dense")
    j.dense = None
    return metrics


def _score(j: Job) -> dict:
    cfg = j.cfg
    search_json, calibration = None, None
    if cfg.search is not None:
        res = search(j.model, j.train, j.val, cfg.prune, cfg.search, show_progress=j.show,
                     log=j.phase_log("search"))
        j.plan, search_json = res.plan, res.to_json()
    else:
        profile = None
        if cfg.prune.budget is not None:  # FLOPs of the graph --export onnx writes (of the
            # model that is scored: the family may remove units first)
            profile = functools.partial(deployed_profile, context=cfg.data.context, horizon=cfg.data.horizon)
        bud = Budget.parse(cfg.prune.budget) if cfg.prune.budget is not None else None
        if bud is not None and bud.kind == "speedup":
            j.plan, calibration = _score_to_speedup(j, bud.value, profile)
        else:
            j.plan = score(j.model, j.train, j.val, cfg.prune, show_progress=j.show,
                           log=j.phase_log("prune"), checkpoint=j.checkpoint("score"), profile=profile)
    if not j.worker:
        j.plan.save(j.work / "plan.json")
        j.plan = Plan.load(j.work / "plan.json")
    return {"search": search_json, **({"calibration": calibration} if calibration else {})}


#: interleaved rounds per speed-up measurement (calibration and the final graph)
SPEED_ROUNDS = 30


def _score_to_speedup(j: Job, target: float, profile) -> tuple[Plan, dict | None]:
    """``--budget speedup=S`` is met in the exported graph: one scoring run stops at the
    FLOPs ladder of tsprune.export.calibrate, and rank 0 times the candidates against the
    dense graph (ONNX Runtime, batch 64, one thread, interleaved) until one is fast enough.
    A margin (calibrate.MARGIN, 2%) and a confirmation (calibrate.CONFIRM: the median of three
    timings must reach it too) leave room for timing noise in the final measurement (_onnx_latency)."""
    cands = speed_candidates(target)
    plans = score_to_budgets(j.model, j.train, j.val, j.cfg.prune, cands, show_progress=j.show,
                             log=j.phase_log("prune"), checkpoint=j.checkpoint("score"), profile=profile,
                             drop_unreachable=True)
    by = dict(zip(cands, plans))
    res = None
    if not j.worker:
        ctx, h = j.cfg.data.context, j.cfg.data.horizon
        dense, cand = _dense_graph(j), j.work / "checkpoints" / "calibrate.onnx"

        def measure(c: str, attempt: int) -> float:  # calibrate times one candidate's attempts in a row
            if attempt == 0:
                export_onnx(apply(j.model, by[c]), cand, context=ctx, horizon=h, opset=j.cfg.opset, check=False)
            return speedup_of(cand, dense, context=ctx, batch=64, threads=1, rounds=SPEED_ROUNDS, seed=attempt)

        res = calibrate(target, [c if by[c] is not None else None for c in cands], measure)
        cand.unlink(missing_ok=True)
        log = j.phase_log("prune")
        if log is not None:
            log({"calibration": res})
    pick = broadcast_int(cands.index(res["candidate"]) if res else 0)
    return by[cands[pick]], res


def _restore_plan(j: Job, _result) -> None:
    j.plan = Plan.load(j.work / "plan.json")


def _apply(j: Job) -> None:
    j.pruned = apply(j.model, j.plan)


def _pruned_eval(j: Job) -> dict:
    return j.evaluate(j.pruned, "pruned")


def _teacher_dir(j: Job):
    ck = j.checkpoint("finetune_pruned")
    return ck / "teacher" if ck is not None else None


def _teacher(j: Job) -> dict:
    """Choose the dense teacher by validation MSE at --horizon and cache its forecasts of
    the training windows fine-tuning will use (once each; resumable in checkpoints/)."""
    cfg = j.ft_config()
    candidates = {"zero_shot": j.model}
    if j.cfg.compare_finetune:
        _restore_dense(j, None)
        if j.dense is not None:
            candidates["finetuned_dense"] = j.dense
    name, scores = choose_teacher(candidates, validation_windows(j.val_ft, cfg))
    t = time.time()
    j.teacher = teacher_cache(candidates[name], training_windows(j.train, cfg), checkpoint=_teacher_dir(j),
                              show_progress=j.show)
    j.dense = None
    return {"teacher": name, "val_mse": scores, "windows": len(j.teacher), "horizon": j.teacher.horizon,
            "bytes": j.teacher.nbytes, "seconds": round(time.time() - t, 2), "key": j.teacher.key}


def _restore_teacher(j: Job, result) -> None:
    j.teacher = TeacherCache.load(_teacher_dir(j), result["key"])
    if j.teacher is None or not j.teacher.complete:
        raise UserError(f"--resume: the teacher cache in {_teacher_dir(j)} is missing or incomplete; "
                        "rerun without --resume")


def _finetune_pruned(j: Job) -> dict:
    ft = finetune(j.pruned, j.train, j.val_ft, j.ft_config(), show_progress=j.show,
                  log=j.phase_log("finetune_pruned"), checkpoint=j.checkpoint("finetune_pruned"),
                  teacher=j.teacher)
    if not j.worker:
        j.pruned.save(j.work / "checkpoints" / "pruned_finetuned")
    return ft.to_json()


def _restore_pruned(j: Job, _result) -> None:
    j.pruned = j.to_device(load(j.work / "checkpoints" / "pruned_finetuned"))


def _pruned_finetuned_eval(j: Job) -> dict:
    return j.evaluate(j.pruned, "pruned+fine-tuned")


def _samples(j: Job) -> dict:
    """A few test windows for the report's forecast plots."""
    return forecast_samples({"dense": j.model, "pruned": j.pruned}, j.test, n=4)


def _baselines(j: Job) -> dict:
    cfg, data, H = j.cfg, j.data, j.cfg.data.horizon
    out = {"seasonal_naive": _metrics(evaluate_seasonal_naive(j.test, data.season, horizons=[H]))}
    out["seasonal_naive"]["season"] = data.season
    if cfg.dlinear:
        # per-window normalisation: the DLinear that --export-model can deploy (tsprune.recommend)
        j.dlinear = train_dlinear(data, cfg.data.context, H, seed=cfg.seed, progress=j.show, instance_norm=True)
        out["dlinear"] = _metrics(evaluate_forecaster(j.dlinear, j.test, horizons=[H]))
    return out


def _recommend(j: Job) -> dict:
    """Which model to deploy, on validation at --horizon (issue 20: a baseline may win)."""
    j.rec = recommend.for_run(j.cfg, j.data, j.pruned, j.dlinear, finetuned=j.cfg.do_finetune)
    return j.rec.to_json()


def _save(j: Job) -> None:
    data = j.data
    j.pruned.save(j.work / "model", extra={"dataset": {
        "columns": list(data.columns), "mean": data.mean.tolist(), "std": data.std.tolist()}})


def _export_onnx(j: Job) -> dict:
    data = j.data
    if recommend.export_choice(j.cfg.export_model, j.rec, have_dlinear=j.cfg.dlinear) == "dlinear":
        return recommend.export_run_dlinear(j.dlinear, j.work / "model.onnx", opset=j.cfg.opset, data=data,
                                            levels=_quantile_levels(j.pruned, j.test))
    info = export_onnx(j.pruned, j.work / "model.onnx", context=j.cfg.data.context,
                       horizon=j.cfg.data.horizon, opset=j.cfg.opset, metadata={
                           "columns": list(data.columns),
                           "normalisation": "instance normalisation inside the graph; "
                                            "train z-score stats in zscore_mean/zscore_std",
                           "zscore_mean": data.mean.tolist(),
                           "zscore_std": data.std.tolist(),
                           "quantiles": list(_quantile_levels(j.pruned, j.test))})
    info["path"] = "model.onnx"
    info["model"] = "tsfm"
    return info


def _onnx_latency(j: Job) -> dict:
    out = ort_latency(j.work / "model.onnx", context=j.cfg.data.context, batches=(1, 64), budget_s=4.0)
    bud = Budget.parse(j.cfg.prune.budget) if j.cfg.prune.budget is not None else None
    if bud is not None and bud.kind == "speedup" and j.results["export_onnx"]["model"] == "tsfm":
        out["speedup"] = _measured_speedup(j, bud.value)
    return out


def _measured_speedup(j: Job, target: float, batch: int = 64) -> dict:
    """A speed-up budget is met or not in the deployed graph, not in FLOPs: the dense model
    is exported the same way and both graphs are timed interleaved in ONNX Runtime (one
    intra-op thread, batch 64, medians over speed.PASSES passes: the frontier's protocol,
    tsprune.export.speed)."""
    dense = _dense_graph(j)
    lat = timed_passes({"dense": dense, "pruned": j.work / "model.onnx"},
                       context=j.cfg.data.context, batch=batch, threads=1, rounds=SPEED_ROUNDS)
    stat = speedup_stat(lat)
    got = speedups(lat, "dense", stat)["pruned"]
    return {"target": target, "measured": round(got, 3), "met": got >= target, "batch": batch,
            "threads": 1, "dense_ms": lat["dense"][stat], "pruned_ms": lat["pruned"][stat], "stat": stat,
            "passes": pass_speedups(lat, "dense", stat)["pruned"]}


def _dense_graph(j: Job) -> Path:
    """The dense model exported as --export onnx would (removed with checkpoints/ at the end)."""
    dense = j.work / "checkpoints" / "dense.onnx"
    if not dense.exists():
        dense.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(j.model, dense, context=j.cfg.data.context, horizon=j.cfg.data.horizon,
                    opset=j.cfg.opset, check=False)
    return dense


def _wants_dense(j: Job) -> bool:
    return j.cfg.compare_finetune


def _wants_finetune(j: Job) -> bool:
    return j.cfg.do_finetune


def _wants_teacher(j: Job) -> bool:
    return j.cfg.do_finetune and any(w > 0 for w in weights(j.cfg.finetune.distill))


def _wants_onnx(j: Job) -> bool:
    return "onnx" in j.cfg.export


#: The job, in order. Workers (ranks > 0) run the phases that are not ``output``.
PHASES = (
    Phase("load", _load, persist=False),
    Phase("zero_shot", _zero_shot, output=True),
    Phase("finetune_dense", _finetune_dense, when=_wants_dense, restore=_restore_dense),
    Phase("finetuned_dense_eval", _finetuned_dense_eval, needs=("finetune_dense",), when=_wants_dense,
          output=True),
    Phase("score", _score, restore=_restore_plan),
    Phase("apply", _apply, needs=("score",), persist=False),
    Phase("pruned_eval", _pruned_eval, needs=("apply",), output=True),
    Phase("teacher", _teacher, needs=("apply",), when=_wants_teacher, restore=_restore_teacher),
    Phase("finetune_pruned", _finetune_pruned, needs=("apply",), when=_wants_finetune,
          restore=_restore_pruned),
    Phase("pruned_finetuned_eval", _pruned_finetuned_eval, needs=("finetune_pruned",),
          when=_wants_finetune, output=True),
    Phase("samples", _samples, needs=("apply",), output=True, persist=False),
    Phase("baselines", _baselines, output=True, persist=False),
    Phase("recommend", _recommend, needs=("apply", "baselines"), output=True, persist=False),
    Phase("save", _save, needs=("apply",), output=True, persist=False),
    Phase("export_onnx", _export_onnx, needs=("save", "recommend"), when=_wants_onnx, output=True,
          persist=False),
    Phase("onnx_latency", _onnx_latency, needs=("export_onnx",), when=_wants_onnx, output=True,
          persist=False),
)


def _fingerprint(cfg: RunConfig) -> dict:
    """What a resumed run must share with the interrupted one: the settings that differ
    from their defaults (tsprune.phases.settings_of) and the data file's size and time."""
    d = settings_of(cfg)
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
    resolve(cfg.model)  # cheap checks first, so that a bad --model fails before the data is read

    def finish(job: Job, timings: dict, work: Path) -> dict:
        report = _report(job, timings)
        job.rl({"metrics": report["metrics"], "baselines": report["baselines"],
                "params": report["params"], "sparsity": report["sparsity"], "timings": timings},
               phase="summary")
        write_reports(report, work)
        return report

    return run_job(PHASES, lambda work: Job(cfg, device, work=work), out=cfg.out,
                   resume=cfg.resume, fingerprint=_fingerprint(cfg), finish=finish)


def _report(j: Job, timings: dict) -> dict:
    cfg, r, data = j.cfg, j.results, j.data
    metrics = {"zero_shot": r["zero_shot"]}
    if cfg.compare_finetune:
        metrics["finetuned_dense"] = r["finetuned_dense_eval"]
    metrics["pruned"] = r["pruned_eval"]
    metrics["pruned_finetuned"] = r.get("pruned_finetuned_eval")
    onnx_info = r.get("export_onnx")
    if onnx_info is not None:
        onnx_info["latency_ms"] = r["onnx_latency"]
    plan, pruned = j.plan, j.pruned
    ft = r.get("finetune_pruned")
    return {
        "tsprune_version": __version__,
        "command": cfg.command,
        "family": j.model.family.name,
        "model": str(cfg.model),
        "data": {"path": str(cfg.data.path), "columns": list(data.columns),
                 "rows": int(len(data.values)), "split_rows": list(data.split),
                 "split": data.split_spec,
                 "freq": data.freq, "season": data.season, "context": cfg.data.context,
                 "horizon": cfg.data.horizon, "train_horizon": j.train_h, "missing": str(data.missing),
                 "notes": list(data.notes), "test_stride": cfg.data.test_stride,
                 "windows": {"train": len(j.train), "val": len(j.val), "test": len(j.test)}},
        "params": {"dense": plan.params_dense, "pruned": pruned.num_params()},
        "sparsity": 1.0 - pruned.num_params() / plan.params_dense,
        "metrics": metrics,
        "baselines": r["baselines"],
        "prune": {"config": plan.config, "best_epoch": plan.best_epoch,
                  "scope": j.model.family.prune_scope(j.model.module),
                  "history": plan.history, "extra": plan.extra,
                  "budget": plan.config.get("measured"),
                  "speedup": (r.get("onnx_latency") or {}).get("speedup"),
                  "calibration": r["score"].get("calibration")},
        "finetune": {"pruned": ft, "dense": r.get("finetune_dense")},
        "recovery": _recovery(cfg, r.get("teacher"), ft),
        "structure": {"dense": j.model.describe(), "pruned": pruned.describe()},
        "samples": r["samples"],
        "search": _search_report(r["score"]["search"], ft),
        "onnx": onnx_info,
        "recommendation": r["recommend"],
        "timings": timings,
        "versions": _versions(),
        "config": _effective_config(j, ft),
    }


def _recovery(cfg: RunConfig, teacher: dict | None, ft: dict | None) -> dict | None:
    """How the pruned model was recovered: method, and with distillation the chosen teacher
    (and its validation MSE), the mixing weights tried and the one chosen."""
    if not cfg.do_finetune:
        return None
    out = {"method": "finetune" if cfg.finetune.distill == "off" else "distill"}
    if cfg.finetune.distill != "off":
        out["distill"] = cfg.finetune.distill
    if teacher is not None:
        out.update(teacher=teacher["teacher"], teacher_val_mse=teacher["val_mse"],
                   cache={k: teacher[k] for k in ("windows", "horizon", "bytes", "seconds")},
                   weights=sorted({t["w"] for t in (ft or {}).get("trials", []) if "w" in t}),
                   weight=(ft or {}).get("distill_weight"))
    return out


def _effective_config(j: Job, ft: dict | None) -> dict:
    """The settings as they ran: the family's defaults filled in where a flag was left out."""
    cfg, fam = j.cfg, j.model.family
    prune = {**asdict(cfg.prune), "ratio": j.plan.config.get("ratio"), "max_epochs": j.plan.config["max_epochs"]}
    finetune = asdict(j.ft_config())
    finetune["epochs"] = cfg.finetune.epochs or DEFAULT_MAX_EPOCHS
    if ft is not None:
        finetune["lr"] = list(dict.fromkeys(t["lr"] for t in ft["trials"])) or [ft["lr"]]
    elif finetune["lr"] is None:
        finetune["lr"] = list(default_lr_grid(fam))
    return {"prune": prune, "finetune": finetune, "export_model": cfg.export_model, "do_finetune": cfg.do_finetune,
            "compare_finetune": cfg.compare_finetune, "seed": cfg.seed}


__all__ = ["RunConfig", "run", "default_data_path", "UserError", "PHASES", "Job"]
