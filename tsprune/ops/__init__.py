"""tsprune.ops: the compiled kernels of tsprune, one public entry point per op.

    gather_rows_cols(w, rows=None, cols=None, *, dtype=None, backend=None) -> Tensor
    pack(tensors, rows, cols, *, dtype=None, backend=None) -> list[Tensor]
    fused_importance(x, g, imp, *, alpha, first, out_abs=None, backend=None) -> Tensor
    fused_importance_from_grad(gb, imp, *, alpha, first, out_abs=None, backend=None) -> Tensor
    available_backends(device=None) -> list[str]

This module is the only place that chooses a backend, at call time:
1. the ``backend=`` argument, else 2. the environment variable TSPRUNE_BACKEND,
else 3. by device: CPU -> "cpp" if tsprune._C is built, else "reference";
CUDA -> "cuda" if tsprune._C has its CUDA kernels, else "triton", else
"reference". A backend asked for by 1. or 2. that cannot run raises
UserError naming it and the available ones; an automatic fallback warns once.
Backends: "reference" (pure torch, tsprune/ops/reference.py, the ground truth),
"cpp" (csrc/, C++/OpenMP), "cuda" (csrc/*.cu), "triton" (kernels/; on CPU
tensors only under TRITON_INTERPRET=1). Nothing is probed at import time.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..errors import UserError, bad_arg
from . import _ext, _triton
from ._common import check_gather, check_importance, check_pack, copy_codes
from .reference import (
    torch_fused_importance,
    torch_fused_importance_from_grad,
    torch_gather_rows_cols,
    torch_pack,
)

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "available_backends",
    "fused_importance",
    "fused_importance_from_grad",
    "gather_rows_cols",
    "pack",
    "torch_fused_importance",
    "torch_fused_importance_from_grad",
    "torch_gather_rows_cols",
    "torch_pack",
]

BACKENDS = ("reference", "cpp", "cuda", "triton")
ENV_VAR = "TSPRUNE_BACKEND"
_AUTO_ORDER = {"cpu": ("cpp",), "cuda": ("cuda", "triton")}
_warned: set = set()


# ---- which backend ------------------------------------------------------------

def _unusable(name: str, device: torch.device) -> Optional[str]:
    """Why backend `name` cannot run on tensors on `device` (None if it can)."""
    if name == "reference":
        return None
    if name == "cpp":
        if device.type != "cpu":
            return "it runs on CPU tensors only"
        return None if _ext.has_cpp() else f"tsprune._C did not load ({_ext.load_error()})"
    if name == "cuda":
        if device.type != "cuda":
            return "it runs on CUDA tensors only"
        if not _ext.has_cpp():
            return f"tsprune._C did not load ({_ext.load_error()})"
        return _ext.cuda_problem()
    if name == "triton":
        if not _triton.importable():
            return "triton is not installed (pip install 'tsprune[triton]')"
        if device.type == "cuda" or (device.type == "cpu" and _triton.interpreting()):
            return None
        return "it runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1"
    raise AssertionError(name)


def available_backends(device: Optional[torch.device | str] = None) -> list[str]:
    """Backends that can run now: for tensors on `device`, or (None) on any device here.

    Probes CUDA (torch.cuda.is_available()) only when called, never at import.
    """
    if device is not None:
        device = torch.device(device)
        return [b for b in BACKENDS if _unusable(b, device) is None]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return [b for b in BACKENDS if any(_unusable(b, dv) is None for dv in devices)]


def _choose(device: torch.device, backend: Optional[str], unsupported: Callable[[str], Optional[str]]) -> str:
    """The backend for one call. `unsupported(name)` says why a backend cannot take these dtypes."""
    source = "backend"
    if backend is None:
        backend = os.environ.get(ENV_VAR) or None
        source = ENV_VAR
    if backend is not None and backend != "auto":
        if backend not in BACKENDS:
            raise bad_arg(source, backend, f"one of {', '.join(BACKENDS)} or auto")
        why = _unusable(backend, device) or unsupported(backend)
        if why:
            raise UserError(
                f"{source}: backend {backend!r} is not available for tensors on {device}: {why}; "
                f"available there: {', '.join(available_backends(device))}"
            )
        return backend
    order = _AUTO_ORDER.get(device.type, ())
    reasons = []
    for name in order:
        why = _unusable(name, device)
        if why is None:
            if unsupported(name) is None:
                if reasons:
                    _warn_once(device, name, reasons)
                return name
            continue  # a dtype this backend does not take: not a missing install, no warning
        reasons.append(f"{name}: {why}")
    if reasons:
        _warn_once(device, "reference", reasons)
    return "reference"


def _warn_once(device: torch.device, chosen: str, reasons: list[str]) -> None:
    key = (device.type, chosen)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"tsprune.ops: using the {chosen!r} backend for {device.type} tensors ({'; '.join(reasons)})",
            RuntimeWarning,
            stacklevel=4,
        )


def _gather_unsupported(tensors: Sequence[Tensor], dtype: Optional[torch.dtype]) -> Callable[[str], Optional[str]]:
    def why(name: str) -> Optional[str]:
        if name == "reference":
            return None
        for w in tensors:
            if copy_codes(w.dtype, dtype or w.dtype) is None:
                return f"it cannot copy {w.dtype} to {dtype or w.dtype}"
        return None

    return why


def _no_limits(name: str) -> Optional[str]:
    return None


def _eager(*tensors: Optional[Tensor]) -> bool:
    """A plain eager call: no compile / export tracing, no dispatch mode, plain tensors, no autograd.

    Then the kernel wrapper is called directly, skipping the torch.library
    dispatcher (about 50 us per call); anything else goes through the custom op.
    """
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    grad = torch.is_grad_enabled()
    return all(t is None or (type(t) in (Tensor, torch.nn.Parameter) and not (grad and t.requires_grad))
               for t in tensors)


# ---- packing -------------------------------------------------------------------

# backend -> (torch.library op, the same body for plain eager calls)
_PACK = {"cpp": (_ext.pack_cpp, _ext.pack_impl), "cuda": (_ext.pack_cuda, _ext.pack_impl),
         "triton": (_triton.pack_triton, _triton.pack_impl)}


def gather_rows_cols(w: Tensor, rows: Optional[Tensor] = None, cols: Optional[Tensor] = None, *,
                     dtype: Optional[torch.dtype] = None, backend: Optional[str] = None) -> Tensor:
    """Slice a weight to the kept channels: a new contiguous tensor.

    w: (out,) bias (rows only) or (out, in) weight; rows: (r,) / cols: (c,)
    int64 (or int32) indices on w's device, None keeps all. Returns (r,) or
    (r, c), bit-exact equal to w.index_select(0, rows).index_select(1, cols)
    [.to(dtype)], never a view of w. Out-of-range indices raise IndexError.
    """
    check_gather(w, rows, cols)
    name = _choose(w.device, backend, _gather_unsupported([w], dtype))
    if name == "reference":
        return torch_gather_rows_cols(w, rows, cols, dtype)
    op, impl = _PACK[name]
    return (impl if _eager(w, rows, cols) else op)([w], [rows], [cols], dtype)[0]


def pack(tensors: Sequence[Tensor], rows: Sequence[Optional[Tensor]], cols: Sequence[Optional[Tensor]], *,
         dtype: Optional[torch.dtype] = None, backend: Optional[str] = None) -> list[Tensor]:
    """gather_rows_cols for every weight and bias of a block, in one call.

    tensors[i]: (out,) or (out, in); rows[i], cols[i]: its own indices or None
    (a bias takes cols[i] = None). All on one device. The cpp backend runs one
    OpenMP parallel region, cuda one launch (per 32 tensors), triton one
    launch per dtype pair. Returns new tensors, bit-exact as gather_rows_cols.
    """
    tensors, rows, cols = list(tensors), list(rows), list(cols)
    check_pack(tensors, rows, cols)
    if not tensors:
        return []
    device = tensors[0].device
    for i, w in enumerate(tensors):
        if w.device != device:
            raise ValueError(f"tensors[{i}]: got a tensor on {w.device}; expected every tensor on {device}")
    name = _choose(device, backend, _gather_unsupported(tensors, dtype))
    if name == "reference":
        return torch_pack(tensors, rows, cols, dtype)
    op, impl = _PACK[name]
    return list((impl if _eager(*tensors, *rows, *cols) else op)(tensors, rows, cols, dtype))


# ---- importance ------------------------------------------------------------------

_IMP = {"cpp": _ext.fused_importance_cpp, "cuda": _ext.fused_importance_cuda,
        "triton": _triton.fused_importance_triton}
_IMP_GRAD = {"cpp": _ext.fused_importance_from_grad_cpp, "cuda": _ext.fused_importance_from_grad_cuda,
             "triton": _triton.fused_importance_from_grad_triton}
_IMP_EAGER = {"cpp": _ext.importance_impl, "cuda": _ext.importance_impl, "triton": _triton.importance_impl}


def _out(imp: Tensor, out_abs: Optional[Tensor]) -> Tensor:
    if out_abs is None:
        return torch.empty_like(imp)
    if out_abs is imp:
        raise ValueError("out_abs: got the imp tensor itself; expected a separate float32 tensor (or None)")
    return out_abs


def fused_importance(x: Tensor, g: Tensor, imp: Tensor, *, alpha: float, first: bool,
                     out_abs: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """Update the running Taylor importance of a channel mask (METHOD.md section 2).

    x, g: (B, d), (B, T, d) or (B, *, d), fp32 / fp16 / bf16 / fp64 (may differ);
    for an input mask x is the layer input and g the gradient at the masked
    input, for an output mask x is the pre-mask output and g its gradient.
    imp: fp32 (d,), updated IN PLACE. In one pass, accumulating in fp32:
        gb  = sum over tokens of x * g                  (B, d)
        s   = sum_b (-gb + gb^2 / 2)                    (d,)
        imp = s if first else alpha * s + (1 - alpha) * imp
    Returns |imp|: a new fp32 (d,) tensor, or out_abs (fp32 (d,), not imp).
    """
    check_importance(x, g, imp, out_abs, alpha, first)
    out = _out(imp, out_abs)
    name = _choose(x.device, backend, _no_limits)
    if name == "reference":
        return torch_fused_importance(x, g, imp, alpha=float(alpha), first=first, out_abs=out)
    if _eager(x, g, imp, out):
        _IMP_EAGER[name](x, g, imp, out, float(alpha), first)
    else:
        _IMP[name](x, g, imp, out, float(alpha), first)
    return out


def fused_importance_from_grad(gb: Tensor, imp: Tensor, *, alpha: float, first: bool,
                               out_abs: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """fused_importance given the per-sample mask gradients gb (B, d) directly."""
    check_importance(gb, None, imp, out_abs, alpha, first, x_name="gb")
    if gb.dim() != 2:
        raise ValueError(f"gb: got shape {tuple(gb.shape)}; expected (B, d)")
    out = _out(imp, out_abs)
    name = _choose(gb.device, backend, _no_limits)
    if name == "reference":
        return torch_fused_importance_from_grad(gb, imp, alpha=float(alpha), first=first, out_abs=out)
    if _eager(gb, imp, out):
        _IMP_EAGER[name](gb, None, imp, out, float(alpha), first)
    else:
        _IMP_GRAD[name](gb, imp, out, float(alpha), first)
    return out
