"""The registry of model-family adapters, built from their specs (tsprune.families.specs).

Adapters are imported lazily by module name, so a family whose optional upstream package
is missing never breaks the others.
"""
from __future__ import annotations

import importlib

from tsprune.errors import UserError

from .base import Constant, Family, Forecast  # noqa: F401
from .specs import SPECS, ExportSpec, FamilySpec  # noqa: F401

_SPECS: dict[str, FamilySpec] = {s.name: s for s in SPECS}


def register(spec: FamilySpec) -> None:
    """Add a family (a third-party adapter). Registering a name twice is an error."""
    if spec.name in _SPECS and _SPECS[spec.name] != spec:
        raise ValueError(f"family {spec.name!r} is already registered by {_SPECS[spec.name].module}")
    _SPECS[spec.name] = spec


def supported() -> list[str]:
    return sorted(_SPECS)


def spec(name: str) -> FamilySpec:
    if name not in _SPECS:
        raise UserError(f"family: got {name!r}; supported families: {', '.join(supported())}")
    return _SPECS[name]


def get(name: str) -> Family:
    return importlib.import_module(spec(name).module).FAMILY


def detect(config: dict) -> Family:
    """The family adapter for a config.json dict: by model_type, then architectures, then,
    for a config naming neither, by its identifying keys (FamilySpec.match)."""
    best = max(_SPECS.values(), key=lambda s: s.match(config))
    if best.match(config) == 0:
        mt, archs = config.get("model_type"), config.get("architectures") or []
        raise UserError(
            f"config.json: model_type {mt!r} (architectures {archs}) is not a supported family; "
            f"supported: {', '.join(supported())}")
    return get(best.name)
