"""Chronos-Bolt (`chronos-forecasting` ChronosBoltModelForForecasting; config.json model_type
``t5``, architectures ``ChronosBoltModelForForecasting``).

A T5 encoder-decoder: the context is instance-normalised (mean / RMS deviation, NaN-aware),
cut into patches of ``input_patch_size`` steps (left-padded with NaN to a multiple), each
patch and its observed-mask embedded by a residual MLP; the encoder attends over the
patches (+ a [REG] token); the decoder runs ONE query token (the start-token embedding) that
cross-attends to the encoder; an output residual MLP maps it to Q quantiles x
``prediction_length`` steps, de-normalised.

Masked Linears (METHOD.md s.7): encoder and decoder ``SelfAttention.{q,k,v,o}``, decoder
``EncDecAttention.{q,k,v,o}``, ``DenseReluDense.{wi,wo}`` (``wi_0, wi_1`` when gated). The
patch embeddings, the shared embedding and the output block stay dense.

Surgery and exactness (T5 specifics):
  * T5 does not scale q.k (its Q init carries the 1/sqrt(d) factor). The generic surgery
    rescales W_Q by sqrt(d'/d) when Q/K head dims shrink, so a pruned attention multiplies
    its scores by sqrt(d_kv/d') and the masked and packed models agree.
  * Relative position bias: one table (buckets x heads) in the first layer of each stack;
    the bias it computes is shared by every layer of the stack. Each pruned attention keeps
    the original ids of its heads; the table keeps only the columns of heads some layer of
    the stack still uses, and every layer selects its own columns.
  * Decoder self-attention: Chronos-Bolt decodes exactly one query token, so the softmax
    runs over a single key and is identically 1: the output is o(v(x)) for any Q, K,
    position bias and causal mask, and the Q/K mask gradients are exactly 0 (they are
    pruned at the first step). The reference implementation replaces this attention by a
    zero module at the merge; that is exact for Q and K only: the V->O path is not zero
    (in decoder layer 0 it is an input-independent vector, in later layers it depends on
    the input). tsprune therefore removes Q, K and the decoder's bias table exactly, keeps
    V and O pruned by their own masks, and folds decoder layer 0's self-attention, whose
    input is always the start-token embedding, into that constant vector (exact).

Native loss: the model's own quantile loss (2 x pinball, mean over steps, sum over
quantiles, mean over the batch) on the instance-normalised target; targets longer than
``prediction_length`` are cut to it (the model has no output beyond it).

Forecast: point = the median quantile; quantiles (B, H, Q). Horizons beyond
``prediction_length`` follow the upstream pipeline's rollout: every quantile path of the
previous block is appended to the context, the model forecasts again for each, and the
Q x Q resulting quantiles are reduced to Q by empirical quantiles (torch.quantile).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tsprune.errors import UserError, missing_extra
from tsprune.hfutil import config_kwargs, from_pretrained_local
from tsprune.prune.structure import AttentionGroup, BlockStructure, FFNGroup, ModelStructure
from tsprune.prune.surgery import AttentionShape

from .base import Constant, Export, Family, Forecast

ARCH = "ChronosBoltModelForForecasting"


def _chronos():
    """The upstream module (lazy: chronos-forecasting is an optional extra)."""
    try:
        from chronos import chronos_bolt
    except ImportError as e:
        raise missing_extra("chronos-forecasting", "chronos", e, module="chronos") from e
    return chronos_bolt


def _t5():
    # lazy: transformers is heavy; it loads with the upstream model (chronos imports it too)
    from transformers.models.t5 import modeling_t5
    return modeling_t5


class PrunedT5Attention(nn.Module):
    """A T5 attention that carries its own shapes (replaces transformers' T5Attention).

    mode "attend": n_heads heads, Q/K head dim ``key_value_proj_dim``, V head dim
      ``v_head_dim``; ``heads`` are the original ids of its heads; ``bias_index`` selects
      its columns of the stack's shared relative position bias (None: all, in order).
    mode "single": the decoder self-attention over Chronos-Bolt's one query token:
      out = o(v(x)) exactly (softmax over one key is 1); q, k are empty Linears.
    mode "const": out = ``value`` (d_model,) broadcast, or zeros when value is None.
    Any mode may own the stack's ``relative_attention_bias`` table (columns =
    ``table_heads``, original head ids): it then computes the bias for the other layers.

    forward(hidden (B, T, d), mask, key_value_states (B, S, d) | None, position_bias) ->
      (out (B, T, d), position_bias for the next layer, None)
    """

    def __init__(self, src: nn.Module, mode: str, shape: AttentionShape, heads: list[int],
                 value: torch.Tensor | None = None):
        super().__init__()
        if mode not in ("attend", "single", "const"):
            raise ValueError(f"mode: got {mode!r}; expected attend, single or const")
        self.mode = mode
        self.config = src.config
        self.is_decoder = src.is_decoder
        self.is_causal = getattr(src, "is_causal", False)
        self.layer_idx = src.layer_idx
        self.d_model = src.d_model
        self.dropout = src.dropout
        self.relative_attention_num_buckets = src.relative_attention_num_buckets
        self.relative_attention_max_distance = src.relative_attention_max_distance
        self.gradient_checkpointing = False
        # the stack's bias table, if this is the stack's first layer
        table = getattr(src, "relative_attention_bias", None)
        self.relative_attention_bias = table
        self.has_relative_attention_bias = table is not None
        self.table_heads = list(getattr(src, "table_heads", range(src.n_heads))) if table is not None else []
        self.bias_index: list[int] | None = None
        if mode == "const":
            self.value = None if value is None else nn.Parameter(value.detach().clone())
        else:
            self.q, self.k, self.v, self.o = src.q, src.k, src.v, src.o
            if mode == "single":  # Q and K never matter over a single key
                dev, dt = src.v.weight.device, src.v.weight.dtype
                self.q, self.k = (nn.Linear(self.d_model, 0, bias=False, device="meta", dtype=dt)
                                  .to_empty(device=dev) for _ in range(2))
        self.set_shape(shape if mode == "attend" else
                       AttentionShape(0 if mode == "const" else shape.num_heads,
                                      0 if mode == "const" else shape.num_heads, 0,
                                      0 if mode == "const" else shape.v_head_dim), heads)

    def set_shape(self, shape: AttentionShape, heads: list[int]) -> None:
        self.n_heads = shape.num_heads
        self.key_value_proj_dim = shape.qk_head_dim
        self.v_head_dim = shape.v_head_dim
        self.inner_dim = self.n_heads * self.key_value_proj_dim
        self.heads = list(heads) if self.mode != "const" else []
        d_kv = int(self.config.d_kv)
        # the surgery multiplied W_Q by sqrt(d'/d_kv); T5 does not scale q.k, so undo it here
        self.scaling = math.sqrt(d_kv / self.key_value_proj_dim) if 0 < self.key_value_proj_dim != d_kv else 1.0
        self.tsprune_shape = AttentionShape(self.n_heads, self.n_heads, self.key_value_proj_dim,
                                            self.v_head_dim, list(self.heads)).to_json()

    def stack_bias(self, query_length: int, key_length: int, device) -> torch.Tensor:
        """(1, len(table_heads), Tq, Tk): T5's binned relative position bias."""
        mt = _t5()
        ctx = torch.arange(query_length, dtype=torch.long, device=device)[:, None]
        mem = torch.arange(key_length, dtype=torch.long, device=device)[None, :]
        bucket = mt.T5Attention._relative_position_bucket(
            mem - ctx, bidirectional=not self.is_decoder,
            num_buckets=self.relative_attention_num_buckets,
            max_distance=self.relative_attention_max_distance)
        return self.relative_attention_bias(bucket).permute(2, 0, 1).unsqueeze(0)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None,
                cache=None, **kwargs):
        b, t = hidden_states.shape[:2]
        src = hidden_states if key_value_states is None else key_value_states
        s = src.shape[1]
        if self.relative_attention_bias is not None:
            position_bias = self.stack_bias(t, s, hidden_states.device)
        if self.mode == "const":
            shape = (b, t, self.d_model)
            # clone: an expanded view of a Parameter is a leaf that requires grad even under
            # no_grad, which torch's module tracker (FlopCounterMode) cannot hook
            out = hidden_states.new_zeros(shape) if self.value is None else \
                self.value.to(hidden_states.dtype).expand(shape).clone()
            return out, position_bias, None
        if self.mode == "single":
            return self.o(self.v(hidden_states)), position_bias, None
        h, dqk, dv = self.n_heads, self.key_value_proj_dim, self.v_head_dim
        v = self.v(src).view(b, s, h, dv).transpose(1, 2)                   # (B, h, S, dv)
        if key_value_states is None and position_bias is not None:
            bias = position_bias if self.bias_index is None else position_bias[:, self.bias_index]
        else:  # cross-attention has no position bias (upstream adds zeros)
            bias = torch.zeros((1, h, t, s), device=v.device, dtype=v.dtype)
        if dqk == 0:
            out = self._bias_only(bias, mask, v)
        else:
            q = self.q(hidden_states).view(b, t, h, dqk).transpose(1, 2)    # (B, h, T, dqk)
            k = self.k(src).view(b, s, h, dqk).transpose(1, 2)              # (B, h, S, dqk)
            attn = _t5().ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                               _t5().eager_attention_forward)
            out, _ = attn(self, q, k, v, mask, dropout=self.dropout if self.training else 0.0,
                          scaling=self.scaling, position_bias=bias)
        out = out.reshape(b, t, h * dv)                                     # (B, T, h*dv)
        return self.o(out), position_bias, None

    @staticmethod
    def _bias_only(bias, mask, v):
        """Every Q/K dim pruned: q.k = 0, the scores are the position bias (+ mask) alone;
        no zero-sized tensors (ONNX Reshape cannot take them). -> (B, T, h, dv)"""
        b, h, s, _ = v.shape
        scores = bias.expand(b, h, bias.shape[2], s)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
                else scores + mask
        w = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        return torch.matmul(w, v).transpose(1, 2)


