"""PatchTST (`transformers` PatchTSTForPrediction, model_type ``patchtst``).

Channel-independent patch transformer: each series is scaled (``scaling``: std / mean /
none, inside the model), cut into patches of ``patch_length`` with ``patch_stride``,
embedded by one Linear, given a positional encoding, passed through an encoder of
(attention, FFN) layers with batch or layer norms, and mapped by a linear head (mean-pooled
or flattened patches) to ``prediction_length`` steps, de-scaled.

tsprune windows are univariate, so every window is fed as a one-channel series; a model
trained with C channels is used as is when its embedding and projection are shared across
channels (channel independence, the default), or when C == 1. Not supported (UserError):
channel attention (it mixes channels), distribution heads (``loss`` other than "mse").

Masked Linears: ``self_attn.{q,k,v,out}_proj`` and the FFN ``ff.0`` / ``ff.3`` of every
encoder layer. Heads, V dims and Q/K dims (no RoPE, no q/k norms; the surgery rescales W_Q
so that the temperature stays 1/sqrt(d)) and FFN neurons are sliced. The patch embedding,
positional encoding, norms and the head stay dense, unless the hidden width is pruned.

Hidden width (``--prune-hidden``, ``hidden_width``): the residual stream is written by the
patch embedding plus the positional table (and class token), by every layer's ``out_proj``
and ``ff.3`` and re-written by every post-norm; it is read by q/k/v, ``ff.0`` and the head
(a flattened head reads channel c of patch r at column r * d_model + c). Normalisation
statistics over fewer channels:
  * BatchNorm (the default ``norm_type``): per-channel weight, bias and running mean and
    variance are sliced; each kept channel is normalised exactly as before (eval mode, and
    in training the batch statistics are per channel too), so nothing is rescaled.
  * LayerNorm: the mean and variance are taken over the kept channels. Post-norm layers
    (``pre_norm: false``) multiply the weights by sqrt(d / d_kept) (``norm_scale "dense"``:
    the norm's output keeps the total energy it had at full width instead of each kept
    channel's); pre-norm layers keep them (``"kept"``). Measured on PatchTSTs trained on
    ETTh1 (bench/hidden_width_patchtst.py, docs/families.md "Hidden width"): post-norm,
    "dense" is better (test MSE with half the channels cut 0.422 vs 0.460, before
    fine-tuning); pre-norm, slicing either way gives the same model, and the budget plan
    scored under "kept" was the better one (0.317 vs 0.325).
While scoring, the mask gates the positional encoder's output, the writers (and the
Constants of collapsed groups) and, for BatchNorm, each norm's output (its shift maps a
zero channel to a non-zero one), so pruned channels are zero wherever the stream is read.

Native loss: MSE of the de-scaled forecast against the target (upstream's loss), on the
first ``prediction_length`` steps. Contexts longer than ``context_length`` keep their last
``context_length`` steps; shorter ones are left-padded and marked unobserved (upstream's
``past_observed_mask``). Horizons beyond ``prediction_length`` roll out: the point forecast
is appended to the context and the model forecasts again.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.errors import UserError, missing_extra
from tsprune.hfutil import config_kwargs, from_pretrained_local
from tsprune.prune.structure import AttentionGroup, HiddenWidth, ModelStructure
from tsprune.prune.surgery import AttentionShape

from .base import Constant, Export, Family, Forecast, rollout
from .common import attention_group, block, ffn_group, last_window, renumber_hf_layers, resize_attention_module

ARCH = "PatchTSTForPrediction"


def _hf():
    """transformers' PatchTST module (lazy, so detection never imports it)."""
    try:
        from transformers.models.patchtst import modeling_patchtst
    except ImportError as e:
        raise missing_extra("transformers>=5 (PatchTST)", "patchtst", e, module="transformers") from e
    return modeling_patchtst


