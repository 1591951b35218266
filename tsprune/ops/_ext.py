"""The compiled backends (cpp, cuda): host wrappers around tsprune._C.

tsprune._C takes raw pointers, sizes, strides and dtype codes (it never links
libtorch). Each binding is wrapped here as a torch.library custom op in the
``tsprune`` namespace with a fake (shape-only) kernel, so torch.compile and
torch.export see an opaque op instead of a graph break:

    tsprune::pack_cpp / pack_cuda                          -> list[Tensor]
    tsprune::fused_importance_cpp / _cuda                  mutates imp, out_abs
    tsprune::fused_importance_from_grad_cpp / _cuda        mutates imp, out_abs

The module is loaded lazily on first use (never at import time); a missing or
broken .so is recorded in ``load_error()`` and tsprune.ops falls back.
Arguments are checked by tsprune.ops before these ops are called.
"""
from __future__ import annotations

import functools
import importlib
from typing import Optional

import torch
from torch import Tensor

from ._common import as_btd, copy_codes, float_code, gather_shape, index_in_range

_state: dict = {}


def module():
    """The tsprune._C module, or None if it is missing or fails to load."""
    if "mod" not in _state:
        try:
            _state["mod"] = importlib.import_module("tsprune._C")
            _state["error"] = None
        except Exception as exc:  # ImportError, OSError (bad .so), undefined symbols...
            _state["mod"] = None
            _state["error"] = f"{type(exc).__name__}: {exc}"
    return _state["mod"]


def load_error() -> Optional[str]:
    """Why tsprune._C could not be loaded (None if it loaded)."""
    module()
    return _state["error"]


def reset() -> None:
    """Forget the load result (tests use it to simulate a missing extension)."""
    _state.clear()


def has_cpp() -> bool:
    return module() is not None


def has_cuda_kernels() -> bool:
    """True if tsprune._C was compiled with its CUDA kernels (no GPU probing)."""
    mod = module()
    return mod is not None and hasattr(mod, "gather_cuda")


def cuda_problem() -> Optional[str]:
    """Why the CUDA kernels cannot run (None if they can). Probes the driver once, on first call."""
    if "cuda_problem" not in _state:
        if not has_cuda_kernels():
            _state["cuda_problem"] = "tsprune._C was built without CUDA kernels (TSPRUNE_CUDA=OFF, or no nvcc at build time)"
        else:
            _state["cuda_problem"] = module().cuda_check() or None
    return _state["cuda_problem"]


def _ext():
    mod = module()
    if mod is None:  # tsprune.ops never calls us then; keep a clear message anyway
        raise RuntimeError(f"tsprune._C is not available: {load_error()}")
    return mod


# ---- packing -----------------------------------------------------------------

def _job(w: Tensor, rows: Optional[Tensor], cols: Optional[Tensor], out: Tensor,
         check_ranges: bool, name: str) -> tuple:
    """The GatherJob tuple of csrc/bindings.cpp for one entry (1-D: one row, index in cols)."""
    codes = copy_codes(w.dtype, out.dtype)
    assert codes is not None, "tsprune.ops chose a compiled backend for unsupported dtypes"
    if rows is not None and rows.dtype != torch.int64:
        rows = rows.long()
    if cols is not None and cols.dtype != torch.int64:
        cols = cols.long()
    if rows is not None:
        rows = rows.contiguous()
    if cols is not None:
        cols = cols.contiguous()
    if check_ranges:  # the CPU kernel checks ranges itself
        index_in_range(rows, w.shape[0], f"rows for {name}")
        if w.dim() == 2:
            index_in_range(cols, w.shape[1], f"cols for {name}")
    keep = (rows, cols)  # keep converted indices alive until the kernel has run
    if w.dim() == 1:
        n = out.shape[0]
        job = (w.data_ptr(), out.data_ptr(), 0, rows.data_ptr() if rows is not None else 0,
               1, n, 0, w.stride(0), 1, w.shape[0], codes[0], codes[1])
    else:
        r, c = out.shape
        job = (w.data_ptr(), out.data_ptr(), rows.data_ptr() if rows is not None else 0,
               cols.data_ptr() if cols is not None else 0, r, c, w.stride(0), w.stride(1),
               w.shape[0], w.shape[1], codes[0], codes[1])
    return job, keep


def _pack_outputs(tensors, rows, cols, dtype):
    return [torch.empty(gather_shape(w, r, c), dtype=dtype or w.dtype, device=w.device)
            for w, r, c in zip(tensors, rows, cols)]


def pack_impl(tensors: list[Tensor], rows: list[Optional[Tensor]], cols: list[Optional[Tensor]],
              dtype: Optional[torch.dtype]) -> list[Tensor]:
    """Body of tsprune::pack_cpp / pack_cuda (tsprune.ops calls it directly in plain eager mode)."""
    if not tensors:
        return []
    device_kind = tensors[0].device.type
    outs = _pack_outputs(tensors, rows, cols, dtype)
    jobs, keep = [], []
    for i, (w, r, c, o) in enumerate(zip(tensors, rows, cols, outs)):
        job, k = _job(w, r, c, o, check_ranges=device_kind == "cuda", name=f"tensors[{i}]")
        jobs.append(job)
        keep.append(k)
    if device_kind == "cpu":
        _ext().gather_cpu(jobs, torch.get_num_threads())
    else:
        dev = tensors[0].device
        with torch.cuda.device(dev):
            _ext().gather_cuda(jobs, torch.cuda.current_stream(dev).cuda_stream)
    return outs


