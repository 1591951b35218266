"""Hidden-width surgery: remove residual-stream channels from every tensor at once.

A family describes its residual stream with a ``HiddenWidth`` (tsprune.prune.structure):
the Linears that write it (their rows and biases go), the Linears that read it (their
columns go), the norms over it (weight and bias go; ``norm_scale == "dense"`` multiplies
an RMSNorm's weight by sqrt(d / d_kept) so that it computes what it computed with the
pruned channels at zero) and the Constants of collapsed groups (their width and bias go).
``slice_hidden`` gathers all of them in one ``tsprune.ops.pack`` call.

Exactness: the masked model (tsprune.prune.masks, the hidden mask) has every pruned channel
at zero in the residual stream, so the readers' pruned columns multiply zeros and the
writers' pruned rows are never read: the sliced model equals the masked one (norms: see
HiddenWidth.norm_scale; exact up to the norm's eps).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tsprune import ops  # the one place that chooses a kernel backend

from .linear import new_linear
from .structure import HiddenWidth


def _norm_tensors(norm: nn.Module) -> list[str]:
    """The names of a norm's per-channel parameters (weight, bias) it has."""
    return [n for n in ("weight", "bias") if isinstance(getattr(norm, n, None), torch.Tensor)]


def fixed_per_channel(model: nn.Module, hw: HiddenWidth) -> int:
    """Parameters one residual channel holds outside the Linears that read or write the
    stream: the norms' weights and biases and the Constants' biases."""
    n = sum(len(_norm_tensors(model.get_submodule(p))) for p in hw.norms)
    return n + sum(model.get_submodule(p).bias is not None for p in hw.constants)


@torch.no_grad()
def slice_hidden(model: nn.Module, family, hw: HiddenWidth, keep: torch.Tensor) -> None:
    """Keep residual channels ``keep`` (original indices, (d_kept,) int64, ascending) of
    ``model`` in place; then ``family.resize_hidden(model, d_kept)`` updates what the
    family's modules record of the width."""
    if keep.numel() == 0:
        raise ValueError("slice_hidden: at least one residual channel must be kept")
    dev = next(model.parameters()).device
    keep = keep.to(dev, torch.long)
    tensors, rows, cols, where = [], [], [], []

    def add(t, r, c, owner, name):
        tensors.append(t.detach())
        rows.append(r)
        cols.append(c)
        where.append((owner, name))

    for p in hw.writes:
        lin = model.get_submodule(p)
        add(lin.weight, keep, None, p, "weight")
        if lin.bias is not None:
            add(lin.bias, keep, None, p, "bias")
    for p in hw.reads:
        add(model.get_submodule(p).weight, None, keep, p, "weight")
    for p in hw.norms:
        for n in _norm_tensors(model.get_submodule(p)):
            add(getattr(model.get_submodule(p), n), keep, None, p, n)
    for p in hw.constants:
        if model.get_submodule(p).bias is not None:
            add(model.get_submodule(p).bias, keep, None, p, "bias")
    packed = dict(zip(where, ops.pack(tensors, rows, cols)))   # one call for the whole model

    d = int(keep.numel())
    for p in (*hw.writes, *hw.reads):
        lin = model.get_submodule(p)
        bias = packed.get((p, "bias"), None if lin.bias is None else lin.bias.detach())
        model.set_submodule(p, new_linear(lin, packed[(p, "weight")], bias))
    scale = math.sqrt(hw.size / d) if hw.norm_scale == "dense" else 1.0
    for p in hw.norms:
        norm = model.get_submodule(p)
        for n in _norm_tensors(norm):
            t = packed[(p, n)] * (scale if n == "weight" else 1.0)
            setattr(norm, n, nn.Parameter(t, requires_grad=getattr(norm, n).requires_grad))
        if hasattr(norm, "normalized_shape"):
            norm.normalized_shape = (d,)
    for p in hw.constants:
        const = model.get_submodule(p)
        const.d = d
        if const.bias is not None:
            const.bias = nn.Parameter(packed[(p, "bias")], requires_grad=const.bias.requires_grad)
    family.resize_hidden(model, d)
