"""Kept FFN widths rounded to multiples of the GEMM kernel's block (PruneConfig.align).

ONNX Runtime's CPU MatMul computes output columns in blocks of 16 on this machine
(``bench/tools/gemm_steps.py``: an output width of 17 costs what 32 does, 81 what 96 does),
so an FFN that keeps 81 neurons pays for 96 and the FLOPs it gave up buy no time. Once a
budget is met, every FFN group's kept width k (0 < k < its dense width) is rounded:

  1. down to a multiple of ``multiple``, dropping the group's lowest-scored kept neurons; a
     group keeping fewer than ``multiple`` neurons is left as it is in this step;
  2. then up to the next multiple (at most the dense width), one group at a time, the group
     whose restored neurons score highest per unit of added cost first, restoring its
     best-scored pruned neurons, while the measured cost stays within the budget.

Step 1 only removes and step 2 checks the measured cost, so the budget still holds. A
neuron's score is the least |importance| over the group's sides (one output row of each
input Linear and one input column of the output Linear: zeroing any side kills the
neuron, so the weakest side is what the ranking saw). Attention keeps its per-head
structure and the hidden width is left as scored: only FFN widths are rounded.
"""
from __future__ import annotations

import torch

from .budget import CostModel
from .masks import MaskSet
from .structure import FFNGroup
from .surgery import ffn_alive


def _sides(g: FFNGroup) -> list[tuple[str, str]]:
    return [(p, "out") for p in g.inputs] + [(g.output, "in")]


def _set(masks: MaskSet, g: FFNGroup, idx: torch.Tensor, value: float) -> None:
    for p, s in _sides(g):
        masks.get(p, s)[idx] = value


def align_ffn_widths(masks: MaskSet, costs: CostModel, imp, kind: str, target: int,
                     multiple: int) -> tuple[MaskSet, dict]:
    """A copy of ``masks`` (on the CPU) with FFN widths rounded as the module docstring
    says, and a summary {"multiple", "rounded_down", "rounded_up", "widths": [before, after]
    per FFN group}. ``target``: the budget in ``kind`` units (measured cost must stay <=)."""
    out = masks.to("cpu")
    ffn = [(i, g) for i, g in enumerate(costs.groups) if isinstance(g, FFNGroup)]
    score, before = {}, {}
    for i, g in ffn:
        sc = torch.stack([imp.absolute(k).detach().cpu().double() for k in _sides(g)]).min(0).values
        score[i] = sc
        before[i] = int(_alive(out, g).sum())
    down = 0
    for i, g in ffn:
        alive = _alive(out, g)
        k, n = int(alive.sum()), alive.numel()
        if k == n or k < multiple or k % multiple == 0:
            continue
        ids = torch.nonzero(alive).flatten()
        drop = ids[torch.argsort(score[i][ids], stable=True)[: k % multiple]]
        _set(out, g, drop, 0.0)
        down += 1
    up = 0
    spent = costs.measure(out).get(kind)
    while True:
        best = None
        for i, g in ffn:
            alive = _alive(out, g)
            k, n = int(alive.sum()), alive.numel()
            if k == n or k == 0 or k % multiple == 0 and k >= before[i]:
                continue
            want = min(n, (k // multiple + 1) * multiple) - k
            dead = torch.nonzero(~alive).flatten()
            back = dead[torch.argsort(score[i][dead], descending=True, stable=True)[:want]]
            trial = out.clone()
            _set(trial, g, back, 1.0)
            cost = costs.measure(trial).get(kind)
            if cost > target or cost <= spent:
                continue
            gain = float(score[i][back].sum()) / (cost - spent)
            if best is None or gain > best[0]:
                best = (gain, trial, cost)
        if best is None:
            break
        _, out, spent = best
        up += 1
    widths = [[before[i], int(_alive(out, g).sum())] for i, g in ffn]
    return out, {"multiple": multiple, "rounded_down": down, "rounded_up": up, "widths": widths}


def _alive(masks: MaskSet, g: FFNGroup) -> torch.Tensor:
    return ffn_alive(g, masks)


__all__ = ["align_ffn_widths"]
