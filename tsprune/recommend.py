"""Which model a run should deploy: the (pruned, fine-tuned) TSFM or a baseline.

Every candidate is scored on the same validation windows at the horizon the user asked
for (MSE, z-scored); never on the test split, which stays for reporting. A baseline is
recommended only when its validation MSE is strictly lower than the TSFM's. Only the TSFM
and DLinear can be exported (`--export-model`); seasonal naive is reported when it wins
but not deployed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from tsprune.errors import bad_arg

EXPORT_CHOICES = ("auto", "tsfm", "dlinear")
EXPORTABLE = ("tsfm", "dlinear")
LABELS = {"dlinear": "DLinear", "seasonal_naive": "seasonal naive"}


@dataclass(frozen=True)
class Recommendation:
    """deploy: the exportable candidate with the lowest validation MSE ("tsfm" or "dlinear");
    best: the lowest of all candidates; val_mse: {candidate: MSE}; tsfm_label: what the
    TSFM candidate is (e.g. "pruned + fine-tuned TSFM"); windows, horizon: of the scoring."""

    deploy: str
    best: str
    val_mse: dict
    tsfm_label: str = "TSFM"
    windows: int = 0
    horizon: int = 0

    def label(self, name: str) -> str:
        return self.tsfm_label if name == "tsfm" else LABELS.get(name, name)

    def headline(self) -> str:
        """One line: what to deploy, with the figures it rests on."""
        v = self.val_mse
        where = f"horizon {self.horizon}, {self.windows:,} validation windows" if self.windows else \
            f"horizon {self.horizon}"
        if self.deploy != "tsfm":
            line = (f"Recommendation: deploy {self.label(self.deploy)}, not the {self.tsfm_label}: "
                    f"validation MSE {v[self.deploy]:.4f} against {v['tsfm']:.4f} ({where}).")
        else:
            others = ", ".join(f"{self.label(k)} {x:.4f}" for k, x in v.items() if k != "tsfm")
            line = (f"Recommendation: deploy the {self.tsfm_label}: validation MSE {v['tsfm']:.4f}"
                    + (f" ({others}; {where})." if others else f" ({where})."))
        if self.best not in (self.deploy,) and self.best not in EXPORTABLE:
            line += (f" {self.label(self.best).capitalize()} is lower still ({v[self.best]:.4f}) "
                     "but is not exported.")
        return line

    def to_json(self) -> dict:
        return {**asdict(self), "headline": self.headline()}


def recommend(val_mse: dict, *, tsfm_label: str = "TSFM", windows: int = 0,
              horizon: int = 0) -> Recommendation:
    """val_mse: {"tsfm": x, "dlinear": y, "seasonal_naive": z}; absent or non-finite
    entries are ignored ("tsfm" is required). Ties go to the TSFM."""
    figs = {k: float(v) for k, v in val_mse.items() if v is not None and math.isfinite(float(v))}
    if "tsfm" not in figs:
        raise ValueError(f"val_mse: needs a finite 'tsfm' entry, got {val_mse!r}")
    order = sorted(figs, key=lambda k: (figs[k], k != "tsfm"))
    deploy = next(k for k in order if k in EXPORTABLE)
    return Recommendation(deploy=deploy, best=order[0], val_mse=figs, tsfm_label=tsfm_label,
                          windows=int(windows), horizon=int(horizon))


def export_choice(choice: str, rec: Recommendation | None, *, have_dlinear: bool) -> str:
    """The model `--export` writes: "tsfm" or "dlinear". choice: --export-model."""
    if choice not in EXPORT_CHOICES:
        raise bad_arg("--export-model", choice, " , ".join(EXPORT_CHOICES).replace(" ,", ","))
    if choice == "dlinear" and not have_dlinear:
        raise bad_arg("--export-model", choice, "'auto' or 'tsfm' when DLinear is not trained (--no-dlinear)")
    if choice == "auto":
        return rec.deploy if rec is not None else "tsfm"
    return choice


def validation_figures(tsfm, dlinear, val, *, season: int | None = None,
                       samples: int | None = None, seed: int = 0, batch_size: int = 512) -> tuple[dict, int]:
    """({candidate: validation MSE}, windows): the TSFM (a TSModel, forecast rolled out to
    val.horizon), DLinear (an nn.Module (B, L) -> (B, H), or None) and seasonal naive on the
    same windows of ``val`` (a seeded subset of ``samples`` windows, or all)."""
    # lazy: the baselines pull torch and pandas; the decision itself is plain Python
    from tsprune.baselines.evaluate import evaluate_forecaster
    from tsprune.baselines.naive import seasonal_naive

    v = val.subset(samples, seed=seed) if samples else val
    H = v.horizon
    figs = {"tsfm": evaluate_forecaster(lambda c: tsfm.forecast(c, H, batch_size=batch_size).point, v,
                                        batch_size=batch_size)["mse"]}
    if dlinear is not None:
        figs["dlinear"] = evaluate_forecaster(dlinear, v, batch_size=batch_size)["mse"]
    if season is None or season <= v.context:
        figs["seasonal_naive"] = evaluate_forecaster(lambda c: seasonal_naive(c, H, season), v,
                                                     batch_size=batch_size)["mse"]
    return figs, len(v)


# ---- the glue `tsprune prune` calls (tsprune.pipeline) ------------------------------------
def for_run(cfg, data, tsfm, dlinear, *, finetuned: bool) -> Recommendation:
    """The recommendation of a `tsprune prune` run (RunConfig ``cfg``, Prepared ``data``):
    every candidate on the validation windows at --horizon, the fine-tuning's --val-samples."""
    val = data.windows("val", horizon=cfg.data.horizon)
    figs, n = validation_figures(tsfm, dlinear, val, season=data.season,
                                 samples=cfg.finetune.val_samples, seed=cfg.seed + 1)
    label = "pruned + fine-tuned TSFM" if finetuned else "pruned TSFM"
    return recommend(figs, tsfm_label=label, windows=n, horizon=cfg.data.horizon)


def export_run_dlinear(dlinear, path, *, opset: int, data, levels=()) -> dict:
    """Export the run's DLinear to ``path`` with the dataset's metadata; the report's onnx
    entry (without latency: the pipeline times that phase)."""
    from tsprune.export.dlinear import export_dlinear  # lazy: pulls torch (and onnx when called)
    info = export_dlinear(dlinear, path, levels=levels, opset=opset, metadata={
        "columns": list(data.columns), "zscore_mean": data.mean.tolist(),
        "zscore_std": data.std.tolist()})
    info["path"] = Path(path).name
    info["model"] = "dlinear"
    return info

