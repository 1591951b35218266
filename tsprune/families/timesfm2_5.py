"""TimesFM 2.5 (`transformers` TimesFm2_5ModelForPrediction, model_type ``timesfm2_5``).

Decoder-only patch transformer: patches of ``patch_length`` steps, causal running
instance normalisation, RoPE attention with per-head-dim q/k RMSNorms and a learned
per-dim query scaling, an ungated MLP (fc1 -> swish -> fc2). Each patch position predicts
``horizon_length`` steps x (mean + quantiles); the forecast reads the last position and
longer horizons roll out autoregressively (append the point forecast, slide the context).

Masked Linears (METHOD.md s.7): self_attn.{q,k,v,o}_proj and mlp.{fc1,fc2} of every
decoder layer. Heads and V dims are sliced; Q/K head dims are not (q/k norms act over the
head dim), FFN neurons are sliced. Input and output residual blocks stay dense.

Native loss: MSE of the point channel (``decode_index``, the median) plus the mean pinball
loss of quantile channels 1..9 against quantiles 0.1..0.9, on the last position's
forecast in the instance-normalised space. (transformers' own loss pairs the quantile
levels with channels shifted by one, counting the mean channel 0 as the 0.1 quantile;
tsprune pairs channel k with quantiles[k-1], TimesFM's output layout.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.errors import missing_extra
from tsprune.hfutil import config_kwargs, from_pretrained_local
from tsprune.prune.structure import AttentionGroup, HiddenWidth, ModelStructure
from tsprune.prune.surgery import AttentionShape

from .base import Constant, Export, Family, Forecast, rollout
from .common import (PatchedDecoderConfig, attention_group, block, ffn_group, pad_to_multiple,
                     renumber_hf_layers, resize_attention_module)

try:
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.timesfm2_5 import modeling_timesfm2_5 as _hf
except ImportError as _e:  # transformers is a core dependency; kept to report why
    TimesFm2_5Config = TimesFm2_5ModelForPrediction = None
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None


class PrunedAttention(nn.Module):
    """TimesFM 2.5 attention that carries its own shapes (heads, KV heads, V head dim).

    Same computation as upstream TimesFm2_5Attention; reuses its projections, q/k norms
    and query scaling. forward(hidden (B, T, D)) -> (out (B, T, D), None).
    """

    def __init__(self, src: nn.Module, shape: AttentionShape):
        super().__init__()
        self.config = src.config
        self.layer_idx = src.layer_idx
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = src.q_proj, src.k_proj, src.v_proj, src.o_proj
        self.q_norm, self.k_norm, self.scaling = src.q_norm, src.k_norm, src.scaling
        self.attention_dropout = src.attention_dropout
        self.is_causal = True
        self.set_shape(shape)

    def set_shape(self, shape: AttentionShape) -> None:
        self.num_heads = shape.num_heads
        self.num_kv_heads = shape.num_kv_heads
        self.head_dim = shape.qk_head_dim
        self.v_head_dim = shape.v_head_dim
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.tsprune_shape = shape.to_json()

    def forward(self, hidden_states, position_embeddings, attention_mask, cache=None, **kwargs):
        b, t = hidden_states.shape[:2]
        q = self.q_proj(hidden_states).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(b, t, self.num_kv_heads, self.v_head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = _hf.apply_rotary_pos_emb(q, k, cos, sin)
        q = self.q_norm(q)
        k = self.k_norm(k)
        scale = F.softplus(self.scaling).mul(1.442695041 / math.sqrt(self.head_dim))
        q = q * scale[None, None, None, :]
        attn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                     _hf.eager_attention_forward)
        out, _ = attn(self, q, k, v, attention_mask,
                      dropout=self.attention_dropout if self.training else 0.0, scaling=1.0)
        out = out.reshape(b, t, self.num_heads * self.v_head_dim)
        return self.o_proj(out), None


def _need_hf():
    if TimesFm2_5ModelForPrediction is None:
        raise missing_extra("transformers>=5 (TimesFm2_5)", "timesfm", _IMPORT_ERROR, module="transformers")


class TimesFm25(PatchedDecoderConfig, Family):
    name = "timesfm2_5"
    autoregressive = True
    prune_epochs = 1
    finetune_epochs = 1
    default_ratio = 0.1
    ratio_grid = (0.02, 0.05, 0.1, 0.15)
    default_lr = 3e-5
    lr_grid = (1e-4, 3e-5, 1e-5)
    block_list = "model.layers"

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        _need_hf()
        model = TimesFm2_5ModelForPrediction(TimesFm2_5Config(**config_kwargs(config)))
        return model.eval()

    def load_dense(self, path, config: dict) -> nn.Module:
        _need_hf()
        return from_pretrained_local(TimesFm2_5ModelForPrediction, path, self.name)

    # ---- structure --------------------------------------------------------------------
    def structure(self, model: nn.Module) -> ModelStructure:
        cfg = model.config
        blocks = []
        for i, layer in enumerate(model.model.layers):
            pre = f"model.layers.{i}"
            att = layer.self_attn
            attention = None if isinstance(att, Constant) else attention_group(
                f"{pre}.self_attn", num_heads=getattr(att, "num_heads", cfg.num_attention_heads),
                num_kv_heads=getattr(att, "num_kv_heads", cfg.num_key_value_heads),
                qk_head_dim=att.head_dim, v_head_dim=getattr(att, "v_head_dim", att.head_dim),
                qk_reducible=False, rope=True)
            ffn = None if isinstance(layer.mlp, Constant) else ffn_group(f"{pre}.mlp", ("fc1",), "fc2")
            blocks.append(block(i, f"{pre}.self_attn", attention, f"{pre}.mlp", ffn))
        return ModelStructure(blocks)

    hidden_unsupported = None
    _NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
              "post_feedforward_layernorm")

    def hidden_width(self, model: nn.Module) -> HiddenWidth:
        """The residual stream: written by the input residual block's output and residual
        layers and by every layer's o_proj and fc2 (each through its post-norm), read by
        q/k/v, fc1 (each through its pre-norm) and the point and quantile output blocks'
        input and residual layers; four RMSNorms per layer. The output blocks' inner width
        (hidden_dims, also config.hidden_size) is not the residual stream and stays.

        Norms: ``dense`` (RMSNorm weights times sqrt(d / d_kept)), measured better than
        plain slicing on nano + ETTh1 at flops=0.5 before fine-tuning (bench/hidden_width.py,
        docs/families.md)."""
        writes = ["model.input_ff_layer.output_layer", "model.input_ff_layer.residual_layer"]
        reads, norms, constants = [], [], []
        for i, layer in enumerate(model.model.layers):
            pre = f"model.layers.{i}"
            norms += [f"{pre}.{n}" for n in self._NORMS]
            if isinstance(layer.self_attn, Constant):
                constants.append(f"{pre}.self_attn")
            else:
                writes.append(f"{pre}.self_attn.o_proj")
                reads += [f"{pre}.self_attn.{n}_proj" for n in "qkv"]
            if isinstance(layer.mlp, Constant):
                constants.append(f"{pre}.mlp")
            else:
                writes.append(f"{pre}.mlp.fc2")
                reads.append(f"{pre}.mlp.fc1")
        for head in ("output_projection_point", "output_projection_quantiles"):
            reads += [f"{head}.input_layer", f"{head}.residual_layer"]
        size = int(model.model.layers[0].input_layernorm.weight.shape[0])
        return HiddenWidth(size, tuple(writes), tuple(reads), tuple(norms), tuple(constants),
                           norm_scale="dense")

    def resize_hidden(self, model: nn.Module, width: int) -> None:
        for layer in model.model.layers:
            layer.hidden_size = int(width)

    def resize_attention(self, model, group: AttentionGroup, shape: AttentionShape) -> None:
        resize_attention_module(model, group, shape, PrunedAttention, tuple_output=True)

    def renumber_blocks(self, model, n: int) -> None:
        renumber_hf_layers(model, model.model.layers, n)

    # ---- forecasting --------------------------------------------------------------------
    def _full_forecast(self, model, context: torch.Tensor):
        """One decode step. Returns (normalised full forecast (B, h, Q+1), mu, sigma)."""
        x, pad = pad_to_multiple(context, model.config.patch_length)
        mu = x.mean(dim=1, keepdim=True)
        sigma = x.std(dim=1, keepdim=True)
        xn = model.model._revin(x, mu, sigma, reverse=False)
        pf, qs, _ = model._decode_and_project(xn, pad)
        if model.config.force_flip_invariance:
            fpf, fqs, _ = model._decode_and_project(-xn, pad)

            def flip(t):
                return torch.cat([t[..., :1], torch.flip(t[..., 1:], dims=(-1,))], dim=-1)

            pf = (pf - flip(fpf)) / 2
            qs = (qs - flip(fqs)) / 2
        full = pf
        if model.config.use_continuous_quantile_head:
            med = model.config.decode_index
            hq = min(full.shape[1], qs.shape[1])
            adj = qs[:, :hq] - qs[:, :hq, med: med + 1] + full[:, :hq, med: med + 1]
            keep = torch.zeros(full.shape[-1], dtype=torch.bool)
            keep[1: len(model.config.quantiles) + 1] = True
            keep[med] = False
            sel = keep.to(full.device)
            head = torch.where(sel, adj, full[:, :hq])
            full = torch.cat([head, full[:, hq:]], dim=1)
        return full, mu, sigma

    def forecast(self, model, context: torch.Tensor, horizon: int) -> Forecast:
        cfg = model.config
        ctx = context.float()
        n_ctx = ctx.shape[1]

        def step(c, _remaining):  # (B, 128, 1 + Q) in the data's units
            full, mu, sigma = self._full_forecast(model, c)
            full = model.model._revin(full, mu, sigma, reverse=True)
            if cfg.infer_is_positive:
                pos = (context.amin(dim=1) >= 0)[:, None, None]
                full = torch.where(pos, full.clamp_min(0.0), full)
            return full

        def grow(c, full):  # append the median forecast, keep the last n_ctx steps
            return torch.cat([c, full[:, :, cfg.decode_index]], dim=1)[:, -n_ctx:]

        out = rollout(step, ctx, horizon, grow)                                  # (B, H, 1 + Q)
        return Forecast(out[..., cfg.decode_index], out[..., 1: len(cfg.quantiles) + 1], tuple(cfg.quantiles))

    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = model.config
        full, mu, sigma = self._full_forecast(model, context.float())
        h = target.shape[1]
        if h > full.shape[1]:
            raise ValueError(f"target length {h} exceeds the model's output horizon {full.shape[1]}")
        pred = full[:, :h]
        y = model.model._revin(target.float(), mu, sigma, reverse=False)
        loss = F.mse_loss(pred[..., cfg.decode_index], y)
        qs = torch.tensor(cfg.quantiles, dtype=pred.dtype, device=pred.device)
        err = y[..., None] - pred[..., 1: len(cfg.quantiles) + 1]
        pinball = torch.maximum(qs * err, (qs - 1) * err).mean()
        return loss + pinball

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        return Export(self, model, horizon, quantiles=True)


FAMILY = TimesFm25()
