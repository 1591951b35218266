"""Norms, gated MLPs and the initialisation of the decoder-only time-series models."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# config.json hidden_act -> function
ACTIVATIONS = {"silu": F.silu, "swish": F.silu, "gelu": F.gelu, "relu": F.relu,
               "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps) over the last dim, computed in float32 and cast
    back to x's dtype before the weight (the Llama / Time-MoE layout)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dt)


class GatedMLP(nn.Module):
    """down_proj(act(gate_proj(h)) * up_proj(h)), no biases; (..., D) -> (..., D)."""

    def __init__(self, d: int, width: int, act: str):
        super().__init__()
        self.gate_proj = nn.Linear(d, width, bias=False)
        self.up_proj = nn.Linear(d, width, bias=False)
        self.down_proj = nn.Linear(width, d, bias=False)
        self.act = ACTIVATIONS[act]

    def forward(self, h):
        return self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h))


@torch.no_grad()
def init_linears(module: nn.Module, std: float) -> None:
    """Every Linear of ``module``: weight N(0, std), bias 0 (the published _init_weights)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
