"""The phase runner: a job is an ordered list of named phases, run by one runner.

A long job (`tsprune prune`, `tsprune reproduce`, a torchrun worker) declares what it does
as data::

    PHASES = (
        Phase("zero_shot", zero_shot, output=True),
        Phase("score", score_plan, restore=load_plan),
        Phase("finetune_pruned", finetune_pruned, needs=("score",), when=wants_finetune,
              restore=load_finetuned),
        ...
    )
    results = run_phases(PHASES, ctx, store)

The runner gives every phase the same treatment:
- timing (``store.timings()``) and a log line per phase with its index, time and ETA;
- a result kept as JSON in a `PhaseStore` (atomic writes, under a file lock so that
  several processes may share one job's phases), keyed by phase name and guarded by a
  fingerprint of the job's settings: a phase finished earlier with the same settings is
  skipped on rerun, and its ``restore`` hook rebuilds what later phases need from it;
- selection: ``only`` runs a subset (several processes can split a job); a phase whose
  ``needs`` were left out is left out too;
- roles: a worker process (ranks > 0 under torchrun) runs the same list with ``output``
  phases (evaluation, saving, reports) switched off and nothing persisted.

A phase function takes the job's context (any object; jobs use a SimpleNamespace-like
class of their own) and returns a JSON-serialisable result or None. Phases with
``persist=False`` (loading, surgery) always run and keep nothing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from tsprune.atomic import atomic_dir

from tsprune.errors import UserError

log = logging.getLogger("tsprune")


def settings_of(obj) -> dict:
    """A dataclass's fields that differ from their defaults (nested dataclasses likewise;
    fields without a default always): the fingerprint a job's finished phases are kept
    under, so that a field added later with a default does not invalidate finished work."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            v = settings_of(v)
            if v:
                out[f.name] = v
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is dataclasses.MISSING or v != default:
            out[f.name] = v
    return out


def _always(_ctx) -> bool:
    return True


@dataclass(frozen=True)
class Phase:
    """One step of a job.

    run(ctx) -> JSON result (or None). needs: names of phases whose results (or restored
    state) it uses. when(ctx): whether the job includes it at all (a flag's choice).
    restore(ctx, result): rebuild in-memory state from a result kept by an earlier run.
    output: evaluation or writing; skipped by workers. persist: keep the result in the store
    (False: always rerun, e.g. loading a model)."""

    name: str
    run: Callable[[Any], Any]
    needs: tuple[str, ...] = ()
    when: Callable[[Any], bool] = _always
    restore: Optional[Callable[[Any, Any], None]] = None
    output: bool = False
    persist: bool = True


