"""Safety of loading: weights come only from safetensors (never pickle), every torch.load
in the package is weights_only=True, remote code never runs, and no path in a weights
index or a tsprune.json manifest reaches outside the model directory.

Each hostile file here would leave a marker file behind if it were ever executed
(unpickled or imported); the tests check that the marker never appears.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tsprune
from helpers import cli, copy_model, one_line_error, save_tiny_timesfm25
from tsprune.errors import UserError
from tsprune.model import load

PACKAGE = Path(tsprune.__file__).resolve().parent


def cli_one_line(*args) -> str:
    """Run `tsprune ARGS` in-process; assert exit 2 with one stderr line; return it."""
    return one_line_error(cli(*args))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_timesfm25(tmp_path_factory.mktemp("models") / "tiny")


class _Evil:
    """Unpickling this runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---- pickle -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickle_only_directory_is_refused(name, tiny_dir, tmp_path):
    marker = tmp_path / "UNPICKLED"
    m = copy_model(tiny_dir, tmp_path / "m")
    (m / "model.safetensors").unlink()
    (m / name).write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(UserError, match="pickle.*safetensors"):
        load(m)
    line = cli_one_line("inspect", m)
    assert name in line and "safetensors" in line
    assert not marker.exists()


def test_pickle_beside_safetensors_is_never_read(tiny_dir, tmp_path, monkeypatch):
    marker = tmp_path / "UNPICKLED"
    m = copy_model(tiny_dir, tmp_path / "m")
    (m / "pytorch_model.bin").write_bytes(pickle.dumps(_Evil(marker)))

    def no_pickle(*a, **k):
        raise AssertionError("a pickle loader was called")
    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    model = load(m)
    ref = load(tiny_dir)
    for (k, a), (_, b) in zip(model.module.state_dict().items(), ref.module.state_dict().items()):
        assert torch.equal(a, b), k
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(f: ast.AST) -> str:
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def test_source_tree_loads_no_pickle():
    """Every torch.load is weights_only=True; no pickle/dill/joblib loads, no np.load with
    allow_pickle=True; every from_pretrained forbids remote code and reads safetensors."""
    bad = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        aliases = {}  # local name -> module path, for `from torch import load as tl`
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle"):
                        bad.append(f"{f}:{node.lineno} imports {a.name}")
        for c in _calls(tree):
            name = _dotted(c.func)
            full = aliases.get(name, name)
            where = f"{f.relative_to(PACKAGE.parent)}:{c.lineno}"
            if full in ("torch.load", "torch.serialization.load") and _kw(c, "weights_only") is not True:
                bad.append(f"{where} torch.load without weights_only=True")
            if full.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") or full.endswith(
                    ("pickle.load", "pickle.loads", "Unpickler")):
                bad.append(f"{where} {full}")
            if full in ("np.load", "numpy.load") and _kw(c, "allow_pickle") not in (None, False):
                bad.append(f"{where} np.load(allow_pickle=...)")
            if isinstance(c.func, ast.Attribute) and c.func.attr == "from_pretrained":
                if _kw(c, "trust_remote_code") is not False or _kw(c, "use_safetensors") is not True:
                    bad.append(f"{where} {name} without trust_remote_code=False, use_safetensors=True")
    assert not bad, "\n".join(bad)


# ---- remote code ------------------------------------------------------------------------
def _remote_code_dir(tiny_dir: Path, dst: Path, marker: Path, model_type: str) -> Path:
    m = copy_model(tiny_dir, dst)
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = model_type
    if model_type != "timesfm2_5":
        cfg["architectures"] = ["EvilModel"]
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                       "AutoModel": "modeling_evil.EvilModel",
                       "AutoModelForPrediction": "modeling_evil.EvilModel"}
    (m / "config.json").write_text(json.dumps(cfg))
    payload = f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    for name in ("modeling_evil.py", "configuration_evil.py"):
        (m / name).write_text(payload + "class EvilModel: pass\nclass EvilConfig: pass\n")
    return m


