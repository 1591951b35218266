"""report.json (stable, documented keys), report.md and report.html (for a person).

Stable keys of report.json:
  params.dense, params.pruned            parameter counts
  sparsity                               1 - params.pruned / params.dense
  metrics.zero_shot / pruned / pruned_finetuned / finetuned_dense
                                         {mse, mae, windows, by_horizon} on z-scored test
                                         windows (finetuned_dense only with
                                         --compare-finetune; pruned_finetuned is null with
                                         --no-finetune)
  baselines.seasonal_naive, baselines.dlinear   {mse, mae, ...}
  onnx.max_abs_err                       parity of the exported graph vs torch
  onnx.latency_ms."1" / ."64"            {median_ms, min_ms, runs} ORT CPU latency per batch
                                         size (with threads, provider)
  structure.dense / pruned               Family.describe() rows, one per layer
  prune.extra                            family units removed before channel pruning (Time-MoE:
                                         experts {threshold, tokens, frequency, removed} per layer)
  prune.history                          step records {epoch, step, train_loss, sparsity,
                                         alive_channels, ...}, epoch records {epoch, val_loss,
                                         sparsity, alive_channels}
  samples                                a few test windows: {horizon, history, units,
                                         windows: [{column, row, context, truth}],
                                         forecasts: {dense|pruned: {point, levels, quantiles}}}
  search                                 optional; rendered generically when present
  recommendation                         {deploy, best, val_mse: {tsfm, dlinear, seasonal_naive},
                                         tsfm_label, windows, horizon, headline}: the model to
                                         deploy by validation MSE (tsprune.recommend); its
                                         headline is report.md's first line
  onnx.model                             which model model.onnx holds: tsfm or dlinear
  recovery                               null with --no-finetune, else {method: finetune |
                                         distill}; with distill also teacher (zero_shot |
                                         finetuned_dense), teacher_val_mse {name: MSE},
                                         distill (the flag), weights (tried), weight (chosen),
                                         cache {windows, horizon, bytes, seconds}
  command, versions                      the exact command line and package versions
  timings                                seconds per phase, and total
"""
from __future__ import annotations

import json
from pathlib import Path

from .html import render_html


def _fmt(x, nd=4):
    return "-" if x is None else f"{x:.{nd}f}"


def _trial(t: dict) -> str:
    w = f" w {t['w']:g}" if "w" in t else ""
    return f"lr {t['lr']:g}{w}{' probe' if 'probe_steps' in t else ''}: {t['val_loss']:.4f}"


