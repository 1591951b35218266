"""`tsprune prune --frontier speedup=1.5,2,3,4`: one pruned, recovered and exported model per
budget, each measured (test MSE/MAE, ONNX Runtime latency at batch 1 and --latency-batch,
fp32 and int8), the Pareto set marked, a report, and the model that ``--pick`` chooses.

The job is a declaration of phases (tsprune.phases), so it resumes like `reproduce`:

    load -> zero_shot -> finetune_dense -> finetuned_dense_eval -> dense_graphs
    -> plans[criterion]       one scoring run down to every candidate budget
    -> calibrate[criterion]   speedup budgets: export candidates and time them against the
                              dense graph until the measured speed-up meets the budget
    -> model[criterion/recovery/budget] ... recover, evaluate, save, export fp32 + int8
    -> latency -> report

A speed-up budget is met as measured, not as assumed: the engine prunes to the FLOPs
fraction 1/S first; when the exported graph's measured speed-up (interleaved ONNX Runtime
timing at --latency-batch, --latency-threads) falls short, the next tighter candidate of
the same scoring run is tried (tsprune.export.calibrate: FLOPs x 0.93, 0.87, ... 0.35). Params and FLOPs budgets
are met exactly by the engine and need no calibration.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tsprune.errors import bad_arg
from tsprune.export import export_onnx
from tsprune.export.calibrate import calibrate
from tsprune.export.calibrate import candidates as speed_candidates
from tsprune.export.profile import deployed_profile
from tsprune.export.speed import speedup_of, speedups, timed_passes
from tsprune.export.variants import quantize_int8
from tsprune.model import resolve
from tsprune.phases import Phase, run_job, settings_of
from tsprune.evaluation import evaluate
from tsprune.pipeline import (Job, RunConfig, _finetune_dense, _finetuned_dense_eval, _fingerprint,
                              _load, _metrics, _quantile_levels, _restore_dense, _restore_teacher, _teacher,
                              _versions, _zero_shot)
from tsprune.prune import Plan, apply, score
from tsprune.prune.budget import Budget
from tsprune.prune.to_budget import score_to_budgets
from tsprune.train import finetune
from tsprune.train.finetune import validation_windows

from .report import build_report, write_report
from .select import parse_pick

CRITERIA = ("taylor_fisher", "taylor", "magnitude")
RECOVERIES = ("finetune", "distill")


@dataclass(frozen=True)
class FrontierConfig:
    """A frontier job: the prune job's settings (``run``) plus, per flag:
    budgets (--frontier), criteria (--criteria), recoveries (--recover), pick (--pick),
    latency_batch (--latency-batch), threads (--latency-threads), int8 (--no-int8 off),
    paper (--no-paper-plan off: also the paper's validation-stopped plan, one point)."""

    run: RunConfig
    budgets: tuple[str, ...] = ("speedup=1.5", "speedup=2", "speedup=3", "speedup=4")
    criteria: tuple[str, ...] = ("taylor_fisher",)
    recoveries: tuple[str, ...] = ("finetune",)
    pick: str | None = None
    latency_batch: int = 64
    threads: int = 1
    int8: bool = True
    latency_rounds: int = 30
    paper: bool = True

    def __post_init__(self):
        bs = [Budget.parse(b) for b in self.budgets]
        if not bs:
            raise bad_arg("--frontier", "", "one or more budgets, e.g. speedup=1.5,2,3")
        if len({b.measure for b in bs}) > 1:
            raise bad_arg("--frontier", ",".join(self.budgets),
                          "budgets of one measure: params=..., or flops=... / speedup=...")
        object.__setattr__(self, "budgets", tuple(str(b) for b in bs))
        # the dense model is always fine-tuned: it is the reference and a teacher candidate
        object.__setattr__(self, "run", dataclasses.replace(self.run, compare_finetune=True))
        # plain fine-tuning first: distillation then gets its measured wall time (equal time)
        object.__setattr__(self, "recoveries", tuple(sorted(set(self.recoveries), key=RECOVERIES.index)))
        for c in self.criteria:
            if c not in CRITERIA:
                raise bad_arg("--criteria", c, " or ".join(CRITERIA))
        for r in self.recoveries:
            if r not in RECOVERIES:
                raise bad_arg("--recover", r, " or ".join(RECOVERIES))
        if self.pick is not None:
            parse_pick(self.pick)
        if int(self.latency_batch) < 1:
            raise bad_arg("--latency-batch", self.latency_batch, "an integer >= 1")
        if int(self.threads) < 1:
            raise bad_arg("--latency-threads", self.threads, "an integer >= 1")
        if int(self.latency_rounds) < 3:
            raise bad_arg("--latency-rounds", self.latency_rounds, "an integer >= 3")


def budget_list(text: str) -> tuple[str, ...]:
    """'speedup=1.5,2,3' or 'speedup=1.5,speedup=2' -> ('speedup=1.5', 'speedup=2', ...)."""
    out, kind = [], None
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            kind = part.split("=", 1)[0].strip()
        elif kind is None:
            raise bad_arg("--frontier", text, "budgets like speedup=1.5,2,3 or params=0.5,0.3")
        else:
            part = f"{kind}={part}"
        out.append(str(Budget.parse(part)))
    if not out:
        raise bad_arg("--frontier", text, "budgets like speedup=1.5,2,3 or params=0.5,0.3")
    return tuple(out)


def _slug(text: str) -> str:
    return text.replace("=", "").replace(".", "p")


class FrontierJob(Job):
    """The prune job's state (tsprune.pipeline.Job) plus the frontier's plans and points."""

    def __init__(self, fc: FrontierConfig, device=None, *, work: Path):
        super().__init__(fc.run, device, work=work)
        self.fc = fc

    @property
    def context(self) -> int:
        return self.cfg.data.context


# ---- phases -----------------------------------------------------------------------------

def _export(j: FrontierJob, model, name: str, *, check: bool = True) -> dict:
    """Export ``model`` to graphs/NAME.onnx (+ NAME.int8.onnx); returns paths and parity."""
    d = j.work / "graphs"
    d.mkdir(exist_ok=True)
    info = export_onnx(model, d / f"{name}.onnx", context=j.context, horizon=j.cfg.data.horizon,
                       opset=j.cfg.opset, check=check, dynamic_context=False,
                       metadata={"quantiles": list(_quantile_levels(model, j.test))})
    out = {"fp32": f"graphs/{name}.onnx", "max_abs_err": info.get("max_abs_err")}
    if j.fc.int8:
        quantize_int8(d / f"{name}.onnx", d / f"{name}.int8.onnx")
        out["int8"] = f"graphs/{name}.int8.onnx"
    return out


def _val_metrics(j: FrontierJob, model, desc: str) -> dict:
    """MSE and MAE on the validation windows fine-tuning validates on: what `--pick` judges
    (choosing the deployed model by its test score would report that score optimistically)."""
    return _metrics(evaluate(model, validation_windows(j.val_ft, j.ft_config()), desc=desc,
                             show_progress=j.show))


def _dense_val(j: FrontierJob) -> dict:
    """The dense references of `--pick` on validation: zero-shot and fine-tuned."""
    _restore_dense(j, None)
    return {"dense_zs": _val_metrics(j, j.model, "zero-shot (validation)"),
            "dense_ft": _val_metrics(j, j.dense, "fine-tuned dense (validation)")}


def _dense_graphs(j: FrontierJob) -> dict:
    return _export(j, j.model, "dense")


def _candidates(fc: FrontierConfig) -> list[str]:
    """Every budget the scoring run stops at: the budgets, and for speed-up budgets the
    tighter FLOPs fractions that calibration may need."""
    out: list[str] = []
    for b in map(Budget.parse, fc.budgets):
        if b.kind == "speedup":
            out += speed_candidates(b.value)
        else:
            out.append(str(b))
    return sorted(set(out), key=lambda s: -Budget.parse(s).fraction)


def _plans(criterion: str):
    def run(j: FrontierJob) -> dict:
        cands = _candidates(j.fc)
        cfg = dataclasses.replace(j.cfg.prune, criterion=criterion, budget=None)
        plans = score_to_budgets(j.model, j.train, j.val, cfg, cands, show_progress=j.show,
                                 log=j.phase_log(f"plans_{criterion}"),
                                 checkpoint=j.checkpoint(f"plans_{criterion}"),
                                 profile=functools.partial(deployed_profile, context=j.context,
                                                           horizon=j.cfg.data.horizon),
                                 drop_unreachable=True)
        d = j.work / "plans" / criterion
        d.mkdir(parents=True, exist_ok=True)
        out = {}
        for c, plan in zip(cands, plans):
            if plan is None:  # tighter than the model can be pruned (a calibration step)
                continue
            plan.save(d / f"{_slug(c)}.json")
            out[c] = f"plans/{criterion}/{_slug(c)}.json"
        return out
    return run


def _calibrate(criterion: str):
    def run(j: FrontierJob) -> dict:
        plans = j.results[f"plans[{criterion}]"]
        dense = j.results["dense_graphs"]["fp32"]
        graphs: dict[str, Path] = {}  # candidate -> its exported graph

        def measure(cand: str, attempt: int) -> float:
            if attempt == 0:
                model = apply(j.model, Plan.load(j.work / plans[cand]))
                graphs[cand] = j.work / _export(j, model, f"calib-{criterion}-{_slug(cand)}", check=False)["fp32"]
            return speedup_of(graphs[cand], j.work / dense, context=j.context, batch=j.fc.latency_batch,
                              threads=j.fc.threads, rounds=j.fc.latency_rounds, seed=attempt)

        chosen: dict = {}
        for b in map(Budget.parse, j.fc.budgets):
            if b.kind != "speedup":
                chosen[str(b)] = {"candidate": str(b), "plan": plans[str(b)]}
                continue
            res = calibrate(b.value, [c if plans.get(c) else None for c in speed_candidates(b.value)], measure)
            chosen[str(b)] = {**res, "plan": plans[res["candidate"]]}
        for p in (j.work / "graphs").glob("calib-*"):
            p.unlink()
        return chosen
    return run


def _paper_plan(j: FrontierJob) -> dict:
    """The paper's own plan: the validation-stopped schedule, no budget (METHOD.md s.3)."""
    plan = score(j.model, j.train, j.val, dataclasses.replace(j.cfg.prune, budget=None, drop_blocks=0),
                 show_progress=j.show, log=j.phase_log("plans_paper"),
                 checkpoint=j.checkpoint("plans_paper"))
    (j.work / "plans").mkdir(exist_ok=True)
    plan.save(j.work / "plans" / "paper.json")
    return {"paper": {"candidate": "validation-stopped", "plan": "plans/paper.json"}}


def _point(criterion: str, recovery: str, budget: str):
    name = f"{criterion}-{recovery}" if budget == "paper" else f"{criterion}-{recovery}-{_slug(budget)}"

    def run(j: FrontierJob) -> dict:
        choice = j.results[f"calibrate[{criterion}]"][budget]  # criterion "paper": plans[paper]
        plan = Plan.load(j.work / choice["plan"])
        model = apply(j.model, plan)
        t0 = time.time()
        # distill: the mixing weight is probed on validation like the rate ("auto"), unless
        # the prune flags fixed one; the teacher's forecasts are cached once (phase teacher)
        fixed = j.cfg.finetune.distill
        cfg = dataclasses.replace(j.ft_config(), distill=("auto" if fixed == "off" else fixed)
                                  if recovery == "distill" else "off")
        plain = j.results.get(f"model[{name.replace('-distill', '-finetune', 1)}]")
        if recovery == "distill" and plain is not None and cfg.time_budget_s is None:
            # compared at equal wall time: as long as plain fine-tuning of the same plan took
            cfg = dataclasses.replace(cfg, time_budget_s=plain["recover_s"])
        ft = finetune(model, j.train, j.val_ft, cfg, show_progress=j.show, log=j.phase_log(name),
                      checkpoint=j.checkpoint(name), teacher=j.teacher if recovery == "distill" else None)
        recover_s = round(time.time() - t0, 2)
        metrics = j.evaluate(model, name)
        val = _val_metrics(j, model, f"{name} (validation)")
        model.save(j.work / "models" / name)
        graphs = _export(j, model, name)
        return {"name": name, "criterion": criterion, "recovery": recovery, "budget": budget,
                "candidate": choice["candidate"], "calibration": choice.get("calibration"),
                "params": model.num_params(), "params_dense": plan.params_dense,
                "kept_flops": (plan.config.get("measured") or {}).get("kept_flops"),
                "metrics": metrics, "val_metrics": val, "finetune": ft.to_json(), "recover_s": recover_s,
                "teacher": j.results["teacher"]["teacher"] if recovery == "distill" else None,
                "graphs": graphs}
    return name, run


def _latency(j: FrontierJob) -> dict:
    """Every graph, interleaved with the dense one: fp32 and int8, batch 1 and --latency-batch,
    medians over speed.PASSES independent passes."""
    graphs = {"dense": j.results["dense_graphs"]}
    graphs.update({r["name"]: r["graphs"] for r in _points(j)})
    out: dict = {}
    for prec in ("fp32", "int8") if j.fc.int8 else ("fp32",):
        for batch in sorted({1, j.fc.latency_batch}):
            paths = {k: j.work / g[prec] for k, g in graphs.items()}
            lat = timed_passes(paths, context=j.context, batch=batch, threads=j.fc.threads,
                               rounds=j.fc.latency_rounds)
            out[f"{prec}/b{batch}"] = {"latency": lat, "speedup": speedups(lat, "dense")}
    return out


def _points(j: FrontierJob) -> list[dict]:
    return [v for k, v in j.results.items() if k.startswith("model[")]


def phases(fc: FrontierConfig) -> tuple[Phase, ...]:
    """The frontier job, in order (see the module docstring)."""
    ph = [
        Phase("load", _load, persist=False),
        Phase("zero_shot", _zero_shot, output=True),
        Phase("finetune_dense", _finetune_dense, restore=_restore_dense),
        Phase("dense_val", _dense_val, needs=("finetune_dense",)),
        Phase("finetuned_dense_eval", _finetuned_dense_eval, needs=("finetune_dense",), output=True),
        Phase("dense_graphs", _dense_graphs, output=True),
        # the teacher: zero-shot or fine-tuned dense, by validation; its forecasts cached once
        Phase("teacher", _teacher, needs=("finetune_dense",), when=lambda j: "distill" in j.fc.recoveries,
              restore=_restore_teacher),
    ]
    for c in fc.criteria:
        ph.append(Phase(f"plans[{c}]", _plans(c)))
        ph.append(Phase(f"calibrate[{c}]", _calibrate(c), needs=(f"plans[{c}]", "dense_graphs")))
        for r in fc.recoveries:
            for b in fc.budgets:
                name, run = _point(c, r, b)
                ph.append(Phase(f"model[{name}]", run, needs=(f"calibrate[{c}]", "finetune_dense")
                                 + (("teacher",) if r == "distill" else ())))
    if fc.paper:
        ph.append(Phase("calibrate[paper]", _paper_plan))
        for r in fc.recoveries:
            name, run = _point("paper", r, "paper")
            ph.append(Phase(f"model[{name}]", run, needs=("calibrate[paper]", "finetune_dense")
                            + (("teacher",) if r == "distill" else ())))
    ph.append(Phase("latency", _latency, needs=("dense_graphs",), output=True))
    return tuple(ph)


# ---- the job ----------------------------------------------------------------------------

def _fingerprint_of(fc: FrontierConfig) -> dict:
    d = _fingerprint(fc.run)
    d["frontier"] = {k: v for k, v in settings_of(fc).items() if k != "run"}
    return d


def run(fc: FrontierConfig, device=None) -> dict:
    """Run the frontier job into ``fc.run.out``; returns the report (also frontier.json/.md)."""
    cfg = fc.run
    resolve(cfg.model)

    def finish(job: FrontierJob, timings: dict, work: Path) -> dict:
        report = build_report(job, timings, versions=_versions())
        write_report(report, work)
        if report.get("picked"):
            _deploy(work, report["picked"])
        return report

    return run_job(phases(fc), lambda work: FrontierJob(fc, device, work=work), out=cfg.out,
                   resume=cfg.resume, fingerprint=_fingerprint_of(fc), finish=finish)


def _deploy(work: Path, name: str) -> None:
    """deploy/: the picked model's directory and graphs, under fixed names."""
    d = work / "deploy"
    d.mkdir(exist_ok=True)
    shutil.copytree(work / "models" / name, d / "model")
    for suffix in (".onnx", ".int8.onnx"):
        src = work / "graphs" / f"{name}{suffix}"
        if src.exists():
            shutil.copy2(src, d / f"model{suffix}")
    (d / "PICKED.json").write_text(json.dumps({"picked": name}) + "\n")


__all__ = ["FrontierConfig", "budget_list", "phases", "run"]
