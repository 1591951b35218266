"""TimesFM 2.0 (`transformers` TimesFmModelForPrediction, model_type ``timesfm``; the
google/timesfm-2.0-500m-pytorch layout).

Decoder-only patch transformer: patches of ``patch_length`` steps concatenated with their
padding flags go through a residual input block; a frequency embedding (freq 0, 1 or 2) is
added; causal attention with a learned per-dim query scaling and padded patches masked as
keys; a ReLU MLP (gate_proj -> relu -> down_proj, pre-LayerNorm, padded rows zeroed, own
residual). Instance normalisation uses the mean and std of the first patch with at least 3
observed values. Each position predicts ``horizon_length`` steps x (mean + quantiles); the
forecast reads the last position, and longer horizons roll out as upstream TimesFM decodes:
append the mean forecast (unpadded), keep the last ``context_length`` steps, decode again.

Masked Linears (METHOD.md s.7): self_attn q/k/v (the reference's fused ``qkv_proj``;
transformers stores q_proj, k_proj, v_proj separately, so each has its own input mask) and
o_proj; mlp gate_proj and down_proj. Unlike the reference, which only masks the fused qkv,
tsprune also slices attention, because the unfused layout makes it exact: whole heads, the
V head dim and the Q/K head dim (no RoPE, no q/k norms) are reduced uniformly across heads.
A pruned attention keeps the per-dim query scaling per head, (heads, qk_dim), since heads
keep different Q/K dims. FFN neurons are sliced. Input block, frequency embedding and
output block stay dense, unless the hidden width is pruned.

Hidden width (``--prune-hidden``, ``hidden_width``): the residual stream is written by the
input residual block (output and residual layers), the frequency embedding (a (3, D)
table: its columns go), every layer's o_proj and mlp.down_proj; it is read by q/k/v,
mlp.gate_proj and the output block's input and residual layers. Norms: each layer's
RMSNorm before attention and LayerNorm before the MLP, both over the kept channels with
their weights times sqrt(d / d_kept) (``norm_scale "dense"``, TimesFM 2.5's measured choice
for its RMSNorms; PatchTST's measurement found it neutral for pre-norm LayerNorms; not
measured on TimesFM 2.0, no checkpoint here). While scoring, the mask also gates the
frequency embedding and collapsed groups (a Constant attention, a DeadMLP: x + bias).
Not supported: ``use_positional_embedding`` (its sinusoidal table is computed at the
model's width; the published 2.0 checkpoint does not use it).

Context: contexts longer than ``context_length`` keep the last ``context_length`` steps;
shorter ones are left-padded to a multiple of ``patch_length`` with padding flags (upstream
pads to ``context_length``: the same forecast, fewer padded patches). Frequency: 0 (the
upstream default; sub-daily and daily data).

Native loss: MSE of the mean channel over the first H steps of the last position's output
patch, in the data's units (as transformers' own loss; the quantile channels are not
trained, METHOD.md s.2: "MSE for TimesFM").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.errors import UserError, missing_extra
from tsprune.hfutil import config_kwargs, from_pretrained_local
from tsprune.prune.structure import AttentionGroup, FFNGroup, HiddenWidth, ModelStructure
from tsprune.prune.surgery import AttentionShape

from .base import Constant, Export, Family, Forecast, rollout
from .common import PatchedDecoderConfig, attention_group, block, ffn_group, pad_to_multiple, renumber_hf_layers

try:
    from transformers import TimesFmConfig, TimesFmModelForPrediction
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.timesfm import modeling_timesfm as _hf
except ImportError as _e:  # transformers is a core dependency; kept to report why
    TimesFmConfig = TimesFmModelForPrediction = None
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None

FREQ = 0  # TimesFM frequency class: 0 high (up to daily), 1 medium (weekly, monthly), 2 low


def _need_hf():
    if TimesFmModelForPrediction is None:
        raise missing_extra("transformers>=5 (TimesFm)", "timesfm", _IMPORT_ERROR, module="transformers")


class PrunedAttention(nn.Module):
    """TimesFM 2.0 attention with its own shapes: heads, Q/K head dim, V head dim.

    Reuses the upstream projections. ``scaling`` is (qk_head_dim,) shared by all heads, as
    upstream, or (num_heads, qk_head_dim) once Q/K dims were reduced per head.
    forward(hidden (B, T, D), attention_mask (B, 1, T, T)) -> (out (B, T, D), None).
    """

    def __init__(self, src: nn.Module, shape: AttentionShape):
        super().__init__()
        self.config = src.config
        self.layer_idx = src.layer_idx
        self.is_causal = True
        self.attention_dropout = src.attention_dropout
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = src.q_proj, src.k_proj, src.v_proj, src.o_proj
        self.scaling = src.scaling
        self.set_shape(shape)

    def set_shape(self, shape: AttentionShape) -> None:
        self.num_heads = shape.num_heads
        self.head_dim = shape.qk_head_dim
        self.v_head_dim = shape.v_head_dim
        self.num_key_value_groups = 1
        self.tsprune_shape = shape.to_json()

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        b, t = hidden_states.shape[:2]
        h = self.num_heads
        v = self.v_proj(hidden_states).view(b, t, h, self.v_head_dim).transpose(1, 2)  # (B, H, T, dv)
        if self.head_dim == 0:  # every Q/K dim pruned: q.k = 0, uniform over the allowed keys
            scores = v.new_zeros(b, h, t, t)
            if attention_mask is not None:
                scores = scores + attention_mask
            out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)      # (B, T, H, dv)
        else:
            q = self.q_proj(hidden_states).view(b, t, h, self.head_dim).transpose(1, 2)  # (B, H, T, dq)
            scale = F.softplus(self.scaling).mul(1.442695041 / math.sqrt(self.head_dim))
            q = q * (scale[None, :, None, :] if scale.dim() == 2 else scale[None, None, None, :])
            k = self.k_proj(hidden_states).view(b, t, h, self.head_dim).transpose(1, 2)
            attn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                         _hf.simple_eager_attention_forward)
            out, _ = attn(self, q, k, v, attention_mask,
                          dropout=self.attention_dropout if self.training else 0.0, scaling=1.0)
        out = out.reshape(b, t, h * self.v_head_dim)  # (B, T, H * dv)
        return self.o_proj(out), None


class DeadMLP(nn.Module):
    """A TimesFM MLP whose neurons are all pruned: x + bias * (1 - padding)."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x, paddings=None):
        out = self.bias.to(x.dtype).expand(x.shape)
        if paddings is not None:
            out = out * (1.0 - paddings[:, :, None])
        return out + x


