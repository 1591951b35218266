"""Nothing the user owns is ever deleted, overwritten or appended to (tsprune.safety,
tsprune.atomic): outputs never overlap inputs, only tsprune's own outputs are replaced,
a failed write leaves nothing partial and is one line.

Besides the cases found by hand, ``test_generated_overlap`` builds every combination of
writing command x input x output flag x relation (equal, parent, child, via a symlink)
x spelling of the path (plain, with ``./`` and ``x/..`` segments, a trailing slash,
relative to the working directory): each must exit 2 with one line, and every user file
(checksummed before and after) must be unchanged, with no file added or removed.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from helpers import cli, one_line_error, save_tiny_timesfm25, synthetic_frame

FAST = ["--context", "64", "--horizon", "16", "--split", "0.7,0.1,0.2", "--quiet", "--no-finetune",
        "--no-dlinear", "--max-epochs", "1", "--macro-batch", "64", "--batch-size", "32",
        "--val-samples", "32", "--calib-samples", "128"]


def snapshot(root: Path) -> dict:
    """{relative path: sha256 (or 'link -> target', or 'dir')} of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link -> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_timesfm25(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def user(tmp_path, tiny_dir):
    """A user's tree: user/data/x.csv (+ notes.txt beside it), user/model (the tiny model),
    user/model.json (a model config for pretrain), user/links/ (symlinks point here)."""
    root = tmp_path / "user"
    (root / "data").mkdir(parents=True)
    synthetic_frame(n=600, channels=2).to_csv(root / "data" / "x.csv", index=False)
    (root / "data" / "notes.txt").write_text("mine\n")
    (root / "model").mkdir()
    for f in tiny_dir.iterdir():
        (root / "model" / f.name).write_bytes(f.read_bytes())
    (root / "model.json").write_text(json.dumps({"hidden_size": 64}))
    return root


def _prune(model, data, out, *extra):
    return cli("prune", "--model", model, "--data", data, "--out", out, *FAST, *extra)


# ---- the cases of the issue -------------------------------------------------------------
def test_out_containing_the_data_is_refused(user):
    before = snapshot(user)
    line = one_line_error(_prune(user / "model", user / "data" / "x.csv", user / "data"), "--out", "--data")
    assert "contains" in line and str(user / "data") in line and "x.csv" in line
    assert snapshot(user) == before


def test_out_equal_to_the_model_is_refused(user):
    before = snapshot(user)
    line = one_line_error(_prune(user / "model", user / "data" / "x.csv", user / "model"), "--out", "--model")
    assert " is the input " in line
    assert snapshot(user) == before


def test_log_file_naming_the_input_is_refused(user, tmp_path):
    before = snapshot(user)
    one_line_error(_prune(user / "model", user / "data" / "x.csv", tmp_path / "run",
                          "--log-file", user / "data" / "x.csv"), "--log-file", "x.csv")
    assert snapshot(user) == before
    assert not (tmp_path / "run").exists()


def test_log_file_that_is_not_a_tsprune_log_is_not_appended_to(user, tmp_path):
    before = snapshot(user)
    one_line_error(_prune(user / "model", user / "data" / "x.csv", tmp_path / "run",
                          "--log-file", user / "data" / "notes.txt"), "--log-file", "not a tsprune log")
    assert snapshot(user) == before


def test_log_file_inside_out_is_refused(user, tmp_path):
    one_line_error(_prune(user / "model", user / "data" / "x.csv", tmp_path / "run",
                          "--log-file", tmp_path / "run" / "log.txt"), "--log-file", "inside --out")


def test_existing_directory_not_written_by_tsprune_is_refused(user, tmp_path):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    one_line_error(_prune(user / "model", user / "data" / "x.csv", mine), "--out", "not written by tsprune")
    assert snapshot(tmp_path) == before


def test_stale_partial_that_is_not_tsprunes_is_never_deleted(user, tmp_path):
    """A hidden '.run.partial' that tsprune did not create (no lock, no marker) stays."""
    odd = tmp_path / ".run.partial"
    odd.mkdir()
    (odd / "keep.txt").write_text("x")
    one_line_error(_prune(user / "model", user / "data" / "x.csv", tmp_path / "run"),
                   "--out", "not a tsprune work directory")
    assert (odd / "keep.txt").read_text() == "x"


def test_export_never_replaces_a_foreign_file(user, tmp_path):
    for name in ("m.onnx", "n.onnx"):
        (tmp_path / name).write_bytes(b"not tsprune's")
    (tmp_path / "n.onnx").unlink()
    (tmp_path / "n.onnx.json").write_text("{}")  # a foreign sidecar would be overwritten
    before = snapshot(tmp_path)
    one_line_error(cli("export", "--model", user / "model", "--out", tmp_path / "m.onnx", "--context", 64),
                   "--out", "m.onnx", "not a graph tsprune exported")
    one_line_error(cli("export", "--model", user / "model", "--out", tmp_path / "n.onnx", "--context", 64),
                   "--out", "n.onnx.json")
    assert snapshot(tmp_path) == before


def test_reproduce_refuses_a_foreign_out(user, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("x")
    before = snapshot(tmp_path)
    one_line_error(cli("reproduce", "--datasets", user / "data" / "x.csv", "--out", mine, "--quiet"),
                   "--out", "not written by tsprune")
    assert snapshot(tmp_path) == before


# ---- a successful run: empty directory kept, symlink followed, marker, replace ----------
def test_empty_out_is_filled_in_place_and_a_symlink_is_followed(user, tmp_path):
    out = tmp_path / "runs" / "a"
    out.mkdir(parents=True)
    ino = out.stat().st_ino
    rc, _, err = _prune(user / "model", user / "data" / "x.csv", out)
    assert rc == 0, err
    assert out.stat().st_ino == ino, "the user's empty directory was replaced, not filled"
    marker = json.loads((out / ".tsprune-output").read_text())
    assert marker["tool"] == "tsprune" and marker["command"] == "prune"
    # again, through a symlink to it: the target is replaced (it is tsprune's), the link stays
    link = tmp_path / "latest"
    link.symlink_to(out, target_is_directory=True)
    before_user = snapshot(user)
    rc, _, err = _prune(user / "model", user / "data" / "x.csv", link)
    assert rc == 0, err
    assert link.is_symlink() and Path(os.readlink(link)) == out
    assert (out / "report.json").is_file() and (out / ".tsprune-output").is_file()
    left = sorted(p.name for d in (tmp_path, out.parent) for p in d.iterdir() if p.name.startswith("."))
    assert not left, left  # no .NAME.old-PID, no .partial
    assert snapshot(user) == before_user


# ---- failed writes ----------------------------------------------------------------------
def _full_disk(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk_safetensors(*a, **k):
    from safetensors import SafetensorError
    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                          "message: \"No space left on device\" })")


@pytest.mark.parametrize("writer", [_full_disk, _full_disk_safetensors], ids=["oserror", "safetensors"])
def test_full_disk_while_saving_is_one_line_and_leaves_nothing(writer, user, tmp_path, monkeypatch):
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", writer)
    out = tmp_path / "new" / "run"
    before = snapshot(user)
    rc, _, err = _prune(user / "model", user / "data" / "x.csv", out)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1, err
    assert "No space left on device" in lines[0] and "errno 28" in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "new").exists(), sorted(p.name for p in tmp_path.rglob("*"))
    assert snapshot(user) == before


def test_full_disk_keeps_the_previous_output(user, tmp_path, monkeypatch):
    """The earlier complete output at --out survives a failed rerun untouched."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".tsprune-output").write_text(json.dumps({"tool": "tsprune"}))
    (out / "report.json").write_text("{}")
    before = snapshot(tmp_path)
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", _full_disk)
    rc, _, err = _prune(user / "model", user / "data" / "x.csv", out)
    assert rc == 1, err
    assert snapshot(tmp_path) == before


# ---- generated hostile cases ------------------------------------------------------------
# command -> {input kind: (flag args that name the input)}; outputs: the flags that write
def _commands(user: Path):
    data, model = user / "data" / "x.csv", user / "model"
    return {
        "prune": ({"data": data, "model": model}, ("--out", "--log-file"),
                  lambda out_args: ["prune", "--model", model, "--data", data, *FAST, *out_args]),
        "export": ({"model": model, "data": data}, ("--out",),
                   lambda out_args: ["export", "--model", model, "--data", data, "--context", 64, *out_args]),
        "triton": ({"model": model, "data": data}, ("--out",),
                   lambda out_args: ["export", "--format", "triton", "--model", model, "--data", data,
                                     "--name", "m", "--context", 64, *out_args]),
        "reproduce": ({"data": data, "model": model}, ("--out",),
                      lambda out_args: ["reproduce", "--datasets", data, "--model", model, "--quiet",
                                        *out_args]),
    }


CASES = [(cmd, kind, flag, rel, spell)
         for cmd, kinds, flags in [("prune", ("data", "model"), ("--out", "--log-file")),
                                   ("export", ("model", "data"), ("--out",)),
                                   ("triton", ("model", "data"), ("--out",)),
                                   ("reproduce", ("data", "model"), ("--out",))]
         for kind in kinds for flag in flags
         for rel in ("equal", "parent", "child", "symlink")
         for spell in ("plain", "dots", "slash", "relative")]


def _spell(p: Path, spell: str, cwd: Path) -> str:
    s = str(p)
    if spell == "dots":
        return str(p.parent / "." / "zz" / ".." / p.name)
    if spell == "slash":
        return s + "/"
    if spell == "relative":
        return os.path.relpath(s, cwd)
    return s


@pytest.mark.parametrize("cmd,kind,flag,rel,spell", CASES,
                         ids=["-".join(c) for c in CASES])
def test_generated_overlap(cmd, kind, flag, rel, spell, user, tmp_path, monkeypatch):
    inputs, _, argv = _commands(user)[cmd]
    inp = inputs[kind]
    if rel == "equal":
        target = inp
    elif rel == "parent":
        target = inp.parent
    elif rel == "child":
        target = inp / ("m.onnx" if cmd == "export" and flag == "--out" else "sub")
    else:  # a symlink elsewhere to the input's folder, then down to the input
        link = tmp_path / "elsewhere" / "link"
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(inp.parent, target_is_directory=True)
        target = link / inp.name
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = _spell(target, spell, cwd)
    out_args = [flag, path] if flag == "--out" else ["--out", tmp_path / "run", flag, path]
    before = snapshot(user)
    one_line_error(cli(*argv(out_args)), flag)
    assert snapshot(user) == before
    assert not list(cwd.iterdir())
