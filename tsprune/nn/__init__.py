"""Layers of tsprune's own model implementations (Time-MoE, Timer-XL), shared so that no
family file imports another. Parameter names follow the published checkpoints."""
from tsprune.nn.attention import CausalRopeAttention
from tsprune.nn.layers import ACTIVATIONS, GatedMLP, RMSNorm, init_linears
from tsprune.nn.rope import apply_rope, rope_tables, rotate_half

__all__ = ["ACTIVATIONS", "CausalRopeAttention", "GatedMLP", "RMSNorm", "apply_rope", "init_linears",
           "rope_tables", "rotate_half"]
