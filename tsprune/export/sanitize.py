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


def fill_gaps(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, L) with every invalid entry replaced by the last valid value before it, leading
    ones by the row's first valid value, and rows with none by 0 (x must be 0 where invalid).

    O(B L) in four ops, for any length: the running count of valid steps numbers the valid
    values; a scatter packs them to the front of each row (invalid entries all write their
    0 to a spare last column), and a gather reads, for every step, the latest valid value
    so far (count - 1), or the first one (slot 0) before any was seen."""
    count = torch.cumsum(valid.to(torch.int64), dim=1)
    slot = torch.where(valid, count - 1, torch.full_like(count, x.shape[1]))
    packed = x.new_zeros((x.shape[0], x.shape[1] + 1)).scatter(1, slot, x)
    return torch.gather(packed, 1, torch.clamp(count - 1, min=0))


class SafeContext(nn.Module):
    """forward(context (B, L)) -> inner's outputs on a cleaned context (see the module)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def clean(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cleaned context, per-row scale (B, 1))."""
        x = context.to(torch.float32)
        valid = torch.isfinite(x)
        x = fill_gaps(torch.where(valid, x, torch.zeros_like(x)), valid)
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

