"""A pruning plan: the masks found by scoring, as data (JSON), replayable on a fresh copy
of the same model (compute and apply are separate)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "tsprune-plan/1"


@dataclass
class Plan:
    family: str
    masks: dict                     # MaskSet.to_json(): pruned in/out indices per Linear
    params_dense: int
    params_pruned: int
    config: dict = field(default_factory=dict)     # the PruneConfig used
    history: list = field(default_factory=list)    # one record per pruning step / epoch
    best_epoch: int | None = None
    extra: dict = field(default_factory=dict)      # family-specific units (Family.pre_prune)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.params_pruned / max(1, self.params_dense)

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "family": self.family,
            "params_dense": self.params_dense, "params_pruned": self.params_pruned,
            "sparsity": self.sparsity, "best_epoch": self.best_epoch,
            "config": self.config, "history": self.history, "extra": self.extra,
            "masks": self.masks,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a tsprune plan (format {d.get('format')!r}, expected {FORMAT!r})")
        return cls(d["family"], d["masks"], d["params_dense"], d["params_pruned"],
                   d.get("config", {}), d.get("history", []), d.get("best_epoch"),
                   d.get("extra") or {})

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        return cls.from_json(json.loads(Path(path).read_text()))
