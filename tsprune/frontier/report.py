"""The frontier's report: frontier.json (everything), frontier.md (tables) and
frontier.png (test MSE against measured speed-up; the dense models and the paper's plan
marked, the Pareto set joined)."""
from __future__ import annotations

import json
import platform
from pathlib import Path

from tsprune.export.speed import pass_speedups, speedup_stat

from .select import parse_pick, pareto, pick


def _mse(m: dict) -> float | None:
    return (m or {}).get("mse")


def build_report(j, timings: dict, *, versions: dict) -> dict:
    """The report of a finished frontier job (tsprune.frontier.job.FrontierJob)."""
    fc, r = j.fc, j.results
    lat = r.get("latency", {})
    main_key = f"fp32/b{fc.latency_batch}"
    refs = {"dense_zs": r["zero_shot"], "dense_ft": r["finetuned_dense_eval"]}
    points = []
    for v in (x for k, x in r.items() if k.startswith("model[")):
        p = {"name": v["name"], "criterion": v["criterion"], "recovery": v["recovery"],
             "budget": v["budget"], "mse": _mse(v["metrics"]), "mae": v["metrics"].get("mae"),
             "params": v["params"] / v["params_dense"], "params_count": v["params"],
             "flops": v.get("kept_flops"),  # of one forecast, as the plan measured it (budgets only)
             "recover_s": v["recover_s"], "teacher": v.get("teacher"),
             "val_mse": (v.get("val_metrics") or {}).get("mse"), "val_mae": (v.get("val_metrics") or {}).get("mae")}
        for key, block in lat.items():
            p[f"speedup_{key}"] = block["speedup"].get(v["name"])
            p[f"ms_{key}"] = block["latency"][v["name"]]["median_ms"]
        p["speedup"] = p.get(f"speedup_{main_key}")
        if main_key in lat:  # each pass's own ratio, for the spread behind the median
            p["speedup_passes"] = pass_speedups(lat[main_key]["latency"], "dense").get(v["name"])
        b = v["budget"]
        if b.startswith("speedup=") and p["speedup"] is not None:
            p["met"] = p["speedup"] >= float(b.split("=", 1)[1])
        points.append(p)
    timed = [p for p in points if p["speedup"] is not None and p["mse"] is not None]
    front = pareto(timed)
    for p in points:
        p["pareto"] = p["name"] in front
    chosen = None
    pick_on = None
    if fc.pick:
        # judged on validation, so that the deployed model's test score stays an honest
        # estimate; a run resumed from before validation was recorded falls back to test
        val_refs = r.get("dense_val")
        if val_refs and all(p["val_mse"] is not None for p in timed):
            view = [{**p, "mse": p["val_mse"], "mae": p["val_mae"]} for p in timed]
            c, pick_on = pick(view, parse_pick(fc.pick), val_refs), "validation"
        else:
            c, pick_on = pick(timed, parse_pick(fc.pick), refs), "test"
        chosen = c["name"] if c else None
    dense_ms = {k: b["latency"]["dense"]["median_ms"] for k, b in lat.items()}
    return {
        "command": fc.run.command, "model": str(fc.run.model), "family": j.model.family.name,
        "data": {"path": str(fc.run.data.path), "context": fc.run.data.context,
                 "horizon": fc.run.data.horizon, "test_windows": len(j.test),
                 "test_stride": fc.run.data.test_stride},
        "budgets": list(fc.budgets), "criteria": list(fc.criteria), "recoveries": list(fc.recoveries),
        "speedup_measure": {"key": main_key, "threads": fc.threads, "rounds": fc.latency_rounds,
                            "passes": lat[main_key]["latency"]["_setup"].get("passes", 1) if main_key in lat else None,
                            "stat": speedup_stat(lat[main_key]["latency"]) if main_key in lat else None,
                            "provider": "CPUExecutionProvider", "interleaved": True},
        "dense": {"params": j.model.num_params(), "zero_shot": refs["dense_zs"],
                  "finetuned": refs["dense_ft"], "latency_ms": dense_ms},
        "points": points, "pareto": front, "pick": fc.pick, "picked": chosen, "pick_on": pick_on,
        "dense_val": r.get("dense_val"),
        "calibration": {k[len("calibrate["):-1]: v for k, v in r.items() if k.startswith("calibrate[")},
        "timings": timings, "machine": {"platform": platform.platform(),
                                        "processor": platform.processor() or platform.machine()},
        "versions": versions,
    }


def _passes_words(measure: dict) -> str:
    n = measure.get("passes") or 1
    return f"; medians over {n} independent passes" if n > 1 else ""


def _pick_basis(rep: dict) -> str:
    """What `--pick` compared: the validation windows (MSE of the picked model and of the dense
    fine-tuned one there), or, for a run recorded before that, the test metrics."""
    if rep.get("pick_on") != "validation":
        return "the test metrics"
    ft = (rep.get("dense_val") or {}).get("dense_ft", {})
    words = f"the {ft.get('windows', '?')} validation windows fine-tuning validates on (dense FT MSE {_f(ft.get('mse'))}"
    p = next((p for p in rep["points"] if p["name"] == rep.get("picked")), None)
    return words + (f", picked {_f(p['val_mse'])})" if p else ")")


