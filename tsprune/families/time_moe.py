"""Time-MoE (Maple728/TimeMoE-50M, -200M; model_type ``time_moe``, TimeMoeForPrediction).

tsprune's own implementation; the published checkpoints ship remote code only, which never
runs. It loads those checkpoints as published: the same state-dict names and shapes and the
same config.json keys. It matches ``modeling_time_moe.py`` / ``configuration_time_moe.py`` as
published in github.com/Time-MoE/Time-MoE (time_moe/models/; the same files the Hub repos
Maple728/TimeMoE-50M and -200M ship as remote code, their config.json written by
transformers 4.40.1, weights in bfloat16, loaded here as float32). The Hub commit hash was
not checkable offline: what is pinned is the layout (tests list every name and shape).

Architecture (decoder-only, one token per time point, input_size 1):
  embed_layer:  act(gate_layer(x)) * emb_layer(x)                     (B, T, 1) -> (B, T, D)
  layers[i]:    h = h + self_attn(input_layernorm(h))                 RMSNorm, RoPE, causal
                h = h + ffn_layer(post_attention_layernorm(h))
  ffn_layer:    sparse MoE: softmax router ``gate`` (D -> E), top-k (k = num_experts_per_tok,
                no renormalisation: the published layer fixes norm_topk_prob = False),
                experts[j] = down(act(gate_proj(h)) * up_proj(h)) of width intermediate // k,
                plus shared_expert (width intermediate) scaled by sigmoid(shared_expert_gate(h));
                or a dense gated MLP when use_dense.
  norm, then lm_heads[m].out_layer: D -> horizon_lengths[m] steps (published: 1, 8, 32, 64).
Forecast: instance-normalise the context (mean, std + 1e-6), then roll out as the published
generate does: each step picks the longest head not longer than the remaining horizon, reads
the last position and appends its output; later steps run only the new points against a KV
cache (tested equal to rerunning the grown sequence).

Loss (the published calc_ar_loss with loss masks): on the normalised window
x = [context, target], inputs x[:-1], labels x[1:]; every position t and head of length h
predicts labels[t: t + h]; Huber (delta 2.0) over the valid entries, averaged over heads. The
load-balancing auxiliary loss (router_aux_loss_factor * Switch loss) is ``aux_loss``: the
fine-tuning loop adds it, the pruning engine does not.

Pruning (METHOD.md s.3, s.7): masked Linears are self_attn.{q,k,v,o}_proj and gate/up/down
of every expert and of the shared expert; the router ``gate`` and ``shared_expert_gate`` are
never masked. Q/K dims are reduced in RoPE pairs (the attention carries per-KV-group kept
dims and slices the RoPE tables). Before channel pruning, ``pre_prune`` counts on train+val
how often each expert is in a token's top-k and deletes experts whose frequency (routed
tokens / tokens) is <= a threshold; the router keeps all its rows and zeroes the removed
experts' probabilities before top-k. Layers then hold different experts (original indices
kept: ``experts`` is a ModuleDict keyed "0".."E-1", the published state-dict names).

Per-sample semantics and cost: under autograd (scoring, fine-tuning) and in the exported
graph every remaining expert runs densely on all (B, T, D) tokens and is weighted by its
routing weight (0 when not routed): each expert Linear sees the window as dim 0, exactly as
the engine's masks require, and the gradient of an unrouted token is exactly 0. The cost is
E / k times the routed-expert FLOPs (8 experts, top-2: 4x on the experts, about 2.5x on the
whole FFN with the shared expert). Inference without autograd dispatches sparsely (gather
the routed tokens per expert, as the published layer does); both paths are tested equal.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.nn import ACTIVATIONS, CausalRopeAttention, GatedMLP, RMSNorm, init_linears, rope_tables
from tsprune.prune.structure import AttentionGroup, BlockStructure, ModelStructure
from tsprune.prune.surgery import AttentionShape

from .base import Constant, Export, Family, Forecast, rollout
from .common import attention_group, config_from_dict, ffn_group, mean_std, resize_attention_module

@dataclass(frozen=True)
class TimeMoeConfig:
    """The published config.json keys (configuration_time_moe.py defaults).

    horizon_lengths: steps predicted by each output head, ascending. intermediate_size is the
    shared expert's width; each routed expert has intermediate_size // num_experts_per_tok.
    extra: other config.json keys, kept for the round trip (never interpreted)."""

    input_size: int = 1
    hidden_size: int = 4096
    intermediate_size: int = 22016
    horizon_lengths: tuple[int, ...] = (1,)
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    num_experts_per_tok: int = 2
    num_experts: int = 1
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    use_dense: bool = False
    rope_theta: float = 10000
    attention_dropout: float = 0.0
    apply_aux_loss: bool = True
    router_aux_loss_factor: float = 0.02
    tie_word_embeddings: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        h = self.horizon_lengths
        put("horizon_lengths", (int(h),) if isinstance(h, int) else tuple(int(x) for x in h))
        if self.num_key_value_heads is None:
            put("num_key_value_heads", self.num_attention_heads)
        if self.input_size != 1:
            raise ValueError(f"input_size: got {self.input_size}; tsprune's Time-MoE is univariate (1)")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")
        if not (self.use_dense ^ self.apply_aux_loss):  # the published config asserts this
            raise ValueError("use_dense and apply_aux_loss cannot both be true or both be false")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act: got {self.hidden_act!r}; expected one of {sorted(ACTIVATIONS)}")
        if not self.horizon_lengths or min(self.horizon_lengths) < 1:
            raise ValueError(f"horizon_lengths: got {list(self.horizon_lengths)}; expected positive lengths")

    @classmethod
    def from_dict(cls, d: dict) -> "TimeMoeConfig":
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d["horizon_lengths"] = list(self.horizon_lengths)
        return {**self.extra, **d, "model_type": "time_moe", "architectures": ["TimeMoeForPrediction"]}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# ---------------------------------------------------------------------------------------
# modules (published names)
# ---------------------------------------------------------------------------------------
class InputEmbedding(nn.Module):
    """x (B, T, 1) -> act(gate_layer(x)) * emb_layer(x)  (B, T, D)."""

    def __init__(self, cfg: TimeMoeConfig):
        super().__init__()
        self.emb_layer = nn.Linear(cfg.input_size, cfg.hidden_size, bias=False)
        self.gate_layer = nn.Linear(cfg.input_size, cfg.hidden_size, bias=False)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x):
        return self.act(self.gate_layer(x)) * self.emb_layer(x)


class SparseExperts(nn.Module):
    """The MoE FFN. forward(h (B, T, D), dispatch) -> (out (B, T, D), probs (B, T, E), sel (B, T, k)).

    probs: router softmax with removed experts zeroed (what top-k saw); sel: chosen experts.
    dispatch: "dense" (every expert on every token, weighted; exact per-sample gradients and
    a static graph), "sparse" (routed tokens only), "auto" (sparse iff autograd is off)."""

    def __init__(self, cfg: TimeMoeConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.num_experts = cfg.num_experts
        self.norm_topk_prob = False  # fixed in the published layer
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        width = cfg.intermediate_size // cfg.num_experts_per_tok
        self.experts = nn.ModuleDict({str(j): GatedMLP(cfg.hidden_size, width, cfg.hidden_act)
                                      for j in range(cfg.num_experts)})
        self.shared_expert = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.shared_expert_gate = nn.Linear(cfg.hidden_size, 1, bias=False)
        self._set_keep()

    def kept(self) -> list[int]:
        return sorted(int(k) for k in self.experts)

    def remove(self, ids) -> None:
        """Delete experts by original index; their router probabilities become 0."""
        for j in ids:
            if str(int(j)) not in self.experts:
                raise ValueError(f"expert {j} is not in this layer (kept: {self.kept()})")
            del self.experts[str(int(j))]
        self._set_keep()

    def _set_keep(self) -> None:
        keep = torch.zeros(self.num_experts)
        keep[self.kept()] = 1.0
        self.register_buffer("expert_keep", keep, persistent=False)
        self.has_removed = len(self.experts) < self.num_experts

    def route(self, h):
        probs = F.softmax(self.gate(h), dim=-1, dtype=torch.float)       # (B, T, E)
        if self.has_removed:
            probs = probs * self.expert_keep.to(probs.device)
        w, sel = torch.topk(probs, self.top_k, dim=-1)                     # (B, T, k)
        if self.norm_topk_prob:
            w = w / w.sum(dim=-1, keepdim=True)
        return probs, w.to(h.dtype), sel

    def forward(self, h, dispatch: str = "auto"):
        probs, w, sel = self.route(h)
        if dispatch == "auto":
            dispatch = "dense" if torch.is_grad_enabled() else "sparse"
        out = torch.zeros_like(h)
        if dispatch == "dense":
            dense_w = torch.zeros_like(probs, dtype=h.dtype).scatter(-1, sel, w)  # (B, T, E)
            for j in self.kept():
                out = out + self.experts[str(j)](h) * dense_w[..., j: j + 1]
        else:
            flat, fw, fsel = h.reshape(-1, h.shape[-1]), w.reshape(-1, self.top_k), sel.reshape(-1, self.top_k)
            acc = torch.zeros_like(flat)
            for j in self.kept():
                tok, slot = torch.nonzero(fsel == j, as_tuple=True)
                if tok.numel():
                    acc.index_add_(0, tok, self.experts[str(j)](flat[tok]) * fw[tok, slot, None])
            out = acc.view_as(h)
        shared = torch.sigmoid(self.shared_expert_gate(h)) * self.shared_expert(h)
        return out + shared, probs, sel


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TimeMoeConfig):
        super().__init__()
        self.self_attn = CausalRopeAttention(cfg.hidden_size, cfg.num_attention_heads,
                                             cfg.num_key_value_heads, cfg.head_dim, cfg.attention_dropout)
        self.ffn_layer = (GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
                          if cfg.use_dense else SparseExperts(cfg))
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, h, cos, sin, dispatch: str, past=None):
        """-> (h, route (probs, sel) or None, (k, v) or None for a dead attention)."""
        a = self.self_attn(self.input_layernorm(h), cos, sin, past)
        a, kv = a if isinstance(a, tuple) else (a, None)
        h = h + a
        x = self.post_attention_layernorm(h)
        if isinstance(self.ffn_layer, SparseExperts):
            y, probs, sel = self.ffn_layer(x, dispatch)
            return h + y, (probs, sel), kv
        return h + self.ffn_layer(x), None, kv


class TimeMoeModel(nn.Module):
    def __init__(self, cfg: TimeMoeConfig):
        super().__init__()
        self.embed_layer = InputEmbedding(cfg)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class OutputLayer(nn.Module):
    def __init__(self, d: int, horizon: int, input_size: int = 1):
        super().__init__()
        self.out_layer = nn.Linear(d, input_size * horizon, bias=False)

    def forward(self, x):
        return self.out_layer(x)


class TimeMoeForPrediction(nn.Module):
    """forward(x (B, T) normalised series, dispatch, cache) -> (hidden (B, T, D), routes),
    routes a list with one (probs (B, T, E), sel (B, T, k)) per MoE layer.

    cache: None, or a dict that decoding passes from step to step: x then holds only the new
    points; {"pos": positions seen, "kv": per-layer (k, v)} is read and updated in place."""

    def __init__(self, cfg: TimeMoeConfig):
        super().__init__()
        self.config = cfg
        self.model = TimeMoeModel(cfg)
        self.lm_heads = nn.ModuleList(OutputLayer(cfg.hidden_size, h, cfg.input_size)
                                      for h in cfg.horizon_lengths)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The published _init_weights: Linear weights N(0, initializer_range), biases 0."""
        init_linears(self, self.config.initializer_range)

    def forward(self, x, dispatch: str = "auto", cache: dict | None = None):
        t = x.shape[1]
        p = cache.get("pos", 0) if cache is not None else 0
        past = cache.get("kv") if cache is not None else None
        h = self.model.embed_layer(x.unsqueeze(-1))
        cos, sin = rope_tables(self.config.head_dim, self.config.rope_theta, p + t, x.device)
        cos, sin = cos[p:].to(h.dtype), sin[p:].to(h.dtype)
        routes, kvs = [], []
        for i, layer in enumerate(self.model.layers):
            h, r, kv = layer(h, cos, sin, dispatch, past[i] if past is not None else None)
            kvs.append(kv)
            if r is not None:
                routes.append(r)
        if cache is not None:
            cache["pos"], cache["kv"] = p + t, kvs
        return self.model.norm(h), routes


