"""Helpers that several family adapters share. No family file imports another; what two of
them would otherwise repeat lives here (or in base.py, tsprune.hfutil, tsprune.nn).

Contexts are (B, L) float tensors; structure paths are dotted module names."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from tsprune.prune.structure import AttentionGroup, BlockStructure, FFNGroup
from tsprune.prune.surgery import AttentionShape

from .base import Constant

# config.json keys that the Hub and transformers write; never fields of tsprune's own configs
HUB_KEYS = ("architectures", "auto_map", "transformers_version", "model_type", "torch_dtype", "dtype",
            "_name_or_path")


# ---- configs ----------------------------------------------------------------------------
class PatchedDecoderConfig:
    """Mixin for families whose transformers config names the patch, context and output
    lengths patch_length / context_length / horizon_length (TimesFM 2.0 and 2.5)."""

    def config_dict(self, model: nn.Module) -> dict:
        return model.config.to_dict()

    def context_multiple(self, model) -> int:
        return int(model.config.patch_length)

    def max_context(self, model) -> int:
        return int(model.config.context_length)

    def output_horizon(self, model) -> int:
        return int(model.config.horizon_length)


def config_from_dict(cls, d: dict):
    """A frozen dataclass config ``cls`` from a published config.json dict: its own fields
    from ``d``, every other key except HUB_KEYS in its ``extra`` (kept for the round trip)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in d.items() if k in names}
    extra = {k: v for k, v in d.items() if k not in names and k not in HUB_KEYS}
    return cls(**known, extra=extra)


# ---- contexts ---------------------------------------------------------------------------
def mean_std(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance normalisation of (B, L): mean and std (+1e-6) over the context, (B, 1) each."""
    mu = context.mean(dim=1, keepdim=True)
    sd = context.std(dim=1, keepdim=True) + 1e-6
    return mu, sd


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad (B, L) with zeros to a multiple of ``multiple`` -> (x (B, L'), padding (B, L')
    float, 1 = padded)."""
    b, n = x.shape
    pad = (-n) % multiple
    mask = torch.zeros_like(x)
    if pad:
        x = torch.cat([x.new_zeros(b, pad), x], dim=1)
        mask = torch.cat([mask.new_ones(b, pad), mask], dim=1)
    return x, mask


def last_window(x: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``length`` steps of (B, L), left-padded with zeros when L is shorter ->
    (x (B, length), observed (B, length) float, 0 = padded)."""
    x = x[:, -length:]
    observed = torch.ones_like(x)
    if x.shape[1] < length:
        pad = length - x.shape[1]
        x = torch.cat([x.new_zeros(x.shape[0], pad), x], dim=1)
        observed = torch.cat([observed.new_zeros(observed.shape[0], pad), observed], dim=1)
    return x, observed


# ---- structure --------------------------------------------------------------------------
def attention_group(owner: str, o: str = "o_proj", **shape) -> AttentionGroup:
    """The AttentionGroup of an attention at ``owner`` whose projections are
    ``owner.{q,k,v}_proj`` and ``owner.<o>``; ``shape``: the other AttentionGroup fields."""
    return AttentionGroup(owner=owner, q=f"{owner}.q_proj", k=f"{owner}.k_proj", v=f"{owner}.v_proj",
                          o=f"{owner}.{o}", **shape)


def ffn_group(owner: str, inputs: tuple[str, ...], output: str) -> FFNGroup:
    """The FFNGroup of an FFN at ``owner`` with input Linears ``owner.<inputs>`` and output
    Linear ``owner.<output>``."""
    return FFNGroup(owner=owner, inputs=tuple(f"{owner}.{n}" for n in inputs), output=f"{owner}.{output}")


def block(index: int, attention_owner: str, attention: AttentionGroup | None, ffn_owner: str,
          ffn: FFNGroup | None) -> BlockStructure:
    """A block of one attention and one FFN; a None group is reported dead at its owner."""
    return BlockStructure(index=index, attention=() if attention is None else (attention,),
                          ffn=() if ffn is None else (ffn,),
                          dead_attention=(attention_owner,) if attention is None else (),
                          dead_ffn=(ffn_owner,) if ffn is None else ())


# ---- surgery ----------------------------------------------------------------------------
def resize_attention_module(model: nn.Module, group: AttentionGroup, shape: AttentionShape, wrap=None,
                            tuple_output: bool = False) -> None:
    """The usual Family.resize_attention. No heads left: the attention becomes a Constant of
    its output projection's bias (a tuple ``(out, None)`` with ``tuple_output``). Otherwise
    a module of class ``wrap`` (or any module when ``wrap`` is None) takes the shape through
    ``set_shape``, and an upstream module is replaced by ``wrap(module, shape)``."""
    att = model.get_submodule(group.owner)
    if shape.num_heads == 0:
        o = model.get_submodule(group.o)
        model.set_submodule(group.owner, Constant(o.out_features, o.bias, tuple_output=tuple_output))
    elif wrap is None or isinstance(att, wrap):
        att.set_shape(shape)
    else:
        model.set_submodule(group.owner, wrap(att, shape))


# ---- depth pruning ----------------------------------------------------------------------
def renumber_hf_layers(model: nn.Module, layers, n: int, key: str = "num_hidden_layers") -> None:
    """After whole blocks were removed from a transformers model: ``config.<key>`` = n on
    every distinct config object of the model (a submodel may hold its own), and each
    block's ``self_attn.layer_idx`` (the cache slot) = its new position."""
    seen = set()
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, key) and id(cfg) not in seen:
            seen.add(id(cfg))
            setattr(cfg, key, int(n))
    for i, layer in enumerate(layers):
        att = getattr(layer, "self_attn", None)
        if att is not None and hasattr(att, "layer_idx"):
            att.layer_idx = i
