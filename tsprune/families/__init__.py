"""Registry of model-family adapters, detected from config.json.

Adapters are imported lazily by module name, so a family whose optional upstream package
is missing never breaks the others.
"""
from __future__ import annotations

import importlib

from tsprune.errors import UserError

from .base import Constant, Family, Forecast  # noqa: F401

# family name -> (module, model_types, architectures); matching reads only these names so
# detection never imports an optional upstream package.
_REGISTRY: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "timesfm2_5": ("tsprune.families.timesfm2_5", ("timesfm2_5",), ("TimesFm2_5ModelForPrediction",)),
    "timesfm2": ("tsprune.families.timesfm2", ("timesfm",), ("TimesFmModelForPrediction",)),
    "ttm": ("tsprune.families.ttm", ("tinytimemixer",), ("TinyTimeMixerForPrediction",)),
    "time_moe": ("tsprune.families.time_moe", ("time_moe",), ("TimeMoeForPrediction",)),
    "timer_xl": ("tsprune.families.timer_xl", ("timer",), ("TimerForPrediction",)),
    "moirai": ("tsprune.families.moirai", ("moirai",), ("MoiraiModule",)),
    "chronos_bolt": ("tsprune.families.chronos_bolt", (), ("ChronosBoltModelForForecasting",)),
    "patchtst": ("tsprune.families.patchtst", ("patchtst",), ("PatchTSTForPrediction",)),
}

# family name -> config.json keys that identify it when the published config.json names no
# model_type or architectures (uni2ts PyTorchModelHubMixin checkpoints); tried last.
_KEYS: dict[str, tuple[str, ...]] = {
    "moirai": ("patch_sizes", "distr_output"),
}


def register(name: str, module: str, model_types: tuple[str, ...], architectures: tuple[str, ...] = (),
             keys: tuple[str, ...] = ()) -> None:
    if name in _REGISTRY and _REGISTRY[name][0] != module:
        raise ValueError(f"family {name!r} is already registered by {_REGISTRY[name][0]}")
    _REGISTRY[name] = (module, tuple(model_types), tuple(architectures))
    if keys:
        _KEYS[name] = tuple(keys)


def supported() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Family:
    if name not in _REGISTRY:
        raise UserError(f"family: got {name!r}; supported families: {', '.join(supported())}")
    return importlib.import_module(_REGISTRY[name][0]).FAMILY


def detect(config: dict) -> Family:
    """The family adapter for a config.json dict (by model_type, then architectures, then,
    for a config with neither, by the keys in _KEYS)."""
    mt = config.get("model_type")
    archs = config.get("architectures") or []
    for name, (_, types, arch) in _REGISTRY.items():
        if mt in types:
            return get(name)
    for name, (_, types, arch) in _REGISTRY.items():
        if any(a in arch for a in archs):
            return get(name)
    if mt is None and not archs:
        for name, keys in _KEYS.items():
            if all(k in config for k in keys):
                return get(name)
    raise UserError(
        f"config.json: model_type {mt!r} (architectures {archs}) is not a supported family; "
        f"supported: {', '.join(supported())}"
    )