@torch.library.custom_op("tsprune::pack_cpp", mutates_args=(), device_types="cpu")
def pack_cpp(tensors: list[Tensor], rows: list[Optional[Tensor]], cols: list[Optional[Tensor]],
             dtype: Optional[torch.dtype]) -> list[Tensor]:
    """Gather every (tensor, rows, cols) entry in one OpenMP parallel region."""
    return pack_impl(tensors, rows, cols, dtype)


@torch.library.custom_op("tsprune::pack_cuda", mutates_args=(), device_types="cuda")
def pack_cuda(tensors: list[Tensor], rows: list[Optional[Tensor]], cols: list[Optional[Tensor]],
              dtype: Optional[torch.dtype]) -> list[Tensor]:
    """Gather every entry in one kernel launch (per 32 entries) on the current stream."""
    return pack_impl(tensors, rows, cols, dtype)


@pack_cpp.register_fake
def _(tensors, rows, cols, dtype):
    return _pack_outputs(tensors, rows, cols, dtype)


@pack_cuda.register_fake
def _(tensors, rows, cols, dtype):
    return _pack_outputs(tensors, rows, cols, dtype)


# ---- fused importance ----------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _nsplit(B: int, d: int, device: torch.device) -> int:
    """Sample blocks of the CUDA partial kernel: about 4 blocks per SM in total."""
    tiles = -(-d // 32)
    target = 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return max(1, min(B, 65535, -(-target // max(tiles, 1))))


def importance_impl(x: Tensor, g: Optional[Tensor], imp: Tensor, out_abs: Tensor, alpha: float,
                    first: bool) -> None:
    """Body of the fused_importance ops (g None: x is gb (B, d)); CPU or CUDA by x's device."""
    if g is None:  # from_grad: x is gb (B, d)
        B, d = x.shape
        args = (x.data_ptr(), float_code(x.dtype), tuple(x.stride()), B, d)
    else:
        x3, g3 = as_btd(x), as_btd(g)
        B, T, d = x3.shape
        args = (x3.data_ptr(), float_code(x3.dtype), tuple(x3.stride()), g3.data_ptr(),
                float_code(g3.dtype), tuple(g3.stride()), B, T, d)
    tail = (imp.data_ptr(), out_abs.data_ptr(), float(alpha), bool(first))
    mod = _ext()
    if x.device.type == "cpu":
        fn = mod.importance_from_grad_cpu if g is None else mod.importance_cpu
        fn(*args, *tail, torch.get_num_threads())
        return
    nsplit = _nsplit(B, d, x.device)
    ws = torch.empty(max(nsplit * d, 1), dtype=torch.float32, device=x.device)
    fn = mod.importance_from_grad_cuda if g is None else mod.importance_cuda
    with torch.cuda.device(x.device):
        fn(*args, *tail, nsplit, ws.data_ptr(), torch.cuda.current_stream(x.device).cuda_stream)


@torch.library.custom_op("tsprune::fused_importance_cpp", mutates_args=("imp", "out_abs"), device_types="cpu")
def fused_importance_cpp(x: Tensor, g: Tensor, imp: Tensor, out_abs: Tensor, alpha: float, first: bool) -> None:
    """EMA of the Taylor score from x and g (B, *, d) into imp; |imp| into out_abs."""
    importance_impl(x, g, imp, out_abs, alpha, first)


@torch.library.custom_op("tsprune::fused_importance_cuda", mutates_args=("imp", "out_abs"), device_types="cuda")
def fused_importance_cuda(x: Tensor, g: Tensor, imp: Tensor, out_abs: Tensor, alpha: float, first: bool) -> None:
    """CUDA version of fused_importance_cpp (current stream)."""
    importance_impl(x, g, imp, out_abs, alpha, first)


@torch.library.custom_op("tsprune::fused_importance_from_grad_cpp", mutates_args=("imp", "out_abs"),
                         device_types="cpu")
def fused_importance_from_grad_cpp(gb: Tensor, imp: Tensor, out_abs: Tensor, alpha: float, first: bool) -> None:
    """EMA of the Taylor score from per-sample gradients gb (B, d)."""
    importance_impl(gb, None, imp, out_abs, alpha, first)


@torch.library.custom_op("tsprune::fused_importance_from_grad_cuda", mutates_args=("imp", "out_abs"),
                         device_types="cuda")
def fused_importance_from_grad_cuda(gb: Tensor, imp: Tensor, out_abs: Tensor, alpha: float, first: bool) -> None:
    """CUDA version of fused_importance_from_grad_cpp (current stream)."""
    importance_impl(gb, None, imp, out_abs, alpha, first)


for _op in (fused_importance_cpp, fused_importance_cuda):
    _op.register_fake(lambda x, g, imp, out_abs, alpha, first: None)
for _op in (fused_importance_from_grad_cpp, fused_importance_from_grad_cuda):
    _op.register_fake(lambda gb, imp, out_abs, alpha, first: None)
