"""Autotune configurations of the Triton kernels, one function per kernel.

Shape-decided parameters are set by ``triton.heuristics`` in the kernel files;
only the rest is autotuned. The Triton interpreter (TRITON_INTERPRET=1)
rejects multi-config autotuning, so every function returns one small config
there.
"""
from __future__ import annotations

import os

import triton


def interpreting() -> bool:
    """True under the Triton CPU interpreter (read when the kernels are decorated)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pack_configs() -> list[triton.Config]:
    """Rows per tile (BLOCK_R) and warps of the packing kernel; BLOCK_C is a heuristic."""
    if interpreting():
        return [triton.Config({"BLOCK_R": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_R": 4}, num_warps=4),
        triton.Config({"BLOCK_R": 8}, num_warps=4),
        triton.Config({"BLOCK_R": 16}, num_warps=8),
        triton.Config({"BLOCK_R": 32}, num_warps=8),
    ]


def importance_configs() -> list[triton.Config]:
    """Channels per program (BLOCK_D) and warps of the importance kernel; BLOCK_T is a heuristic."""
    if interpreting():
        return [triton.Config({"BLOCK_D": 64}, num_warps=1)]
    return [
        triton.Config({"BLOCK_D": 32}, num_warps=2),
        triton.Config({"BLOCK_D": 64}, num_warps=4),
        triton.Config({"BLOCK_D": 128}, num_warps=4),
        triton.Config({"BLOCK_D": 256}, num_warps=8),
    ]
