"""The contract every model-family adapter fulfils.

An adapter is one file per family (no imports between families). It declares:
  * its name, the key of its spec (tsprune.families.specs: how config.json names it, and
    its export adapter);
  * how to build the model from a config and load a local checkpoint (safetensors only);
  * its structure: which Linears are masked and how they couple (tsprune.prune.structure);
  * its native training loss and its forecasting API;
  * how its attention / FFN modules take new per-layer shapes after surgery;
  * an export wrapper for ONNX: raw context (B, L) float32 -> point forecast (B, H)
    [, quantiles (B, H, Q)].
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from tsprune.checkpoint import read_state_dict
from tsprune.errors import UserError
from tsprune.hfutil import eager_attention
from tsprune.prune.structure import AttentionGroup, FFNGroup, HiddenWidth, ModelStructure
from tsprune.prune.surgery import AttentionShape


@dataclass
class Forecast:
    """point: (B, H); quantiles: (B, H, Q) or None; levels: the Q quantile levels."""

    point: torch.Tensor
    quantiles: torch.Tensor | None = None
    levels: tuple[float, ...] = ()


def rollout(step, context: torch.Tensor, horizon: int, grow) -> torch.Tensor:
    """Autoregressive roll-out shared by the families that decode block by block.

    step(ctx, remaining) -> block (B, n, ...): the next n >= 1 steps from context ``ctx``;
    grow(ctx, block) -> the context of the next step (the full block is passed, even where
    only its first ``remaining`` steps are kept). Returns the blocks concatenated and cut to
    ``horizon``: (B, horizon, ...)."""
    blocks, done, ctx = [], 0, context
    while done < horizon:
        block = step(ctx, horizon - done)
        blocks.append(block[:, :horizon - done])
        done += blocks[-1].shape[1]
        if done < horizon:
            ctx = grow(ctx, block)
    return torch.cat(blocks, dim=1)


class Family:
    name: ClassVar[str] = ""                    # the key of its FamilySpec
    extra: ClassVar[str | None] = None          # pip extra holding the upstream package
    autoregressive: ClassVar[bool] = False      # one pruned model for all horizons
    prune_epochs: ClassVar[int] = 1             # default max pruning epochs (METHOD.md s.3)
    finetune_epochs: ClassVar[int] = 1          # default fine-tuning epochs (METHOD.md s.5)
    default_ratio: ClassVar[float] = 0.1
    ratio_grid: ClassVar[tuple[float, ...]] = (0.05, 0.1, 0.2)
    default_lr: ClassVar[float] = 1e-5
    lr_grid: ClassVar[tuple[float, ...]] = (1e-4, 1e-5, 1e-6)
    optimizer: ClassVar[str] = "adam"           # "adam" (no weight decay) or "adamw"
    pre_prunes: ClassVar[bool] = False          # has units decided before scoring (pre_prune)

    # ---- loading --------------------------------------------------------------------
    def __deepcopy__(self, memo) -> "Family":
        # one shared object per family: copying a TSModel copies its module, not its family
        # (whose per-module scratch, e.g. Time-MoE's routes of the last loss, may hold
        # tensors of a live autograd graph, which deepcopy refuses)
        return self

    def build(self, config: dict) -> nn.Module:
        """A randomly initialised model from a config.json dict."""
        raise NotImplementedError

    def load_dense(self, path, config: dict) -> nn.Module:
        """A dense checkpoint from a local directory whose safetensors were already checked.
        Default: build from the config and load the state dict strictly; families whose
        upstream class renames weights on save (transformers v5 conversions) override this
        with from_pretrained(local_files_only=True, use_safetensors=True)."""
        module = self.build(config)
        try:
            module.load_state_dict(read_state_dict(path), strict=True)
        except RuntimeError as e:
            raise UserError(f"weights: {path} does not match the {self.name} architecture "
                            f"({str(e).splitlines()[0]})") from None
        return module.eval()

    def config_dict(self, model: nn.Module) -> dict:
        """The config.json content for ``model`` (dense shapes; pruned shapes go in the
        manifest)."""
        raise NotImplementedError

    def context_multiple(self, model: nn.Module) -> int:
        """Contexts are padded on the left to a multiple of this (e.g. the patch length)."""
        return 1

    def max_context(self, model: nn.Module) -> int | None:
        return None

    def output_horizon(self, model: nn.Module) -> int | None:
        """Steps one forward pass predicts (longer horizons roll out), or None if any."""
        return None

    # ---- structure and surgery hooks ------------------------------------------------
    def structure(self, model: nn.Module) -> ModelStructure:
        raise NotImplementedError

    def prune_scope(self, model: nn.Module) -> str:
        """One line for the report: which units this run's structure lets the schedule prune."""
        st = self.structure(model)
        att = sum(len(b.attention) for b in st.blocks)
        ffn = sum(len(b.ffn) for b in st.blocks)
        return (f"heads, V (and Q/K) dims of {att} attention group(s) and the neurons of {ffn} FFN group(s) "
                f"in {len(st.blocks)} block(s)")

    def resize_attention(self, model: nn.Module, group: AttentionGroup, shape: AttentionShape) -> None:
        """Make the attention module at group.owner compute with ``shape`` (its Linears
        were already replaced by smaller ones); num_heads == 0 means the whole attention
        is dead and becomes a constant."""
        raise NotImplementedError

    def resize_ffn(self, model: nn.Module, group: FFNGroup, width: int) -> None:
        """Width 0 means the FFN is dead and becomes a constant (its output bias). Default:
        a Constant of the output Linear's bias at group.owner; nothing to do for width > 0
        (the surgery already cut the Linears)."""
        if width == 0:
            down = model.get_submodule(group.output)
            model.set_submodule(group.owner, Constant(down.out_features, down.bias))

    # ---- optional family-specific pruning units (e.g. whole MoE experts) ------------
    def pre_prune(self, model: nn.Module, datasets: list, cfg) -> dict | None:
        """Called before channel scoring with the calibration datasets (train, val). A family
        with extra pruning units (Time-MoE experts by routing frequency) decides them here,
        applies them to ``model`` in place and returns a JSON-able record that
        ``apply_extra`` replays on a fresh copy; None when the family has none. A family
        that overrides it sets ``pre_prunes = True`` (the engine copies the model then)."""
        return None

    def apply_extra(self, model: nn.Module, extra: dict) -> None:
        """Replay a ``pre_prune`` record on a fresh model (before the channel masks)."""
        if extra:
            raise ValueError(f"{self.name} has no extra pruning units, got {sorted(extra)}")

    # ---- depth pruning: whole blocks (tsprune.prune.depth) ---------------------------
    # dotted path of the nn.ModuleList holding the removable blocks, in order; None: the
    # family does not support depth pruning, ``depth_unsupported`` says why
    block_list: ClassVar[str | None] = None
    depth_unsupported: ClassVar[str] = "its blocks are not a plain stack"

    def block_paths(self, model: nn.Module) -> list[str]:
        """Dotted paths of the removable blocks, in order ("model.layers.0", ...). A block
        maps the residual stream (its first input) to the residual stream (its output, or
        its output's first element): removing it is the identity there."""
        return [f"{self.block_list}.{i}" for i in range(len(self._blocks(model)))]

    def drop_blocks(self, model: nn.Module, indices) -> None:
        """Remove the blocks at ``indices`` (current indices, see block_paths) in place:
        the ModuleList is rebuilt without them, so the kept blocks are re-indexed 0..n-k-1
        (every path after this refers to the shallower model), and ``renumber_blocks``
        updates the config (layer count) and per-layer indices."""
        blocks = self._blocks(model)
        n = len(blocks)
        drop = [int(i) for i in indices]
        if any(isinstance(i, bool) or not 0 <= i < n for i in drop) or len(set(drop)) != len(drop):
            raise ValueError(f"{self.name}: drop_blocks: got {list(indices)!r}; expected distinct "
                             f"indices below {n}")
        if len(drop) >= n:
            raise ValueError(f"{self.name}: drop_blocks: cannot remove all {n} blocks")
        if not drop:
            return
        keep = [b for i, b in enumerate(blocks) if i not in set(drop)]
        model.set_submodule(self.block_list, nn.ModuleList(keep))
        self.renumber_blocks(model, len(keep))

    def renumber_blocks(self, model: nn.Module, n: int) -> None:
        """After drop_blocks: set the config's layer count to ``n`` and every per-layer
        index (attention ``layer_idx``) to the block's new position."""
        raise NotImplementedError

    def _blocks(self, model: nn.Module) -> nn.ModuleList:
        if self.block_list is None:
            raise UserError(f"--drop-blocks: depth pruning is not supported for {self.name} models "
                            f"({self.depth_unsupported})")
        return model.get_submodule(self.block_list)

    # ---- hidden width: the residual stream's channels (tsprune.prune.width) ----------
    # None when the family describes its residual stream (hidden_width); else why not
    hidden_unsupported: ClassVar[str | None] = "its residual stream is not described yet"

    def hidden_width(self, model: nn.Module) -> HiddenWidth:
        """Which tensors write, read and normalise the residual stream (its current width);
        a UserError naming the family when it cannot prune the hidden width."""
        raise UserError(f"--prune-hidden: hidden-width pruning is not supported for {self.name} "
                        f"models ({self.hidden_unsupported})")

    def resize_hidden(self, model: nn.Module, width: int) -> None:
        """After the residual channels were sliced to ``width``: update whatever the
        family's modules record of the width (not the config: config.json keeps the dense
        shapes, the manifest records the width). Default: nothing to update."""

    def aux_loss(self, model: nn.Module):
        """An auxiliary training loss added during fine-tuning (MoE load balancing), or None
        when the family has none. Called right after ``loss`` on the same forward."""
        return None

    # ---- training and forecasting ---------------------------------------------------
    def loss(self, model: nn.Module, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The family's native training loss, a batch mean. context (B, L), target (B, H)
        with H <= output_horizon."""
        raise NotImplementedError

    def forecast(self, model: nn.Module, context: torch.Tensor, horizon: int) -> Forecast:
        """context (B, L) float32 -> Forecast with point (B, horizon)."""
        raise NotImplementedError

    def export_module(self, model: nn.Module, context: int, horizon: int) -> nn.Module:
        """An nn.Module for torch.onnx.export: forward(context (B, L)) -> (point (B, H),
        quantiles (B, H, Q)) or point only; usually ``Export(self, model, horizon, ...)``."""
        raise NotImplementedError

    def describe(self, model: nn.Module) -> list[dict]:
        """Per-layer structure for `tsprune inspect`: one dict per block with heads,
        kv_heads, qk_dim, v_dim, ffn width and parameter count (dead modules: zeros)."""
        rows = []
        for b in self.structure(model).blocks:
            row = {"layer": b.index}
            atts = [(a.owner, a) for a in b.attention] + [(o, None) for o in b.dead_attention]
            for i, (owner, a) in enumerate(sorted(atts, key=lambda t: t[0])):
                pre = "" if i == 0 else f"attn{i}_"
                shape = getattr(model.get_submodule(owner), "tsprune_shape", None) or (
                    {"num_heads": a.num_heads, "num_kv_heads": a.num_kv_heads,
                     "qk_head_dim": a.qk_head_dim, "v_head_dim": a.v_head_dim} if a else {})
                row[pre + "heads"] = shape.get("num_heads", 0)
                row[pre + "kv_heads"] = shape.get("num_kv_heads", 0)
                row[pre + "qk_dim"] = shape.get("qk_head_dim", 0) if a else 0
                row[pre + "v_dim"] = shape.get("v_head_dim", 0) if a else 0
            ffns = [(f.owner, f) for f in b.ffn] + [(o, None) for o in b.dead_ffn]
            for i, (owner, f) in enumerate(sorted(ffns, key=lambda t: t[0])):
                pre = "" if i == 0 else f"ffn{i}_"
                row[pre + "ffn"] = _linear_cols(model, f.output) if f else 0
            row["params"] = sum(_numel(model, p) for p in b.linears())
            rows.append(row)
        return rows


def _linear_cols(model: nn.Module, path: str) -> int:
    m = model.get_submodule(path)
    return int(m.in_features) if isinstance(m, nn.Linear) else 0


def _numel(model: nn.Module, path: str) -> int:
    try:
        m = model.get_submodule(path)
    except AttributeError:
        return 0
    return sum(p.numel() for p in m.parameters())


class Constant(nn.Module):
    """A module that ignores its input and returns a constant vector broadcast to
    (*input.shape[:-1], d): what a dead Linear stack collapses to (its output bias, or zeros)."""

    def __init__(self, d: int, bias: torch.Tensor | None = None, tuple_output: bool = False):
        super().__init__()
        self.d = int(d)
        self.tuple_output = tuple_output
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, hidden_states, *args, **kwargs):
        shape = (*hidden_states.shape[:-1], self.d)
        if self.bias is not None:
            # a copy, not a view: under no_grad a view of a parameter requires grad without a
            # grad_fn, which torch's module tracker (the FLOP counter) refuses
            out = self.bias.to(hidden_states.dtype).expand(shape).clone()
        else:
            out = hidden_states.new_zeros(shape)
        return (out, None) if self.tuple_output else out


class Export(nn.Module):
    """The reference export wrapper that Family.export_module returns: the family's own
    forecast as it runs in torch. forward(context (B, L) float32) -> point (B, H), or
    (point, quantiles (B, H, Q)) with ``quantiles``.

    eager: forecast under transformers' eager attention (tsprune.hfutil.eager_attention:
    SDPA's output reshape does not export); forecast_kwargs: passed to ``family.forecast``
    (e.g. Time-MoE's ``dispatch="dense"`` for a static graph)."""

    def __init__(self, family: Family, model: nn.Module, horizon: int, *, quantiles: bool = False,
                 eager: bool = False, **forecast_kwargs):
        super().__init__()
        self.family, self.model, self.horizon = family, model, int(horizon)
        self.quantiles, self.eager, self.forecast_kwargs = quantiles, eager, forecast_kwargs

    def forward(self, context):
        with eager_attention(self.model) if self.eager else contextlib.nullcontext():
            f = self.family.forecast(self.model, context, self.horizon, **self.forecast_kwargs)
        return (f.point, f.quantiles) if self.quantiles else f.point
