"""Model directories on disk: config.json + safetensors weights (+ tsprune.json manifest).

Weights load only from safetensors, never from pickle; every file a directory names
(sharded index) must stay inside the directory. Remote code is never run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from tsprune.errors import UserError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MANIFEST = "tsprune.json"
PICKLE_NAMES = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


def _allowed_roots(root: Path) -> list[Path]:
    """Where a model directory's weights may really be, symlinks followed: the directory,
    and for a Hugging Face cache snapshot (.../models--ORG--NAME/snapshots/REV) that repo's
    cache folder, whose blobs/ the snapshot's files link to."""
    root_r = root.resolve()
    roots = [root_r]
    if root_r.parent.name == "snapshots" and root_r.parent.parent.name.startswith("models--"):
        roots.append(root_r.parent.parent)
    return roots


def inside(root: Path, name: str, what: str) -> Path:
    """root/name, refusing absolute paths and anything that escapes root.

    One rule for every weights file, named directly (model.safetensors) or by the index:
    the name must be a relative path inside the directory, and the file it reaches,
    symlinks followed, must lie inside the directory too (or in the blobs of the Hugging
    Face cache repo that the directory is a snapshot of)."""
    if not isinstance(name, str) or not name or os.path.isabs(name):
        raise UserError(f"{what}: got {name!r}; expected a file name inside {root}")
    p = (root / name).resolve()
    if not any(r in p.parents for r in _allowed_roots(root)):  # root itself is no file inside it
        raise UserError(f"{what}: {name!r} is not a file inside the model directory {root}"
                        + (f" (it links to {p})" if (root / name).is_symlink() else ""))
    return p


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what}: {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what}: {path} is not valid JSON ({e.__class__.__name__}: {e})") from None
    except RecursionError:
        raise UserError(f"{what}: {path} is nested too deeply to be a model file") from None
    except OSError as e:
        raise UserError(f"{what}: cannot read {path} ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what}: {path} must hold a JSON object")
    return data


def read_config(model_dir: str | os.PathLike) -> dict:
    d = Path(model_dir)
    if not d.is_dir():
        raise UserError(f"--model: {str(model_dir)!r} is not a directory (expected a Hugging Face "
                        f"model directory with config.json and model.safetensors, or a bundled name)")
    cfg = read_json(d / CONFIG, "--model")
    if cfg.get("auto_map"):
        # remote code is never executed: the architecture must be one tsprune implements
        cfg = {k: v for k, v in cfg.items() if k != "auto_map"}
    return cfg


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"weights: {path} is not a readable safetensors file ({e})") from None


def weight_files(model_dir: str | os.PathLike) -> list[Path]:
    """The safetensors files of a directory (single file or sharded index), each checked to
    stay inside the directory; UserError for pickle-only or missing weights."""
    d = Path(model_dir)
    if (d / WEIGHTS).exists() or (d / WEIGHTS).is_symlink():
        inside(d, WEIGHTS, "weights")  # the same rule as for the index's files
        return [d / WEIGHTS]
    if (d / INDEX).exists():
        index = read_json(d / INDEX, "weights index")
        wm = index.get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise UserError(f"weights index: {d / INDEX} has no weight_map (expected an object "
                            f"mapping tensor names to file names)")
        bad = [f for f in wm.values() if not isinstance(f, str)]
        if bad:
            raise UserError(f"weights index: got {bad[0]!r} in {d / INDEX}; expected a file name "
                            f"inside {d}")
        files = sorted(set(wm.values()))
        return [inside(d, f, "weights index") for f in files]
    pickles = [n for n in PICKLE_NAMES if (d / n).exists()]
    if pickles:
        raise UserError(f"weights: {d} holds only pickle weights ({pickles[0]}); tsprune loads "
                        f"safetensors only (convert with save_pretrained(safe_serialization=True))")
    raise UserError(f"weights: no {WEIGHTS} or {INDEX} in {d}")


def check_weights(model_dir: str | os.PathLike) -> list[Path]:
    """Open every safetensors file's header (cheap) so that a corrupted or truncated file is
    a clear UserError before any loader touches it."""
    files = weight_files(model_dir)
    for f in files:
        try:
            size = f.stat().st_size
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    sl = sf.get_slice(k)
                    _ = sl.get_shape()
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise UserError(f"weights: {f} is not a readable safetensors file ({e})") from None
        if size < 8:
            raise UserError(f"weights: {f} is truncated ({size} bytes)")
    return files


def read_state_dict(model_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a directory's safetensors weights (single file or sharded index)."""
    out: dict[str, torch.Tensor] = {}
    for f in weight_files(model_dir):
        out.update(_load_file(f))
    return out


def write_model_dir(out: str | os.PathLike, config: dict, state: dict[str, torch.Tensor],
                    manifest: dict | None) -> None:
    """Write config.json, model.safetensors and (for pruned models) tsprune.json."""
    # lazy: looked up per call, so that a patched safetensors.torch.save_file (a full disk in
    # tests/test_output_safety.py) is the one that writes
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    if manifest is not None:
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
