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


class _Bar(tqdm):
    """tqdm whose postfix updates never force a redraw: in a log file the bar then prints
    at most once per mininterval (30 s), whatever the loop does."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def progress(iterable=None, *, total=None, desc=None, unit="it", disable=False, **kw):
    """A tqdm bar on stderr showing count, rate and ETA; disabled when quiet."""
    tty = sys.stderr.isatty()
    # on a terminal: a live bar; in a log file or CI: a line every 30 s at most
    return _Bar(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=disable or is_quiet(), dynamic_ncols=tty, ncols=None if tty else 100,
                mininterval=0.5 if tty else 30.0, unit_scale=False, leave=not tty, **kw)
