"""Causal RoPE self-attention that carries its own (possibly pruned) shapes."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.nn.rope import apply_rope
from tsprune.prune.surgery import AttentionShape


class CausalRopeAttention(nn.Module):
    """Causal RoPE self-attention with grouped KV heads and per-layer shapes.

    q_proj (H * d, D) and k_proj, v_proj (Hkv * d, D) with biases, o_proj (D, H * d) without.
    forward(h (B, T, D), cos, sin (T, head_dim of the dense model) for h's positions, past)
    -> (out (B, T, D), (k, v)): past (k, v) (B, Hkv, P, d) are the earlier positions' rotated
    keys and values (decoding with a cache), returned extended by h's.

    After a Q/K RoPE-pair reduction, rope_idx (Hkv, d') holds each KV group's kept dims
    (original indices, kept pairs' low dims then their high dims) and the RoPE tables are
    gathered to them. Scaling 1/sqrt(qk_head_dim): the surgery rescales W_Q (and b_Q) by
    sqrt(d'/d), so the temperature stays 1/sqrt(d)."""

    def __init__(self, d: int, num_heads: int, num_kv_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        h, kv, hd = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(d, h * hd, bias=True)
        self.k_proj = nn.Linear(d, kv * hd, bias=True)
        self.v_proj = nn.Linear(d, kv * hd, bias=True)
        self.o_proj = nn.Linear(h * hd, d, bias=False)
        self.attention_dropout = dropout
        self.set_shape(AttentionShape(h, kv, hd, hd, list(range(kv)), None))

    def set_shape(self, shape: AttentionShape) -> None:
        self.num_heads, self.num_kv_heads = shape.num_heads, shape.num_kv_heads
        self.head_dim, self.v_head_dim = shape.qk_head_dim, shape.v_head_dim
        idx = None if shape.qk_dims is None else torch.tensor(shape.qk_dims, dtype=torch.long)
        self.register_buffer("rope_idx", idx, persistent=False)
        self.tsprune_shape = shape.to_json()

    def forward(self, h, cos, sin, past=None):
        b, t, _ = h.shape
        g = self.num_heads // self.num_kv_heads
        q = self.q_proj(h).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.num_kv_heads, self.v_head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin, self.rope_idx, g)
        k = apply_rope(k, cos, sin, self.rope_idx, 1)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        kv = (k, v)
        s = k.shape[2]
        p = s - t                                                   # cached positions
        if g > 1:
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
        drop = self.attention_dropout if self.training else 0.0
        if self.head_dim == 0:  # every Q/K pair pruned: q.k = 0, uniform causal weights
            out = v.cumsum(dim=2)[:, :, p:] / torch.arange(p + 1, s + 1, device=v.device, dtype=v.dtype)[:, None]
        elif p == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop,
                                                 scale=1.0 / math.sqrt(self.head_dim))  # (B, H, T, dv)
        else:  # query i sits at position p + i and sees keys 0..p + i
            allowed = (torch.arange(s, device=h.device)[None, :]
                       <= p + torch.arange(t, device=h.device)[:, None])  # (T, S)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop,
                                                 scale=1.0 / math.sqrt(self.head_dim))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.v_head_dim)), kv
