"""Moirai 1.0-R / 1.1-R (Salesforce uni2ts ``MoiraiModule``), implemented in tsprune.

Checkpoints: Salesforce/moirai-1.0-R-{small,base,large} as published by uni2ts 1.x through
``PyTorchModelHubMixin``: config.json holds the constructor arguments (``d_model``,
``num_layers``, ``patch_sizes``, ``max_seq_len``, ``attn_dropout_p``, ``dropout_p``,
``scaling``, ``distr_output``) and no ``model_type``, so tsprune recognises the family by
the keys ``patch_sizes`` + ``distr_output`` (its FamilySpec.config_keys). This file
re-implements the module with the same parameter names and shapes (uni2ts 1.2 / the
``timecopilot-uni2ts`` 0.1.3 copy of it, ``uni2ts/model/moirai/module.py``): the upstream
package pins torch<2.5, and its copy that accepts newer torch imports lightning, gluonts
(pandas<3) and jax at package import, so it is not a dependency. Tests compare with the
upstream class when it happens to be importable.

Architecture (univariate use; the module itself takes uni2ts's packed inputs):
  scaler   per (sample, variate) mean / std over observed context values, computed in
           float64 (correction 1, minimum scale 1e-5); padding tokens (sample_id 0) get
           loc 0, scale 1.
  in_proj  ``MultiInSizeLinear``: weight (P, d_model, max_patch), bias (P, d_model), one
           input projection per patch size; prediction tokens are replaced by
           ``mask_encoding``.
  encoder  ``num_layers`` pre-norm layers: RMSNorm -> attention -> residual, RMSNorm ->
           gated FFN ``fc2(silu(fc_gate(x)) * fc1(x))`` -> residual; final RMSNorm.
           Attention: d_model // 64 heads of 64 dims (MHA), no biases, per-head-dim q/k
           RMSNorms (one weight shared by all heads), RoPE on the first half of each head
           (interleaved pairs, base 10000, positions = time_id), a binary any-variate
           attention bias (per head: emb[1] if same variate else emb[0]) and a mask that
           keeps tokens within one sample_id; softmax scale 1/sqrt(64).
  head     ``DistrParamProj`` of ``MultiOutSizeLinear``s, one per distribution argument:
           weight (P, dim * max_patch, d_model). Its outputs are read as
           ``(dim max_patch) -> (max_patch dim)`` while only the first ``dim * p`` rows of
           patch size p have weights (uni2ts's layout, reproduced as is).
  output   a mixture (published: Student-t, Normal with fixed scale 1e-3, negative
           binomial, log-normal) in the scaled space, then the affine map back.

Patch size: a dense checkpoint carries P input and output projections; forecasting uses
one patch size, ``default_patch_size`` (32 when present, as in uni2ts's examples; else the
smallest). ``pre_prune`` chooses the patch size of the task by validation loss (uni2ts's
``patch_size="auto"`` does this per sample at every call) and specialises the model: the
projections are sliced to that patch size and config.json's ``patch_sizes`` becomes
``[p]`` (the pruned model is a one-patch-size Moirai). The plan records
``{"patch_size": p, "patch_val_loss": {...}}``; ``apply_extra`` replays it.
Parameter counts of the dense model include every patch size.

Pruning (METHOD.md s.7): masked Linears ``self_attn.{q,k,v,out}_proj`` and
``ffn.{fc1,fc_gate,fc2}``; heads and V dims are sliced (with the heads' columns of the
attention-bias embedding), Q/K head dims are not (q/k norms act over the head dim); an FFN
neuron goes when it is zero in fc1 or fc_gate output or in fc2 input.

Loss (METHOD.md s.2 names MSE for Moirai): the MSE between the mixture mean and the
target, both in the instance-scaled space (the point forecast and the metric are the
mean; the mixture NLL, Moirai's pre-training loss, is not used). Point forecast: the
mixture mean mapped back, computed in closed form (Student-t: loc, df > 2 always; normal,
Laplace: loc; log-normal: exp(mu + sigma^2 / 2); negative binomial: n * exp(logits); the
exponents are clamped at 20 in the scaled space so that a stray component cannot turn the
mean into inf). No quantiles: mixture quantiles need CDF inversion (the Student-t CDF is
not in torch) or sampling, neither cheap nor ONNX-friendly.

Not supported: Moirai-MoE and Moirai 2.0 (other architectures; config keys are checked),
missing values inside the context (tsprune windows have none; only the left padding to a
multiple of the patch is unobserved), dropout (published checkpoints use 0.0 and tsprune
trains with dropout off).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.errors import UserError
from tsprune.prune.structure import AttentionGroup, ModelStructure
from tsprune.prune.surgery import AttentionShape

from .base import Constant, Export, Family, Forecast
from .common import attention_group, block, ffn_group

# distribution output class -> its argument names (each of dim 1), as in uni2ts
_COMPONENT_ARGS = {
    "StudentTOutput": ("df", "loc", "scale"),
    "NormalOutput": ("loc", "scale"),
    "NormalFixedScaleOutput": ("loc",),
    "LaplaceOutput": ("loc", "scale"),
    "LaplaceFixedScaleOutput": ("loc",),
    "LogNormalOutput": ("loc", "scale"),
    "NegativeBinomialOutput": ("total_count", "logits"),
}
_MIXTURE = "MixtureOutput"
_CONFIG_KEYS = ("d_model", "num_layers", "patch_sizes", "max_seq_len", "attn_dropout_p",
                "dropout_p", "scaling", "distr_output")
_EXP_MAX = 20.0   # clamp of exponents in component means (scaled space)
HEAD_DIM = 64     # uni2ts: num_heads = d_model // 64


def _distr_name(spec) -> str:
    if not isinstance(spec, dict) or not isinstance(spec.get("_target_"), str):
        raise UserError(f"config.json: distr_output: got {spec!r}; expected an object with a "
                        f"'_target_' naming a uni2ts distribution output")
    return spec["_target_"].rsplit(".", 1)[-1]


def _components(spec: dict) -> list[str] | None:
    """Component class names of a mixture spec, or None for a single distribution."""
    name = _distr_name(spec)
    allowed = f"{_MIXTURE} of, or one of, {', '.join(sorted(_COMPONENT_ARGS))}"
    if name == _MIXTURE:
        comps = [_distr_name(c) for c in spec.get("components") or []]
        bad = [c for c in comps if c not in _COMPONENT_ARGS]
        if not comps or bad:
            raise UserError(f"config.json: distr_output components: got {comps}; expected "
                            f"one or more of {', '.join(sorted(_COMPONENT_ARGS))}")
        return comps
    if name not in _COMPONENT_ARGS:
        raise UserError(f"config.json: distr_output: got {name!r}; expected {allowed}")
    return None


@dataclass
class MoiraiConfig:
    """The uni2ts MoiraiModule constructor arguments (config.json keys).

    num_heads = d_model // 64, head dim 64, FFN width (int(8 d / 3) + 7) // 8 * 8.
    """

    d_model: int
    num_layers: int
    patch_sizes: tuple[int, ...]
    max_seq_len: int
    attn_dropout_p: float = 0.0
    dropout_p: float = 0.0
    scaling: bool = True
    distr_output: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.patch_sizes = tuple(int(p) for p in self.patch_sizes)
        if not self.patch_sizes or any(p < 1 for p in self.patch_sizes) \
                or len(set(self.patch_sizes)) != len(self.patch_sizes):
            raise UserError(f"config.json: patch_sizes: got {list(self.patch_sizes)}; expected "
                            f"distinct positive integers")
        if self.d_model < HEAD_DIM or self.d_model % HEAD_DIM:
            raise UserError(f"config.json: d_model: got {self.d_model}; expected a multiple of "
                            f"{HEAD_DIM} (Moirai heads have {HEAD_DIM} dims)")
        if self.num_layers < 1:
            raise UserError(f"config.json: num_layers: got {self.num_layers}; expected >= 1")
        _components(self.distr_output)

    @property
    def num_heads(self) -> int:
        return self.d_model // HEAD_DIM

    @property
    def d_ff(self) -> int:
        return (int(4 * self.d_model * 2 / 3) + 7) // 8 * 8

    @property
    def max_patch(self) -> int:
        return max(self.patch_sizes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_sizes"] = list(self.patch_sizes)
        return d


# ---- building blocks (uni2ts parameter names) -----------------------------------------
class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def _init_slices(weight, bias, sizes, rows: bool, dim: int = 1) -> None:
    """uni2ts init: kaiming-uniform on each patch size's slice, zeros elsewhere."""
    with torch.no_grad():
        weight.zero_()
        bias.zero_()
        for i, p in enumerate(sizes):
            w = weight[i, : dim * p] if rows else weight[i, :, :p]
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            bound = 1 / math.sqrt(w.shape[1])
            nn.init.uniform_(bias[i, : dim * p] if rows else bias[i], -bound, bound)


