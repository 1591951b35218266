"""A few test windows forecast by the dense and the pruned model, for the report's plots.

    samples = forecast_samples({"dense": dense, "pruned": pruned}, test, n=4)

Windows are picked deterministically, evenly spaced over the (channel-major) test set,
so several channels and several points in time are shown. Values are in the dataset's
z-scored units, rounded to 4 decimals; the history is cut to the last ``history``
rows (default: 3 horizons) of the context, so the JSON stays small (~n * 6 * H floats).
"""
from __future__ import annotations

import torch

# quantile bands drawn in the plots: the outermost pair and the pair nearest 25/75 %
_BAND_TARGETS = (0.25, 0.75)


def pick_windows(n_windows: int, n: int) -> list[int]:
    """n evenly spaced item ids in [0, n_windows), first and last included, no repeats."""
    if n_windows <= 0 or n <= 0:
        return []
    if n >= n_windows:
        return list(range(n_windows))
    if n == 1:
        return [n_windows // 2]
    return sorted({round(i * (n_windows - 1) / (n - 1)) for i in range(n)})


def band_levels(levels) -> list[float]:
    """The quantile levels worth drawing as bands: outermost pair, then the pair nearest
    25/75 % when there is one inside it. Returns sorted levels (possibly empty)."""
    lv = sorted(float(x) for x in levels)
    if len(lv) < 2:
        return []
    keep = {lv[0], lv[-1]}
    inner = lv[1:-1]
    if len(inner) >= 2:
        # ties go outwards (0.2 over 0.3, 0.8 over 0.7), so the pair stays symmetric
        keep.add(min(inner, key=lambda x: (round(abs(x - _BAND_TARGETS[0]), 6), x)))
        keep.add(min(inner, key=lambda x: (round(abs(x - _BAND_TARGETS[1]), 6), -x)))
    return sorted(keep)


def _r(t: torch.Tensor) -> list:
    return torch.round(t.float(), decimals=4).tolist()


def forecast_samples(models: dict, dataset, *, n: int = 4, history: int | None = None) -> dict:
    """Forecast ``n`` windows of ``dataset`` (WindowDataset) with each TSModel in ``models``.

    Returns {"horizon", "history", "units", "windows": [{"item", "channel", "column",
    "row", "context" (history,), "truth" (H,)}], "forecasts": {name: {"point" (n, H),
    "levels" (k,), "quantiles" (n, H, k) or absent}}}.
    """
    H = dataset.horizon
    hist = min(dataset.context, history if history is not None else 3 * H)
    ids = pick_windows(len(dataset), n)
    if not ids:
        return {"horizon": H, "history": hist, "units": "z-scored", "windows": [], "forecasts": {}}
    ctx, tgt = dataset.gather(torch.tensor(ids))
    windows = []
    for j, i in enumerate(ids):
        ch, row = dataset.locate(i)
        col = dataset.columns[ch] if ch < len(dataset.columns) else ch
        windows.append({"item": int(i), "channel": int(ch), "column": str(col), "row": int(row),
                        "context": _r(ctx[j, -hist:]), "truth": _r(tgt[j])})
    forecasts = {}
    for name, model in models.items():
        f = model.forecast(ctx, H)
        entry = {"point": _r(f.point)}
        if f.quantiles is not None and f.levels:
            keep = band_levels(f.levels)
            idx = [list(map(float, f.levels)).index(x) for x in keep]
            if keep:
                entry["levels"] = keep
                entry["quantiles"] = _r(f.quantiles[:, :, idx])
        forecasts[name] = entry
    return {"horizon": H, "history": hist, "units": "z-scored", "windows": windows,
            "forecasts": forecasts}
