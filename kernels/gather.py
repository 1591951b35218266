"""Triton packing kernel: gather rows / columns of many weights in one launch.

A job table (int64, one row per tensor: src, dst, rows, cols pointers, output
shape R x C, source strides) is read by every program; program ``pid`` finds
its job by walking the table's tile counts, then copies one BLOCK_R x BLOCK_C
tile. A 1-D tensor is one row whose column index is its row index.

Same-dtype copies go through integer views, so they are bit-exact in every
mode (the interpreter included). Casts go through fp32 (as torch does for
half and bfloat16); one launch per (source dtype, target dtype) group.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .configs import pack_configs

_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NF = 8  # fields per job: src, dst, rows, cols, R, C, s0, s1


@triton.autotune(configs=pack_configs(), key=["n_jobs", "max_c"])
@triton.heuristics({"BLOCK_C": lambda a: max(16, min(128, triton.next_power_of_2(a["max_c"])))})
@triton.jit
def _pack_kernel(meta, n_jobs, max_c, src_anchor, dst_anchor, CAST_VIA_F32: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    # Which job and which tile of it: walk the table (a few dozen jobs at most).
    start = pid * 0
    job = pid * 0
    local = pid
    for k in range(n_jobs):
        R = tl.load(meta + k * 8 + 4)
        C = tl.load(meta + k * 8 + 5)
        nt = tl.cdiv(R, BLOCK_R) * tl.cdiv(C, BLOCK_C)
        inside = (pid >= start) & (pid < start + nt)
        job = tl.where(inside, k, job)
        local = tl.where(inside, pid - start, local)
        start += nt
    base = meta + job * 8
    src = tl.load(base).to(src_anchor.dtype, bitcast=True)
    dst = tl.load(base + 1).to(dst_anchor.dtype, bitcast=True)
    rows_p = tl.load(base + 2)
    cols_p = tl.load(base + 3)
    R = tl.load(base + 4)
    C = tl.load(base + 5)
    s0 = tl.load(base + 6)
    s1 = tl.load(base + 7)
    ncb = tl.cdiv(C, BLOCK_C)
    offs_r = (local // ncb) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)  # (BLOCK_R,)
    offs_c = (local % ncb) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)   # (BLOCK_C,)
    mr = offs_r < R
    mc = offs_c < C
    if rows_p != 0:
        ridx = tl.load(rows_p.to(tl.pointer_type(tl.int64), bitcast=True) + offs_r, mask=mr, other=0)
    else:
        ridx = offs_r
    if cols_p != 0:
        cidx = tl.load(cols_p.to(tl.pointer_type(tl.int64), bitcast=True) + offs_c, mask=mc, other=0)
    else:
        cidx = offs_c
    m = mr[:, None] & mc[None, :]  # (BLOCK_R, BLOCK_C)
    v = tl.load(src + ridx[:, None] * s0 + cidx[None, :] * s1, mask=m)
    if CAST_VIA_F32:
        v = v.to(tl.float32)
    tl.store(dst + offs_r[:, None] * C + offs_c[None, :], v.to(dst_anchor.dtype.element_ty), mask=m)


def _out_shape(w: torch.Tensor, rows, cols) -> tuple[int, ...]:
    r = w.shape[0] if rows is None else rows.numel()
    if w.dim() == 1:
        return (r,)
    return (r, w.shape[1] if cols is None else cols.numel())


def pack(tensors: Sequence[torch.Tensor], rows: Sequence[Optional[torch.Tensor]],
         cols: Sequence[Optional[torch.Tensor]], dtype: Optional[torch.dtype] = None) -> list[torch.Tensor]:
    """Host wrapper: allocate the outputs, build the job tables, launch once per dtype group.

    tensors[i]: (out,) or (out, in); rows[i], cols[i]: int64 (n,) or None, on the
    same device, in range (tsprune.ops checks all of this). Returns new
    contiguous tensors equal to w.index_select(0, r).index_select(1, c).to(dtype).
    """
    outs = [torch.empty(_out_shape(w, r, c), dtype=dtype or w.dtype, device=w.device)
            for w, r, c in zip(tensors, rows, cols)]
    groups: dict[tuple, list[int]] = {}
    for i, (w, o) in enumerate(zip(tensors, outs)):
        if o.numel():
            groups.setdefault((w.dtype, o.dtype), []).append(i)
    for (sdt, ddt), idx in groups.items():
        same = sdt == ddt
        srcs, dsts, table, keep, max_c = [], [], [], [], 1
        for i in idx:
            w, o, r, c = tensors[i], outs[i], rows[i], cols[i]
            if same:  # bit copy through integer views
                w = w.view(_INT_VIEW[w.element_size()])
                o = o.view(_INT_VIEW[o.element_size()])
            r = None if r is None else r.to(torch.int64).contiguous()
            c = None if c is None else c.to(torch.int64).contiguous()
            keep += [r, c]
            if w.dim() == 1:  # one row; its index is the column index
                row = [w.data_ptr(), o.data_ptr(), 0, 0 if r is None else r.data_ptr(),
                       1, o.shape[0], 0, w.stride(0)]
            else:
                row = [w.data_ptr(), o.data_ptr(), 0 if r is None else r.data_ptr(),
                       0 if c is None else c.data_ptr(), o.shape[0], o.shape[1], w.stride(0), w.stride(1)]
            table.append(row)
            srcs.append(w)
            dsts.append(o)
            max_c = max(max_c, row[5])
        meta = torch.tensor(table, dtype=torch.int64).to(srcs[0].device)
        shapes = [(row[4], row[5]) for row in table]

        def grid(META, shapes=shapes):
            br, bc = META["BLOCK_R"], META["BLOCK_C"]
            return (sum(triton.cdiv(R, br) * triton.cdiv(C, bc) for R, C in shapes),)

        _pack_kernel[grid](meta, len(table), max_c, srcs[0], dsts[0], CAST_VIA_F32=not same)
    return outs