class PatchInProj(nn.Module):
    """uni2ts MultiInSizeLinear: weight (P, d_model, max_patch), bias (P, d_model).
    forward(x (B, T, max_patch), p) -> (B, T, d_model) with patch size p's projection."""

    def __init__(self, sizes: tuple[int, ...], d_model: int):
        super().__init__()
        self.sizes = tuple(sizes)
        self.weight = nn.Parameter(torch.empty(len(sizes), d_model, max(sizes)))
        self.bias = nn.Parameter(torch.empty(len(sizes), d_model))
        _init_slices(self.weight, self.bias, self.sizes, rows=False)

    def forward(self, x, p: int):
        i = self.sizes.index(p)
        return F.linear(x[..., :p], self.weight[i, :, :p], self.bias[i])

    @torch.no_grad()
    def specialise(self, p: int) -> None:
        i = self.sizes.index(p)
        self.weight = nn.Parameter(self.weight[i: i + 1, :, :p].clone())
        self.bias = nn.Parameter(self.bias[i: i + 1].clone())
        self.sizes = (p,)


class PatchOutProj(nn.Module):
    """uni2ts MultiOutSizeLinear(dim=dim): weight (P, dim * max_patch, d_model), bias
    (P, dim * max_patch); patch size p uses the first dim * p rows of its weight (and its
    whole bias); outputs are read as (dim max_patch). forward(x (B, T, D), p) ->
    (B, T, p, dim)."""

    def __init__(self, sizes: tuple[int, ...], d_model: int, dim: int):
        super().__init__()
        self.sizes, self.dim = tuple(sizes), int(dim)
        self.weight = nn.Parameter(torch.empty(len(sizes), dim * max(sizes), d_model))
        self.bias = nn.Parameter(torch.empty(len(sizes), dim * max(sizes)))
        _init_slices(self.weight, self.bias, self.sizes, rows=True, dim=dim)

    def _rows(self, p: int):
        """(weight (dim * p, D), bias (dim * p,)) of patch size p, rows ordered (dim p)."""
        i, m = self.sizes.index(p), max(self.sizes)
        if p == m:
            return self.weight[i], self.bias[i]
        rows = (torch.arange(self.dim)[:, None] * m + torch.arange(p)[None, :]).flatten()
        valid = (rows < self.dim * p).to(self.weight.dtype)[:, None]
        return self.weight[i][rows] * valid, self.bias[i][rows]

    def forward(self, x, p: int):
        w, b = self._rows(p)
        y = F.linear(x, w, b)                                   # (B, T, dim * p)
        return y.unflatten(-1, (self.dim, p)).transpose(-1, -2)  # (B, T, p, dim)

    @torch.no_grad()
    def specialise(self, p: int) -> None:
        w, b = self._rows(p)
        self.weight = nn.Parameter(w[None].clone())
        self.bias = nn.Parameter(b[None].clone())
        self.sizes = (p,)


