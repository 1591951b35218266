"""Backend choice in tsprune.ops: argument, then TSPRUNE_BACKEND, then device; fallbacks."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

import tsprune.ops as ops
from tsprune.errors import UserError
from tsprune.ops import _ext

HAS_CPP = _ext.has_cpp()


@pytest.fixture
def spy(monkeypatch):
    """Record which backend ran: patch every backend's callable with a recorder."""
    calls = []

    def wrap(name, fn):
        def rec(*a, **k):
            calls.append(name)
            return fn(*a, **k)
        return rec

    monkeypatch.setattr(ops, "torch_fused_importance", wrap("reference", ops.torch_fused_importance))
    monkeypatch.setattr(ops, "torch_gather_rows_cols", wrap("reference", ops.torch_gather_rows_cols))
    for table in (ops._IMP, ops._IMP_EAGER, ops._IMP_GRAD):
        for name in list(table):
            monkeypatch.setitem(table, name, wrap(name, table[name]))
    for name, (op, impl) in list(ops._PACK.items()):
        monkeypatch.setitem(ops._PACK, name, (wrap(name, op), wrap(name, impl)))
    return calls


@pytest.fixture
def no_ext(monkeypatch):
    """Simulate a missing or broken tsprune._C for this test."""
    monkeypatch.setattr(_ext, "_state", {"mod": None, "error": "ImportError: simulated missing .so"})
    monkeypatch.setattr(ops, "_warned", set())


def _imp_args(d=8):
    x = torch.randn(2, 3, d)
    return x, x * 0.1, torch.zeros(d)


def test_available_backends():
    assert ops.available_backends()[0] == "reference"
    cpu = ops.available_backends("cpu")
    assert ("cpp" in cpu) == HAS_CPP and "cuda" not in cpu
    if not torch.cuda.is_available():
        assert "cuda" not in ops.available_backends()


def test_auto_on_cpu(monkeypatch, spy):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    x, g, imp = _imp_args()
    ops.fused_importance(x, g, imp, alpha=0.5, first=True)
    assert spy == ["cpp" if HAS_CPP else "reference"]


def test_env_var_then_argument(monkeypatch, spy):
    x, g, imp = _imp_args()
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    ops.fused_importance(x, g, imp, alpha=0.5, first=True)
    assert spy == ["reference"]
    if HAS_CPP:  # the argument wins over the environment
        ops.fused_importance(x, g, imp, alpha=0.5, first=False, backend="cpp")
        assert spy == ["reference", "cpp"]
    monkeypatch.setenv(ops.ENV_VAR, "auto")
    ops.gather_rows_cols(torch.zeros(3, 3), torch.tensor([1]))
    assert spy[-1] == ("cpp" if HAS_CPP else "reference")


def test_unknown_backend_names_the_source(monkeypatch):
    x, g, imp = _imp_args()
    with pytest.raises(UserError, match=r"backend: got 'fast'; expected one of reference, cpp, cuda, triton"):
        ops.fused_importance(x, g, imp, alpha=0.5, first=True, backend="fast")
    monkeypatch.setenv(ops.ENV_VAR, "fast")
    with pytest.raises(UserError, match=r"TSPRUNE_BACKEND: got 'fast'"):
        ops.fused_importance(x, g, imp, alpha=0.5, first=True)


def test_explicit_unavailable_raises(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    x, g, imp = _imp_args()
    with pytest.raises(UserError, match=r"'cuda' is not available for tensors on cpu: it runs on CUDA tensors only"):
        ops.fused_importance(x, g, imp, alpha=0.5, first=True, backend="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(UserError, match=r"'triton' is not available .* available there: reference"):
        ops.pack([torch.zeros(2, 2)], [None], [None], backend="triton")
    monkeypatch.setenv(ops.ENV_VAR, "cuda")
    with pytest.raises(UserError, match=r"TSPRUNE_BACKEND: backend 'cuda' is not available"):
        ops.gather_rows_cols(torch.zeros(2, 2))


def test_missing_extension_falls_back_and_warns_once(monkeypatch, no_ext, spy):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    x, g, imp = _imp_args()
    with pytest.warns(RuntimeWarning, match="simulated missing .so"):
        out = ops.fused_importance(x, g, imp, alpha=0.5, first=True)
    assert torch.equal(out, imp.abs())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        ops.fused_importance(x, g, imp, alpha=0.5, first=False)
        w = torch.randn(5, 4)
        assert torch.equal(ops.gather_rows_cols(w, torch.tensor([4, 0])), w[[4, 0]])
    assert spy == ["reference"] * 3
    assert "cpp" not in ops.available_backends("cpu")
    with pytest.raises(UserError, match=r"'cpp' is not available .*simulated missing .so"):
        ops.fused_importance(x, g, imp, alpha=0.5, first=True, backend="cpp")


def test_unsupported_dtype_goes_to_reference_without_warning(monkeypatch, spy):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    w = torch.randn(4, 3, dtype=torch.complex128)  # 16-byte elements: no compiled copy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ops.gather_rows_cols(w, torch.tensor([1, 2]))
    assert torch.equal(out, w[[1, 2]]) and spy == ["reference"]
    if HAS_CPP:
        with pytest.raises(UserError, match="cannot copy torch.complex128"):
            ops.gather_rows_cols(w, backend="cpp")


_CHILD = r"""
import json, sys, warnings
sys.modules["tsprune._C"] = None  # the import system now raises ImportError for it
import torch
import tsprune.ops as ops
state = {"triton_imported": "triton" in sys.modules, "ext_loaded_at_import": "mod" in ops._ext._state,
         "cuda_initialized": torch.cuda.is_initialized()}
with warnings.catch_warnings(record=True) as rec:
    warnings.simplefilter("always")
    w = torch.arange(12.0).reshape(3, 4)
    out = ops.gather_rows_cols(w, torch.tensor([2, 0]), torch.tensor([3]))
state["ok"] = out.tolist() == [[11.0], [3.0]]
state["warnings"] = [str(r.message) for r in rec]
state["available"] = ops.available_backends("cpu")
print(json.dumps(state))
"""


def test_import_without_extension_in_a_fresh_process():
    """No .so: import works, nothing is probed at import, the first auto call warns once."""
    res = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "TSPRUNE_BACKEND": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads(res.stdout.strip().splitlines()[-1])
    assert state["ok"] and state["available"] == ["reference"]
    assert not state["triton_imported"] and not state["ext_loaded_at_import"] and not state["cuda_initialized"]
    assert len(state["warnings"]) == 1 and "tsprune._C did not load" in state["warnings"][0]


def test_cuda_problem_is_reported_not_raised():
    """The CUDA kernels' own probe (driver, devices) runs on demand and explains itself."""
    problem = _ext.cuda_problem()
    if not _ext.has_cuda_kernels():
        assert "without CUDA kernels" in problem
    elif not torch.cuda.is_available():
        assert isinstance(problem, str) and problem
    x = torch.zeros(2, 3)
    if problem:
        assert "cuda" not in ops.available_backends()
        with pytest.raises(UserError, match="backend 'cuda' is not available"):
            ops.fused_importance(x, x, torch.zeros(3), alpha=0.5, first=True, backend="cuda")