class PhaseStore:
    """Finished phases of one job in a JSON file: {"fingerprint": ..., "done": {name:
    result}, "timings": {name: seconds}}. Writes are atomic (temporary file + rename) and
    happen under an fcntl lock, merged with what other processes wrote meanwhile.

    on_mismatch: what a file with another fingerprint means: "error" (a UserError naming
    ``flag``: resuming a different job) or "restart" (forget it)."""

    def __init__(self, path: Path | None, fingerprint: dict, *, fresh: bool = False,
                 on_mismatch: str = "restart", flag: str = "--resume"):
        self.path = Path(path) if path is not None else None
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self._memory: dict = {"done": {}, "timings": {}}
        if self.path is None:
            return
        if fresh:
            self.path.unlink(missing_ok=True)
        if on_mismatch == "error" and self.path.exists():
            st = json.loads(self.path.read_text())
            if st.get("fingerprint") != self.fingerprint:
                raise UserError(f"{flag}: the interrupted run in {self.path.parent} used other "
                                f"settings; rerun without {flag} to start over")

    @classmethod
    def in_memory(cls) -> "PhaseStore":
        """A store that keeps nothing on disk (workers, tests)."""
        return cls(None, {})

    def _read(self) -> dict:
        if self.path is None:
            return self._memory
        if self.path.exists():
            st = json.loads(self.path.read_text())
            if st.get("fingerprint") == self.fingerprint:
                return {"done": st.get("done", {}), "timings": st.get("timings", {})}
        return {"done": {}, "timings": {}}

    def __contains__(self, name: str) -> bool:
        return name in self._read()["done"]

    def get(self, name: str, default=None):
        return self._read()["done"].get(name, default)

    def timings(self) -> dict:
        return dict(self._read()["timings"])

    @contextlib.contextmanager
    def _locked(self):
        if self.path is None:
            yield
            return
        import fcntl  # lazy: POSIX-only; only a store on disk takes the lock
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def put(self, name: str, result, seconds: float) -> None:
        with self._locked():
            state = self._read()
            state["done"][name] = result
            state["timings"][name] = seconds
            if self.path is None:
                self._memory = state
                return
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint, **state}, default=float))
            os.replace(tmp, self.path)

    def remove(self) -> None:
        """Forget the job (its results were written elsewhere): the file and its lock."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path.with_suffix(".lock").unlink(missing_ok=True)


@dataclass
class PhaseRun:
    """What run_phases did: results by phase, the phases it left out (``only``), the ones
    it ran, and their wall time in seconds."""

    results: dict
    left_out: list
    ran: list
    timings: dict


def run_phases(phases: Iterable[Phase], ctx, store: PhaseStore, *, only: Iterable[str] | None = None,
               worker: bool = False, say: Callable[[str], None] | None = None,
               label: str = "") -> PhaseRun:
    """Run ``phases`` in order on ``ctx`` (see the module docstring). Returns a PhaseRun;
    ``ctx.results`` (when ctx has such a dict) receives every result too."""
    phases = [p for p in phases if p.when(ctx) and not (worker and p.output)]
    names = [p.name for p in phases]
    if not worker:
        for p in phases:
            unknown = [n for n in p.needs if n not in names]
            if unknown:
                raise ValueError(f"phase {p.name} needs {unknown}, which this job does not run")
    only = None if only is None else set(only)
    say = say or (lambda msg: log.info("%s", msg))
    prefix = f"[{label}] " if label else ""
    results = getattr(ctx, "results", None)
    if not isinstance(results, dict):
        results = {}
    done = PhaseRun(results=results, left_out=[], ran=[], timings={})
    t_job = time.time()
    for k, p in enumerate(phases, 1):
        if any(n in done.left_out for n in p.needs):
            done.left_out.append(p.name)
            continue
        if p.persist and not worker and p.name in store:
            results[p.name] = store.get(p.name)
            if p.restore is not None:
                p.restore(ctx, results[p.name])
            say(f"{prefix}{p.name}: done earlier")
            continue
        if p.persist and only is not None and p.name not in only:
            done.left_out.append(p.name)
            continue
        say(f"{prefix}{p.name} ({k}/{len(phases)}) ...")
        t = time.time()
        results[p.name] = p.run(ctx)
        secs = round(time.time() - t, 2)
        done.timings[p.name] = secs
        done.ran.append(p.name)
        if p.persist and not worker:
            store.put(p.name, results[p.name], secs)
        say(f"{prefix}{p.name} done in {secs:.1f}s (job {time.time() - t_job:.0f}s so far)")
    return done


__all__ = ["Phase", "PhaseStore", "PhaseRun", "run_phases"]


def run_job(phase_list: Iterable[Phase], make_job: Callable[[Path], Any], *, out, resume: bool,
            fingerprint: dict, finish: Callable[[Any, dict, Path], dict]) -> dict:
    """Run a whole job into the output directory ``out``: the skeleton every job shares.

    The output is built in a temporary directory beside ``out`` and swapped in only when
    the job finishes (tsprune.atomic.atomic_dir; ``resume`` continues an interrupted one).
    make_job(work_dir) builds the job's context (it must have ``rl``, the run log, closed
    at the end); the phases run under a PhaseStore guarded by ``fingerprint``;
    finish(job, timings, work_dir) writes the reports and returns the report. Checkpoints
    and the phase state are then removed: the output holds results only.
    """
    t0 = time.time()
    with atomic_dir(out, resume=resume) as tmp:
        store = PhaseStore(tmp / "state.json", fingerprint, on_mismatch="error")
        job = make_job(tmp)
        try:
            done = run_phases(phase_list, job, store)
            timings = {**done.timings, "total": round(time.time() - t0, 2)}
            report = finish(job, timings, tmp)
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
            store.remove()
        finally:
            job.rl.close()
    return report