def _sync_bias(model: nn.Module, stack: str) -> None:
    """Keep in the stack's bias table only the heads some layer still attends with, and
    point every layer at its columns. Idempotent; a no-op until the owner is pruned."""
    atts = [blk.layer[0].SelfAttention for blk in getattr(model, stack).block]
    owner = atts[0]
    if not isinstance(owner, PrunedT5Attention) or owner.relative_attention_bias is None:
        return
    need: set[int] = set()
    for a in atts:
        if isinstance(a, PrunedT5Attention):
            if a.mode == "attend":
                need |= set(a.heads)
        else:  # a dense upstream layer uses every head
            need |= set(range(a.n_heads))
    keep = [h for h in owner.table_heads if h in need]
    if keep != owner.table_heads:
        old = owner.relative_attention_bias
        if keep:
            cols = torch.tensor([owner.table_heads.index(h) for h in keep], dtype=torch.long)
            new = nn.Embedding(old.num_embeddings, len(keep), device=old.weight.device,
                               dtype=old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(old.weight[:, cols.to(old.weight.device)])
            new.weight.requires_grad_(old.weight.requires_grad)
            owner.relative_attention_bias = new
        else:
            owner.relative_attention_bias = None
        owner.has_relative_attention_bias = bool(keep)
        owner.table_heads = keep
    for a in atts:
        if isinstance(a, PrunedT5Attention) and a.mode == "attend":
            idx = [keep.index(h) for h in a.heads]
            a.bias_index = None if idx == list(range(len(keep))) else idx


class ChronosBolt(Family):
    name = "chronos_bolt"
    extra = "chronos"
    autoregressive = False           # one pruned model per horizon (METHOD.md s.6)
    prune_epochs = 1
    finetune_epochs = 1
    default_ratio = 0.3
    ratio_grid = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    default_lr = 1e-5                # AutoGluon's Chronos-Bolt fine-tuning default
    lr_grid = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    depth_unsupported = ("the relative position bias table of each T5 stack lives in its first block, "
                         "decoder block 0 may be folded into a constant, and encoder and decoder "
                         "are two stacks: not a single plain stack of blocks")

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        cb = _chronos()
        from transformers import T5Config  # lazy: transformers is heavy (see _t5)
        if "chronos_config" not in config:
            raise UserError("config.json: a Chronos-Bolt config needs 'chronos_config'")
        return cb.ChronosBoltModelForForecasting(T5Config(**config_kwargs(config))).eval()

    def load_dense(self, path, config: dict) -> nn.Module:
        cb = _chronos()
        if "chronos_config" not in config:
            raise UserError(f"config.json: {path} names {ARCH} but has no 'chronos_config'")
        return from_pretrained_local(cb.ChronosBoltModelForForecasting, path, self.name,
                                     extra_errors=(AssertionError,))

    def config_dict(self, model: nn.Module) -> dict:
        d = model.config.to_dict()
        d["architectures"] = [ARCH]
        return d

    def max_context(self, model) -> int:
        return int(model.chronos_config.context_length)

    def output_horizon(self, model) -> int:
        return int(model.chronos_config.prediction_length)

    # ---- structure --------------------------------------------------------------------
    @staticmethod
    def _attention(path: str, att: nn.Module) -> AttentionGroup | None:
        if isinstance(att, PrunedT5Attention):
            if att.mode == "const":
                return None
            h, dqk, dv, red = att.n_heads, att.key_value_proj_dim, att.v_head_dim, att.mode == "attend"
        else:
            h, dqk, dv, red = att.n_heads, att.key_value_proj_dim, att.key_value_proj_dim, True
        return AttentionGroup(owner=path, q=f"{path}.q", k=f"{path}.k", v=f"{path}.v", o=f"{path}.o",
                              num_heads=h, num_kv_heads=h, qk_head_dim=dqk, v_head_dim=dv,
                              qk_reducible=red, rope=False,  # resize_attention folds these two:
                              constant=path == "decoder.block.0.layer.0.SelfAttention",
                              single_query=path.startswith("decoder.") and path.endswith(".SelfAttention"))

    def structure(self, model: nn.Module) -> ModelStructure:
        blocks, index = [], 0
        for stack in ("encoder", "decoder"):
            for i, blk in enumerate(getattr(model, stack).block):
                pre = f"{stack}.block.{i}.layer"
                atts = [(f"{pre}.0.SelfAttention", blk.layer[0].SelfAttention)]
                if stack == "decoder":
                    atts.append((f"{pre}.1.EncDecAttention", blk.layer[1].EncDecAttention))
                groups, dead = [], []
                for path, att in atts:
                    g = self._attention(path, att)
                    (groups.append(g) if g is not None else dead.append(path))
                ff_path = f"{pre}.{len(blk.layer) - 1}.DenseReluDense"
                ff = blk.layer[-1].DenseReluDense
                ffn = ()
                if not isinstance(ff, Constant):
                    ins = ("wi_0", "wi_1") if hasattr(ff, "wi_0") else ("wi",)
                    ffn = (FFNGroup(owner=ff_path, inputs=tuple(f"{ff_path}.{n}" for n in ins),
                                    output=f"{ff_path}.wo"),)
                blocks.append(BlockStructure(index=index, attention=tuple(groups), ffn=ffn,
                                             dead_attention=tuple(dead),
                                             dead_ffn=() if ffn else (ff_path,)))
                index += 1
        return ModelStructure(blocks)

    def resize_attention(self, model, group: AttentionGroup, shape: AttentionShape) -> None:
        att = model.get_submodule(group.owner)
        stack = group.owner.split(".")[0]
        prev = att.heads if isinstance(att, PrunedT5Attention) else list(range(att.n_heads))
        heads = [prev[i] for i in shape.kv_heads] if shape.num_heads else []
        if isinstance(att, PrunedT5Attention) and att.mode == "const":
            new = att
        elif group.single_query:  # the decoder self-attentions (structure() marks them)
            if group.constant:
                new = PrunedT5Attention(att, "const", shape, [], self._start_token_attention(model, att))
            elif shape.num_heads == 0:
                new = PrunedT5Attention(att, "const", shape, [])
            else:
                new = PrunedT5Attention(att, "single", shape, heads)
        elif shape.num_heads == 0:
            new = PrunedT5Attention(att, "const", shape, [])
        else:
            new = PrunedT5Attention(att, "attend", shape, heads)
        model.set_submodule(group.owner, new)
        _sync_bias(model, stack)

    @staticmethod
    @torch.no_grad()
    def _start_token_attention(model, att) -> torch.Tensor:
        """Decoder layer 0's self-attention output: its input is always the normalised
        start-token embedding, and over one key it is o(v(x)). (d_model,)"""
        if isinstance(att, PrunedT5Attention) and att.mode == "const":
            return att.value
        blk = model.decoder.block[0].layer[0]
        e = model.decoder.embed_tokens.weight[model.config.decoder_start_token_id]
        return att.o(att.v(blk.layer_norm(e[None, None])))[0, 0]

    # ---- forecasting --------------------------------------------------------------------
    @staticmethod
    def _median(levels) -> int:
        return min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))

    def quantile_forecast(self, model, context: torch.Tensor, horizon: int) -> torch.Tensor:
        """context (B, L) -> quantile paths (B, Q, horizon), as ChronosBoltPipeline.predict."""
        cc = model.chronos_config
        n_ctx = int(cc.context_length)
        ctx = context.float()[:, -n_ctx:]
        pred = model(context=ctx).quantile_preds.to(ctx)                    # (B, Q, P)
        preds, remaining = [pred], horizon - pred.shape[-1]
        if remaining > 0:
            levels = torch.tensor(cc.quantiles, dtype=ctx.dtype, device=ctx.device)
            nq = levels.numel()
            ctx = ctx.unsqueeze(1).repeat(1, nq, 1)                          # (B, Q, L)
            while remaining > 0:
                ctx = torch.cat([ctx, pred], dim=-1)[..., -n_ctx:]
                b, _, n = ctx.shape
                pred = model(context=ctx.reshape(b * nq, n)).quantile_preds.to(ctx)  # (B*Q, Q, P)
                pred = pred.reshape(b, nq * nq, -1)                              # (B, Q*Q, P)
                pred = torch.quantile(pred, q=levels, dim=1).transpose(0, 1)     # (B, Q, P)
                preds.append(pred)
                remaining -= pred.shape[-1]
        return torch.cat(preds, dim=-1)[..., :horizon]

    def forecast(self, model, context: torch.Tensor, horizon: int) -> Forecast:
        levels = tuple(float(q) for q in model.chronos_config.quantiles)
        q = self.quantile_forecast(model, context, horizon).transpose(1, 2)   # (B, H, Q)
        return Forecast(q[..., self._median(levels)], q, levels)

    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = int(model.chronos_config.prediction_length)
        return model(context=context.float(), target=target[:, :p].float()).loss

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        return Export(self, model, horizon, quantiles=True, eager=True)


FAMILY = ChronosBolt()
