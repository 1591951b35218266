"""report.html: one self-contained page (inline CSS, charts as base64 PNG; no scripts,
no network) rendered from the report dict of `tsprune prune` (see writer.py for keys).

Sections, each skipped when its data is absent: summary, accuracy per horizon against
the baselines (best per column highlighted), forecasts of sample test windows, per-layer
structure dense vs pruned, the pruning curve, fine-tuning, size and ONNX Runtime latency,
the search (rendered generically), data, timings, and the command and versions.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

from . import charts

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 "DejaVu Sans","Liberation Sans",Helvetica,Arial,sans-serif;color:#1d232a;
 background:#f5f6f8;margin:0}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid #e3e6ea}
.sub{color:#5f6b76;margin:0 0 12px}
.note{color:#5f6b76;font-size:12px;margin:4px 0 8px}
code,pre{font:12px/1.4 "DejaVu Sans Mono","Liberation Mono",Menlo,monospace}
pre{background:#f3f4f6;border:1px solid #e3e6ea;border-radius:4px;padding:8px 10px;
 white-space:pre-wrap;word-break:break-all;margin:6px 0}
table{border-collapse:collapse;margin:6px 0 4px;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #eceef1;text-align:right;white-space:nowrap}
th{background:#f7f8fa;font-weight:600;color:#38424c}
td.l,th.l{text-align:left}
tr.sep td{border-top:2px solid #d5d9de}
td.best{background:#dff3e4;font-weight:700;color:#135c2b}
.muted{color:#8a949e}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0 4px}
.card{flex:1 1 180px;border:1px solid #e3e6ea;border-radius:6px;padding:8px 12px;background:#fbfcfd}
.card .k{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#6b7580}
.card .v{font-size:18px;font-weight:600;margin-top:2px}
.card .d{font-size:12px;color:#5f6b76}
img.chart{display:block;max-width:100%;height:auto;margin:6px 0}
details{margin:6px 0}
summary{cursor:pointer;color:#3b6fb6}
.bar{display:inline-block;height:9px;background:#9bb6dc;border-radius:2px;vertical-align:middle}
"""

MODEL_ROWS = (("zero_shot", "zero-shot (dense)", "dense"),
              ("finetuned_dense", "fine-tuned dense", "dense"),
              ("pruned", "pruned", "pruned"),
              ("pruned_finetuned", "pruned + fine-tuned", "pruned"))
BASELINE_ROWS = (("seasonal_naive", "seasonal naive"), ("dlinear", "DLinear"))


def _num(x, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) >= 10 ** -nd or x == 0 else f"{x:.2e}"
    return escape(str(x))


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return ""
    return f'<img class="chart" alt="{escape(alt)}" src="data:image/png;base64,{b64}">'


