"""Resumable state on disk: tensors in safetensors, everything else in JSON, written
atomically (a temporary name, then a rename) so that a kill at any point leaves either the
previous or the new state, never a torn one. No pickle: optimizer states are flattened
into named tensors plus JSON."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file


def save_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    # lazy: looked up per call, so that a patched safetensors.torch.save_file (a full disk in
    # tests/test_output_safety.py) is the one that writes
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp_t = path / f".tensors.safetensors.tmp-{os.getpid()}"
    tmp_m = path / f".meta.json.tmp-{os.getpid()}"
    prev = path / "meta.json"
    gen = (int(json.loads(prev.read_text()).get("generation", 0)) + 1) if prev.exists() else 0
    meta = {**meta, "generation": gen}
    save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, str(tmp_t))
    tmp_m.write_text(json.dumps(meta, default=float))
    # the JSON names the generation of tensors it belongs to: write tensors first, then meta
    os.replace(tmp_t, path / f"tensors-{gen}.safetensors")
    os.replace(tmp_m, path / "meta.json")
    for old in path.glob("tensors-*.safetensors"):
        if old.name != f"tensors-{gen}.safetensors":
            old.unlink(missing_ok=True)


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) of the last complete save, or None when there is none."""
    path = Path(path)
    if not (path / "meta.json").exists():
        return None
    meta = json.loads((path / "meta.json").read_text())
    f = path / f"tensors-{int(meta.get('generation', 0))}.safetensors"
    if not f.exists():
        return None
    return load_file(str(f)), meta


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state as named tensors + JSON (param ids are positions)."""
    sd = opt.state_dict()
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                entry[k] = v
        state_meta[str(pid)] = entry
    return tensors, {"param_groups": sd["param_groups"], "state": state_meta}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = dict(entry)
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