def render_markdown(r: dict) -> str:
    m, b = r["metrics"], r["baselines"]
    rec = r.get("recommendation")
    lines = [f"**{rec['headline']}**", ""] if rec else []
    lines += [f"# tsprune report: {r['family']} on {Path(r['data']['path']).name}", ""]
    lines += [f"`{r['command']}`" if r.get("command") else "", ""]
    d = r["data"]
    lines += [f"Data: {d['rows']} rows x {len(d['columns'])} channels ({', '.join(d['columns'])}), "
              f"frequency {d['freq']}, split rows {d['split_rows']}, context {d['context']}, "
              f"horizon {d['horizon']}; windows train {d['windows']['train']}, val "
              f"{d['windows']['val']}, test {d['windows']['test']}. Missing values: {d['missing']}.", ""]
    lines += [f"- Note: {n}" for n in d.get("notes") or []] + ([""] if d.get("notes") else [])
    lines += ["## Accuracy (z-scored test windows)", "", "| model | params | MSE | MAE |", "|---|---:|---:|---:|"]
    pd, pp = r["params"]["dense"], r["params"]["pruned"]
    rows = [("zero-shot (dense)", pd, m.get("zero_shot")),
            ("fine-tuned dense", pd, m.get("finetuned_dense")),
            ("pruned", pp, m.get("pruned")),
            ("pruned + fine-tuned", pp, m.get("pruned_finetuned")),
            ("seasonal naive", None, b.get("seasonal_naive")),
            ("DLinear", None, b.get("dlinear"))]
    for name, n, v in rows:
        if v is None:
            continue
        lines.append(f"| {name} | {'' if n is None else f'{n:,}'} | {_fmt(v['mse'])} | {_fmt(v['mae'])} |")
    lines += ["", f"Sparsity: {r['sparsity']:.1%} of parameters removed ({pd:,} -> {pp:,}).", ""]
    pc = r["prune"]["config"]
    lines += ["## Pruning", "",
              f"ratio r={pc['ratio']}, EMA alpha={pc['ema']}, macro-batch {pc['macro_batch_effective']} "
              f"({pc['steps_per_epoch']} steps/epoch), max epochs {pc['max_epochs']}, scorer "
              f"{pc['scorer']}, best epoch {r['prune']['best_epoch']}, best validation loss "
              f"{_fmt(pc.get('best_val_loss'))}.", ""]
    if r["prune"].get("scope"):
        lines += [f"Pruned units: {r['prune']['scope']}.", ""]
    bud = pc.get("measured")
    if bud:
        lines += [budget_line(bud, pc), ""]
    cal = r["prune"].get("calibration")
    if cal:
        lines += [calibration_line(cal), ""]
    sp = r["prune"].get("speedup")
    if sp:
        lines += [speedup_line(sp), ""]
    ep = [h for h in r["prune"]["history"] if "val_loss" in h]
    if ep:
        lines += ["| epoch | val loss | sparsity | alive channels |", "|---:|---:|---:|---:|"]
        lines += [f"| {h['epoch']} | {_fmt(h['val_loss'])} | {h['sparsity']:.3f} | {h['alive_channels']} |"
                  for h in ep]
        lines.append("")
    ex = (r["prune"].get("extra") or {}).get("experts")
    if ex:  # MoE experts deleted by routing frequency before channel pruning
        lines += [f"Experts removed by routing frequency (<= {ex['threshold']:g} of {ex['tokens']:,} "
                  "train+val tokens):", "", "| layer | removed | frequency per expert |", "|---:|---|---|"]
        for layer, ids in sorted(ex["removed"].items(), key=lambda t: int(t[0])):
            freq = ", ".join(f"{f:.3f}" for f in ex["frequency"].get(layer, []))
            lines.append(f"| {layer} | {', '.join(map(str, ids)) or 'none'} | {freq} |")
        lines.append("")
    srch = r.get("search")
    if srch:
        ch, g = srch["chosen"], srch["grids"]
        lines += ["## Search", "",
                  f"grids: ratio {g.get('ratio')}, EMA alpha {g.get('ema')}, lr {g.get('lr', '-')} "
                  f"({g.get('calib_samples')} train / {g.get('val_samples')} validation windows per trial); "
                  f"chosen r={ch['ratio']}, alpha={ch['ema']}" + (f", lr={ch['lr']:g}" if ch.get("lr") else "")
                  + f" ({srch['seconds']:.0f} s).", "",
                  "| ratio | alpha | val loss (pruned) | sparsity |", "|---:|---:|---:|---:|"]
        lines += [f"| {t['ratio']} | {t['ema']} | {_fmt(t['val_loss'])} | {t['sparsity']:.3f} |"
                  for t in srch["trials"]]
        lines.append("")
    lines += ["## Structure (per layer, dense -> pruned)", ""]
    dense, pruned = r["structure"]["dense"], r["structure"]["pruned"]
    if dense:
        keys = [k for k in dense[0] if k != "layer"]
        lines += ["| layer | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
        for a, p in zip(dense, pruned):
            lines.append(f"| {a['layer']} | " + " | ".join(
                f"{a.get(k, '-')} -> {p.get(k, 0)}" for k in keys) + " |")
        lines.append("")
    ft = r["finetune"]["pruned"]
    if ft:
        how = ""
        if ft.get("stopped"):
            how = (f", {ft.get('steps_run')} steps, best at step {ft.get('best_step')}, stopped by "
                   f"{ft['stopped']}; validation {ft.get('val_metric')} at horizon {ft.get('val_horizon')}"
                   + (" (rolled out)" if ft.get("rolled_out") else ""))
        lines += ["## Fine-tuning (pruned model)", "",
                  f"chosen lr {ft['lr']:g} (validation {ft['val_loss_before']:.4f} -> {ft['val_loss']:.4f}), "
                  f"{ft['epochs_run']} epoch(s){how}; trials: " +
                  ", ".join(_trial(t) for t in ft["trials"]), ""]
        rc = r.get("recovery") or {}
        if rc.get("method") == "distill":
            tv = ", ".join(f"{k} {v:.4f}" for k, v in rc["teacher_val_mse"].items())
            w = rc.get("weight")
            lines += [f"Recovery by distillation: teacher {rc['teacher']} (validation MSE {tv}), "
                      f"mixing weight {'-' if w is None else f'{w:g}'} (--distill {rc['distill']}, tried "
                      f"{', '.join(f'{x:g}' for x in rc['weights'])}); teacher forecasts of "
                      f"{rc['cache']['windows']:,} windows ({rc['cache']['bytes'] / 1e6:.1f} MB) "
                      f"in {rc['cache']['seconds']:.1f} s.", ""]
    if r.get("onnx"):
        o = r["onnx"]
        held = {"dlinear": " (the DLinear baseline, as recommended)", "tsfm": " (the pruned TSFM)"}
        lines += ["## ONNX", "", f"`{o['path']}`{held.get(o.get('model'), '')}: opset {o['opset']}, "
                  f"{o['bytes'] / 1e6:.2f} MB, "
                  f"max abs error vs torch {o['max_abs_err']:.2e} on {o['providers']}.", ""]
        lat = o.get("latency_ms") or {}
        per_b = [f"batch {b}: {v['median_ms']:.2f} ms" for b, v in lat.items() if str(b).isdigit()]
        if per_b:
            lines += [f"ORT CPU latency (median, {lat.get('threads', '?')} threads): "
                      + ", ".join(per_b) + ".", ""]
    lines += ["## Timings (s)", "", "| phase | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["timings"].items()]
    lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in r["versions"].items()), ""]
    return "\n".join(lines)


