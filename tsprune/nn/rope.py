"""Rotary position embeddings in the "rotate half" layout: dims i and i + d/2 share a
frequency and rotate together."""
from __future__ import annotations

import torch


def rotate_half(x):
    """(..., d) -> (-x[d/2:], x[:d/2]) concatenated on the last dim."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(head_dim: int, theta: float, t: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim) for positions 0..T-1 (dims i and i + d/2 share a frequency)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float()
                                / head_dim))
    freqs = torch.outer(torch.arange(t, device=device, dtype=torch.int64).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin, idx, group: int):
    """x (B, heads, T, d'); cos/sin (T, d); idx (Hkv, d') kept original dims or None; each
    KV group's dims serve ``group`` consecutive heads of x."""
    if idx is not None:
        cos = cos[:, idx].permute(1, 0, 2)  # (Hkv, T, d')
        sin = sin[:, idx].permute(1, 0, 2)
        if group > 1:
            cos = cos.repeat_interleave(group, dim=0)
            sin = sin.repeat_interleave(group, dim=0)
    return x * cos + rotate_half(x) * sin
