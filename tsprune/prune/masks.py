"""Input and output channel masks on Linear layers (METHOD.md section 1).

While masks are attached a Linear computes ``y = (W (x * m_in) + b) * m_out``.
Masks are attached with forward hooks, so module names and state dicts never change.

Hidden width (optional, ``MaskSet(..., hidden=HiddenWidth)``): one more mask ``m_hidden``
(d_model,) over the residual stream's channels, the unit ``(HIDDEN, "out")``. It gates the
output of every Linear that writes the stream (``y = z * m_hidden``), so a zeroed channel
is zero in the residual stream everywhere and its gradient x activation, summed over every
write and token, is the channel's per-sample mask gradient (one unit called many times).
Norms over the stream compute what the sliced norm will (``kept_norm``: statistics over the
kept channels; the weight times sqrt(d_model / kept) with the family's ``norm_scale ==
"dense"``), so the masked model is the sliced one.

Three attachment modes:
  * ``apply``     : plain masked forward (validation, evaluation).
  * ``reference`` : the paper's path. Each forward expands the masks per sample into
                    leaf tensors of shape (B, d) that require grad; after backward their
                    ``.grad`` is the per-sample mask gradient g_b (summed over tokens).
  * ``fused``     : forward/backward hooks keep the layer input x (or the pre-mask output z)
                    and receive the gradient G at the masked input (or at the output); the
                    fused importance kernel reduces sum_t x*G per sample without building
                    per-sample masks (tsprune.ops.fused_importance).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from .structure import HiddenWidth

HIDDEN = "<hidden>"  # the unit key of the residual-stream mask (not a module path)


def get_module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


class MaskSet:
    """0/1 float masks ``m_in`` (d_in,) and ``m_out`` (d_out,) for a set of Linears, and
    optionally ``m_hidden`` (d_model,) over the residual stream (``hidden``)."""

    def __init__(self, model: nn.Module, paths: list[str], hidden: HiddenWidth | None = None):
        self.paths = list(paths)
        self.m_in: dict[str, torch.Tensor] = {}
        self.m_out: dict[str, torch.Tensor] = {}
        self.hidden = hidden
        self.m_hidden: torch.Tensor | None = None
        if hidden is not None:
            dev = next(model.parameters()).device
            self.m_hidden = torch.ones(hidden.size, device=dev)
        for p in self.paths:
            lin = get_module(model, p)
            if not isinstance(lin, nn.Linear):
                raise TypeError(f"{p} is {type(lin).__name__}, not nn.Linear")
            dev = lin.weight.device
            self.m_in[p] = torch.ones(lin.in_features, device=dev)
            self.m_out[p] = torch.ones(lin.out_features, device=dev)

    # -- bookkeeping -------------------------------------------------------------------
    def units(self) -> Iterator[tuple[str, str, torch.Tensor]]:
        """(path, side, mask) for every mask, side in {"in", "out"}; stable order."""
        for p in self.paths:
            yield p, "in", self.m_in[p]
            yield p, "out", self.m_out[p]
        if self.m_hidden is not None:
            yield HIDDEN, "out", self.m_hidden

    def get(self, path: str, side: str) -> torch.Tensor:
        if path == HIDDEN:
            return self.m_hidden
        return self.m_in[path] if side == "in" else self.m_out[path]

    def total(self) -> int:
        return sum(m.numel() for _, _, m in self.units())

    def alive(self) -> int:
        return int(sum(int(m.sum().item()) for _, _, m in self.units()))

    def clone(self) -> "MaskSet":
        new = MaskSet.__new__(MaskSet)
        new.paths = list(self.paths)
        new.m_in = {k: v.clone() for k, v in self.m_in.items()}
        new.m_out = {k: v.clone() for k, v in self.m_out.items()}
        new.hidden = self.hidden
        new.m_hidden = None if self.m_hidden is None else self.m_hidden.clone()
        return new

    def to(self, device) -> "MaskSet":
        """A copy with every mask on ``device`` (detached; always a copy, even on the same device)."""
        new = self.clone()
        for d in (new.m_in, new.m_out):
            for k in d:
                d[k] = d[k].detach().to(device)
        if new.m_hidden is not None:
            new.m_hidden = new.m_hidden.detach().to(device)
        return new

    def to_json(self) -> dict:
        """Pruned (zero) indices per Linear; compact and replayable."""
        out = {}
        for p in self.paths:
            out[p] = {
                "in_features": int(self.m_in[p].numel()),
                "out_features": int(self.m_out[p].numel()),
                "in": torch.nonzero(self.m_in[p] == 0).flatten().tolist(),
                "out": torch.nonzero(self.m_out[p] == 0).flatten().tolist(),
            }
        if self.m_hidden is not None:
            out[HIDDEN] = {"size": int(self.m_hidden.numel()),
                           "out": torch.nonzero(self.m_hidden == 0).flatten().tolist()}
        return out

    @classmethod
    def from_json(cls, model: nn.Module, data: dict, hidden: HiddenWidth | None = None) -> "MaskSet":
        """The masks of ``data`` (to_json) on ``model``; a plan with a hidden-width mask needs
        the model's ``hidden`` (Family.hidden_width)."""
        if HIDDEN in data and hidden is None:
            raise ValueError("plan prunes the hidden width: from_json needs the model's HiddenWidth")
        ms = cls(model, [p for p in data if p != HIDDEN], hidden if HIDDEN in data else None)
        if HIDDEN in data:
            d = data[HIDDEN]
            if d["size"] != hidden.size:
                raise ValueError(f"plan does not fit the model's hidden width: plan has {d['size']}, "
                                 f"model has {hidden.size}")
            if d["out"]:
                ms.m_hidden[torch.tensor(d["out"], dtype=torch.long)] = 0.0
        for p, d in data.items():
            if p == HIDDEN:
                continue
            if ms.m_in[p].numel() != d["in_features"] or ms.m_out[p].numel() != d["out_features"]:
                raise ValueError(
                    f"plan does not fit the model at {p}: plan has "
                    f"({d['out_features']}, {d['in_features']}), model has "
                    f"({ms.m_out[p].numel()}, {ms.m_in[p].numel()})"
                )
            if d["in"]:
                ms.m_in[p][torch.tensor(d["in"], dtype=torch.long)] = 0.0
            if d["out"]:
                ms.m_out[p][torch.tensor(d["out"], dtype=torch.long)] = 0.0
        return ms


