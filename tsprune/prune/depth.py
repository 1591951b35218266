"""Depth pruning: choose whole transformer blocks to remove.

A block maps the residual stream h to h' (its first input to its output, or its output's
first element); removing it makes it the identity there. Gate g_i on block i's residual
contribution:

    h' = h + g_i * (block_i(h) - h)          g_i = 1: the model; g_i = 0: block i removed

Two criteria rank the blocks (``CRITERIA``); both are greedy: drop the block that scores
lowest, re-score the shallower model, repeat k times.

* ``measured``: the native loss on the validation windows with block i skipped
  (g_i = 0, exactly the physically shallower model up to float rounding).
* ``fisher``: the second-order Taylor estimate of that loss change with the empirical
  Fisher (METHOD.md s.2, applied to the scalar gate instead of a channel mask): with G_n
  the gradient of window n's own loss with respect to g_i at g = 1 (per-sample, from one
  backward pass over a (B,)-shaped gate),

      s_i = | -(1/N) sum_n G_n + (1/(2N)) sum_n G_n^2 |

  (one backward pass per re-score instead of one forward per block).

The default is ``measured``: on nano + ETTh1 its single-block ranking has Spearman 1.0 with
the true validation loss after removal, the Fisher estimate's 0.4 (docs/method.md, "Depth
pruning"; ``python bench/depth_criteria.py`` reproduces the comparison).

Plans record the removed blocks as original indices in ``plan.extra["dropped_blocks"]``;
``tsprune.prune.apply`` removes them first (Family.drop_blocks re-indexes the kept blocks
0..n-k-1), then replays the family's extra units and the channel masks, whose paths refer
to the shallower model.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from tsprune.errors import bad_arg

from .engine import masked_loss

DROPPED = "dropped_blocks"        # plan.extra key: original indices of the removed blocks
HISTORY = "depth_history"         # plan.extra key: the greedy steps' scores (informative)
CRITERIA = ("measured", "fisher")
DEFAULT_CRITERION = "measured"


def block_costs(model) -> list[dict]:
    """One dict per removable block of a TSModel, in order: index, path and ``params`` (the
    block's parameters, which removing it saves exactly)."""
    fam, module = model.family, model.module
    out = []
    for i, path in enumerate(fam.block_paths(module)):
        blk = module.get_submodule(path)
        out.append({"index": i, "path": path, "params": sum(p.numel() for p in blk.parameters())})
    return out


def _hidden_in(args, kwargs) -> torch.Tensor:
    """The residual stream entering a block: its first positional argument, else its first
    tensor keyword argument (PatchTST layers are called with ``hidden_state=``)."""
    if args:
        return args[0]
    for v in kwargs.values():
        if torch.is_tensor(v):
            return v
    raise TypeError("a block was called without a tensor input")


@contextlib.contextmanager
def gated(model, gates: dict):
    """Gate the blocks of a TSModel while inside: ``gates`` maps block index -> 0.0 (skip:
    the block's output is replaced by its input, exactly), a float, or a (B,) tensor (one
    gate per window, for per-sample gradients). h' = h + g * (block(h) - h)."""
    fam, module = model.family, model.module
    paths = fam.block_paths(module)
    handles = []

    def make(g):
        def hook(_mod, args, kwargs, out):
            h = _hidden_in(args, kwargs)
            y = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(g, (int, float)) and g == 0:
                new = h
            else:
                gg = g.view(-1, *([1] * (y.dim() - 1))).to(y.dtype) if torch.is_tensor(g) else g
                new = h + gg * (y - h)
            return (new, *out[1:]) if isinstance(out, tuple) else ([new, *out[1:]] if isinstance(out, list) else new)
        return hook

    try:
        for i, g in gates.items():
            handles.append(module.get_submodule(paths[i]).register_forward_hook(make(g), with_kwargs=True))
        yield
    finally:
        for hd in handles:
            hd.remove()


def skip_loss(model, dataset, index: int, batch_size: int = 256) -> float:
    """Mean native loss over ``dataset`` with block ``index`` skipped (the identity)."""
    with gated(model, {index: 0.0}):
        return masked_loss(model, None, dataset, batch_size)


def gate_gradients(model, dataset, batch_size: int = 64) -> torch.Tensor:
    """(N, n_blocks) float64: G[n, i] = d loss_n / d g_i at g = 1, window n's own loss (the
    batch-mean loss's gradient times the batch size). Weights are not touched."""
    fam, module = model.family, model.module
    n_blocks = len(fam.block_paths(module))
    req = [p.requires_grad for p in module.parameters()]
    was = module.training
    module.eval()
    rows = []
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        dev = next((p.device for p in module.parameters()), torch.device("cpu"))
        for c, t in dataset.batches(batch_size):
            b = c.shape[0]
            g = torch.ones(n_blocks, b, device=dev, requires_grad=True)
            with gated(model, {i: g[i] for i in range(n_blocks)}):
                loss = fam.loss(module, c.to(dev), t.to(dev))
            (grad,) = torch.autograd.grad(loss, g, allow_unused=True)
            grad = torch.zeros_like(g) if grad is None else grad
            rows.append((grad.detach().t() * b).double().cpu())
    finally:
        for p, r in zip(module.parameters(), req):
            p.requires_grad_(r)
        module.train(was)
    return torch.cat(rows)


def fisher_estimate(G: torch.Tensor, blocks) -> float:
    """Taylor-Fisher estimate of the loss change when the gates of ``blocks`` go from 1 to
    0 together: mean_n( -sum_i G[n, i] + (sum_i G[n, i])^2 / 2 )."""
    s = G[:, list(blocks)].sum(dim=1)
    return float((-s + 0.5 * s * s).mean())


def _shallow_copy(model):
    """A TSModel whose module tree is copied but whose tensors are shared: removing blocks
    from it leaves ``model`` intact and costs no weight memory."""
    mod = model.module
    memo = {id(t): t for t in list(mod.parameters()) + list(mod.buffers())}
    return type(model)(model.family, copy.deepcopy(mod, memo), source=model.source,
                       manifest=copy.deepcopy(model.manifest))


def rank_blocks(model, dataset, criterion: str = DEFAULT_CRITERION, batch_size: int = 64) -> list[float]:
    """One score per current block, lower = removed first: the skip loss (``measured``)
    or |Taylor-Fisher estimate| (``fisher``)."""
    if criterion not in CRITERIA:
        raise bad_arg("--depth-criterion", criterion, f"one of {', '.join(CRITERIA)}")
    n = len(model.family.block_paths(model.module))
    if criterion == "measured":
        return [skip_loss(model, dataset, i, max(batch_size, 128)) for i in range(n)]
    G = gate_gradients(model, dataset, batch_size)
    return [abs(fisher_estimate(G, [i])) for i in range(n)]


def choose_blocks(model, dataset, k: int, criterion: str = DEFAULT_CRITERION, *, batch_size: int = 64,
                  log=None) -> tuple[list[int], list[dict]]:
    """Greedily choose ``k`` blocks of a TSModel to remove: score every block, remove the
    lowest, re-score the shallower model, k times. Returns (original indices, sorted; one
    record per step: the scores by original index and the block chosen). ``model`` is not
    changed."""
    n = len(model.family.block_paths(model.module))
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n:
        raise bad_arg("--drop-blocks", k, f"an integer from 0 to {n - 1} (this model has {n} blocks)")
    work = _shallow_copy(model)
    alive = list(range(n))
    dropped, history = [], []
    for step in range(k):
        scores = rank_blocks(work, dataset, criterion, batch_size)
        j = min(range(len(scores)), key=lambda i: (scores[i], i))
        rec = {"depth_step": step + 1, "criterion": criterion,
               "scores": {str(alive[i]): s for i, s in enumerate(scores)}, "dropped": alive[j]}
        history.append(rec)
        if log:
            log(rec)
        dropped.append(alive.pop(j))
        work.family.drop_blocks(work.module, [j])
    return sorted(dropped), history


def split_extra(extra: dict | None) -> tuple[list[int], dict]:
    """(removed blocks, the family's own extra units) of a plan's ``extra``."""
    rest = dict(extra or {})
    dropped = [int(i) for i in rest.pop(DROPPED, None) or []]
    rest.pop(HISTORY, None)
    return dropped, rest


def drop_for_scoring(model, val, cfg, log=None):
    """The engine's pre-step for PruneConfig.drop_blocks: choose cfg.drop_blocks blocks on
    the validation windows (the engine's validation subset) and remove them from a copy.
    Returns (shallower TSModel copy, {DROPPED: ..., HISTORY: ...} for plan.extra)."""
    if cfg.val_samples:
        val = val.subset(cfg.val_samples, seed=cfg.seed + 1)
    dropped, history = choose_blocks(model, val, cfg.drop_blocks, cfg.depth_criterion,
                                     batch_size=cfg.batch_size, log=log)
    new = model.clone()
    new.family.drop_blocks(new.module, dropped)
    return new, {DROPPED: dropped, HISTORY: history}