# ---------------------------------------------------------------------------------------
# the family adapter
# ---------------------------------------------------------------------------------------
class TimeMoe(Family):
    name = "time_moe"
    autoregressive = True
    prune_epochs = 10
    finetune_epochs = 1
    default_ratio = 0.05
    ratio_grid = (0.01, 0.02, 0.05, 0.1)
    default_lr = 1e-5
    lr_grid = (1e-4, 1e-5)
    pre_prunes = True  # removes whole experts by routing frequency
    optimizer = "adamw"              # betas 0.9/0.95, weight decay 0.1 (tsprune.train.finetune)
    grad_clip = 1.0
    expert_threshold = 0.01          # METHOD.md s.3 grid: 0.1, 0.01, 0.001
    expert_threshold_grid = (0.1, 0.01, 0.001)
    block_list = "model.layers"  # blocks go before experts: expert records use the new indices

    def __init__(self):
        self._routes: dict[int, list] = {}  # id(module) -> routes of the last grad-enabled loss

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        return TimeMoeForPrediction(TimeMoeConfig.from_dict(config)).eval()

    def config_dict(self, model) -> dict:
        return model.config.to_dict()

    def max_context(self, model) -> int:
        return int(model.config.max_position_embeddings)

    def output_horizon(self, model) -> int:
        return int(max(model.config.horizon_lengths))

    # ---- structure --------------------------------------------------------------------
    def structure(self, model) -> ModelStructure:
        blocks = []
        for i, layer in enumerate(model.model.layers):
            pre = f"model.layers.{i}"
            att, ffn = layer.self_attn, layer.ffn_layer
            groups, dead_a = (), ()
            if isinstance(att, Constant):
                dead_a = (f"{pre}.self_attn",)
            else:
                groups = (attention_group(f"{pre}.self_attn", num_heads=att.num_heads,
                                          num_kv_heads=att.num_kv_heads, qk_head_dim=att.head_dim,
                                          v_head_dim=att.v_head_dim, qk_reducible=True, rope=True),)
            owners = []
            if isinstance(ffn, SparseExperts):
                owners = [f"{pre}.ffn_layer.experts.{j}" for j in ffn.kept()]
                owners.append(f"{pre}.ffn_layer.shared_expert")
            else:
                owners = [f"{pre}.ffn_layer"]
            ffns, dead_f = [], []
            for o in owners:  # a dead expert stays routable (it keeps its router row) and returns 0
                if isinstance(model.get_submodule(o), Constant):
                    dead_f.append(o)
                else:
                    ffns.append(ffn_group(o, ("gate_proj", "up_proj"), "down_proj"))
            blocks.append(BlockStructure(index=i, attention=groups, ffn=tuple(ffns),
                                         dead_attention=dead_a, dead_ffn=tuple(dead_f)))
        return ModelStructure(blocks)

    def resize_attention(self, model, group: AttentionGroup, shape: AttentionShape) -> None:
        resize_attention_module(model, group, shape)

    def renumber_blocks(self, model, n: int) -> None:
        model.config = dataclasses.replace(model.config, num_hidden_layers=int(n))

    # ---- experts by routing frequency (METHOD.md s.3) ---------------------------------
    @torch.no_grad()
    def expert_frequency(self, model, datasets, batch_size: int = 64) -> tuple[torch.Tensor, int]:
        """(layers, E) fraction of tokens whose top-k holds each expert, over every window of
        ``datasets`` (the tokens the loss sees: context + target[:-1]); and the token count."""
        moe = [layer.ffn_layer for layer in model.model.layers]
        counts = torch.zeros(len(moe), model.config.num_experts, dtype=torch.float64)
        tokens = 0
        was = model.training
        model.eval()
        for ds in datasets:
            for c, t in ds.batches(batch_size):
                x = torch.cat([c, t], dim=1).float()
                mu, sd = mean_std(c.float())
                _, routes = model(((x - mu) / sd)[:, :-1], dispatch="sparse")
                for i, (_, sel) in enumerate(routes):
                    counts[i] += torch.bincount(sel.reshape(-1), minlength=counts.shape[1]).double().cpu()
                tokens += x.shape[0] * (x.shape[1] - 1)
        model.train(was)
        return counts / max(tokens, 1), tokens

    def pre_prune(self, model, datasets: list, cfg) -> dict | None:
        if not any(isinstance(layer.ffn_layer, SparseExperts) for layer in model.model.layers):
            return None
        thr = getattr(cfg, "expert_threshold", None)
        thr = self.expert_threshold if thr is None else float(thr)
        sub = []
        for ds, n, seed in zip(datasets, (getattr(cfg, "calib_samples", None), getattr(cfg, "val_samples", None)),
                               (getattr(cfg, "seed", 0), getattr(cfg, "seed", 0) + 1)):
            sub.append(ds.subset(n, seed=seed) if n else ds)
        freq, tokens = self.expert_frequency(model, sub, getattr(cfg, "batch_size", 64))
        removed = {}
        for i, layer in enumerate(model.model.layers):
            ffn = layer.ffn_layer
            f = freq[i]
            drop = [j for j in ffn.kept() if f[j] <= thr]
            if len(drop) == len(ffn.kept()):  # never empty a layer: keep its most used expert
                drop.remove(max(drop, key=lambda j: float(f[j])))
            removed[str(i)] = drop
        extra = {"experts": {"threshold": thr, "tokens": int(tokens),
                             "frequency": {str(i): [round(float(v), 6) for v in freq[i]]
                                           for i in range(freq.shape[0])},
                             "removed": removed}}
        self.apply_extra(model, extra)
        return extra

    def apply_extra(self, model, extra: dict) -> None:
        unknown = set(extra or {}) - {"experts"}
        if unknown:
            raise ValueError(f"time_moe: unknown extra pruning units {sorted(unknown)}; expected 'experts'")
        for layer, ids in ((extra or {}).get("experts", {}).get("removed") or {}).items():
            ffn = model.model.layers[int(layer)].ffn_layer
            if ids:
                ffn.remove(ids)

    def aux_loss(self, model):
        """router_aux_loss_factor * E * sum_e f_e P_e over the last loss's tokens of every MoE
        layer (f: share of top-k slots per expert, P: mean router probability), the published
        load-balancing loss; removed experts have f = P = 0."""
        routes = self._routes.pop(id(model), None)
        cfg = model.config
        if not routes or not cfg.apply_aux_loss:
            return None
        e = cfg.num_experts
        probs = torch.cat([p.reshape(-1, e) for p, _ in routes])                  # (N, E)
        sel = torch.cat([s.reshape(-1, s.shape[-1]) for _, s in routes])          # (N, k)
        tokens_per_expert = F.one_hot(sel, e).float().mean(dim=0)                  # (k, E)
        prob_per_expert = probs.mean(dim=0)                                        # (E,)
        return cfg.router_aux_loss_factor * e * (tokens_per_expert * prob_per_expert[None]).sum()

    # ---- training and forecasting ---------------------------------------------------
    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = context.float()
        mu, sd = mean_std(c)
        x = (torch.cat([c, target.float()], dim=1) - mu) / sd                     # (B, L + H)
        hidden, routes = model(x[:, :-1])                                          # (B, T, D)
        if torch.is_grad_enabled():  # for aux_loss, called next on the same forward
            self._routes = {id(model): routes}
        labels = x[:, 1:]                                                          # (B, T)
        t = labels.shape[1]
        total = 0.0
        for head, h in zip(model.lm_heads, model.config.horizon_lengths):
            pred = head(hidden)                                                    # (B, T, h)
            lab = F.pad(labels, (0, h - 1)).unfold(1, h, 1)                        # (B, T, h)
            valid = (torch.arange(t, device=x.device)[:, None]
                     + torch.arange(h, device=x.device)[None, :]) < t              # (T, h)
            err = F.huber_loss(pred, lab, reduction="none", delta=2.0) * valid
            total = total + err.sum() / (valid.sum() * x.shape[0])
        return total / len(model.config.horizon_lengths)

    def _step(self, model, seq: torch.Tensor, remaining: int, dispatch: str = "auto",
              cache: dict | None = None) -> torch.Tensor:
        """One decode step on the normalised sequence (B, T) (with a cache: its new points):
        the longest head not longer than ``remaining`` (else the first), read at the last
        position -> (B, min(h, remaining))."""
        lens = model.config.horizon_lengths
        m = 0
        for i in range(1, len(lens)):
            if lens[i] > remaining:
                break
            m = i
        hidden, _ = model(seq, dispatch=dispatch, cache=cache)
        out = model.lm_heads[m](hidden[:, -1])                                     # (B, h)
        return out[:, :remaining]

    def forecast(self, model, context: torch.Tensor, horizon: int, dispatch: str = "auto") -> Forecast:
        c = context.float()
        mu, sd = mean_std(c)
        seq = (c - mu) / sd
        cache: dict = {}
        # with a KV cache the next input is the new steps alone: the same as rerunning the
        # grown sequence
        out = rollout(lambda s, remaining: self._step(model, s, remaining, dispatch, cache), seq, horizon,
                      lambda _s, y: y)
        return Forecast(out * sd + mu)

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        return Export(self, model, horizon, dispatch="dense")

    def describe(self, model) -> list[dict]:
        rows = []
        for i, layer in enumerate(model.model.layers):
            att, ffn = layer.self_attn, layer.ffn_layer
            s = getattr(att, "tsprune_shape", None) or {}
            row = {"layer": i, "heads": s.get("num_heads", 0), "kv_heads": s.get("num_kv_heads", 0),
                   "qk_dim": s.get("qk_head_dim", 0), "v_dim": s.get("v_head_dim", 0)}

            def width(m):
                return 0 if isinstance(m, Constant) else int(m.gate_proj.out_features)
            if isinstance(ffn, SparseExperts):
                widths = [width(ffn.experts[str(j)]) for j in ffn.kept()]
                row["experts"] = sum(1 for w in widths if w > 0)
                row["expert_ffn"] = sum(widths)
                row["shared_ffn"] = width(ffn.shared_expert)
            else:
                row["ffn"] = width(ffn)
            row["params"] = sum(p.numel() for p in layer.parameters())
            rows.append(row)
        return rows


FAMILY = TimeMoe()
