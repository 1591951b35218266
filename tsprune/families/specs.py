"""One declarative spec per model family: the single source of truth for detection, the
registry and the ONNX export adapter.

Specs are plain data and import nothing heavy, so detecting a family from config.json
never imports an optional upstream package. The family's adapter class (in ``module``)
takes its name from its spec; tsprune.export builds its optimized graph from ``export``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportSpec:
    """The family's optimized ONNX graph. build: "module:function", a function
    (module, context, horizon, dynamic_context, dtype) -> nn.Module whose forward maps
    context (B, L) float32 to (point (B, H), quantiles (B, H, Q)).
    dynamic_context: the context axis may be dynamic; half: float16 tracing is supported
    (the builder decides which parts stay float32)."""

    build: str
    dynamic_context: bool = False
    half: bool = False


@dataclass(frozen=True)
class FamilySpec:
    """name: the family's name in plans, manifests and reports; module: where its adapter
    (``FAMILY``) lives. A config.json is this family's when its model_type is in
    ``model_types``, else when one of its architectures is in ``architectures``, else (a
    config naming neither) when it has every key of ``config_keys``. export: None means the
    family's own reference wrapper is traced (``Family.export_module``)."""

    name: str
    module: str
    model_types: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    config_keys: tuple[str, ...] = ()
    export: ExportSpec | None = None

    def match(self, config: dict) -> int:
        """How strongly ``config`` names this family: 3 model_type, 2 architectures,
        1 identifying keys (only for a config with neither), 0 not at all."""
        mt, archs = config.get("model_type"), config.get("architectures") or []
        if mt is not None and mt in self.model_types:
            return 3
        if any(a in self.architectures for a in archs):
            return 2
        if mt is None and not archs and self.config_keys and all(k in config for k in self.config_keys):
            return 1
        return 0


SPECS: tuple[FamilySpec, ...] = (
    FamilySpec("timesfm2_5", "tsprune.families.timesfm2_5", ("timesfm2_5",), ("TimesFm2_5ModelForPrediction",),
               export=ExportSpec("tsprune.export.timesfm2_5:build", dynamic_context=True, half=True)),
    FamilySpec("timesfm2", "tsprune.families.timesfm2", ("timesfm",), ("TimesFmModelForPrediction",)),
    FamilySpec("ttm", "tsprune.families.ttm", ("tinytimemixer",), ("TinyTimeMixerForPrediction",)),
    FamilySpec("time_moe", "tsprune.families.time_moe", ("time_moe",), ("TimeMoeForPrediction",)),
    FamilySpec("timer_xl", "tsprune.families.timer_xl", ("timer",), ("TimerForPrediction",)),
    # the published uni2ts config.json names neither a model_type nor architectures
    FamilySpec("moirai", "tsprune.families.moirai", ("moirai",), ("MoiraiModule",),
               config_keys=("patch_sizes", "distr_output")),
    # "t5" alone does not identify Chronos-Bolt
    FamilySpec("chronos_bolt", "tsprune.families.chronos_bolt", (), ("ChronosBoltModelForForecasting",)),
    FamilySpec("patchtst", "tsprune.families.patchtst", ("patchtst",), ("PatchTSTForPrediction",)),
)