class PrunedAttention(nn.Module):
    """PatchTST attention that carries its own shapes (heads, Q/K head dim, V head dim).

    Same computation as transformers' PatchTSTAttention, reusing its projections.
    forward(hidden (B, T, d)) -> (out (B, T, d), attention weights or None).
    """

    def __init__(self, src: nn.Module, shape: AttentionShape):
        super().__init__()
        self.config = src.config
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = src.q_proj, src.k_proj, src.v_proj, src.out_proj
        self.dropout = src.dropout
        self.is_decoder = False
        self.is_causal = False
        self.set_shape(shape)

    def set_shape(self, shape: AttentionShape) -> None:
        self.num_heads = shape.num_heads
        self.head_dim = shape.qk_head_dim
        self.v_head_dim = shape.v_head_dim
        self.num_key_value_groups = 1
        self.scaling = self.head_dim ** -0.5 if self.head_dim else 1.0
        self.tsprune_shape = shape.to_json()

    def forward(self, hidden_states, key_value_states=None, attention_mask=None,
                output_attentions=False, **kwargs):
        b, t = hidden_states.shape[:2]
        h = self.num_heads
        v = self.v_proj(hidden_states).view(b, t, h, self.v_head_dim).transpose(1, 2)  # (B, h, T, dv)
        if self.head_dim == 0:  # every Q/K dim pruned: q.k = 0, uniform attention, no 0-sized tensors
            scores = v.new_zeros(b, h, t, t)
            if attention_mask is not None:
                scores = scores + attention_mask
            weights = torch.softmax(scores, dim=-1)
            out = torch.matmul(weights, v).transpose(1, 2)
        else:
            q = self.q_proj(hidden_states).view(b, t, h, self.head_dim).transpose(1, 2)  # (B, h, T, dqk)
            k = self.k_proj(hidden_states).view(b, t, h, self.head_dim).transpose(1, 2)
            mh = _hf()
            attn = mh.ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                            mh.eager_attention_forward)
            out, weights = attn(self, q, k, v, attention_mask,
                                dropout=self.dropout if self.training else 0.0, scaling=self.scaling,
                                output_attentions=output_attentions)
        out = out.reshape(b, t, h * self.v_head_dim)                                      # (B, T, h*dv)
        return self.out_proj(out), weights


def _check_supported(cfg) -> None:
    if cfg.loss != "mse":
        raise UserError(f"config.json: PatchTST with loss {cfg.loss!r} (a distribution head) is not "
                        f"supported; tsprune prunes point-forecast PatchTST models (loss 'mse')")
    if cfg.channel_attention:
        raise UserError("config.json: PatchTST with channel_attention=true is not supported "
                        "(tsprune windows are univariate; channel attention mixes channels)")
    if cfg.num_input_channels != 1 and not (cfg.share_embedding and cfg.share_projection):
        raise UserError(f"config.json: PatchTST with {cfg.num_input_channels} channels and per-channel "
                        f"embedding or projection is not supported (univariate windows carry no "
                        f"channel index); expected num_input_channels 1 or shared weights")