class TimesFm2(PatchedDecoderConfig, Family):
    name = "timesfm2"
    autoregressive = True
    prune_epochs = 1
    finetune_epochs = 1
    default_ratio = 0.1
    ratio_grid = (0.01, 0.05, 0.1, 0.15)
    default_lr = 1e-7
    lr_grid = (1e-7, 1e-8, 1e-9)
    block_list = "decoder.layers"

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        _need_hf()
        return TimesFmModelForPrediction(TimesFmConfig(**config_kwargs(config))).eval()

    def load_dense(self, path, config: dict) -> nn.Module:
        _need_hf()
        return from_pretrained_local(TimesFmModelForPrediction, path, self.name)

    # ---- structure --------------------------------------------------------------------
    def structure(self, model: nn.Module) -> ModelStructure:
        cfg = model.config
        blocks = []
        for i, layer in enumerate(model.decoder.layers):
            pre = f"decoder.layers.{i}"
            att = layer.self_attn
            heads = getattr(att, "num_heads", cfg.num_attention_heads)
            attention = None if isinstance(att, Constant) else attention_group(
                f"{pre}.self_attn", num_heads=heads, num_kv_heads=heads, qk_head_dim=att.head_dim,
                v_head_dim=getattr(att, "v_head_dim", att.head_dim), qk_reducible=True, rope=False)
            ffn = None if isinstance(layer.mlp, DeadMLP) else ffn_group(f"{pre}.mlp", ("gate_proj",),
                                                                         "down_proj")
            blocks.append(block(i, f"{pre}.self_attn", attention, f"{pre}.mlp", ffn))
        return ModelStructure(blocks)

    def resize_attention(self, model, group: AttentionGroup, shape: AttentionShape) -> None:
        att = model.get_submodule(group.owner)
        if shape.num_heads == 0:
            o = att.o_proj
            model.set_submodule(group.owner, Constant(o.out_features, o.bias, tuple_output=True))
            return
        # query scaling of the kept heads and dims: (H', dq') when dims differ per head
        s = att.scaling.detach()
        heads = torch.as_tensor(shape.kv_heads or list(range(shape.num_heads)), dtype=torch.long)
        if shape.qk_dims is not None:
            dims = torch.as_tensor(shape.qk_dims, dtype=torch.long)                  # (H', dq')
            new = s[heads[:, None], dims] if s.dim() == 2 else s[dims]
        else:
            new = s[heads] if s.dim() == 2 else s
        if not isinstance(att, PrunedAttention):
            att = PrunedAttention(att, shape)
            model.set_submodule(group.owner, att)
        att.set_shape(shape)
        if new is not s:
            att.scaling = nn.Parameter(new.clone(), requires_grad=att.scaling.requires_grad)

    def resize_ffn(self, model, group: FFNGroup, width: int) -> None:
        if width == 0:
            model.set_submodule(group.owner, DeadMLP(model.get_submodule(group.output).bias))

    def renumber_blocks(self, model, n: int) -> None:
        # the decoder runs layers[:config.num_hidden_layers]: the count must follow
        renumber_hf_layers(model, model.decoder.layers, n)

    hidden_unsupported = None

    def hidden_width(self, model: nn.Module) -> HiddenWidth:
        """The residual stream (see the module docstring): the input block's rows and the
        frequency table's columns, each layer's o_proj / down_proj rows (or its collapsed
        groups' biases), q/k/v / gate_proj and output-block columns, an RMSNorm and a
        LayerNorm per layer."""
        if model.config.use_positional_embedding:
            raise UserError("--prune-hidden: hidden-width pruning is not supported for timesfm2 models "
                            "with use_positional_embedding (the sinusoidal table is computed at the "
                            "model's width)")
        writes = ["decoder.input_ff_layer.output_layer", "decoder.input_ff_layer.residual_layer"]
        reads, norms, constants = [], [], []
        for i, layer in enumerate(model.decoder.layers):
            pre = f"decoder.layers.{i}"
            norms.append(f"{pre}.input_layernorm")
            if isinstance(layer.self_attn, Constant):
                constants.append(f"{pre}.self_attn")
            else:
                writes.append(f"{pre}.self_attn.o_proj")
                reads += [f"{pre}.self_attn.{n}_proj" for n in "qkv"]
            if isinstance(layer.mlp, DeadMLP):
                constants.append(f"{pre}.mlp")
            else:
                writes.append(f"{pre}.mlp.down_proj")
                reads.append(f"{pre}.mlp.gate_proj")
                norms.append(f"{pre}.mlp.layer_norm")
        reads += ["horizon_ff_layer.input_layer", "horizon_ff_layer.residual_layer"]
        size = int(model.decoder.freq_emb.weight.shape[1])
        return HiddenWidth(size, tuple(writes), tuple(reads), tuple(norms), tuple(constants),
                           norm_scale="dense", gates=(*writes, "decoder.freq_emb", *constants),
                           vectors=("decoder.freq_emb.weight",))

    def resize_hidden(self, model: nn.Module, width: int) -> None:
        model.decoder.freq_emb.embedding_dim = int(width)
        model.decoder.input_ff_layer.output_dims = int(width)
        model.horizon_ff_layer.input_dims = int(width)
        for layer in model.decoder.layers:
            if hasattr(layer.self_attn, "hidden_size"):
                layer.self_attn.hidden_size = int(width)

    # ---- forecasting --------------------------------------------------------------------
    def _prepare(self, model, context: torch.Tensor):
        """(B, L) -> last context_length steps, left-padded to a multiple of the patch
        length; padding (B, L') float, 1 = padded."""
        cfg = model.config
        return pad_to_multiple(context[:, -int(cfg.context_length):], cfg.patch_length)

    def _decode(self, model, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """One decode step on a prepared window (B, n): (B, horizon_length, 1 + Q) in the
        data's units (the last position's output patch)."""
        freq = torch.full((x.shape[0], 1), FREQ, dtype=torch.long, device=x.device)
        out = model.decoder(past_values=x, past_values_padding=pad, freq=freq)
        full = model._postprocess_output(out.last_hidden_state, (out.loc, out.scale))  # (B, N, h, 1+Q)
        return full[:, -1]

    def _rollout(self, model, context: torch.Tensor, horizon: int) -> torch.Tensor:
        """(B, L) -> (B, horizon, 1 + Q), decoding ceil(horizon / horizon_length) steps."""
        n_max = int(model.config.context_length)
        ctx = context.float()[:, -n_max:]
        # append the mean forecast, keep the last context_length steps
        return rollout(lambda c, _remaining: self._decode(model, *self._prepare(model, c)), ctx, horizon,
                       lambda c, full: torch.cat([c, full[..., 0]], dim=1)[:, -n_max:])

    def forecast(self, model, context: torch.Tensor, horizon: int) -> Forecast:
        full = self._rollout(model, context, horizon)
        return Forecast(full[..., 0], full[..., 1:], tuple(model.config.quantiles))

    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h = target.shape[1]
        if h > model.config.horizon_length:
            raise ValueError(f"target length {h} exceeds the model's output horizon "
                             f"{model.config.horizon_length}")
        x, pad = self._prepare(model, context.float())
        pred = self._decode(model, x, pad)[:, :h, 0]
        return F.mse_loss(pred, target.float())

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        return Export(self, model, horizon, quantiles=True)


FAMILY = TimesFm2()