def test_remote_code_never_runs_for_a_supported_family(tiny_dir, tmp_path):
    from transformers import TimesFm2_5ModelForPrediction
    marker = tmp_path / "REMOTE_CODE_RAN"
    m = _remote_code_dir(tiny_dir, tmp_path / "m", marker, "timesfm2_5")
    model = load(m)
    assert type(model.module) is TimesFm2_5ModelForPrediction  # the builtin class
    rc, out, _ = cli("inspect", m)
    assert rc == 0 and "timesfm2_5" in out
    assert not marker.exists()


def test_remote_code_never_runs_for_an_unknown_family(tiny_dir, tmp_path):
    marker = tmp_path / "REMOTE_CODE_RAN"
    m = _remote_code_dir(tiny_dir, tmp_path / "m", marker, "evil_model")
    with pytest.raises(UserError, match="not a supported family; supported: .*timesfm2_5"):
        load(m)
    assert "'evil_model'" in cli_one_line("inspect", m)
    assert not marker.exists()


# ---- weights index ----------------------------------------------------------------------
SHARD = "model-00001-of-00001.safetensors"


def _sharded(tiny_dir: Path, dst: Path, first) -> Path:
    """A directory with a one-shard index whose first tensor maps to ``first``."""
    from safetensors import safe_open
    m = copy_model(tiny_dir, dst)
    (m / "model.safetensors").rename(m / SHARD)
    with safe_open(str(m / SHARD), "pt") as f:
        keys = list(f.keys())
    wm = {k: (first if i == 0 else SHARD) for i, k in enumerate(keys)}
    (m / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return m


def test_sharded_index_inside_the_directory_loads(tiny_dir, tmp_path):
    m = _sharded(tiny_dir, tmp_path / "m", SHARD)
    assert load(m).num_params() == load(tiny_dir).num_params()


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink_out", "directory_itself",
                                  "deep_parent", "not_a_string", "weight_map_list"])