class MoiraiAttention(nn.Module):
    """Any-variate attention with per-layer shapes (heads, KV groups, V head dim).

    q_proj (H * dqk, D), k_proj (G * dqk, D), v_proj (G * dv, D), out_proj (D, H * dv);
    head h uses KV group h // (H / G); var_attn_bias.emb (2, H).
    forward(x (B, T, D), same_var (B, 1, T, T) bool, keep (B, 1, T, T) bool,
    time_id (B, T)) -> (B, T, D).
    """

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.var_attn_bias = nn.Module()
        self.var_attn_bias.emb = nn.Embedding(2, num_heads)
        self.q_proj = nn.Linear(d_model, num_heads * HEAD_DIM, bias=False)
        self.k_proj = nn.Linear(d_model, num_heads * HEAD_DIM, bias=False)
        self.v_proj = nn.Linear(d_model, num_heads * HEAD_DIM, bias=False)
        self.q_norm = RMSNorm(HEAD_DIM)
        self.k_norm = RMSNorm(HEAD_DIM)
        self.out_proj = nn.Linear(num_heads * HEAD_DIM, d_model, bias=False)
        self.head_dim = HEAD_DIM
        self.scale = 1.0 / math.sqrt(HEAD_DIM)
        rope = HEAD_DIM // 2  # partial factor (0, 0.5): RoPE on the first half
        theta = 1.0 / torch.pow(10000, torch.arange(0, rope, 2, dtype=torch.float) / rope)
        self.register_buffer("theta", theta.repeat_interleave(2), persistent=False)
        self.set_shape(AttentionShape(num_heads, num_heads, HEAD_DIM, HEAD_DIM,
                                      list(range(num_heads))), record=False)

    def set_shape(self, shape: AttentionShape, record: bool = True) -> None:
        self.num_heads, self.num_groups = shape.num_heads, shape.num_kv_heads
        self.v_head_dim = shape.v_head_dim
        if record:
            self.tsprune_shape = shape.to_json()

    def _rope(self, x, cos, sin):
        """Rotate interleaved pairs of the first len(theta) dims of x (B, H, T, dqk)."""
        w = cos.shape[-1]
        r, rest = x[..., :w], x[..., w:]
        rot = torch.stack([-r[..., 1::2], r[..., 0::2]], dim=-1).flatten(-2)
        return torch.cat([cos * r + sin * rot, rest], dim=-1)

    def forward(self, x, same_var, keep, time_id):
        b, t, _ = x.shape
        h, g, hpg = self.num_heads, self.num_groups, self.num_heads // self.num_groups
        q = self.q_norm(self.q_proj(x).view(b, t, h, self.head_dim).transpose(1, 2))
        k = self.k_norm(self.k_proj(x).view(b, t, g, self.head_dim).transpose(1, 2))
        v = self.v_proj(x).view(b, t, g, self.v_head_dim).transpose(1, 2)
        if hpg > 1:
            k = k.repeat_interleave(hpg, dim=1)
            v = v.repeat_interleave(hpg, dim=1)
        emb = self.var_attn_bias.emb.weight                      # (2, H)
        bias = torch.where(same_var, emb[1][None, :, None, None], emb[0][None, :, None, None])
        bias = bias.masked_fill(~keep, float("-inf"))             # (B, H, T, T)
        ang = time_id.to(self.theta.dtype)[:, None, :, None] * self.theta  # (B, 1, T, w)
        cos, sin = torch.cos(ang), torch.sin(ang)
        q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * self.v_head_dim))


