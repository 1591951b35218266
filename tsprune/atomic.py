"""Atomic output directories: work in a hidden sibling ``.NAME.partial``, rename it into
place only when complete.

* A failed or killed run never leaves a half-written ``--out``; an earlier complete output
  at the same path stays intact until the new one is complete (the final swap moves the
  old one aside, renames the new one in, then deletes the old one; a kill between the two
  renames is repaired by the next run, which restores the old output).
* A user error (bad input) removes the work directory: there is nothing to resume (unless
  the run was resuming an interrupted one: its checkpoints stay).
* Any other interruption (Ctrl-C, SIGTERM, SIGKILL, a crash) keeps it, so that ``--resume``
  continues from the last checkpoint inside it. Without ``--resume`` a new run starts over.
* A lock file names the process that owns a work directory; two runs never share one.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from tsprune.errors import UserError

LOCK = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _restore_after_kill(out: Path) -> None:
    """A run killed during the final swap left the old output aside: put it back."""
    for p in out.parent.glob(f".{out.name}.old-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if _pid_alive(pid) and pid != os.getpid():
            continue
        if not out.exists():
            os.replace(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)


def check_out(out: str | os.PathLike, arg: str = "--out") -> Path:
    """Validate an output directory path before any work is done."""
    out = Path(out)
    if str(out) in ("", "."):
        raise UserError(f"{arg}: got {str(out)!r}; expected a directory to create")
    if out.exists() and not out.is_dir():
        raise UserError(f"{arg}: {str(out)!r} exists and is not a directory")
    probe = out.parent if str(out.parent) else Path(".")
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{arg}: cannot write to {str(out)!r} ({probe} is not a writable directory)")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, arg: str = "--out", *, resume: bool = False):
    """Yield the work directory; on success it replaces ``out`` atomically."""
    out = check_out(out, arg)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{arg}: cannot create {str(out.parent)!r} ({e.strerror})") from None
    _restore_after_kill(out)
    work = work_dir(out)
    if work.exists():
        try:
            pid = int((work / LOCK).read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise UserError(f"{arg}: another tsprune run (pid {pid}) is writing {str(out)!r}")
        if not resume:
            shutil.rmtree(work, ignore_errors=True)
    resumed = work.exists()
    try:
        work.mkdir(exist_ok=True)
        (work / LOCK).write_text(str(os.getpid()))
    except OSError as e:
        raise UserError(f"{arg}: cannot write to {str(out)!r} ({e.strerror})") from None
    try:
        yield work
    except UserError:
        # bad input: nothing to resume, unless this run was itself resuming an earlier
        # interrupted run (whose checkpoints stay for a corrected --resume)
        if resumed:
            (work / LOCK).unlink(missing_ok=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
            for p in created:  # parents this run created, innermost first, if still empty
                try:
                    p.rmdir()
                except OSError:
                    break
        raise
    (work / LOCK).unlink(missing_ok=True)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