class PatchTST(Family):
    name = "patchtst"
    extra = "patchtst"
    autoregressive = False
    prune_epochs = 1
    finetune_epochs = 3
    default_ratio = 0.1
    ratio_grid = (0.05, 0.1, 0.2, 0.3)
    default_lr = 1e-4
    lr_grid = (1e-3, 1e-4, 1e-5)
    block_list = "model.encoder.layers"

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        mh = _hf()
        c = mh.PatchTSTConfig(**config_kwargs(config))
        _check_supported(c)
        return mh.PatchTSTForPrediction(c).eval()

    def load_dense(self, path, config: dict) -> nn.Module:
        mh = _hf()
        model = from_pretrained_local(mh.PatchTSTForPrediction, path, self.name)
        _check_supported(model.config)
        return model

    def config_dict(self, model: nn.Module) -> dict:
        d = model.config.to_dict()
        d["architectures"] = [ARCH]
        return d

    def max_context(self, model) -> int:
        return int(model.config.context_length)

    def output_horizon(self, model) -> int:
        return int(model.config.prediction_length)

    # ---- structure --------------------------------------------------------------------
    def structure(self, model: nn.Module) -> ModelStructure:
        blocks = []
        for i, layer in enumerate(model.model.encoder.layers):
            pre = f"model.encoder.layers.{i}"
            att = layer.self_attn
            attention = None if isinstance(att, Constant) else attention_group(
                f"{pre}.self_attn", o="out_proj", num_heads=att.num_heads, num_kv_heads=att.num_heads,
                qk_head_dim=att.head_dim, v_head_dim=getattr(att, "v_head_dim", att.head_dim),
                qk_reducible=True, rope=False)
            ffn = None if isinstance(layer.ff, Constant) else ffn_group(f"{pre}.ff", ("0",), "3")
            blocks.append(block(i, f"{pre}.self_attn", attention, f"{pre}.ff", ffn))
        return ModelStructure(blocks)

    def resize_attention(self, model, group: AttentionGroup, shape: AttentionShape) -> None:
        resize_attention_module(model, group, shape, PrunedAttention, tuple_output=True)

    hidden_unsupported = None

    def hidden_width(self, model: nn.Module) -> HiddenWidth:
        """The residual stream (see the module docstring): the embedding's rows and the
        positional table's (and class token's) columns, each layer's out_proj / ff.3 rows
        (or its Constants), q/k/v / ff.0 and head columns, two norms per layer."""
        cfg, enc = model.config, model.model.encoder
        emb = "model.encoder.embedder.input_embedding" + ("" if enc.embedder.share_embedding else ".0")
        pe = "model.encoder.positional_encoder"
        batchnorm = cfg.norm_type == "batchnorm"
        writes, reads, norms, constants, gates = [emb], [], [], [], [pe]
        for i, layer in enumerate(enc.layers):
            pre = f"model.encoder.layers.{i}"
            for mod, w, r in ((layer.self_attn, "self_attn.out_proj", ("self_attn.q_proj", "self_attn.k_proj",
                                                                       "self_attn.v_proj")),
                              (layer.ff, "ff.3", ("ff.0",))):
                if isinstance(mod, Constant):
                    constants.append(f"{pre}.{w.split('.')[0]}")
                    gates.append(constants[-1])
                else:
                    writes.append(f"{pre}.{w}")
                    gates.append(writes[-1])
                    reads += [f"{pre}.{p}" for p in r]
            for n in ("norm_sublayer1", "norm_sublayer3"):  # (sublayer 2: channel attention, refused)
                norms.append(f"{pre}.{n}.batchnorm" if batchnorm else f"{pre}.{n}")
                if batchnorm:  # (B, T, d) around BatchNorm1d's (B, d, T)
                    gates.append(f"{pre}.{n}")
        head = "head.projection" if model.head.share_projection else "head.projections.0"
        size = int(model.get_submodule(emb).out_features)
        flat = ()
        if model.head.pooling_type or model.head.use_cls_token:   # one pooled (or class) token
            reads.append(head)
        else:                                                      # N patches flattened: (N * d)
            flat = ((head, model.get_submodule(head).in_features // size),)
        vectors = [f"{pe}.position_enc"] + ([f"{pe}.cls_token"] if enc.positional_encoder.use_cls_token else [])
        return HiddenWidth(size, tuple(writes), tuple(reads), tuple(norms), tuple(constants),
                           norm_scale="kept" if cfg.pre_norm else "dense",
                           gates=tuple(gates), vectors=tuple(vectors), flat_reads=flat)

    def renumber_blocks(self, model, n: int) -> None:
        renumber_hf_layers(model, model.model.encoder.layers, n)

    # ---- forecasting --------------------------------------------------------------------
    def predict(self, model, context: torch.Tensor) -> torch.Tensor:
        """One forward pass: context (B, L) -> forecast (B, prediction_length), in the
        context's units. Same computation as PatchTSTForPrediction on one channel."""
        cfg = model.config
        x, observed = last_window(context.float(), int(cfg.context_length))  # padding unobserved
        core = model.model
        scaled, loc, scale = core.scaler(x[..., None], observed[..., None])   # (B, n, 1), (B, 1, 1)
        patches = core.patchifier(scaled)                                      # (B, 1, N, p)
        enc = core.encoder
        emb = enc.embedder
        if emb.share_embedding:
            e = emb.input_embedding(patches)                                   # (B, 1, N, d)
        else:
            e = torch.stack([emb.input_embedding[0](patches[:, 0])], dim=1)
        pe = enc.positional_encoder
        # upstream's forward, on one channel (its class token is expanded to the config's
        # channel count): called as a module, so the hidden-width mask can gate its output
        n_channels, pe.num_input_channels = pe.num_input_channels, 1
        try:
            h = pe(e)                                                          # (B, 1, N[+1], d)
        finally:
            pe.num_input_channels = n_channels
        for layer in enc.layers:
            h = layer(hidden_state=h)[0]
        y = model.head(h) * scale + loc                                        # (B, P, 1)
        return y[..., 0]

    def forecast(self, model, context: torch.Tensor, horizon: int) -> Forecast:
        ctx = context.float()
        n_ctx = ctx.shape[1]
        return Forecast(rollout(lambda c, _remaining: self.predict(model, c), ctx, horizon,
                                lambda c, y: torch.cat([c, y], dim=1)[:, -n_ctx:]))

    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = self.predict(model, context)
        h = min(target.shape[1], y.shape[1])
        return F.mse_loss(y[:, :h], target[:, :h].float())

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        return Export(self, model, horizon, eager=True)


FAMILY = PatchTST()
