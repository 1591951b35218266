"""What tsprune may write: never over, into or beside what the user owns.

Rules, checked before any work starts (every writing command, and the Python API's
``RunConfig``):

* An output (``--out``, ``--log-file``) never equals, contains or lies inside an input
  (the data file, the model directory, a config file), symlinks resolved first.
* An existing ``--out`` directory is replaced only when tsprune wrote it: it holds the
  marker file ``.tsprune-output`` (or, for outputs of earlier versions, the files that
  tsprune writes there, see ``_LEGACY``). An empty directory is filled in place (kept).
* An existing ``--out`` file (``export --out m.onnx``) is replaced only when it is an ONNX
  graph that tsprune exported (its metadata or its sidecar says so).
* ``--log-file`` is appended to only when it is empty or already a tsprune log.

A failed write (disk full, permission denied, any OSError) is reported by the CLI as one
line with exit code 1 (`EXIT_WRITE`): it is the machine, not the arguments.
"""
from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path

from tsprune import __version__
from tsprune.errors import UserError
from tsprune.resources import bundled_path, demo_dataset_path  # data only: safety sits below model and pipeline

MARKER = ".tsprune-output"
EXIT_WRITE = 1

# outputs of earlier tsprune versions (no marker): a file that only tsprune writes there
_LEGACY = {
    "prune": ("report.json",),
    "triton": ("model.onnx.json",),
    "pretrain": ("pretrain_config.json",),
    "reproduce": ("accuracy.json", "runs"),
}
_LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def real(p) -> Path:
    """The absolute path with every symlink resolved (also for paths that do not exist)."""
    return Path(os.path.realpath(os.path.expanduser(str(p))))


