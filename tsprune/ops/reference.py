"""Pure-torch references of the tsprune ops: always available, the ground truth.

Every optimized backend (cpp, cuda, triton) is tested against these. They take
already-checked arguments (tsprune.ops checks them) and favour clarity over
speed: torch_fused_importance materialises the (B, T, d) product.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ._common import as_btd, index_in_range


def torch_gather_rows_cols(w: Tensor, rows: Optional[Tensor] = None, cols: Optional[Tensor] = None,
                           dtype: Optional[torch.dtype] = None) -> Tensor:
    """w.index_select(0, rows).index_select(1, cols).to(dtype): a new contiguous tensor.

    w: (out,) or (out, in); rows: (r,) int; cols: (c,) int (2-D only); None keeps all.
    Returns (r,) or (r, c), never a view of w. Indices outside the dimension
    raise IndexError (torch itself raises IndexError or RuntimeError).
    """
    index_in_range(rows, w.shape[0], "rows")
    if cols is not None:
        index_in_range(cols, w.shape[1], "cols")
    out = w
    if rows is not None:
        out = out.index_select(0, rows)
    if cols is not None:
        out = out.index_select(1, cols)
    if dtype is not None:
        out = out.to(dtype)
    if out is w or out.data_ptr() == w.data_ptr() and w.numel() > 0:
        out = out.clone()
    return out.contiguous()


def torch_pack(tensors: Sequence[Tensor], rows: Sequence[Optional[Tensor]], cols: Sequence[Optional[Tensor]],
               dtype: Optional[torch.dtype] = None) -> list[Tensor]:
    """[torch_gather_rows_cols(w, r, c, dtype) for each entry]."""
    return [torch_gather_rows_cols(w, r, c, dtype) for w, r, c in zip(tensors, rows, cols)]


def _ema_abs_(s: Tensor, imp: Tensor, alpha: float, first: bool, out_abs: Optional[Tensor]) -> Tensor:
    """imp <- s (first) or alpha * s + (1 - alpha) * imp, in place; return |imp|."""
    if first:
        imp.copy_(s)
    else:
        imp.copy_(alpha * s + (1.0 - alpha) * imp)
    if out_abs is None:
        return imp.abs()
    return torch.abs(imp, out=out_abs)


def torch_step_score(gb: Tensor) -> Tensor:
    """s = sum_b (-gb + gb^2 / 2) for per-sample mask gradients gb (B, d); fp32 (d,)."""
    gb = gb.float()
    return (-gb + 0.5 * gb * gb).sum(0)


def torch_fused_importance(x: Tensor, g: Tensor, imp: Tensor, *, alpha: float, first: bool,
                           out_abs: Optional[Tensor] = None) -> Tensor:
    """Second-order Taylor importance of channel masks (METHOD.md section 2).

    x, g: (B, d) or (B, *, d), any float dtype; imp: fp32 (d,), updated in place.
        gb  = sum over the middle dims of x * g          (B, d), fp32
        s   = sum_b (-gb + gb^2 / 2)                      (d,)
        imp = s if first else alpha * s + (1 - alpha) * imp
    Returns |imp| (a new tensor, or out_abs).
    """
    prod = as_btd(x).float() * as_btd(g).float()  # (B, T, d)
    gb = prod.sum(1)  # (B, d)
    return _ema_abs_(torch_step_score(gb), imp, alpha, first, out_abs)


def torch_fused_importance_from_grad(gb: Tensor, imp: Tensor, *, alpha: float, first: bool,
                                     out_abs: Optional[Tensor] = None) -> Tensor:
    """torch_fused_importance given the per-sample gradients gb (B, d) directly."""
    return _ema_abs_(torch_step_score(gb), imp, alpha, first, out_abs)
