"""The serving contract of every exported graph, in front of each family's own code.

Serving clients send gaps and all sorts of numbers. ``SafeContext`` wraps the module that
is traced (a family's adapter or its reference wrapper) so that the graph:

* treats NaN and +-inf in ``context`` as missing: each is replaced by the last observed
  value before it (leading ones by the first observed value; a row with none at all by
  0), as upstream TimesFM and Chronos pipelines fill gaps before their model;
* keeps any finite float32 input finite through normalisation: when a row's largest
  magnitude exceeds 2^32, the row is divided by a power of two that brings it to at most
  2^32 (exact in floating point: mantissas are unchanged), forecast, and multiplied back;
  the families' instance normalisation is scale-equivariant, so this is the same forecast
  the model makes in exact arithmetic, without overflow in sums of squares;
* clamps the outputs to the finite float32 range.

A context that is finite and within +-2^32 goes through unchanged (its scale is exactly 1),
so parity with torch holds bit for bit there.
"""
from __future__ import annotations

import torch
from torch import nn

LIMIT_EXP = 32  # rows whose largest |value| exceeds 2^LIMIT_EXP are scaled down
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _shift(x: torch.Tensor, k: int, fill: torch.Tensor) -> torch.Tensor:
    """x shifted right by k steps along dim 1 (the first k filled with ``fill``)."""
    pad = fill.expand(x.shape[0], k)
    return torch.cat([pad, x], dim=1)[:, : x.shape[1]]


def forward_fill(x: torch.Tensor, valid: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each invalid entry takes the nearest valid value before it (log2(max_len) doubling
    steps, so it traces to a fixed graph for any length up to max_len)."""
    zero_f = torch.zeros(1, 1, dtype=x.dtype)
    zero_b = torch.zeros(1, 1, dtype=torch.bool)
    k = 1
    while k < max_len:
        take = (~valid) & _shift(valid, k, zero_b)
        x = torch.where(take, _shift(x, k, zero_f), x)
        valid = valid | _shift(valid, k, zero_b)
        k *= 2
    return x, valid


class SafeContext(nn.Module):
    """forward(context (B, L)) -> inner's outputs on a cleaned context (see the module)."""

    def __init__(self, inner: nn.Module, max_len: int = 65536):
        super().__init__()
        self.inner = inner
        self.max_len = int(max_len)

    def clean(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cleaned context, per-row scale (B, 1))."""
        x = context.to(torch.float32)
        valid = torch.isfinite(x)
        x = torch.where(valid, x, torch.zeros_like(x))
        x, seen = forward_fill(x, valid, self.max_len)
        # leading gaps: the first observed value (a backward fill on the flipped row)
        xb, _ = forward_fill(x.flip(1), seen.flip(1), self.max_len)
        x = torch.where(seen, x, xb.flip(1))
        # scale: a power of two, 1 unless the row's largest magnitude exceeds 2^LIMIT_EXP
        big = x.abs().amax(dim=1, keepdim=True)
        e = torch.clamp(torch.floor(torch.log2(torch.clamp(big, min=1.0))) + 1.0 - LIMIT_EXP, min=0.0)
        return x / torch.pow(2.0, e), e

    def forward(self, context):
        x, e = self.clean(context)
        out = self.inner(x)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        # the rescale in two exact power-of-two halves, clamped in between: the product
        # of a finite forecast and the scale may exceed float32 only at its very end
        e1 = torch.floor(e / 2.0)
        s1, s2 = torch.pow(2.0, e1), torch.pow(2.0, e - e1)
        fixed = []
        for o in outs:
            shape = (o.shape[0],) + (1,) * (o.dim() - 1)
            y = torch.clamp(o * s1.reshape(shape), -FLOAT32_MAX, FLOAT32_MAX) * s2.reshape(shape)
            fixed.append(torch.clamp(y, -FLOAT32_MAX, FLOAT32_MAX))
        return tuple(fixed) if isinstance(out, (tuple, list)) else fixed[0]