class GatedFFN(nn.Module):
    """fc2(silu(fc_gate(x)) * fc1(x)); fc1, fc_gate (d_ff, D), fc2 (D, d_ff), no biases."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=False)
        self.fc2 = nn.Linear(d_ff, d_model, bias=False)
        self.fc_gate = nn.Linear(d_model, d_ff, bias=False)

    def forward(self, x):
        return self.fc2(F.silu(self.fc_gate(x)) * self.fc1(x))


class MoiraiLayer(nn.Module):
    def __init__(self, cfg: MoiraiConfig):
        super().__init__()
        self.self_attn = MoiraiAttention(cfg.d_model, cfg.num_heads)
        self.ffn = GatedFFN(cfg.d_model, cfg.d_ff)
        self.norm1 = RMSNorm(cfg.d_model)
        self.norm2 = RMSNorm(cfg.d_model)

    def forward(self, x, same_var, keep, time_id):
        x = x + self.self_attn(self.norm1(x), same_var, keep, time_id)
        return x + self.ffn(self.norm2(x))


class MoiraiModule(nn.Module):
    """Moirai with uni2ts's parameter names. forward takes uni2ts's packed inputs:

    target (B, T, max_patch) float, observed_mask (B, T, max_patch) bool, sample_id,
    time_id, variate_id (B, T) int, prediction_mask (B, T) bool, patch_size (one int for
    all tokens). Returns (params, loc (B, T, 1), scale (B, T, 1)): params are the
    unconstrained distribution arguments in the scaled space for the first p steps of
    each token, ``{arg: (B, T, p)}``, and for a mixture ``{"weights_logits":
    (B, T, p, K), "components": [{arg: (B, T, p)}, ...]}``.
    """

    def __init__(self, cfg: MoiraiConfig):
        super().__init__()
        self.config = cfg
        d = cfg.d_model
        self.mask_encoding = nn.Embedding(1, d)
        self.in_proj = PatchInProj(cfg.patch_sizes, d)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(MoiraiLayer(cfg) for _ in range(cfg.num_layers))
        self.encoder.norm = RMSNorm(d)
        self.param_proj = nn.Module()
        comps = _components(cfg.distr_output)
        if comps is None:
            args = _COMPONENT_ARGS[_distr_name(cfg.distr_output)]
            self.param_proj.proj = nn.ModuleDict({a: PatchOutProj(cfg.patch_sizes, d, 1) for a in args})
        else:
            self.param_proj.proj = nn.ModuleDict({
                "weights_logits": PatchOutProj(cfg.patch_sizes, d, len(comps)),
                "components": nn.ModuleList(
                    nn.ModuleDict({a: PatchOutProj(cfg.patch_sizes, d, 1) for a in _COMPONENT_ARGS[c]})
                    for c in comps)})

    def scaler(self, target, observed, sample_id, variate_id):
        """uni2ts PackedStdScaler in float64: loc, scale (B, T, 1) float32."""
        if not self.config.scaling:
            one = torch.ones_like(target[..., :1])
            return one * 0.0, one
        x = target.double()
        obs = observed.to(torch.float64)
        same = (sample_id[..., :, None] == sample_id[..., None, :]) & \
               (variate_id[..., :, None] == variate_id[..., None, :])
        same = same.to(torch.float64)                                     # (B, T, T)
        n = same @ obs.sum(-1, keepdim=True)                              # (B, T, 1)
        loc = (same @ (x * obs).sum(-1, keepdim=True)) / torch.where(n == 0, 1.0, n)
        ss = same @ (((x - loc) ** 2) * obs).sum(-1, keepdim=True)
        var = ss / torch.where(n - 1 == 0, 1.0, n - 1)
        scale = torch.sqrt(var + 1e-5)
        pad = (sample_id == 0)[..., None]
        loc = torch.where(pad, 0.0, loc)
        scale = torch.where(pad, 1.0, scale)
        return loc.float(), scale.float()

    def forward(self, target, observed_mask, sample_id, time_id, variate_id, prediction_mask,
                patch_size: int):
        loc, scale = self.scaler(target, observed_mask & ~prediction_mask[..., None],
                                 sample_id, variate_id)
        x = self.in_proj((target - loc) / scale, patch_size)
        x = torch.where(prediction_mask[..., None], self.mask_encoding.weight[0], x)
        same_var = (variate_id[:, :, None] == variate_id[:, None, :])[:, None]   # (B, 1, T, T)
        keep = (sample_id[:, :, None] == sample_id[:, None, :])[:, None]
        for layer in self.encoder.layers:
            x = layer(x, same_var, keep, time_id)
        x = self.encoder.norm(x)
        return self._params(x, patch_size), loc, scale

    def _params(self, x, p: int):
        proj = self.param_proj.proj
        if "weights_logits" not in proj:
            return {a: m(x, p).squeeze(-1) for a, m in proj.items()}
        return {"weights_logits": proj["weights_logits"](x, p),
                "components": [{a: m(x, p).squeeze(-1) for a, m in c.items()}
                               for c in proj["components"]]}

    def mean(self, params):
        """Distribution mean in the scaled space, (B, T, p)."""
        comps = _components(self.config.distr_output)
        if comps is None:
            return _component_mean(_distr_name(self.config.distr_output), params)
        means = torch.stack([_component_mean(c, a) for c, a in zip(comps, params["components"])], -1)
        return (torch.softmax(params["weights_logits"], dim=-1) * means).sum(-1)

    @torch.no_grad()
    def specialise(self, p: int) -> None:
        """Keep only patch size p's projections (config.patch_sizes becomes (p,))."""
        if p not in self.config.patch_sizes:
            raise ValueError(f"patch size {p} is not one of {list(self.config.patch_sizes)}")
        if self.config.patch_sizes == (p,):
            return
        for m in self.modules():
            if isinstance(m, (PatchInProj, PatchOutProj)):
                m.specialise(p)
        self.config.patch_sizes = (p,)


