"""Triton fused importance (METHOD.md section 2): one pass over x and g.

    gb[b, :] = sum_t x[b, t, :] * g[b, t, :]        fp32
    s        = sum_b (-gb + gb^2 / 2)
    imp      = s if first else alpha * s + (1 - alpha) * imp    (in place)
    out      = |imp|

Two launches: ``_importance_partial`` (grid: channel blocks x sample splits)
writes one partial score row per split into a workspace; ``_importance_finish``
sums the rows in order and applies the EMA. The partial kernel is idempotent,
so autotuning may rerun it; the in-place finish is never autotuned. Inputs
are converted to fp32 right after loading (this also keeps bf16 correct under
the interpreter).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .configs import importance_configs


@triton.autotune(configs=importance_configs(), key=["T", "d", "FROM_GRAD"])
@triton.heuristics({"BLOCK_T": lambda a: 1 if a["FROM_GRAD"] else max(2, min(16, triton.next_power_of_2(a["T"])))})
@triton.jit
def _importance_partial(x, g, ws, B, T, d, sxb, sxt, sxd, sgb, sgt, sgd, per_split,
                        FROM_GRAD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1).to(tl.int64)
    offs_d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)  # (BLOCK_D,)
    md = offs_d < d
    b0 = pid_s * per_split
    b1 = tl.minimum(b0 + per_split, B)
    s = tl.zeros([BLOCK_D], dtype=tl.float32)
    for b in range(b0, b1):
        if FROM_GRAD:  # x is gb (B, d)
            gb = tl.load(x + b * sxb + offs_d * sxd, mask=md, other=0.0).to(tl.float32)
        else:
            acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
            for t0 in range(0, T, BLOCK_T):
                offs_t = (t0 + tl.arange(0, BLOCK_T)).to(tl.int64)  # (BLOCK_T,)
                m = (offs_t < T)[:, None] & md[None, :]
                xv = tl.load(x + b * sxb + offs_t[:, None] * sxt + offs_d[None, :] * sxd, mask=m, other=0.0)
                gv = tl.load(g + b * sgb + offs_t[:, None] * sgt + offs_d[None, :] * sgd, mask=m, other=0.0)
                acc += xv.to(tl.float32) * gv.to(tl.float32)
            gb = tl.sum(acc, axis=0)  # (BLOCK_D,)
        s += -gb + 0.5 * gb * gb
    tl.store(ws + pid_s * d + offs_d, s, mask=md)


@triton.jit
def _importance_finish(ws, nsplit, d, imp, out, alpha, FIRST: tl.constexpr, BLOCK: tl.constexpr):
    offs = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    m = offs < d
    s = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(nsplit):
        s += tl.load(ws + k * d + offs, mask=m, other=0.0)
    if FIRST:
        v = s
    else:
        v = alpha * s + (1.0 - alpha) * tl.load(imp + offs, mask=m, other=0.0)
    tl.store(imp + offs, v, mask=m)
    tl.store(out + offs, tl.abs(v), mask=m)


def _nsplit(B: int, d: int, device: torch.device) -> int:
    """Sample splits: enough programs to fill the GPU (about 4 per SM at 64 channels each)."""
    if device.type != "cuda":
        return max(1, min(B, 4))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(B, 65535, -(-4 * sms // max(1, -(-d // 64)))))


def launch(x: torch.Tensor, g: Optional[torch.Tensor], imp: torch.Tensor, out: torch.Tensor,
           alpha: float, first: bool) -> None:
    """Host wrapper. x, g: (B, T, d) (g None: x is gb (B, d)); imp, out: fp32 (d,) contiguous."""
    if g is None:
        B, d = x.shape
        T, sx, sg = 1, (x.stride(0), 0, x.stride(1)), (0, 0, 0)
        g_arg = x
    else:
        B, T, d = x.shape
        sx, sg = x.stride(), g.stride()
        g_arg = g
    if d == 0:
        return
    nsplit = _nsplit(B, d, x.device) if B > 0 else 0
    ws = torch.empty(max(nsplit, 1) * d, dtype=torch.float32, device=x.device)
    if nsplit > 0:
        per = -(-B // nsplit)
        nsplit = -(-B // per)
        grid = lambda META: (triton.cdiv(d, META["BLOCK_D"]), nsplit)  # noqa: E731
        _importance_partial[grid](x, g_arg, ws, B, T, d, *sx, *sg, per, FROM_GRAD=g is None)
    block = 256
    _importance_finish[(triton.cdiv(d, block),)](ws, nsplit, d, imp, out, float(alpha),
                                                 FIRST=bool(first), BLOCK=block)