def _f(x, fmt="{:.4f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(rep: dict) -> str:
    d = rep["dense"]
    key = rep["speedup_measure"]["key"]
    lines = [f"# Frontier: {rep['model']} ({rep['family']}) on {Path(rep['data']['path']).name}", "",
             f"Command: `{rep['command']}`", "",
             f"Horizon {rep['data']['horizon']}, context {rep['data']['context']}, "
             f"{rep['data']['test_windows']} test windows. Speed-up: ONNX Runtime latency of the "
             f"dense graph over the pruned graph's (median CPU time per run at one thread, which other "
             f"processes cannot inflate; wall medians otherwise; latencies below are wall medians), {rep['speedup_measure']['threads']} thread(s), "
             f"interleaved (at least {rep['speedup_measure']['rounds']} rounds and 3 s per batch size"
             f"{_passes_words(rep['speedup_measure'])}), "
             f"{key} for the Pareto set.", "",
             f"Dense: {d['params']:,} params; test MSE zero-shot {_f(_mse(d['zero_shot']))}, "
             f"fine-tuned {_f(_mse(d['finetuned']))}; latency (ms) "
             + ", ".join(f"{k} {v:.2f}" for k, v in d["latency_ms"].items()), "",
             "| model | budget | params kept | FLOPs kept | test MSE | vs dense FT | MAE | speed-up fp32 b1 | "
             f"fp32 b{key.split('/b')[1]} | int8 b1 | int8 b{key.split('/b')[1]} | met | Pareto | recovery s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|---:|"]
    b = key.split("/b")[1]
    ft = _mse(d["finetuned"])
    for p in sorted(rep["points"], key=lambda p: (p["criterion"], p["recovery"], -(p["params"] or 0))):
        rel = None if (p["mse"] is None or not ft) else (p["mse"] / ft - 1) * 100
        lines.append(
            f"| {p['name']} | {p['budget']} | {p['params']:.1%} | {_f(p.get('flops'), '{:.1%}')} | {_f(p['mse'])} | {_f(rel, '{:+.1f}%')} | "
            f"{_f(p['mae'])} | {_f(p.get('speedup_fp32/b1'), '{:.2f}x')} | {_f(p.get(f'speedup_fp32/b{b}'), '{:.2f}x')} | "
            f"{_f(p.get('speedup_int8/b1'), '{:.2f}x')} | {_f(p.get(f'speedup_int8/b{b}'), '{:.2f}x')} | "
            f"{'' if 'met' not in p else ('yes' if p['met'] else 'NO')} | {'*' if p['pareto'] else ''} | "
            f"{p['recover_s']:.0f} |")
    lines += ["", f"Pareto set (fastest first): {', '.join(rep['pareto']) or '-'}"]
    if rep["pick"]:
        lines.append(f"`--pick {rep['pick']}`, judged on {_pick_basis(rep)}: {rep['picked'] or 'no model satisfies it'}"
                     + (" (copied to deploy/)" if rep["picked"] else ""))
    lines += ["", "Phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in rep["timings"].items()), ""]
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> bool:
    """frontier.png: test MSE against measured speed-up. False when nothing to draw."""
    pts = [p for p in rep["points"] if p["speedup"] is not None and p["mse"] is not None]
    if not pts:
        return False
    from tsprune.report.charts import DENSE, PRUNED, _figure, _style  # lazy: the tsprune.report package loads torch
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(111)
    _style(ax)
    groups: dict = {}
    for p in pts:
        groups.setdefault((p["criterion"], p["recovery"]), []).append(p)
    markers = "osD^v<>"
    for i, ((c, r), ps) in enumerate(sorted(groups.items())):
        ps = sorted(ps, key=lambda p: p["speedup"])
        ax.plot([p["speedup"] for p in ps], [p["mse"] for p in ps], marker=markers[i % len(markers)],
                linestyle="-" if c != "paper" else "none", label=f"{c} + {r}", markersize=6)
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["speedup"])
    ax.plot([p["speedup"] for p in front], [p["mse"] for p in front], color=PRUNED, linewidth=3,
            alpha=0.25, label="Pareto set")
    d = rep["dense"]
    for m, style, label in ((d["zero_shot"], ":", "dense zero-shot"), (d["finetuned"], "--", "dense fine-tuned")):
        if _mse(m) is not None:
            ax.axhline(_mse(m), color=DENSE, linestyle=style, linewidth=1.2, label=label)
    ax.scatter([1.0], [_mse(d["finetuned"])], color=DENSE, zorder=5)
    ax.set_xlabel(f"measured speed-up vs dense ({rep['speedup_measure']['key']}, ONNX Runtime)")
    ax.set_ylabel("test MSE")
    ax.legend(fontsize=7, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
    return True


def write_report(rep: dict, work: Path) -> None:
    (work / "frontier.json").write_text(json.dumps(rep, indent=1) + "\n")
    if plot(rep, work / "frontier.png"):
        rep_md = markdown(rep) + "\n![MSE against measured speed-up](frontier.png)\n"
    else:
        rep_md = markdown(rep)
    (work / "frontier.md").write_text(rep_md)
