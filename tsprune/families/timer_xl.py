"""Timer-XL (thuml/timer-base-84m; model_type ``timer``, TimerForPrediction).

tsprune's own implementation; the checkpoint ships remote code only, which never runs. It
loads the checkpoint as published: the same state-dict names and shapes and config.json
keys. It matches ``modeling_timer.py`` / ``configuration_timer.py`` of the Hugging Face repo
thuml/timer-base-84m as released with Timer-XL (config written by transformers 4.40.1; the
same code the sktime and Apache IoTDB ports carry). The Hub commit hash was not checkable
offline: what is pinned is the layout (tests list every name and shape).

Architecture (decoder-only over patch tokens of P = input_token_len steps, post-norm):
  embed_layer.emb: Linear(P, D, no bias) on non-overlapping patches        (B, N, D)
  layers[i]:  h = norm1(h + self_attn(h))      causal RoPE attention, q/k/v with bias, o without
              h = norm2(h + ffn_layer(h))      down_proj(act(gate_proj(h)) * up_proj(h))
  norm (LayerNorm), lm_heads[m]: Linear(D, output_token_lens[m], no bias).
  RoPE base: 10000 (the published attention builds its rotary table without rope_theta).
Forecast (the published generate with revin, uncached): the context is cut on the left to a
multiple of P and rolled out: each step instance-normalises the whole sequence so far (mean,
std + 1e-6; upstream has no 1e-6), runs it, picks the longest head not longer than the
remaining horizon, reads the last token, de-normalises its output and appends it (so later
steps see statistics that include earlier outputs, as upstream's repeated forward does); if
an appended output is not a multiple of P the oldest points are dropped to keep whole patches
(upstream's unfold would drop the newest; the published 96-step head with P = 96 never
appends a partial patch). Tested against the upstream code in tests/test_parity_timer_xl.py.
Loss (the published calc_ar_loss, MSE): token i of the normalised context predicts the next
output_token_len points after it (targets run into the window's target part); the mean over
the valid entries, averaged over heads.

Pruning (METHOD.md s.7): masked Linears self_attn.{q,k,v,o}_proj and ffn_layer.{gate,up,
down}_proj. Heads, V dims and FFN neurons are sliced; Q/K dims are reduced in RoPE pairs
(i, i + d/2) uniformly across heads with the W_Q rescale sqrt(d'/d); each attention keeps its
per-KV-group kept dims and slices the RoPE tables to them.

Hidden width (``--prune-hidden``, ``hidden_width``): the residual stream is written by the
patch embedding, every layer's o_proj and down_proj and re-written by every post-norm; it
is read by q/k/v, gate/up and the lm_heads (through the final norm). Its norms are
LayerNorms: sliced, mean and variance taken over the kept channels, weights times
sqrt(d / d_kept) (``norm_scale "dense"``, as PatchTST's LayerNorms: better than plain
slicing on a post-norm LayerNorm PatchTST trained on ETTh1, docs/families.md "Hidden
width"; not measured on Timer-XL itself, no checkpoint here). Post-norm, so a pruned
channel is zero after every norm whatever a Constant of a collapsed group adds.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.nn import ACTIVATIONS, CausalRopeAttention, GatedMLP, init_linears, rope_tables
from tsprune.prune.structure import AttentionGroup, HiddenWidth, ModelStructure
from tsprune.prune.surgery import AttentionShape

from .base import Constant, Export, Family, Forecast, rollout
from .common import attention_group, block, config_from_dict, ffn_group, mean_std, resize_attention_module

ROPE_BASE = 10000.0


@dataclass(frozen=True)
class TimerConfig:
    """The published config.json keys (configuration_timer.py defaults).

    input_token_len: patch length P; output_token_lens: steps predicted per head, ascending.
    rope_theta is read and kept but, as in the published attention, not used.
    extra: other config.json keys, kept for the round trip."""

    input_token_len: int = 1
    hidden_size: int = 1024
    intermediate_size: int = 2048
    output_token_lens: tuple[int, ...] = (1, 8, 32, 64)
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    hidden_act: str = "silu"
    use_cache: bool = True
    rope_theta: float = 10000
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    max_position_embeddings: int = 10000
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        o = self.output_token_lens
        object.__setattr__(self, "output_token_lens",
                           (int(o),) if isinstance(o, int) else tuple(int(x) for x in o))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("the attention head dim must be even (RoPE)")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act: got {self.hidden_act!r}; expected one of {sorted(ACTIVATIONS)}")
        if self.input_token_len < 1 or not self.output_token_lens or min(self.output_token_lens) < 1:
            raise ValueError("input_token_len and output_token_lens must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> "TimerConfig":
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d["output_token_lens"] = list(self.output_token_lens)
        return {**self.extra, **d, "model_type": "timer", "architectures": ["TimerForPrediction"]}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# ---------------------------------------------------------------------------------------
# modules (published names)
# ---------------------------------------------------------------------------------------
class PatchEmbedding(nn.Module):
    """x (B, N * P) -> emb(patches) (B, N, D)."""

    def __init__(self, cfg: TimerConfig):
        super().__init__()
        self.input_token_len = cfg.input_token_len
        self.emb = nn.Linear(cfg.input_token_len, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.emb(x.unfold(-1, self.input_token_len, self.input_token_len))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TimerConfig):
        super().__init__()
        self.self_attn = CausalRopeAttention(cfg.hidden_size, cfg.num_attention_heads,
                                             cfg.num_attention_heads, cfg.head_dim, cfg.attention_dropout)
        self.ffn_layer = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.norm1 = nn.LayerNorm(cfg.hidden_size)
        self.norm2 = nn.LayerNorm(cfg.hidden_size)

    def forward(self, h, cos, sin):
        a = self.self_attn(h, cos, sin)
        a = a[0] if isinstance(a, tuple) else a    # (out, (k, v)); a dead attention: a Constant
        h = self.norm1(h + a)
        return self.norm2(h + self.ffn_layer(h))


class TimerModel(nn.Module):
    def __init__(self, cfg: TimerConfig):
        super().__init__()
        self.embed_layer = PatchEmbedding(cfg)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size)


class TimerForPrediction(nn.Module):
    """forward(x (B, N * P) normalised series) -> hidden (B, N, D)."""

    def __init__(self, cfg: TimerConfig):
        super().__init__()
        self.config = cfg
        self.model = TimerModel(cfg)
        self.lm_heads = nn.ModuleList(nn.Linear(cfg.hidden_size, n, bias=False)
                                      for n in cfg.output_token_lens)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The published _init_weights: Linear weights N(0, initializer_range), biases 0."""
        init_linears(self, self.config.initializer_range)

    def forward(self, x):
        h = self.model.embed_layer(x)
        cos, sin = rope_tables(self.config.head_dim, ROPE_BASE, h.shape[1], x.device)
        cos, sin = cos.to(h.dtype), sin.to(h.dtype)
        for layer in self.model.layers:
            h = layer(h, cos, sin)
        return self.model.norm(h)


