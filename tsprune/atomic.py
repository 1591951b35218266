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
* Only tsprune's own outputs are replaced (tsprune.safety: the ``.tsprune-output`` marker,
  written into every new output); an existing empty directory is filled in place and
  kept. A ``--out`` that is a symlink is followed: its target is what gets written (and
  replaced, under the same rule); the link stays as it is.
* A failed write (OSError: disk full, permission denied...) removes the work directory and
  every parent this run created, then re-raises: nothing partial is left.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from tsprune.errors import UserError
from tsprune.safety import (
    MARKER, as_os_error, check_replaceable_dir, real, write_marker, written_by_tsprune,
)

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
        if p.is_symlink() or not written_by_tsprune(p):
            continue  # not ours: never touched
        if not out.exists():
            os.replace(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)


def check_out(out: str | os.PathLike, arg: str = "--out", *, replace: bool = True) -> Path:
    """Validate an output directory path before any work is done. replace: the directory
    will be replaced, so an existing one must be tsprune's (tsprune.safety)."""
    out = Path(out)
    if str(out) in ("", "."):
        raise UserError(f"{arg}: got {str(out)!r}; expected a directory to create")
    if out.exists() and not out.is_dir():
        raise UserError(f"{arg}: {str(out)!r} exists and is not a directory")
    if replace:
        check_replaceable_dir(real(out), arg)
    probe = out.parent if str(out.parent) else Path(".")
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{arg}: cannot write to {str(out)!r} ({probe} is not a writable directory)")
    return out


def _remove_created(created: list[Path]) -> None:
    for p in created:  # parents this run created, innermost first, if still empty
        try:
            p.rmdir()
        except OSError:
            break


class _Appeared(UserError):
    """--out appeared during the run and is not tsprune's: the result stays in the work
    directory."""


def _swap(work: Path, out: Path) -> None:
    """Put the finished ``work`` at ``out``: an empty directory there is filled in place
    (it stays the user's directory); a tsprune output is moved aside, then deleted."""
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        for entry in work.iterdir():
            os.replace(entry, out / entry.name)
        work.rmdir()
        return
    old = None
    if out.exists() or out.is_symlink():
        if not written_by_tsprune(out):  # checked before the work: changed since
            raise _Appeared(f"--out: {str(out)!r} appeared during the run and was not written by "
                            f"tsprune; the result stays in {str(work)!r}")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, arg: str = "--out", *, resume: bool = False,
               command: str = "prune"):
    """Yield the work directory; on success it replaces ``out`` atomically."""
    out = check_out(out, arg)
    if out.is_symlink():
        out = real(out)  # write the link's target; the link itself stays
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{arg}: cannot create {str(out.parent)!r} ({e.strerror})") from None
    _restore_after_kill(out)
    work = work_dir(out)
    if work.exists() or work.is_symlink():
        if work.is_symlink() or not ((work / LOCK).exists() or (work / MARKER).exists()
                                     or (work / "state.json").exists()):
            raise UserError(f"{arg}: {str(work)!r} exists and is not a tsprune work directory; "
                            "move it away first")
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
        write_marker(work, command)
    except OSError as e:
        if not resumed:
            shutil.rmtree(work, ignore_errors=True)
            _remove_created(created)
        raise UserError(f"{arg}: cannot write to {str(out)!r} ({e.strerror or e})") from None
    try:
        yield work
        (work / LOCK).unlink(missing_ok=True)
        _swap(work, out)
    except UserError:
        # bad input: nothing to resume, unless this run was itself resuming an earlier
        # interrupted run (whose checkpoints stay for a corrected --resume)
        if resumed or isinstance(sys.exc_info()[1], _Appeared):
            (work / LOCK).unlink(missing_ok=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
            _remove_created(created)
        raise
    except BaseException as e:
        failed = as_os_error(e)
        if failed is None:
            raise  # Ctrl-C, a crash: the work directory stays for --resume
        # a failed write (disk full...): nothing partial stays, not even for --resume
        shutil.rmtree(work, ignore_errors=True)
        _remove_created(created)
        if failed is e:
            raise
        raise failed from None
