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
    """The names of a norm's per-channel tensors: weight and bias (parameters) and
    BatchNorm's running statistics (buffers), those it has."""
    return [n for n in ("weight", "bias", "running_mean", "running_var")
            if isinstance(getattr(norm, n, None), torch.Tensor)]


def _vector(model: nn.Module, path: str) -> tuple[nn.Module, str, torch.Tensor]:
    owner, _, name = path.rpartition(".")
    mod = model.get_submodule(owner)
    return mod, name, getattr(mod, name)


def fixed_per_channel(model: nn.Module, hw: HiddenWidth) -> int:
    """Parameters one residual channel holds outside the Linears that read or write the
    stream: the norms' weights and biases, the Constants' biases and the per-channel
    vectors (positional tables, class tokens)."""
    n = sum(isinstance(getattr(model.get_submodule(p), t), nn.Parameter)
            for p in hw.norms for t in _norm_tensors(model.get_submodule(p)))
    n += sum(model.get_submodule(p).bias is not None for p in hw.constants)
    for p in hw.vectors:
        _, _, t = _vector(model, p)
        if isinstance(t, nn.Parameter):
            n += t.numel() // hw.size
    return n


def _set(mod: nn.Module, name: str, old: torch.Tensor, new: torch.Tensor) -> None:
    """Replace tensor ``name`` of ``mod``: a Parameter stays one (trainable as before), a
    buffer stays a buffer."""
    if isinstance(old, nn.Parameter):
        setattr(mod, name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(mod, name, new)


@torch.no_grad()
def slice_hidden(model: nn.Module, family, hw: HiddenWidth, keep: torch.Tensor) -> None:
    """Keep residual channels ``keep`` (original indices, (d_kept,) int64, ascending) of
    ``model`` in place; then ``family.resize_hidden(model, d_kept)`` updates what the
    family's modules record of the width."""
    if keep.numel() == 0:
        raise ValueError("slice_hidden: at least one residual channel must be kept")
    dev = next(model.parameters()).device
    keep = keep.to(dev, torch.long)
    d, size = int(keep.numel()), hw.size
    tensors, rows, cols, where = [], [], [], []

    def add(t, r, c, key):
        tensors.append(t.detach())
        rows.append(r)
        cols.append(c)
        where.append(key)

    for p in hw.writes:
        lin = model.get_submodule(p)
        add(lin.weight, keep, None, (p, "weight"))
        if lin.bias is not None:
            add(lin.bias, keep, None, (p, "bias"))
    for p, repeats in hw.readers().items():   # column r * size + c: channel c of position r
        cols_r = (torch.arange(repeats, device=dev)[:, None] * size + keep[None, :]).flatten()
        add(model.get_submodule(p).weight, None, cols_r, (p, "weight"))
    for p in hw.norms:
        norm = model.get_submodule(p)
        for n in _norm_tensors(norm):
            add(getattr(norm, n), keep, None, (p, n))
    for p in hw.constants:
        if model.get_submodule(p).bias is not None:
            add(model.get_submodule(p).bias, keep, None, (p, "bias"))
    for p in hw.vectors:  # (..., size): as rows of a (-1, size) matrix
        _, _, t = _vector(model, p)
        add(t.reshape(-1, size) if t.dim() > 1 else t, keep if t.dim() == 1 else None,
            keep if t.dim() > 1 else None, (p, None))
    packed = dict(zip(where, ops.pack(tensors, rows, cols)))   # one call for the whole model

    for p in hw.linears():
        lin = model.get_submodule(p)
        bias = packed.get((p, "bias"), None if lin.bias is None else lin.bias.detach())
        model.set_submodule(p, new_linear(lin, packed[(p, "weight")], bias))
    for p in hw.norms:
        norm = model.get_submodule(p)
        # per-channel statistics (BatchNorm) are unchanged by the width: never rescaled
        dense = hw.norm_scale == "dense" and not isinstance(norm, nn.modules.batchnorm._BatchNorm)
        scale = math.sqrt(size / d) if dense else 1.0
        for n in _norm_tensors(norm):
            _set(norm, n, getattr(norm, n), packed[(p, n)] * (scale if n == "weight" else 1.0))
        for attr in ("normalized_shape", "num_features"):
            if hasattr(norm, attr):
                setattr(norm, attr, (d,) if attr == "normalized_shape" else d)
    for p in hw.constants:
        const = model.get_submodule(p)
        const.d = d
        if const.bias is not None:
            _set(const, "bias", const.bias, packed[(p, "bias")])
    for p in hw.vectors:
        mod, name, t = _vector(model, p)
        _set(mod, name, t, packed[(p, None)].reshape(*t.shape[:-1], d))
    family.resize_hidden(model, d)