def _table(head: list[str], rows: list[list[str]], *, left: int = 1, cls: str = "",
           sep_before: int | None = None) -> str:
    """Cells are HTML already, or (html, css class); the first ``left`` columns are
    left-aligned; row ``sep_before`` gets a thicker rule above it."""
    h = "".join(f'<th class="{"l" if i < left else ""}">{c}</th>' for i, c in enumerate(head))
    body = []
    for j, r in enumerate(rows):
        tds = []
        for i, c in enumerate(r):
            if isinstance(c, tuple):  # (html, css class)
                tds.append(f'<td class="{c[1]}">{c[0]}</td>')
            else:
                tds.append(f'<td class="{"l" if i < left else ""}">{c}</td>')
        body.append(('<tr class="sep">' if j == sep_before else "<tr>") + "".join(tds) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ---- sections --------------------------------------------------------------------------
def _accuracy_rows(r: dict) -> list[tuple[str, int | None, dict]]:
    m, b = r.get("metrics") or {}, r.get("baselines") or {}
    params = r.get("params") or {}
    rows = [(label, params.get(kind), m[key]) for key, label, kind in MODEL_ROWS if m.get(key)]
    rows += [(label, None, b[key]) for key, label in BASELINE_ROWS if b.get(key)]
    rows += [(k, None, v) for k, v in b.items() if k not in dict(BASELINE_ROWS) and isinstance(v, dict)]
    return rows


def _horizons(rows) -> list[str]:
    hs = dict.fromkeys(h for _, _, v in rows for h in (v.get("by_horizon") or {}))
    return sorted(hs, key=lambda h: int(h) if str(h).isdigit() else 10 ** 9)


def accuracy_table(r: dict) -> str:
    rows = _accuracy_rows(r)
    if not rows:
        return ""
    hs = _horizons(rows)
    cols: list[tuple[str, str, str]] = []  # (header, horizon or "", metric)
    for h in hs:
        cols += [(f"MSE<br><span class=muted>h={escape(str(h))}</span>", h, "mse"),
                 (f"MAE<br><span class=muted>h={escape(str(h))}</span>", h, "mae")]
    full = str((r.get("data") or {}).get("horizon"))
    if not hs or full not in hs:  # the whole-horizon figures when by_horizon lacks them
        cols += [("MSE", "", "mse"), ("MAE", "", "mae")]

    def val(v, h, k):
        if h == "":
            return v.get(k)
        return ((v.get("by_horizon") or {}).get(h) or {}).get(k)

    best = {}
    for i, (_, h, k) in enumerate(cols):
        vals = [val(v, h, k) for _, _, v in rows if val(v, h, k) is not None]
        best[i] = min(vals) if vals else None
    z = (r.get("metrics") or {}).get("zero_shot") or {}
    body = []
    for label, n, v in rows:
        cells = [escape(label), _num(n) if n is not None else '<span class="muted">-</span>']
        for i, (_, h, k) in enumerate(cols):
            x = val(v, h, k)
            cells.append((_num(x), "best") if x is not None and x == best[i] else _num(x))
        dz = ""
        if z.get("mse") and v.get("mse") is not None:
            dz = f"{100 * (v['mse'] / z['mse'] - 1):+.1f}%"
        cells.append(dz)
        body.append(cells)
    head = ["model", "params"] + [c[0] for c in cols] + ["MSE vs zero-shot"]
    # a thicker rule between the foundation-model rows and the baselines
    n_models = sum(1 for key, _, _ in MODEL_ROWS if (r.get("metrics") or {}).get(key))
    html = _table(head, body, sep_before=n_models if 0 < n_models < len(rows) else None)
    windows = rows[0][2].get("windows")
    note = (f"Test set, z-scored values, {windows:,} windows; lower is better, best per column "
            f"highlighted. 'MSE vs zero-shot' compares the whole horizon." if windows else
            "Lower is better; best per column highlighted.")
    return html + f'<p class="note">{note}</p>'


def summary_cards(r: dict) -> str:
    p = r.get("params") or {}
    m = r.get("metrics") or {}
    cards = []
    if p.get("dense"):
        cards.append(("parameters", f"{p['pruned']:,}",
                      f"from {p['dense']:,} ({r.get('sparsity', 0):.1%} removed)"))
    final_key = "pruned_finetuned" if m.get("pruned_finetuned") else "pruned"
    if m.get("zero_shot") and m.get(final_key):
        cards.append(("test MSE", _num(m[final_key]["mse"]),
                      f"{'pruned + fine-tuned' if final_key == 'pruned_finetuned' else 'pruned'}; "
                      f"zero-shot {_num(m['zero_shot']['mse'])}"))
    o = r.get("onnx") or {}
    if o.get("bytes"):
        lat = (o.get("latency_ms") or {}).get("1") or {}
        cards.append(("ONNX", _mb(o["bytes"]),
                      f"{lat['median_ms']:.2f} ms at batch 1 (ORT CPU)" if lat else
                      f"opset {o.get('opset')}"))
    t = (r.get("timings") or {}).get("total")
    if t is not None:
        cards.append(("run time", f"{t / 60:.1f} min" if t >= 120 else f"{t:.0f} s",
                      f"{r.get('versions', {}).get('threads', '?')} threads"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        f'<div class="d">{escape(d)}</div></div>' for k, v, d in cards) + "</div>"


def structure_section(r: dict) -> str:
    s = r.get("structure") or {}
    dense, pruned = s.get("dense") or [], s.get("pruned") or []
    if not dense:
        return ""
    out = [_img(charts.structure_chart(dense, pruned), "per-layer structure, dense vs pruned")]
    keys = [k for k in dict.fromkeys(k for row in dense + pruned for k in row) if k != "layer"]
    rows = []
    for i, d in enumerate(dense):
        pr = pruned[i] if i < len(pruned) else {}
        cells = [escape(str(d.get("layer", i)))]
        for k in keys:
            a, b = d.get(k, "-"), pr.get(k, 0)
            cells.append(f"{_num(b)} <span class=muted>/ {_num(a)}</span>" if a != b else _num(a))
        rows.append(cells)
    out.append("<details><summary>per-layer table (pruned / dense)</summary>"
               + _table(["layer"] + [escape(charts.struct_title(k)) for k in keys], rows) + "</details>")
    return "".join(out)


def prune_section(r: dict) -> str:
    pr = r.get("prune") or {}
    hist, cfg = pr.get("history") or [], pr.get("config") or {}
    out = []
    if cfg:
        bits = [f"ratio r = {cfg.get('ratio')}", f"EMA &alpha; = {cfg.get('ema')}",
                f"macro-batch {cfg.get('macro_batch_effective', cfg.get('macro_batch'))} "
                f"({cfg.get('steps_per_epoch', '?')} steps/epoch)",
                f"max epochs {cfg.get('max_epochs')}", f"scorer {escape(str(cfg.get('scorer')))}",
                f"best epoch {pr.get('best_epoch')}", f"best validation loss {_num(cfg.get('best_val_loss'))}"]
        out.append(f'<p class="note">{", ".join(bits)}.</p>')
        if cfg.get("measured"):
            from .writer import budget_line  # lazy: import cycle (writer imports this module)
            out.append(f'<p class="note">{escape(budget_line(cfg["measured"], cfg))}</p>')
        if pr.get("calibration"):
            from .writer import calibration_line  # lazy: import cycle (writer imports this module)
            out.append(f'<p class="note">{escape(calibration_line(pr["calibration"]))}</p>')
        if pr.get("speedup"):
            from .writer import speedup_line  # lazy: import cycle (writer imports this module)
            out.append(f'<p class="note">{escape(speedup_line(pr["speedup"]))}</p>')
    out.append(_img(charts.prune_curve(hist, pr.get("best_epoch")), "pruning curve"))
    ep = [h for h in hist if "val_loss" in h and "step" not in h]
    if ep:
        best = pr.get("best_epoch")
        rows = [["0 (dense)" if h["epoch"] == 0 else str(h["epoch"]),
                 (_num(h["val_loss"]), "best") if h["epoch"] == best else _num(h["val_loss"]),
                 f"{h['sparsity']:.1%}", _num(h.get("alive_channels"))] for h in ep]
        out.append(_table(["epoch", "validation loss", "sparsity", "alive channels"], rows))
    return "".join(out)


def finetune_section(r: dict) -> str:
    out = []
    for name, ft in (("pruned model", (r.get("finetune") or {}).get("pruned")),
                     ("dense model", (r.get("finetune") or {}).get("dense"))):
        if not ft:
            continue
        trials = ft.get("trials") or []
        vals = [t["val_loss"] for t in trials]
        rows = [[f"{t['lr']:g}", (_num(t["val_loss"]), "best") if t["val_loss"] == min(vals)
                 else _num(t["val_loss"]), str(t.get("epochs", "-")),
                 "yes" if t.get("improved") else "no"] for t in trials]
        out.append(f"<h3 style='font-size:14px;margin:12px 0 2px'>{escape(name)}</h3>"
                   f'<p class="note">validation loss {_num(ft.get("val_loss_before"))} &rarr; '
                   f'{_num(ft.get("val_loss"))} with lr {ft.get("lr", 0):g}, '
                   f'{ft.get("epochs_run")} epoch(s), {ft.get("seconds", 0):.0f} s.</p>')
        if rows:
            out.append(_table(["learning rate", "best val loss", "epochs", "improved"], rows))
    return "".join(out)


def deploy_section(r: dict) -> str:
    p, o = r.get("params") or {}, r.get("onnx") or {}
    rows = [["parameters", _num(p.get("dense")), _num(p.get("pruned"))]]
    if p.get("dense"):
        rows.append(["fp32 weights", _mb(4 * p["dense"]), _mb(4 * p.get("pruned", 0))])
    if o.get("bytes"):
        rows.append([f"ONNX file <code>{escape(str(o.get('path', '')))}</code>", "-", _mb(o["bytes"])])
    lat = o.get("latency_ms") or {}
    for b in sorted((k for k in lat if str(k).isdigit()), key=int):
        v = lat[b]
        rows.append([f"ORT CPU latency, batch {escape(b)} (median of {v.get('runs')})", "-",
                     f"{v['median_ms']:.2f} ms"])
    out = _table(["", "dense", "pruned"], rows)
    notes = []
    if o:
        notes.append(f"ONNX opset {o.get('opset')}, outputs {escape(', '.join(o.get('outputs', [])))}, "
                     f"max abs error vs PyTorch {o.get('max_abs_err', float('nan')):.1e} "
                     f"({escape(', '.join(o.get('providers', [])))}).")
    if lat:
        notes.append(f"Latency: onnxruntime {escape(str(lat.get('provider', 'CPU')))}, "
                     f"{lat.get('threads', '?')} intra-op thread(s), context "
                     f"{(r.get('data') or {}).get('context')}; a shared machine inflates it.")
    return out + "".join(f'<p class="note">{n}</p>' for n in notes)


def samples_section(r: dict) -> str:
    s = r.get("samples") or {}
    img = charts.forecast_grid(s)
    if not img:
        return ""
    return (_img(img, "forecasts of sample test windows") +
            f'<p class="note">{len(s["windows"])} test windows picked evenly over the test set; '
            f'the last {s.get("history")} context rows shown, horizon {s.get("horizon")}, '
            f'{escape(str(s.get("units", "")))} values. Bands: quantile forecasts.</p>')


_LOWER_IS_BETTER = ("loss", "mse", "mae")


def _val(key, x) -> str:
    """A scalar of a generic table: metrics to 4 decimals, other floats as %g."""
    if isinstance(x, float) and not any(w in str(key).lower() for w in _LOWER_IS_BETTER):
        return f"{x:g}"
    return _num(x) if isinstance(x, (int, float)) or x is None else escape(str(x))


def generic(value, depth: int = 0) -> str:
    """Any JSON value as HTML: a list of dicts as a table (the lowest value of each
    loss/MSE/MAE column highlighted; a nested list of more than 5 records collapsed), a
    dict as key/value rows (nested values recurse), a scalar as text."""
    if isinstance(value, dict):
        if not value:
            return '<span class="muted">(empty)</span>'
        rows = [[escape(str(k)), generic(v, depth + 1) if isinstance(v, (dict, list)) else _val(k, v)]
                for k, v in value.items()]
        return _table(["key", "value"], rows, left=2)
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            low = {k: min(nums) for k in keys if any(w in str(k).lower() for w in _LOWER_IS_BETTER)
                   and len(nums := [v[k] for v in value if isinstance(v.get(k), (int, float))
                                    and not isinstance(v.get(k), bool)]) > 1}
            rows = []
            for v in value[:500]:
                row = []
                for k in keys:
                    x = v.get(k)
                    cell = generic(x, depth + 1) if isinstance(x, (dict, list)) else _val(k, x)
                    row.append((cell, "best") if k in low and x == low[k] else cell)
                rows.append(row)
            more = f'<p class="note">{len(value) - 500} more rows in report.json</p>' if len(value) > 500 else ""
            table = _table([escape(str(k)) for k in keys], rows, left=0) + more
            if depth > 0 and len(value) > 5:
                return f"<details><summary>{len(value)} records</summary>{table}</details>"
            return table
        if all(not isinstance(v, (dict, list)) for v in value):
            return escape(", ".join(str(v) for v in value))
        return "<br>".join(generic(v, depth + 1) for v in value)
    return _num(value) if isinstance(value, (int, float)) or value is None else escape(str(value))


def timings_section(r: dict) -> str:
    t = {k: v for k, v in (r.get("timings") or {}).items() if isinstance(v, (int, float))}
    if not t:
        return ""
    total = t.get("total") or max(t.values()) or 1
    rows = [[escape(k), f"{v:.1f}",
             f'<span class="bar" style="width:{max(1, int(240 * v / total))}px"></span>']
            for k, v in t.items()]
    return _table(["phase", "seconds", ""], rows, left=1)


def data_section(r: dict) -> str:
    d = r.get("data") or {}
    if not d:
        return ""
    w = d.get("windows") or {}
    cols = d.get("columns") or []
    return (f'<p>{escape(Path(str(d.get("path", ""))).name)}: {_num(d.get("rows"))} rows &times; '
            f'{len(cols)} channel(s) ({escape(", ".join(map(str, cols[:12])))}'
            f'{", ..." if len(cols) > 12 else ""}), frequency {escape(str(d.get("freq")))}, '
            f'season {d.get("season")}, split rows {escape(str(d.get("split_rows")))}; context '
            f'{d.get("context")}, horizon {d.get("horizon")}; windows train {_num(w.get("train"))}, '
            f'validation {_num(w.get("val"))}, test {_num(w.get("test"))}. Missing values: '
            f'{escape(str(d.get("missing")))}.</p>'
            + "".join(f"<p>Note: {escape(str(n))}</p>" for n in d.get("notes") or []))


def reproduce_section(r: dict) -> str:
    out = []
    if r.get("command"):
        out.append(f"<pre>{escape(r['command'])}</pre>")
    v = r.get("versions") or {}
    if v:
        out.append(_table(list(map(escape, v)), [[escape(str(x)) for x in v.values()]], left=len(v)))
    if r.get("config"):
        out.append("<details><summary>configuration (JSON)</summary><pre>"
                   + escape(json.dumps(r["config"], indent=1, default=str)) + "</pre></details>")
    return "".join(out)


def _recommendation(r: dict) -> str:
    """The recommendation's headline (tsprune.recommend), first on the page."""
    rec = r.get("recommendation") or {}
    return f'<p class="note"><strong>{escape(rec["headline"])}</strong></p>' if rec.get("headline") else ""


def render_html(r: dict) -> str:
    """The whole page as a string."""
    d = r.get("data") or {}
    title = f"tsprune report: {r.get('family', '?')} on {Path(str(d.get('path', '?'))).name}"
    sections = [
        ("Accuracy", accuracy_table(r)),
        ("Forecasts", samples_section(r)),
        ("Structure, per layer", structure_section(r)),
        ("Pruning", prune_section(r)),
        ("Fine-tuning", finetune_section(r)),
        ("Size and latency", deploy_section(r)),
        ("Search", generic(r["search"]) if r.get("search") else ""),
        ("Data", data_section(r)),
        ("Timings", timings_section(r)),
        ("Command and versions", reproduce_section(r)),
    ]
    body = "".join(f'<section id="{escape(t.split(",")[0].lower().replace(" ", "-"))}">'
                   f"<h2>{escape(t)}</h2>{html}</section>" for t, html in sections if html)
    sub = f"model {escape(str(r.get('model', '?')))} &middot; tsprune {escape(str(r.get('tsprune_version', '')))}"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"{_recommendation(r)}<h1>{escape(title)}</h1><p class=\"sub\">{sub}</p>{summary_cards(r)}{body}"
            "</main></body></html>")
