"""A JSON-lines log of metrics per step (for plotting elsewhere) and an optional text log."""
from __future__ import annotations

import json
import time
from pathlib import Path


class RunLog:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._f = open(self.path, "a") if self.path else None
        self.t0 = time.time()

    def __call__(self, record: dict, phase: str | None = None) -> None:
        if self._f is None:
            return
        rec = {"t": round(time.time() - self.t0, 3)}
        if phase:
            rec["phase"] = phase
        rec.update(record)
        self._f.write(json.dumps(rec, default=float) + "\n")
        self._f.flush()

    def phase(self, name: str):
        return lambda rec: self(rec, name)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
