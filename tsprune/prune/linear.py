"""Building the smaller nn.Linear that surgery puts in place of a sliced one."""
from __future__ import annotations

import warnings

import torch
from torch import nn


def new_linear(old: nn.Linear, w: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear holding weight ``w`` (out, in) and bias ``b`` (out,) or None, its weight
    trainable like ``old``'s."""
    with warnings.catch_warnings():  # a fully pruned Linear has zero elements: nothing to init
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta",
                        dtype=w.dtype).to_empty(device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.weight.requires_grad_(old.weight.requires_grad)
    return new