def write_reports(report: dict, out_dir: str | Path) -> None:
    """report.json, report.md and report.html in ``out_dir``."""
    out = Path(out_dir)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "report.md").write_text(render_markdown(report))
    (out / "report.html").write_text(render_html(report), encoding="utf-8")


def calibration_line(cal: dict) -> str:
    """One sentence on how a speed-up budget chose the FLOPs kept (tsprune.export.calibrate)."""
    tried = ", ".join(f"{t['candidate']} {t['speedup']:.2f}x" for t in cal["calibration"])
    end = (f"chose {cal['candidate']}" if cal["met"] else
           f"none was fast enough: chose the fastest, {cal['candidate']} (the units pruned cannot remove "
           f"the rest of this model's work; where the family has them, --prune-hidden and --drop-blocks "
           f"remove more: docs/families.md)")
    return f"Speed-up calibration (candidates exported and timed against the dense graph): {tried}; {end}."


def _stat_words(sp: dict) -> str:
    words = ", median CPU time per run" if sp.get("stat") == "cpu_median_ms" else ""
    if len(sp.get("passes") or ()) > 1:
        words += (f", medians over {len(sp['passes'])} passes that read "
                  + " / ".join(f"{x:.2f}x" for x in sp["passes"]))
    return words


def speedup_line(sp: dict) -> str:
    """One sentence on a speed-up budget: met or not, measured in the deployed graph."""
    met = "met" if sp["met"] else "not met (see the calibration above)"
    return (f"Speed-up of the exported graph over the dense one, measured in ONNX Runtime "
            f"(batch {sp['batch']}, {sp['threads']} thread, interleaved{_stat_words(sp)}): {sp['measured']:.2f}x "
            f"({sp['dense_ms']:.1f} ms -> {sp['pruned_ms']:.1f} ms); target {sp['target']:g}x {met}.")


def budget_line(bud: dict, pc: dict) -> str:
    """One sentence on a budget run: the budget and the measured kept fractions."""
    flops = "" if bud.get("kept_flops") is None else f", FLOPs {bud['kept_flops']:.4f}"
    return (f"Budget {bud['budget']} ({bud['measure']}, criterion {pc.get('criterion')}, "
            f"{'cost-aware' if pc.get('cost_aware', True) else 'by importance alone'}): kept parameters "
            f"{bud['kept_params']:.4f}{flops} of the dense model (FLOPs of one forecast, "
            f"{(bud.get('profile') or {}).get('source')}, context {(bud.get('profile') or {}).get('context')}, "
            f"horizon {(bud.get('profile') or {}).get('horizon')})." + _align_text(bud.get("align")))


def _align_text(al: dict | None) -> str:
    if not al:
        return ""
    w = ", ".join(f"{a}->{b}" if a != b else str(a) for a, b in al["widths"])
    return (f" FFN widths rounded to multiples of {al['multiple']} ({al['rounded_down']} down, "
            f"{al['rounded_up']} up; kept neurons per block: {w}).")
