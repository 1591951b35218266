"""Progress bars with rate and ETA (tqdm), silenced globally by --quiet."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET or os.environ.get("TSPRUNE_QUIET") == "1"


def progress(iterable=None, *, total=None, desc=None, unit="it", disable=False, **kw):
    """A tqdm bar on stderr showing count, rate and ETA; disabled when quiet."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=disable or is_quiet(), dynamic_ncols=True, mininterval=0.5,
                unit_scale=False, leave=False, **kw)
