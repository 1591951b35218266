"""Charts of report.html as base64 PNG strings (matplotlib, Agg canvas; no pyplot, so the
process-wide backend is never touched). Each function returns None when there is
nothing to draw."""
from __future__ import annotations

import base64
import io

DENSE, PRUNED, TRUTH, HIST = "#3b6fb6", "#e07a1f", "#111111", "#9aa0a6"
GRID = "#e6e6e6"


def _figure(w: float, h: float):
    # lazy (here and below): matplotlib takes ~0.5 s to import; only report.html's charts need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _style(ax) -> None:
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.tick_params(labelsize=8)


def to_png_b64(fig, dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---- structure -------------------------------------------------------------------------
_STRUCT_TITLES = {"heads": "attention heads", "kv_heads": "KV heads", "qk_dim": "QK dim / head",
                  "v_dim": "V dim / head", "ffn": "FFN width", "params": "parameters"}


def struct_title(key: str) -> str:
    """'ffn' -> 'FFN width'; a second module's 'attn1_heads' -> 'attn1 attention heads'."""
    if key in _STRUCT_TITLES:
        return _STRUCT_TITLES[key]
    pre, _, base = key.partition("_")
    return f"{pre} {_STRUCT_TITLES.get(base, base)}" if base else key


def structure_keys(dense: list[dict], pruned: list[dict]) -> list[str]:
    """Columns of Family.describe() worth a panel: every numeric key but 'layer'; KV heads
    only when they differ from heads somewhere (grouped-query attention)."""
    keys = [k for k in dict.fromkeys(k for r in dense + pruned for k in r) if k != "layer"
            and all(isinstance(r.get(k, 0), (int, float)) for r in dense + pruned)]
    for pre in ("", *sorted({k[: -len("kv_heads")] for k in keys if k.endswith("kv_heads")} - {""})):
        kv, h = pre + "kv_heads", pre + "heads"
        if kv in keys and all(r.get(kv) == r.get(h) for r in dense + pruned):
            keys.remove(kv)
    return keys


def structure_chart(dense: list[dict], pruned: list[dict]) -> str | None:
    """One panel per describe() column: per layer, dense (wide, light) behind pruned."""
    if not dense:
        return None
    keys = structure_keys(dense, pruned)
    if not keys:
        return None
    ncol = min(len(keys), 3)
    nrow = -(-len(keys) // ncol)
    fig = _figure(3.6 * ncol, 2.3 * nrow + 0.3)
    layers = [r.get("layer", i) for i, r in enumerate(dense)]
    x = list(range(len(dense)))
    for i, k in enumerate(keys):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        d = [r.get(k, 0) for r in dense]
        p = [(pruned[j].get(k, 0) if j < len(pruned) else 0) for j in range(len(dense))]
        ax.bar(x, d, width=0.8, color="#dfe4ea", edgecolor="#b8c0ca", linewidth=0.6, label="dense")
        ax.bar(x, p, width=0.5, color=PRUNED, label="pruned")
        kept = sum(p) / sum(d) if sum(d) else 1.0
        ax.set_title(f"{struct_title(k)}  (kept {kept:.0%})", fontsize=9, loc="left")
        step = max(1, len(x) // 12)
        ax.set_xticks(x[::step], [str(v) for v in layers[::step]])
        from matplotlib.ticker import MaxNLocator  # lazy: matplotlib (see _figure)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        if k == "params":
            ax.yaxis.set_major_formatter(_thousands())
        _style(ax)
    for ax in fig.axes[-ncol:]:
        ax.set_xlabel("layer", fontsize=8)
    h, lab = fig.axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="upper center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.3 * nrow + 0.3)))
    return to_png_b64(fig)


def _thousands():
    from matplotlib.ticker import FuncFormatter  # lazy: matplotlib (see _figure)
    return FuncFormatter(lambda v, _: f"{v / 1e6:.1f}M" if v >= 1e6 else
                         (f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"))


# ---- pruning curve ---------------------------------------------------------------------
def prune_curve(history: list[dict], best_epoch: int | None = None) -> str | None:
    """Left: train loss per step, validation loss per epoch. Right: sparsity per step.
    x = pruning step (cumulative over epochs); dotted lines mark epoch ends."""
    steps = [h for h in history if "step" in h]
    epochs = [h for h in history if "val_loss" in h and "step" not in h]
    if not steps and not epochs:
        return None
    xs = list(range(1, len(steps) + 1))
    end_of = {}
    for x, h in zip(xs, steps):
        end_of[h["epoch"]] = x
    fig = _figure(11, 3.0)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if steps:
        ax.plot(xs, [h.get("train_loss") if h.get("train_loss") is not None else float("nan") for h in steps], color=HIST, lw=1.2, label="train loss (step)")
    ex = [end_of.get(h["epoch"], h["epoch"]) for h in epochs]
    if epochs:
        ax.plot(ex, [h["val_loss"] for h in epochs], "o-", color=DENSE, ms=5, lw=1.4,
                label="validation loss (epoch)")
        for x, h in zip(ex, epochs):
            if h["epoch"] == best_epoch:
                ax.plot([x], [h["val_loss"]], marker="*", ms=14, color=PRUNED, ls="none",
                        label=f"best (epoch {best_epoch})")
    ax.set_title("loss while pruning", fontsize=9, loc="left")
    ax.set_xlabel("pruning step", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    if steps:
        bx.plot(xs, [100 * h["sparsity"] for h in steps], color=PRUNED, lw=1.6, label="parameter sparsity")
        tot = steps[0].get("total_channels")
        if tot:
            cx = bx.twinx()
            cx.plot(xs, [h["alive_channels"] for h in steps], color=DENSE, lw=1.0, ls="--",
                    label="alive channels")
            cx.set_ylabel("alive channels", fontsize=8, color=DENSE)
            cx.tick_params(labelsize=8, colors=DENSE)
            cx.spines["top"].set_visible(False)
    else:
        bx.plot(ex, [100 * h["sparsity"] for h in epochs], "o-", color=PRUNED, label="sparsity")
    bx.set_ylabel("sparsity (%)", fontsize=8, color=PRUNED)
    bx.set_title("sparsity while pruning", fontsize=9, loc="left")
    bx.set_xlabel("pruning step", fontsize=8)
    for a in (ax, bx):
        _style(a)
        for x in sorted(end_of.values())[:-1]:
            a.axvline(x + 0.5, color="#c0c0c0", ls=":", lw=1)
    fig.tight_layout()
    return to_png_b64(fig)


# ---- forecasts -------------------------------------------------------------------------
def forecast_grid(samples: dict) -> str | None:
    """One panel per sample window: history, truth, each model's point forecast and its
    quantile bands (outer band light, inner band darker)."""
    wins = samples.get("windows") or []
    fc = samples.get("forecasts") or {}
    if not wins:
        return None
    colors = {"dense": DENSE, "pruned": PRUNED}
    labels = {"dense": "dense (zero-shot)", "pruned": "pruned (final)"}
    n = len(wins)
    ncol = 2 if n > 1 else 1
    nrow = -(-n // ncol)
    fig = _figure(5.5 * ncol, 2.5 * nrow + 0.4)
    handles = {}
    for i, w in enumerate(wins):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        ctx, truth = w["context"], w["truth"]
        hx = list(range(-len(ctx), 0))
        fx = list(range(0, len(truth)))
        handles["history"] = ax.plot(hx, ctx, color=HIST, lw=1.0)[0]
        handles["truth"] = ax.plot(fx, truth, color=TRUTH, lw=1.2)[0]
        for name, f in fc.items():
            line = ax.plot(fx, f["point"][i], color=colors.get(name), lw=1.4, zorder=3,
                           ls="--" if name == "dense" else "-")[0]
            handles.setdefault(labels.get(name, name), line)
            if "quantiles" in f and f.get("levels"):
                q, lv = f["quantiles"][i], f["levels"]
                k = len(lv)
                for a in range(k // 2):  # outer band lightest
                    band = ax.fill_between(fx, [row[a] for row in q], [row[k - 1 - a] for row in q],
                                           color=line.get_color(), alpha=0.12 + 0.12 * a, lw=0, zorder=1)
                    handles.setdefault(f"{name} {lv[a]:.0%}-{lv[k - 1 - a]:.0%}", band)
        ax.axvline(-0.5, color="#c0c0c0", lw=0.8)
        ax.set_title(f"{w['column']}, target rows from {w['row']}", fontsize=9, loc="left")
        _style(ax)
    for ax in fig.axes[-ncol:]:
        ax.set_xlabel(f"step relative to forecast start ({samples.get('units', '')} values)", fontsize=8)
    order = ["history", "truth"] + [k for k in handles if k not in ("history", "truth")]
    fig.legend([handles[k] for k in order], order, loc="upper center", ncol=min(len(order), 6),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.5 * nrow + 0.4)))
    return to_png_b64(fig)