# ---------------------------------------------------------------------------------------
# the family adapter
# ---------------------------------------------------------------------------------------
def _whole_patches(context: torch.Tensor, p: int) -> torch.Tensor:
    """Drop the oldest points so that (B, L) holds whole patches (the published generate)."""
    n = (context.shape[1] // p) * p
    if n == 0:
        raise ValueError(f"context length {context.shape[1]} is shorter than one patch ({p})")
    return context[:, context.shape[1] - n:]


class TimerXL(Family):
    name = "timer_xl"
    autoregressive = True
    prune_epochs = 10
    finetune_epochs = 10             # with patience 1 (FinetuneConfig.patience)
    default_ratio = 0.1
    ratio_grid = (0.05, 0.1, 0.15, 0.2)
    default_lr = 1e-6
    lr_grid = (1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
    block_list = "model.layers"

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        return TimerForPrediction(TimerConfig.from_dict(config)).eval()

    def config_dict(self, model) -> dict:
        return model.config.to_dict()

    def context_multiple(self, model) -> int:
        return int(model.config.input_token_len)

    def max_context(self, model) -> int:
        return int(model.config.max_position_embeddings * model.config.input_token_len)

    def output_horizon(self, model) -> int:
        return int(max(model.config.output_token_lens))

    # ---- structure --------------------------------------------------------------------
    def structure(self, model) -> ModelStructure:
        blocks = []
        for i, layer in enumerate(model.model.layers):
            pre = f"model.layers.{i}"
            att = layer.self_attn
            attention = None if isinstance(att, Constant) else attention_group(
                f"{pre}.self_attn", num_heads=att.num_heads, num_kv_heads=att.num_kv_heads,
                qk_head_dim=att.head_dim, v_head_dim=att.v_head_dim, qk_reducible=True, rope=True)
            ffn = None if isinstance(layer.ffn_layer, Constant) else ffn_group(
                f"{pre}.ffn_layer", ("gate_proj", "up_proj"), "down_proj")
            blocks.append(block(i, f"{pre}.self_attn", attention, f"{pre}.ffn_layer", ffn))
        return ModelStructure(blocks)

    def resize_attention(self, model, group: AttentionGroup, shape: AttentionShape) -> None:
        resize_attention_module(model, group, shape)

    def renumber_blocks(self, model, n: int) -> None:
        model.config = dataclasses.replace(model.config, num_hidden_layers=int(n))

    hidden_unsupported = None

    def hidden_width(self, model) -> HiddenWidth:
        """The residual stream (see the module docstring): the embedding's rows, each
        layer's o_proj / down_proj rows (or its Constants), q/k/v / gate / up and lm_heads
        columns, two LayerNorms per layer and the final one."""
        writes, reads, constants = ["model.embed_layer.emb"], [], []
        norms = []
        for i, layer in enumerate(model.model.layers):
            pre = f"model.layers.{i}"
            if isinstance(layer.self_attn, Constant):
                constants.append(f"{pre}.self_attn")
            else:
                writes.append(f"{pre}.self_attn.o_proj")
                reads += [f"{pre}.self_attn.{n}_proj" for n in "qkv"]
            if isinstance(layer.ffn_layer, Constant):
                constants.append(f"{pre}.ffn_layer")
            else:
                writes.append(f"{pre}.ffn_layer.down_proj")
                reads += [f"{pre}.ffn_layer.gate_proj", f"{pre}.ffn_layer.up_proj"]
            norms += [f"{pre}.norm1", f"{pre}.norm2"]
        norms.append("model.norm")
        reads += [f"lm_heads.{i}" for i in range(len(model.lm_heads))]
        size = int(model.model.embed_layer.emb.out_features)
        return HiddenWidth(size, tuple(writes), tuple(reads), tuple(norms), tuple(constants), norm_scale="dense")

    # ---- training and forecasting ---------------------------------------------------
    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = model.config.input_token_len
        c = _whole_patches(context.float(), p)
        mu, sd = mean_std(c)
        x = (torch.cat([c, target.float()], dim=1) - mu) / sd                     # (B, L + H)
        n_ctx = c.shape[1]
        hidden = model(x[:, :n_ctx])                                               # (B, N, D)
        n = hidden.shape[1]
        total = 0.0
        for head, m in zip(model.lm_heads, model.config.output_token_lens):
            pred = head(hidden)                                                    # (B, N, m)
            need = n_ctx + m                       # token i predicts x[(i+1)P : (i+1)P + m]
            lab = F.pad(x, (0, max(0, need - x.shape[1])))[:, p: need].unfold(1, m, p)  # (B, N, m)
            pos = p * torch.arange(1, n + 1, device=x.device)[:, None] + torch.arange(m, device=x.device)
            valid = pos < x.shape[1]                                               # (N, m)
            err = (pred - lab).pow(2) * valid
            total = total + err.sum() / (valid.sum() * x.shape[0])
        return total / len(model.config.output_token_lens)

    def _step(self, model, seq: torch.Tensor, remaining: int) -> torch.Tensor:
        """One decode step on the normalised (B, N * P) sequence -> (B, min(m, remaining))."""
        lens = model.config.output_token_lens
        k = 0
        for i in range(1, len(lens)):
            if lens[i] > remaining:
                break
            k = i
        out = model.lm_heads[k](model(seq)[:, -1])
        return out[:, :remaining]

    def forecast(self, model, context: torch.Tensor, horizon: int) -> Forecast:
        """The published generate(revin=True) without a cache: every step normalises the
        whole grown sequence (raw context + de-normalised outputs so far) by its own mean
        and std, predicts, and de-normalises."""
        p = model.config.input_token_len
        seq = _whole_patches(context.float(), p)                                  # (B, N * P)

        def step(s, remaining):  # normalise the sequence so far, predict, de-normalise
            mu, sd = mean_std(s)
            return self._step(model, (s - mu) / sd, remaining) * sd + mu

        return Forecast(rollout(step, seq, horizon, lambda s, y: _whole_patches(torch.cat([s, y], dim=1), p)))

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        return Export(self, model, horizon)


FAMILY = TimerXL()
