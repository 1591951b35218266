"""Ranking criteria for pruning to a budget, beside the paper's Taylor-Fisher EMA
(tsprune.prune.engine.Importance, criterion "taylor_fisher").

Each criterion is an importance object with the Importance interface: update_from_grad /
update_from_acts during scoring backward passes, commit() after each mini-batch, and
absolute(key) -> |importance| per unit of mask (path, side).

  * "taylor": first-order Taylor importance (as Torch-Pruning defines it for a group of
    weights): |sum over the unit's weights of w * dL/dw|. For the output unit i of a Linear
    (row i and bias i) and the input unit j (column j) that sum is exactly the gradient of
    the loss with respect to the unit's mask at m = 1: dL/dm = sum over the mini-batch and
    tokens of x * G at the masked point. Accumulated (summed) over the windows scored since
    the last pruning step, then reset (``reset``), since the masks changed.
  * "magnitude": the L2 norm of the unit's weights (row i of W for an output unit, column
    j for an input unit; biases left out). No data: nothing to score.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from tsprune.distributed import world

from .masks import HIDDEN, MaskSet, get_module

CRITERIA = ("taylor_fisher", "taylor", "magnitude")


class TaylorImportance:
    """Signed sums of w * dL/dw per unit since the last ``reset``; absolute() = |sum|."""

    needs_data = True

    def __init__(self, masks: MaskSet):
        self.imp = {(p, s): torch.zeros(m.numel(), dtype=torch.float32, device=m.device)
                    for p, s, m in masks.units()}
        self.distributed = world()[1] > 1
        self._pending: dict = {}

    def _add(self, key, s: torch.Tensor) -> None:
        if self.distributed:
            self._pending[key] = self._pending.get(key, 0) + s
        else:
            self.imp[key].add_(s)

    def update_from_grad(self, key, gb: torch.Tensor) -> None:
        """gb: per-sample mask gradients (B, d)."""
        self._add(key, gb.float().sum(0))

    def update_from_acts(self, key, x: torch.Tensor, g: torch.Tensor) -> None:
        """x, g: (B, ..., d) activations and gradient at the masked point."""
        self._add(key, (x.float() * g.float()).reshape(-1, x.shape[-1]).sum(0))

    def commit(self) -> None:
        if not self.distributed:
            return
        keys = list(self.imp)
        flat = torch.cat([torch.as_tensor(self._pending.get(k, torch.zeros_like(self.imp[k])),
                                          device=self.imp[k].device) for k in keys])
        dist.all_reduce(flat)
        off = 0
        for k in keys:
            n = self.imp[k].numel()
            self.imp[k].add_(flat[off: off + n])
            off += n
        self._pending.clear()

    def reset(self) -> None:
        for v in self.imp.values():
            v.zero_()

    def absolute(self, key) -> torch.Tensor:
        return self.imp[key].abs()

    def state(self) -> tuple[dict, dict]:
        return {f"imp.{p}.{s}": v for (p, s), v in self.imp.items()}, {}

    def load(self, tensors: dict, meta: dict) -> None:
        for (p, s) in self.imp:
            self.imp[(p, s)].copy_(tensors[f"imp.{p}.{s}"])


class MagnitudeImportance:
    """L2 norms of the units' weights, read once from the module (no data)."""

    needs_data = False

    def __init__(self, masks: MaskSet, module: torch.nn.Module):
        self.imp = {}
        with torch.no_grad():
            for p in masks.paths:
                w = get_module(module, p).weight.float()
                self.imp[(p, "out")] = w.norm(dim=1)
                self.imp[(p, "in")] = w.norm(dim=0)
            hw = masks.hidden
            if hw is not None:  # a residual channel: every row written and column read
                sq = sum(get_module(module, p).weight.float().pow(2).sum(1) for p in hw.writes)
                sq = sq + sum(get_module(module, p).weight.float().pow(2).sum(0).view(n, hw.size).sum(0)
                              for p, n in hw.readers().items())
                self.imp[(HIDDEN, "out")] = sq.sqrt()

    def commit(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def absolute(self, key) -> torch.Tensor:
        return self.imp[key]

    def state(self) -> tuple[dict, dict]:
        return {}, {}

    def load(self, tensors: dict, meta: dict) -> None:
        pass
