"""Physical removal: fold masks, then slice coupled groups into smaller dense Linears
(METHOD.md section 4).

``analyze`` reads the masks and decides, per group, what survives (no model change);
``apply_cut`` folds the masks into the weights and replaces each Linear by a smaller one
(packing through tsprune.ops), then hands the new shapes to the family so that the
attention/FFN modules describe themselves.

Exactness: a removed FFN neuron has zero input rows (so act(0) = 0 for ReLU/GELU/SiLU) or
a zero output column; a removed V dim or head has a zero V row or zero O columns; a removed
Q/K dim has q_j k_j = 0 (with RoPE, pairs (i, i + d/2) are removed only when both Q dims or
both K dims are zero). The packed model therefore equals the masked model up to rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from tsprune import ops  # the one place that chooses a kernel backend

from .linear import new_linear
from .masks import MaskSet, fold, get_module
from .structure import AttentionGroup, FFNGroup, HiddenWidth, ModelStructure
from .width import fixed_per_channel, slice_hidden


@dataclass
class AttentionShape:
    """Shape of an attention module after surgery.

    qk_dims: for each kept KV group, the kept Q/K head dims as original indices (with
      RoPE: kept pairs' low dims then their high dims); None when Q/K were not reduced.
    kv_heads: original indices of the kept KV heads.
    """

    num_heads: int
    num_kv_heads: int
    qk_head_dim: int
    v_head_dim: int
    kv_heads: list[int] = field(default_factory=list)
    qk_dims: list[list[int]] | None = None

    def to_json(self) -> dict:
        return {
            "num_heads": self.num_heads, "num_kv_heads": self.num_kv_heads,
            "qk_head_dim": self.qk_head_dim, "v_head_dim": self.v_head_dim,
            "kv_heads": list(self.kv_heads), "qk_dims": self.qk_dims,
        }

    @classmethod
    def from_json(cls, d: dict) -> "AttentionShape":
        return cls(d["num_heads"], d["num_kv_heads"], d["qk_head_dim"], d["v_head_dim"],
                   list(d.get("kv_heads", [])), d.get("qk_dims"))


@dataclass
class Cut:
    """What survives: kept rows/cols per Linear (None = all), new group shapes."""

    rows: dict[str, torch.Tensor | None] = field(default_factory=dict)
    cols: dict[str, torch.Tensor | None] = field(default_factory=dict)
    q_scale: dict[str, float] = field(default_factory=dict)   # q path -> W_Q rescale
    attention: dict[str, AttentionShape] = field(default_factory=dict)  # owner -> shape
    ffn: dict[str, int] = field(default_factory=dict)          # owner -> width
    # the residual stream (MaskSet.hidden): its kept channels (None: all), and which Linears
    # write (rows) and read (columns) it
    hidden: torch.Tensor | None = None
    hidden_width: HiddenWidth | None = None

    def kept_shape(self, path: str, lin: nn.Linear) -> tuple[int, int]:
        return self.kept_dims(path, lin.out_features, lin.in_features)

    def kept_dims(self, path: str, out: int, inp: int) -> tuple[int, int]:
        """(rows, cols) that Linear ``path`` of dense shape (out, inp) keeps."""
        r, c = self.rows.get(path), self.cols.get(path)
        r = out if r is None else int(r.numel())
        c = inp if c is None else int(c.numel())
        if self.hidden is not None:
            if path in self.hidden_width.writes:
                r = int(self.hidden.numel())
            repeats = self.hidden_width.readers().get(path)
            if repeats is not None:
                c = repeats * int(self.hidden.numel())
        return r, c


def _first_k_true(mask_rows: torch.Tensor, k: int) -> torch.Tensor:
    """For each row of a bool matrix, a keep-mask that drops the first k True entries."""
    keep = torch.ones_like(mask_rows)
    for i in range(mask_rows.shape[0]):
        idx = torch.nonzero(mask_rows[i]).flatten()[:k]
        keep[i, idx] = False
    return keep


def _analyze_attention(g: AttentionGroup, masks: MaskSet, cut: Cut) -> None:
    H, Hkv, G, dqk, dv = g.num_heads, g.num_kv_heads, g.group_size, g.qk_head_dim, g.v_head_dim
    zero_v = (masks.m_out[g.v] == 0).view(Hkv, dv)
    zero_o = (masks.m_in[g.o] == 0).view(H, dv)
    # a V dim of a KV group is dead when, for every query head of the group, it is zero in
    # V's output or in O's input
    dead_v = (zero_v[:, None, :] | zero_o.view(Hkv, G, dv)).all(dim=1)  # (Hkv, dv)
    alive = ~dead_v.all(dim=1)                                           # (Hkv,)
    kv_keep = torch.nonzero(alive).flatten()
    n_kv = int(kv_keep.numel())
    if n_kv == 0:
        cut.rows[g.q] = cut.rows[g.k] = cut.rows[g.v] = torch.zeros(0, dtype=torch.long)
        cut.cols[g.o] = torch.zeros(0, dtype=torch.long)
        cut.attention[g.owner] = AttentionShape(0, 0, dqk, dv, [], None)
        return
    # uniform V reduction: drop, in every kept group, as many dead dims as the group with
    # the fewest dead dims has
    k_v = int(dead_v[kv_keep].sum(dim=1).min().item())
    v_keep = _first_k_true(dead_v[kv_keep], k_v)                        # (n_kv, dv)
    v_idx = [torch.nonzero(v_keep[i]).flatten() for i in range(n_kv)]
    new_dv = dv - k_v

    # Q/K dims
    qk_idx: list[torch.Tensor] | None = None
    new_dqk = dqk
    if g.qk_reducible:
        zq = (masks.m_out[g.q] == 0).view(Hkv, G, dqk)
        zk = (masks.m_out[g.k] == 0).view(Hkv, dqk)
        if g.rope:
            half = dqk // 2
            q_pair = (zq[..., :half] & zq[..., half:]).all(dim=1)          # (Hkv, half)
            k_pair = zk[:, :half] & zk[:, half:]
            dead_pair = (q_pair | k_pair)[kv_keep]
            k_qk = int(dead_pair.sum(dim=1).min().item())
            pair_keep = _first_k_true(dead_pair, k_qk)
            qk_idx = []
            for i in range(n_kv):
                lo = torch.nonzero(pair_keep[i]).flatten()
                qk_idx.append(torch.cat([lo, lo + half]))
            new_dqk = dqk - 2 * k_qk
        else:
            dead_qk = (zq.all(dim=1) | zk)[kv_keep]  # q dim zero for every head of the group, or k zero
            k_qk = int(dead_qk.sum(dim=1).min().item())
            keep = _first_k_true(dead_qk, k_qk)
            qk_idx = [torch.nonzero(keep[i]).flatten() for i in range(n_kv)]
            new_dqk = dqk - k_qk
        if new_dqk == dqk:
            qk_idx = None

    ar = lambda n: torch.arange(n, dtype=torch.long)  # noqa: E731
    q_rows, k_rows, v_rows, o_cols = [], [], [], []
    for i, kv in enumerate(kv_keep.tolist()):
        dims_qk = qk_idx[i] if qk_idx is not None else ar(dqk)
        k_rows.append(kv * dqk + dims_qk)
        v_rows.append(kv * dv + v_idx[i])
        for h in range(kv * G, (kv + 1) * G):
            q_rows.append(h * dqk + dims_qk)
            o_cols.append(h * dv + v_idx[i])
    full = n_kv == Hkv
    cut.rows[g.q] = None if (full and qk_idx is None) else torch.cat(q_rows)
    cut.rows[g.k] = None if (full and qk_idx is None) else torch.cat(k_rows)
    cut.rows[g.v] = None if (full and new_dv == dv) else torch.cat(v_rows)
    cut.cols[g.o] = None if (full and new_dv == dv) else torch.cat(o_cols)
    if new_dqk != dqk:
        cut.q_scale[g.q] = math.sqrt(new_dqk / dqk)
    cut.attention[g.owner] = AttentionShape(
        n_kv * G, n_kv, new_dqk, new_dv, kv_keep.tolist(),
        [t.tolist() for t in qk_idx] if qk_idx is not None else None,
    )


def ffn_alive(g: FFNGroup, masks: MaskSet) -> torch.Tensor:
    """The neurons of FFN group ``g`` that ``masks`` keeps: alive on every side (the output
    Linear's input column and each input Linear's output row); zeroing any side kills one."""
    alive = masks.m_in[g.output] != 0
    for p in g.inputs:
        alive = alive & (masks.m_out[p] != 0)
    return alive


def _analyze_ffn(g: FFNGroup, masks: MaskSet, cut: Cut) -> None:
    alive = ffn_alive(g, masks)
    keep = torch.nonzero(alive).flatten()
    full = keep.numel() == alive.numel()
    for p in g.inputs:
        cut.rows[p] = None if full else keep
    cut.cols[g.output] = None if full else keep
    cut.ffn[g.owner] = int(keep.numel())


def analyze_hidden(masks: MaskSet, cut: Cut) -> None:
    """The residual channels ``masks`` keeps (none pruned, or no hidden mask: cut.hidden None)."""
    if masks.m_hidden is None:
        return
    keep = torch.nonzero(masks.m_hidden.cpu() != 0).flatten()
    if keep.numel() < masks.m_hidden.numel():
        cut.hidden, cut.hidden_width = keep, masks.hidden


def analyze(structure: ModelStructure, masks: MaskSet) -> Cut:
    """Decide what survives, from the masks alone (no model change)."""
    cut = Cut()
    cpu = masks.to("cpu")
    analyze_hidden(cpu, cut)
    for block in structure.blocks:
        for a in block.attention:
            _analyze_attention(a, cpu, cut)
        for f in block.ffn:
            _analyze_ffn(f, cpu, cut)
    return cut


def count_params(model: nn.Module, cut: Cut | None = None) -> int:
    """Parameters of ``model`` as it would be after ``cut`` (no model change)."""
    total = sum(p.numel() for p in model.parameters())
    if cut is None:
        return total
    paths = set(cut.rows) | set(cut.cols)
    if cut.hidden is not None:
        hw = cut.hidden_width
        paths |= set(hw.linears())
        total -= (hw.size - int(cut.hidden.numel())) * fixed_per_channel(model, hw)
    for p in paths:
        lin = get_module(model, p)
        r, c = cut.kept_shape(p, lin)
        before = lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0)
        after = r * c + (r if lin.bias is not None else 0)
        total += after - before
    return total


def _replace_linear(model: nn.Module, path: str, rows, cols, scale: float | None) -> None:
    lin = get_module(model, path)
    tensors = [lin.weight.data] + ([lin.bias.data] if lin.bias is not None else [])
    row_idx = [rows, rows]
    col_idx = [cols, None]
    packed = ops.pack(tensors, row_idx[: len(tensors)], col_idx[: len(tensors)])
    w = packed[0]
    b = packed[1] if lin.bias is not None else None
    if scale is not None:  # the Q projection as a whole: q' = scale * (W x + b)
        w = w * scale
        b = b * scale if b is not None else None
    new = new_linear(lin, w, b)
    # the original input columns kept (None = all), for a family whose module gathers the
    # sliced Linear's inputs (resize hooks read it; not saved)
    new.tsprune_kept_cols = cols
    model.set_submodule(path, new)


def apply_cut(model: nn.Module, family, structure: ModelStructure, masks: MaskSet, cut: Cut) -> None:
    """Fold masks and cut the model in place; the family updates its modules' shapes."""
    fold(model, masks)
    paths = list(dict.fromkeys(list(cut.rows) + list(cut.cols)))
    for p in paths:
        rows, cols = cut.rows.get(p), cut.cols.get(p)
        if rows is None and cols is None and p not in cut.q_scale:
            continue
        _replace_linear(model, p, rows, cols, cut.q_scale.get(p))
    for block in structure.blocks:
        for a in block.attention:
            family.resize_attention(model, a, cut.attention[a.owner])
        for f in block.ffn:
            family.resize_ffn(model, f, cut.ffn[f.owner])
    if cut.hidden is not None:  # the residual width last, on the channel-cut model
        slice_hidden(model, family, family.hidden_width(model), cut.hidden)
