"""A JSON-lines log of metrics per step (for plotting elsewhere) and an optional text log."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from tsprune.errors import UserError


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


@contextlib.contextmanager
def log_to_file(path: str | Path | None, logger: str = "tsprune"):
    """Within the block, also write ``logger``'s INFO records to ``path`` (appending).

    Reuses a FileHandler on the same file if one is attached already (the CLI adds one
    for --log-file), so records are never written twice. No-op for path None."""
    if not path:
        yield
        return
    lg = logging.getLogger(logger)
    target = os.path.abspath(path)
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in lg.handlers):
        yield
        return
    try:
        fh = logging.FileHandler(target)
    except OSError as e:
        raise UserError(f"--log-file: cannot write to {str(path)!r} ({e.strerror or e})") from None
    fh.setLevel(logging.INFO)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    try:
        with _attached(lg, fh):
            yield
    finally:
        fh.close()


@contextlib.contextmanager
def log_to_stderr(enabled: bool, logger: str = "tsprune"):
    """Within the block, also print ``logger``'s INFO records (the phase log) to stderr
    when ``enabled``; reuses a stderr handler that is attached already (the CLI's)."""
    lg = logging.getLogger(logger)
    if not enabled or any(type(h) is logging.StreamHandler and h.stream is sys.stderr
                          for h in lg.handlers):
        yield
        return
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(message)s"))
    with _attached(lg, h):
        yield


@contextlib.contextmanager
def _attached(lg: logging.Logger, handler: logging.Handler):
    """Within the block, ``handler`` is attached to ``lg`` and ``lg`` passes INFO records
    (its level is lowered to INFO if needed); both are restored afterwards."""
    old_level = lg.level
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO)
    lg.addHandler(handler)
    try:
        yield
    finally:
        lg.removeHandler(handler)
        lg.setLevel(old_level)