def test_sharded_index_cannot_escape(kind, tiny_dir, tmp_path):
    outside = tmp_path / "x.safetensors"
    outside.write_bytes((tiny_dir / "model.safetensors").read_bytes())
    first = {"parent": "../x.safetensors", "absolute": str(outside), "symlink_out": "link.safetensors",
             "directory_itself": ".", "deep_parent": f"sub/../../{outside.name}",
             "not_a_string": 3, "weight_map_list": SHARD}[kind]
    m = _sharded(tiny_dir, tmp_path / "m", first)
    if kind == "symlink_out":
        (m / "link.safetensors").symlink_to(outside)
    if kind == "weight_map_list":
        (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": [SHARD]}))
    with pytest.raises(UserError, match="weights index"):
        load(m)
    assert "weights index" in cli_one_line("inspect", m)


# ---- manifest ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pruned_dir(tiny_dir, tmp_path_factory) -> Path:
    """A pruned model directory (FFN 0 of layer 0 cut from 96 to 64 neurons, attention as
    dense) made by the real surgery, so that the manifest is the one tsprune writes."""
    from tsprune.prune import MaskSet
    from tsprune.prune.surgery import analyze, apply_cut
    m = load(tiny_dir).clone()
    st_ = m.family.structure(m.module)
    masks = MaskSet(m.module, st_.linears())
    ffn = st_.blocks[0].ffn[0]
    for path, side, mask in masks.units():
        if (path in ffn.inputs and side == "out") or (path == ffn.output and side == "in"):
            mask[64:] = 0.0
    apply_cut(m.module, m.family, st_, masks, analyze(st_, masks))
    m.manifest = {}
    d = tmp_path_factory.mktemp("pruned") / "p"
    m.save(d)
    return d


def test_pruned_directory_loads(pruned_dir, tiny_dir):
    m = load(pruned_dir)
    assert m.pruned and m.num_params() < load(tiny_dir).num_params()


L0 = "model.layers.0.mlp.fc1"
ATT = "model.layers.0.self_attn"
MANIFEST_EDITS = {
    # name: (edit of the manifest dict, needle in the error)
    "missing_module": (lambda m: m["linears"].update({"model.layers.9.mlp.fc1": [1, 1, False]}), "does not exist"),
    "parent_path": (lambda m: m["linears"].update({"../../etc/passwd": [1, 1, False]}), "not a module path"),
    "absolute_path": (lambda m: m["linears"].update({"/etc/passwd": [1, 1, False]}), "not a module path"),
    "empty_path": (lambda m: m["linears"].update({"": [1, 1, False]}), "not a module path"),
    "double_dot": (lambda m: m["linears"].update({"model..layers": [1, 1, False]}), "not a module path"),
    "dunder": (lambda m: m["linears"].update({"__class__": [1, 1, False]}), "does not exist"),
    "a_parameter": (lambda m: m["linears"].update({L0 + ".weight": [1, 1, False]}), "does not exist"),
    "not_a_linear": (lambda m: m["linears"].update({"model": [1, 1, False]}), "not a Linear"),
    "short_spec": (lambda m: m["linears"].update({L0: [1, 1]}), "expected [out_features"),
    "string_size": (lambda m: m["linears"].update({L0: ["a", 64, False]}), "out_features"),
    "negative_size": (lambda m: m["linears"].update({L0: [-4, 64, False]}), "out_features"),
    "larger_than_dense": (lambda m: m["linears"].update({L0: [10**12, 64, False]}), "from 0 to 96"),
    "linears_a_list": (lambda m: m.update(linears=[1, 2]), "'linears'"),
    "attention_missing": (lambda m: m["attention"].update({"model.layers.7.self_attn": {}}), "does not exist"),
    "attention_keys": (lambda m: m["attention"].update({ATT: {"num_heads": "x"}}), "expected num_heads"),
    "attention_heads": (lambda m: m["attention"][ATT].update(num_heads=-1), "num_heads"),
    "attention_kv_index": (lambda m: m["attention"][ATT].update(kv_heads=[0, 99, 2, 3]), "kv_heads"),
    "ffn_path": (lambda m: m["ffn"].update({"../mlp": 3}), "not a module path"),
    "ffn_negative": (lambda m: m["ffn"].update({"model.layers.0.mlp": -3}), "FFN width"),
    "ffn_a_list": (lambda m: m.update(ffn=[3]), "'ffn'"),
    "extra_units": (lambda m: m.update(extra={"experts": "x"}), "'extra'"),
    "format": (lambda m: m.update(format="x"), "format"),
    "family": (lambda m: m.update(family="ttm"), "does not match"),
    "not_an_object": (lambda m: m.clear() or m.update(format=[]), "format"),
}


@pytest.mark.parametrize("name", sorted(MANIFEST_EDITS))
def test_bad_manifest_is_one_line(name, pruned_dir, tmp_path):
    edit, needle = MANIFEST_EDITS[name]
    m = copy_model(pruned_dir, tmp_path / "m")
    manifest = json.loads((m / "tsprune.json").read_text())
    edit(manifest)
    (m / "tsprune.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="manifest") as e:
        load(m)
    assert needle in str(e.value)
    assert needle in cli_one_line("inspect", m)


_json = st.recursive(st.none() | st.booleans() | st.integers(-10**13, 10**13) | st.floats()
                     | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4),
                     max_leaves=10)


def _paths(node, prefix=()):
    """Every (key path) to a value inside a JSON document."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


@given(data=st.data())
@settings(max_examples=int(os.environ.get("TSPRUNE_FUZZ_EXAMPLES", "0")) or 80, deadline=None,
          derandomize="TSPRUNE_FUZZ_EXAMPLES" not in os.environ, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_manifest_loads_or_raises_user_error(data, pruned_dir, tmp_path):
    """Replace one value anywhere in tsprune.json (or the whole document) by random JSON:
    load() either succeeds or raises UserError, never anything else."""
    manifest = json.loads((pruned_dir / "tsprune.json").read_text())
    path = data.draw(st.sampled_from([(), *_paths(manifest)]), label="path")
    value = data.draw(_json, label="value")
    if path:
        node = manifest
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    else:
        manifest = value
    m = tmp_path / "m"
    if not m.exists():
        copy_model(pruned_dir, m)
    (m / "tsprune.json").write_text(json.dumps(manifest))
    try:
        load(m)
    except UserError:
        pass