def _component_mean(name: str, a: dict) -> torch.Tensor:
    """Mean of one uni2ts distribution from its unconstrained arguments (scaled space)."""
    if name == "LogNormalOutput":
        sigma = F.softplus(a["scale"]).clamp_min(torch.finfo(a["scale"].dtype).eps)
        return torch.exp((a["loc"] + sigma * sigma / 2).clamp(max=_EXP_MAX))
    if name == "NegativeBinomialOutput":
        return F.softplus(a["total_count"]) * torch.exp(a["logits"].clamp(max=_EXP_MAX))
    return a["loc"]   # Student-t (df > 2), normal, Laplace


# ---- the family adapter -------------------------------------------------------------------
class Moirai(Family):
    name = "moirai"
    autoregressive = False      # one pruned model per horizon (METHOD.md s.6)
    prune_epochs = 10
    finetune_epochs = 1
    default_ratio = 0.1
    ratio_grid = (0.05, 0.1, 0.15, 0.2)
    default_lr = 1e-5
    lr_grid = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
    pre_prunes = True  # chooses one patch size on validation
    patch_select_windows = 256  # validation windows used to choose the patch size
    block_list = "encoder.layers"

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        cfg = {k: v for k, v in config.items()
               if k not in ("model_type", "architectures", "tsprune_version")}
        unknown = sorted(set(cfg) - set(_CONFIG_KEYS))
        missing = [k for k in _CONFIG_KEYS[:4] if k not in cfg] + \
            ([] if "distr_output" in cfg else ["distr_output"])
        if unknown or missing:
            raise UserError(f"config.json: not a Moirai 1.x MoiraiModule config (unknown keys "
                            f"{unknown}, missing {missing}); Moirai-MoE and Moirai 2.0 are "
                            f"not supported")
        return MoiraiModule(MoiraiConfig(**cfg)).eval()

    def config_dict(self, model) -> dict:
        return model.config.to_dict()

    def default_patch_size(self, model) -> int:
        ps = model.config.patch_sizes
        return 32 if 32 in ps else min(ps)

    def context_multiple(self, model) -> int:
        return self.default_patch_size(model)

    # ---- structure ------------------------------------------------------------------
    def structure(self, model) -> ModelStructure:
        blocks = []
        for i, layer in enumerate(model.encoder.layers):
            pre = f"encoder.layers.{i}"
            att = layer.self_attn
            attention = attention_group(
                f"{pre}.self_attn", o="out_proj", num_heads=att.num_heads, num_kv_heads=att.num_groups,
                qk_head_dim=att.head_dim, v_head_dim=att.v_head_dim, qk_reducible=False,
                rope=True) if isinstance(att, MoiraiAttention) else None
            ffn = ffn_group(f"{pre}.ffn", ("fc1", "fc_gate"), "fc2") if isinstance(layer.ffn, GatedFFN) else None
            blocks.append(block(i, f"{pre}.self_attn", attention, f"{pre}.ffn", ffn))
        return ModelStructure(blocks)

    def resize_attention(self, model, group: AttentionGroup, shape: AttentionShape) -> None:
        att = model.get_submodule(group.owner)
        if shape.num_heads == 0:
            model.set_submodule(group.owner, Constant(att.out_proj.out_features))
            return
        # the bias embedding keeps the columns of the kept heads (kv_heads index the
        # module's current groups; heads of group g are g * hpg .. g * hpg + hpg - 1)
        hpg = att.num_heads // att.num_groups
        heads = [g * hpg + j for g in shape.kv_heads for j in range(hpg)]
        old = att.var_attn_bias.emb.weight
        emb = nn.Embedding(2, len(heads), device=old.device, dtype=old.dtype)
        with torch.no_grad():
            emb.weight.copy_(old[:, heads])
        emb.weight.requires_grad_(old.requires_grad)
        att.var_attn_bias.emb = emb
        att.set_shape(shape)

    def renumber_blocks(self, model, n: int) -> None:
        model.config = dataclasses.replace(model.config, num_layers=int(n))

    # ---- patch-size specialisation (recorded in the plan) ----------------------------
    def pre_prune(self, model, datasets: list, cfg) -> dict:
        """Choose the task's patch size by validation loss and keep only it."""
        ps = model.config.patch_sizes
        losses = {}
        if len(ps) > 1:
            val = datasets[1] if len(datasets) > 1 else datasets[0]
            seed = getattr(cfg, "seed", 0)
            val = val.subset(min(self.patch_select_windows, len(val)), seed=seed + 7)
            with torch.no_grad():
                for p in ps:
                    tot, n = 0.0, 0
                    for c, t in val.batches(128):
                        tot += float(self._loss(model, c, t, p)) * c.shape[0]
                        n += c.shape[0]
                    losses[str(p)] = tot / max(n, 1)
            best = min(ps, key=lambda p: (losses[str(p)], p))
        else:
            best = ps[0]
        model.specialise(best)
        return {"patch_size": int(best), "patch_val_loss": losses}

    def apply_extra(self, model, extra: dict) -> None:
        unknown = set(extra) - {"patch_size", "patch_val_loss"}
        if unknown:
            raise ValueError(f"moirai: unknown extra pruning units {sorted(unknown)}")
        if "patch_size" in extra:
            model.specialise(int(extra["patch_size"]))

    # ---- forecasting ------------------------------------------------------------------
    @staticmethod
    def pack(model, context: torch.Tensor, horizon: int, p: int):
        """uni2ts MoiraiForecast._convert for univariate windows: context (B, L) -> the
        packed inputs of MoiraiModule.forward (T = ceil(L / p) + ceil(H / p) tokens;
        the context is left-padded with unobserved zeros to a multiple of p)."""
        b, n = context.shape
        m = model.config.max_patch
        pad, nh = (-n) % p, -(-horizon // p)
        x = F.pad(context, (pad, 0))
        nc = x.shape[1] // p
        obs_ctx = F.pad(torch.ones_like(context, dtype=torch.bool), (pad, 0), value=False)
        target = torch.cat([x.view(b, nc, p), x.new_zeros(b, nh, p)], dim=1)
        obs_fut = (torch.arange(nh * p, device=x.device) < horizon).view(1, nh, p).expand(b, nh, p)
        observed = torch.cat([obs_ctx.view(b, nc, p), obs_fut], dim=1)
        if m > p:
            target = F.pad(target, (0, m - p))
            observed = F.pad(observed, (0, m - p), value=False)
        t = nc + nh
        ids = torch.arange(t, device=x.device)
        sample_id = torch.ones_like(target[..., 0], dtype=torch.long)
        time_id = ids.expand(b, t)
        variate_id = torch.zeros_like(sample_id)
        prediction_mask = (ids >= nc).expand(b, t)
        return target, observed, sample_id, time_id, variate_id, prediction_mask, nc

    def _mean(self, model, context, horizon: int, p: int | None = None):
        """(scaled mean (B, H), loc (B, 1), scale (B, 1))."""
        p = p or self.default_patch_size(model)
        *inputs, nc = self.pack(model, context.float(), horizon, p)
        params, loc, scale = model(*inputs, patch_size=p)
        mean = model.mean(params)[:, nc:].flatten(1)[:, :horizon]   # (B, H)
        return mean, loc[:, -1], scale[:, -1]

    def _loss(self, model, context, target, p: int | None = None):
        mean, loc, scale = self._mean(model, context, target.shape[1], p)
        return F.mse_loss(mean, (target.float() - loc) / scale)

    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._loss(model, context, target)

    def forecast(self, model, context: torch.Tensor, horizon: int) -> Forecast:
        mean, loc, scale = self._mean(model, context, horizon)
        return Forecast(mean * scale + loc)

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        return Export(self, model, horizon)


FAMILY = Moirai()
