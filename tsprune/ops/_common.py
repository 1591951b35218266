"""Argument checks and small helpers shared by every backend of tsprune.ops.

Checks raise ValueError / TypeError naming the argument, the value received
and what is allowed. The compiled backends rely on them: they receive raw
pointers and trust the shapes, strides and dtypes passed here.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Dtype codes understood by csrc/common.h (enum DType).
_FLOAT_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_RAW_CODES = {1: 11, 2: 12, 4: 14, 8: 18}


def float_code(dtype: torch.dtype) -> int:
    """csrc dtype code of a float dtype (fp32, fp16, bf16, fp64)."""
    return _FLOAT_CODES[dtype]


def copy_codes(src: torch.dtype, dst: torch.dtype) -> tuple[int, int] | None:
    """(src_code, dst_code) for a compiled gather, or None if it cannot do it.

    Same dtype: a bit copy by element size (any dtype of 1, 2, 4 or 8 bytes).
    Different dtypes: only between fp32, fp16, bf16 and fp64.
    """
    if src == dst:
        code = _RAW_CODES.get(torch.empty((), dtype=src).element_size())
        return None if code is None else (code, code)
    if src in _FLOAT_CODES and dst in _FLOAT_CODES:
        return _FLOAT_CODES[src], _FLOAT_CODES[dst]
    return None


def _check_index(name: str, idx: Optional[Tensor], w: Tensor) -> None:
    if idx is None:
        return
    if not isinstance(idx, Tensor):
        raise TypeError(f"{name}: got {type(idx).__name__}; expected a 1-D int64 tensor or None")
    if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{name}: got a {idx.dim()}-D {idx.dtype} tensor; expected a 1-D int64 (or int32) tensor"
        )
    if idx.device != w.device:
        raise ValueError(f"{name}: got a tensor on {idx.device}; expected the weight's device {w.device}")


def check_gather(w: Tensor, rows: Optional[Tensor], cols: Optional[Tensor], what: str = "w") -> None:
    """Check one packing entry: w 1-D (rows only) or 2-D, indices 1-D int on w's device."""
    if not isinstance(w, Tensor):
        raise TypeError(f"{what}: got {type(w).__name__}; expected a torch.Tensor")
    if w.dim() not in (1, 2):
        raise ValueError(f"{what}: got shape {tuple(w.shape)}; expected a 1-D (bias) or 2-D (out, in) tensor")
    if w.dim() == 1 and cols is not None:
        raise ValueError(f"cols for {what}: got an index for a 1-D tensor; expected None (a bias has rows only)")
    _check_index(f"rows for {what}", rows, w)
    _check_index(f"cols for {what}", cols, w)


def check_pack(tensors: Sequence[Tensor], rows: Sequence, cols: Sequence) -> None:
    """Check the lists given to pack(): same lengths, every entry valid."""
    n = len(tensors)
    if len(rows) != n or len(cols) != n:
        raise ValueError(
            f"rows, cols: got lengths {len(rows)} and {len(cols)}; expected {n} (one per tensor, None to keep all)"
        )
    for i, (w, r, c) in enumerate(zip(tensors, rows, cols)):
        check_gather(w, r, c, what=f"tensors[{i}]")


def index_in_range(idx: Optional[Tensor], size: int, name: str) -> None:
    """Raise IndexError if an index is outside [0, size) (one device sync on CUDA)."""
    if idx is None or idx.numel() == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= size:
        bad = lo if lo < 0 else hi
        raise IndexError(f"{name}: index {bad} is out of range for a dimension of size {size}")


def gather_shape(w: Tensor, rows: Optional[Tensor], cols: Optional[Tensor]) -> tuple[int, ...]:
    """Output shape of gather_rows_cols."""
    r = w.shape[0] if rows is None else rows.numel()
    if w.dim() == 1:
        return (r,)
    c = w.shape[1] if cols is None else cols.numel()
    return (r, c)


def check_importance(x: Tensor, g: Optional[Tensor], imp: Tensor, out_abs: Optional[Tensor],
                     alpha: float, first: bool, *, x_name: str = "x") -> int:
    """Check the fused-importance arguments; return the channel count d."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{x_name}: got {type(x).__name__}; expected a torch.Tensor")
    if x.dim() < 2:
        raise ValueError(f"{x_name}: got shape {tuple(x.shape)}; expected (B, d) or (B, *, d)")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{x_name}: got dtype {x.dtype}; expected one of fp32, fp16, bf16, fp64")
    if g is not None:
        if not isinstance(g, Tensor):
            raise TypeError(f"g: got {type(g).__name__}; expected a torch.Tensor")
        if g.shape != x.shape:
            raise ValueError(f"g: got shape {tuple(g.shape)}; expected x's shape {tuple(x.shape)}")
        if g.dtype not in FLOAT_DTYPES:
            raise TypeError(f"g: got dtype {g.dtype}; expected one of fp32, fp16, bf16, fp64")
        if g.device != x.device:
            raise ValueError(f"g: got a tensor on {g.device}; expected x's device {x.device}")
    d = x.shape[-1]
    _check_state("imp", imp, d, x.device)
    if out_abs is not None:
        _check_state("out_abs", out_abs, d, x.device)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha: got {alpha!r}; expected a number in [0, 1]")
    if not isinstance(first, bool):
        raise TypeError(f"first: got {first!r}; expected True or False")
    return d


def _check_state(name: str, t: Tensor, d: int, device: torch.device) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: got {type(t).__name__}; expected a float32 tensor of shape ({d},)")
    if t.shape != (d,) or t.dtype != torch.float32 or not t.is_contiguous():
        raise ValueError(
            f"{name}: got a {t.dtype} tensor of shape {tuple(t.shape)}; "
            f"expected a contiguous float32 tensor of shape ({d},)"
        )
    if t.device != device:
        raise ValueError(f"{name}: got a tensor on {t.device}; expected x's device {device}")


def as_btd(x: Tensor) -> Tensor:
    """View (B, d) as (B, 1, d) and (B, *, d) as (B, T, d) (a copy only if no view exists)."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:-1]), x.shape[-1])