# ---- the marker ----------------------------------------------------------------------
def write_marker(d: Path, command: str) -> None:
    (Path(d) / MARKER).write_text(json.dumps(
        {"tool": "tsprune", "command": command, "version": __version__, "pid": os.getpid(),
         "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


def _legacy(d: Path) -> bool:
    for names in _LEGACY.values():
        for n in names:
            f = d / n
            if n == "runs":
                if f.is_dir() and not f.is_symlink() and all(
                        c.suffix in (".json", ".lock") for c in f.iterdir()) and any(f.iterdir()):
                    return True
                continue
            if f.is_file() and not f.is_symlink():
                if n.endswith(".json") and n != "pretrain_config.json":
                    try:
                        if "tsprune_version" not in json.loads(f.read_text()):
                            continue
                    except (OSError, ValueError, RecursionError):
                        continue
                return True
    return False


def written_by_tsprune(d: Path) -> bool:
    """Whether directory ``d`` is an output of tsprune (its marker, or an earlier version's
    files)."""
    d = Path(d)
    if not d.is_dir():
        return False
    m = d / MARKER
    if m.is_file() and not m.is_symlink():
        try:
            return json.loads(m.read_text()).get("tool") == "tsprune"
        except (OSError, ValueError, AttributeError, RecursionError):
            return False
    return _legacy(d)


def _is_empty_dir(d: Path) -> bool:
    try:
        return d.is_dir() and not any(d.iterdir())
    except OSError:
        return False


def check_replaceable_dir(out, arg: str = "--out") -> None:
    """UserError unless ``out`` is absent, an empty directory or a tsprune output."""
    out = Path(out)
    if not out.exists() or _is_empty_dir(out) or written_by_tsprune(out):
        return
    if not out.is_dir():
        raise UserError(f"{arg}: {str(out)!r} exists and is not a directory")
    raise UserError(f"{arg}: {str(out)!r} exists and was not written by tsprune (no {MARKER} "
                    "in it); choose a new directory, tsprune never replaces one it did not create")


def onnx_written_by_tsprune(path: Path) -> bool:
    """Whether the file ``path`` is an ONNX graph tsprune exported (sidecar or metadata)."""
    side = Path(f"{path}.json")
    try:
        if side.is_file() and "tsprune_version" in json.loads(side.read_text()):
            return True
    except (OSError, ValueError, TypeError, RecursionError):
        pass
    try:
        import onnx  # lazy: onnx is heavy; only an existing --out file is checked with it
        proto = onnx.load(str(path), load_external_data=False)
        return any(p.key == "tsprune_version" for p in proto.metadata_props)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def check_replaceable_file(out, arg: str = "--out") -> None:
    out = Path(out)
    for p in (out, Path(f"{out}.json")):
        if p.exists() and p.is_file() and not onnx_written_by_tsprune(out):
            raise UserError(f"{arg}: {str(p)!r} exists and is not a graph tsprune exported; "
                            "choose a new file name, tsprune never replaces one it did not create")


def check_log_file(path, arg: str = "--log-file") -> None:
    """UserError unless ``path`` is absent, empty or a tsprune log (appended to)."""
    p = Path(path)
    if not p.is_file():
        return
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise UserError(f"{arg}: cannot read {str(path)!r} ({e.strerror or e})") from None
    if head and not _LOG_LINE.match(head):
        raise UserError(f"{arg}: {str(path)!r} exists and is not a tsprune log; tsprune appends "
                        "only to its own logs, choose a new file")


# ---- inputs and outputs never overlap --------------------------------------------------
def _relation(out: Path, inp: Path) -> str | None:
    if out == inp:
        return "is"
    try:
        if out.exists() and inp.exists() and os.path.samefile(out, inp):
            return "is"
    except OSError:
        pass
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "lies inside"
    return None


def check_no_overlap(outputs, inputs) -> None:
    """outputs, inputs: (flag, path) pairs (None paths skipped). UserError naming both
    paths when an output equals, contains or lies inside an input."""
    ins = [(f, p, real(p)) for f, p in inputs if p is not None and str(p) != ""]
    for oflag, o in outputs:
        if o is None or str(o) == "":
            continue
        ro = real(o)
        for iflag, i, ri in ins:
            rel = _relation(ro, ri)
            if rel:
                via = "" if str(ro) == os.path.abspath(str(o)) and str(ri) == os.path.abspath(str(i)) \
                    else f" (resolved: {ro} vs {ri})"
                raise UserError(f"{oflag}: {str(o)!r} {rel} the input {iflag} {str(i)!r}{via}; "
                                "outputs must lie outside every input")


def check_log_outside_out(log_file, out) -> None:
    if not log_file or not out:
        return
    rl, ro = real(log_file), real(out)
    if rl == ro or ro in rl.parents:
        raise UserError(f"--log-file: {str(log_file)!r} lies inside --out {str(out)!r}, which is "
                        "replaced when the run finishes; put the log elsewhere")


def _model_input(model) -> Path | None:
    if model is None:
        return None
    if os.path.exists(str(model)):
        return Path(model)
    return bundled_path(str(model))


def _dataset_inputs(datasets: str) -> list[Path]:
    out = []
    for name in (d for d in str(datasets).split(",") if d):
        if os.path.exists(name):
            out.append(Path(name))
            continue
        try:
            from tsprune.data import ett_path  # lazy: tsprune.data pulls pandas and torch
            p = ett_path(name)
        except Exception:  # noqa: BLE001 - a name that is no file is reported by the command
            p = None
        if p is not None:
            out.append(p)
    return out


def inputs_of(a) -> list[tuple[str, Path]]:
    """(flag, path) of every input a parsed command line reads."""
    ins: list[tuple[str, Path | None]] = []
    if getattr(a, "data", None):
        ins.append(("--data", Path(a.data)))
    elif a.cmd == "prune":
        ins.append(("--data", demo_dataset_path()))
    if hasattr(a, "model") and a.cmd != "pretrain":
        ins.append(("--model", _model_input(a.model)))
    if getattr(a, "model_config", None):
        ins.append(("--model-config", Path(a.model_config)))
    if a.cmd == "reproduce":
        ins += [("--datasets", p) for p in _dataset_inputs(a.datasets)]
    return [(f, p) for f, p in ins if p is not None]


def check_command(a) -> None:
    """All path rules for a parsed command line, before anything is written."""
    if a.cmd not in ("prune", "export", "reproduce", "pretrain"):
        return
    out = getattr(a, "out", None)
    log_file = getattr(a, "log_file", None)
    ins = inputs_of(a)
    outs = [("--out", out)]
    if a.cmd == "export" and getattr(a, "format", "onnx") == "onnx" and out:
        outs.append(("--out", f"{out}.json"))  # the sidecar
    outs.append(("--log-file", log_file))
    check_no_overlap(outs, ins)
    check_log_outside_out(log_file, out)
    if log_file:
        check_log_file(log_file)
    if not out:
        return
    if a.cmd == "export":
        if a.format == "onnx":
            check_replaceable_file(real(out))
        elif getattr(a, "name", None):
            check_replaceable_dir(real(Path(out) / a.name))
    else:
        check_replaceable_dir(real(out))


def check_run(cfg) -> None:
    """The path rules for a `tsprune.pipeline.RunConfig` (the Python API's prune)."""
    ins = [("--data", getattr(cfg.data, "path", None)), ("--model", _model_input(cfg.model))]
    ins = [(f, p) for f, p in ins if p is not None]
    check_no_overlap([("--out", cfg.out), ("--log-file", cfg.log_file)], ins)
    check_log_outside_out(cfg.log_file, cfg.out)
    if cfg.log_file:
        check_log_file(cfg.log_file)


def claim_dir(out, command: str, arg: str = "--out") -> Path:
    """For commands that write into --out as they go (reproduce, pretrain): check it, create
    it and mark it as tsprune's before the first write."""
    p = real(out)
    check_replaceable_dir(p, arg)
    try:
        p.mkdir(parents=True, exist_ok=True)
        if not (p / MARKER).exists():
            write_marker(p, command)
    except OSError as e:
        raise UserError(f"{arg}: cannot write to {str(out)!r} ({e.strerror or e})") from None
    return p


# ---- failed writes ---------------------------------------------------------------------
def as_os_error(e: BaseException) -> OSError | None:
    """An OSError for ``e`` when it is a failed write (also safetensors' SafetensorError,
    which carries the OS error in its message); else None."""
    if isinstance(e, OSError):
        return e
    msg = str(e)
    if type(e).__name__ == "SafetensorError" and "IoError" in msg:
        code = errno.ENOSPC if ("StorageFull" in msg or "code: 28" in msg) else errno.EIO
        m = re.search(r"code: (\d+)", msg)
        if m:
            code = int(m.group(1))
        return OSError(code, os.strerror(code))
    return None


def describe_write_error(e: OSError) -> str:
    what = e.strerror or str(e) or type(e).__name__
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    code = f", errno {e.errno}" if e.errno else ""
    return f"I/O error: {what}{code}{where}"
