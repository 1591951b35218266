"""Which blocks to remove: the measured skip loss against the Taylor-Fisher gate estimate.

    python bench/depth_criteria.py [--out bench/results/depth_criteria.json]   # ~10 min, 2 cores

Bundled ``nano`` (4 blocks) on ETTh1 (``ett`` split, context 512, horizon 96). The
validation windows are split into two disjoint seeded sets: 2,048 windows on which both
criteria are computed (the engine's choice set), and 8,192 other windows on which the
"true" loss after physically removing each single block and each pair is measured. For
every single block and every pair it reports each criterion's prediction and the rank
correlation (Spearman) with the true loss change:

* measured, single: the skip loss on the choice set; pair: the sum of the two single
  increases (additive; what the greedy search would rank before re-measuring);
* fisher, single: |Taylor-Fisher estimate| (METHOD.md s.2 with the block gate); pair: the
  joint estimate of both gates going to 0 (cross terms included); fisher_signed: the same
  without the absolute value.

Then the greedy choice of 1 and 2 blocks by each criterion with the true loss of the result
(before any fine-tuning), and the ONNX Runtime CPU latency (one thread, batch 64, the
optimized TimesFM 2.5 graph) of the dense and the shallower models.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import torch

from tsprune.data import DataConfig, WindowDataset, ett_path, prepare
from tsprune.model import load
from tsprune.prune.depth import choose_blocks, fisher_estimate, gate_gradients, skip_loss
from tsprune.prune.engine import masked_loss


def _part(ds: WindowDataset, idx: torch.Tensor) -> WindowDataset:
    """The windows ``idx`` (positions in ``ds``), kept in dataset order."""
    idx = idx.sort().values
    out = WindowDataset.__new__(WindowDataset)
    out.__dict__.update(ds.__dict__, index=ds.index[idx] if ds.index is not None else idx)
    return out


def _spearman(a, b) -> float:
    ra = torch.tensor(a, dtype=torch.float64).argsort().argsort().double()
    rb = torch.tensor(b, dtype=torch.float64).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def _dropped(model, blocks):
    m = model.clone()
    m.family.drop_blocks(m.module, list(blocks))
    return m


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/depth_criteria.json")
    ap.add_argument("--choice", type=int, default=2048)
    ap.add_argument("--truth", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-latency", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    model = load("nano")
    data = prepare(DataConfig(ett_path("ETTh1"), context=512, horizon=96, split="ett"))
    val = data.windows("val")
    perm = torch.randperm(len(val), generator=torch.Generator().manual_seed(1))
    choice, truth = _part(val, perm[:a.choice]), _part(val, perm[a.choice: a.choice + a.truth])
    n = len(model.family.block_paths(model.module))
    res: dict = {"model": "nano", "data": "ETTh1 val (ett split), context 512, horizon 96",
                 "choice_windows": len(choice), "truth_windows": len(truth), "blocks": n}

    dense_truth = masked_loss(model, None, truth)
    dense_choice = masked_loss(model, None, choice)
    skip = [skip_loss(model, choice, i) for i in range(n)]
    G = gate_gradients(model, choice)
    sets = [(i,) for i in range(n)] + list(itertools.combinations(range(n), 2))
    rows = []
    for s in sets:
        true = masked_loss(_dropped(model, s), None, truth) - dense_truth
        measured = sum(skip[i] - dense_choice for i in s)
        est = fisher_estimate(G, s)
        rows.append({"blocks": list(s), "true_delta": true, "measured": measured,
                     "fisher": abs(est), "fisher_signed": est})
        print(rows[-1], flush=True)
    res.update(dense_val_loss_truth=dense_truth, dense_val_loss_choice=dense_choice, rows=rows)
    corr = {}
    for size in (1, 2):
        sel = [r for r in rows if len(r["blocks"]) == size]
        true = [r["true_delta"] for r in sel]
        corr[f"size{size}"] = {c: _spearman([r[c] for r in sel], true)
                               for c in ("measured", "fisher", "fisher_signed")}
        best = min(sel, key=lambda r: r["true_delta"])["blocks"]
        corr[f"size{size}"]["best_true"] = best
    res["spearman"] = corr
    print(json.dumps(corr), flush=True)

    greedy = {}
    for crit in ("measured", "fisher"):
        for k in (1, 2):
            t = time.time()
            blocks, hist = choose_blocks(model, choice, k, crit)
            m = _dropped(model, blocks)
            greedy[f"{crit}_k{k}"] = {"blocks": blocks, "val_loss": masked_loss(m, None, truth),
                                      "params": m.num_params(), "choose_s": round(time.time() - t, 1)}
            print(crit, k, greedy[f"{crit}_k{k}"], flush=True)
    res["greedy"] = greedy
    res["dense"] = {"val_loss": dense_truth, "params": model.num_params()}

    if not a.no_latency:
        from tsprune.export import export_onnx
        from tsprune.report.latency import ort_latency
        lat = {}
        with tempfile.TemporaryDirectory() as tmp:
            models = {"dense": model, "drop1": _dropped(model, greedy["measured_k1"]["blocks"]),
                      "drop2": _dropped(model, greedy["measured_k2"]["blocks"])}
            paths = {}
            for name, m in models.items():
                paths[name] = Path(tmp) / f"{name}.onnx"
                r = export_onnx(m, paths[name], context=512, horizon=96)
                lat[name] = {"max_abs_err": r["max_abs_err"]}
            for rnd in range(3):  # interleaved rounds: load changes hit every graph alike
                for name in models:
                    o = ort_latency(paths[name], context=512, batches=(64,), budget_s=6.0, max_runs=10, threads=1)
                    lat[name].setdefault("median_ms", []).append(o["64"]["median_ms"])
        for name in lat:
            lat[name]["median_ms_best_round"] = min(lat[name]["median_ms"])
        for name in ("drop1", "drop2"):
            lat[name]["ratio_dense_over"] = lat["dense"]["median_ms_best_round"] / lat[name]["median_ms_best_round"]
        res["latency_batch64_1thread"] = lat
        print(json.dumps(lat), flush=True)
    res["wall_s"] = round(time.time() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
