"""Atomic output directories: write into a hidden sibling, rename into place at the end.

A failed or killed run never leaves a half-written ``--out``; an earlier complete output
at the same path stays intact until the new one is complete.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from tsprune.errors import UserError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(out: Path) -> None:
    """Tidy up after killed runs (their process is gone): restore an earlier output that
    was moved aside during the final swap, remove temporary siblings."""
    for kind in ("old", "tmp"):
        for p in out.parent.glob(f".{out.name}.{kind}-*"):
            try:
                pid = int(p.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if _pid_alive(pid):
                continue
            if kind == "old" and not out.exists():
                os.replace(p, out)
            else:
                shutil.rmtree(p, ignore_errors=True)


def check_out(out: str | os.PathLike, arg: str = "--out") -> Path:
    """Validate an output directory path before any work is done."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{arg}: {str(out)!r} exists and is not a directory")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{arg}: cannot write to {str(out)!r} ({probe} is not writable)")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, arg: str = "--out"):
    """Yield a temporary directory; on success it replaces ``out`` atomically."""
    out = check_out(out, arg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{arg}: cannot create {str(out.parent)!r} ({e.strerror})") from None
    _clean_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as e:
        raise UserError(f"{arg}: cannot write to {str(out)!r} ({e.strerror})") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