def _bshape(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """View per-sample masks (B, d) so that they broadcast over x (B, ..., d)."""
    return m.view(m.shape[0], *([1] * (x.dim() - 2)), m.shape[1])


@contextlib.contextmanager
def attach(model: nn.Module, masks: MaskSet, mode: str = "apply",
           on_grad: Callable[[str, str, torch.Tensor, torch.Tensor | None], None] | None = None):
    """Attach masks to the Linears of ``model`` for the duration of the block.

    mode "reference": yields a dict {(path, side): [leaf (B, d), ...]}, one leaf per call of
      the Linear in the forward (a model may call a layer more than once, e.g. TimesFM's
      flip-invariant decode); after backward the per-sample gradient is the sum of the
      leaves' ``.grad``. Clear the dict between forwards.
    mode "fused": yields a dict {(path, side): calls in the forward so far}; ``on_grad(path,
      side, acts, grad)`` is called during backward with
      acts (B, ..., d) and the gradient (B, ..., d) at the masked point.
    """
    if mode not in ("apply", "reference", "fused"):
        raise ValueError(f"mode: got {mode!r}; expected apply, reference or fused")
    handles = []
    leaves: dict = {}  # reference: per-call leaves per mask; fused: calls per mask
    for p in masks.paths:
        lin = get_module(model, p)
        m_in, m_out = masks.m_in[p], masks.m_out[p]

        if mode == "apply":
            def pre(mod, args, m_in=m_in):
                return (args[0] * m_in.to(args[0].dtype),) + tuple(args[1:])

            def post(mod, args, out, m_out=m_out):
                return out * m_out.to(out.dtype)

        elif mode == "reference":
            def pre(mod, args, m_in=m_in, p=p):
                x = args[0]
                leaf = m_in.to(x.dtype).expand(x.shape[0], -1).clone().requires_grad_(True)
                leaves.setdefault((p, "in"), []).append(leaf)
                return (x * _bshape(x, leaf),) + tuple(args[1:])

            def post(mod, args, out, m_out=m_out, p=p):
                leaf = m_out.to(out.dtype).expand(out.shape[0], -1).clone().requires_grad_(True)
                leaves.setdefault((p, "out"), []).append(leaf)
                return out * _bshape(out, leaf)

        else:  # fused
            assert on_grad is not None, "fused mode needs on_grad"
            # The caller makes the model input require grad, so every masked point that depends
            # on it is in the graph (inputs that do not are made leaves below); the masks
            # themselves need no grad, so autograd never builds the
            # (B, T, d) product that a mask gradient would need.

            def pre(mod, args, m_in=m_in, p=p):
                x = args[0]
                if not x.requires_grad and torch.is_grad_enabled():
                    # an input that does not depend on the model input (e.g. a decoder's
                    # start-token embedding under frozen weights): a fresh leaf puts this
                    # masked point and the Linear's output in the graph too
                    x = x.detach().requires_grad_(True)
                xm = x * m_in.to(x.dtype)
                if xm.requires_grad:
                    leaves[(p, "in")] = leaves.get((p, "in"), 0) + 1
                    xd = x.detach()
                    xm.register_hook(lambda g, xd=xd, p=p: on_grad(p, "in", xd, g))
                return (xm,) + tuple(args[1:])

            def post(mod, args, out, m_out=m_out, p=p):
                y = out * m_out.to(out.dtype)
                if y.requires_grad:
                    leaves[(p, "out")] = leaves.get((p, "out"), 0) + 1
                    zd = out.detach()
                    y.register_hook(lambda g, zd=zd, p=p: on_grad(p, "out", zd, g))
                return y

        handles.append(lin.register_forward_pre_hook(pre))
        handles.append(lin.register_forward_hook(post))
    if masks.m_hidden is not None:
        handles += _attach_hidden(model, masks, mode, leaves, on_grad)
    try:
        yield leaves
    finally:
        for h in handles:
            h.remove()


def _attach_hidden(model: nn.Module, masks: MaskSet, mode: str, leaves: dict, on_grad) -> list:
    """Hooks of the residual-stream mask (see the module docstring): the writes' outputs are
    gated like an out-mask of unit (HIDDEN, "out"); with norm_scale "kept" the norms
    compute over the kept channels."""
    hw, m = masks.hidden, masks.m_hidden
    key = (HIDDEN, "out")
    handles = []

    def gate(mod, args, out):
        if isinstance(out, tuple):  # (stream, extras): a Constant attention's (out, None)
            return (gate(mod, args, out[0]), *out[1:])
        if mode == "apply":
            return out * m.to(out.dtype)
        if mode == "reference":
            leaf = m.to(out.dtype).expand(out.shape[0], -1).clone().requires_grad_(True)
            leaves.setdefault(key, []).append(leaf)
            return out * _bshape(out, leaf)
        if not out.requires_grad and torch.is_grad_enabled():
            # an output that depends on no input (a frequency embedding, a Constant, under
            # frozen weights): a fresh leaf puts it in the graph, as the reference path's leaf
            out = out.detach().requires_grad_(True)
        y = out * m.to(out.dtype)
        if y.requires_grad:
            leaves[key] = leaves.get(key, 0) + 1
            zd = out.detach()
            y.register_hook(lambda g, zd=zd: on_grad(HIDDEN, "out", zd, g))
        return y

    for p in hw.gate_points():
        handles.append(get_module(model, p).register_forward_hook(gate))
    def norm(mod, args, out):
        kept = int((m != 0).sum())
        scale = (m.numel() / kept) ** 0.5 if hw.norm_scale == "dense" and kept else 1.0
        return kept_norm(mod, args[0], out, m, scale)

    for p in hw.norms:
        handles.append(get_module(model, p).register_forward_hook(norm))
    return handles


def kept_norm(norm: nn.Module, x: torch.Tensor, out: torch.Tensor, m: torch.Tensor,
              weight_scale: float = 1.0) -> torch.Tensor:
    """What ``norm`` computes once sliced to the channels kept by ``m`` (zeros elsewhere),
    its weight multiplied by ``weight_scale``; given its input ``x`` (zero at the pruned
    channels) and its dense-width output ``out``.

    An nn.LayerNorm is recomputed over the kept channels. An RMS norm (weight * x /
    sqrt(mean(x^2) + eps), eps in ``variance_epsilon`` or ``eps``) is rescaled: with
    q = mean over d of x^2 (the pruned channels are zero) the mean over the k kept ones is
    q * d / k, so out * weight_scale * sqrt((q + eps) / (q * d / k + eps)) is exactly the
    sliced norm (a constant while scoring: no gradient flows through the factor)."""
    kept = int((m != 0).sum())
    if kept == m.numel() or isinstance(norm, nn.modules.batchnorm._BatchNorm):  # per channel
        return out
    if isinstance(norm, nn.LayerNorm):
        idx = torch.nonzero(m != 0).flatten()
        w = None if norm.weight is None else norm.weight[idx] * weight_scale
        b = None if norm.bias is None else norm.bias[idx]
        y = torch.nn.functional.layer_norm(x.index_select(-1, idx), (kept,), w, b, norm.eps)
        return out.new_zeros(out.shape).index_copy(-1, idx, y)
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)) or 0.0)
    q = x.detach().float().pow(2).mean(-1, keepdim=True)
    factor = weight_scale * ((q + eps) / (q * (m.numel() / max(kept, 1)) + eps)).sqrt()
    return out * factor.to(out.dtype)


@torch.no_grad()
def fold(model: nn.Module, masks: MaskSet) -> None:
    """Multiply masks into weights and biases: W <- diag(m_out) W diag(m_in), b <- m_out * b."""
    for p in masks.paths:
        lin = get_module(model, p)
        w = lin.weight
        w.mul_(masks.m_out[p].to(w.dtype)[:, None] * masks.m_in[p].to(w.dtype)[None, :])
        if lin.bias is not None:
            lin.bias.mul_(masks.m_out[p].to(lin.bias.dtype))
    if masks.m_hidden is not None:  # the residual stream: rows of every Linear that writes it
        for p in masks.hidden.writes:
            lin = get_module(model, p)
            m = masks.m_hidden.to(lin.weight.dtype)
            lin.weight.mul_(m[:, None])
            if lin.bias is not None:
                lin.bias.mul_(m)
