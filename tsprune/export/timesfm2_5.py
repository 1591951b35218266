"""Fast ONNX export graph of TimesFM 2.5 (dense or pruned by tsprune).

Computes exactly what ``TimesFm25.forecast`` computes (tsprune.families.timesfm2_5),
up to float rounding, with a graph built for inference servers:

* causal running statistics in closed form (cumulative sums and one small triangular
  reduction over patches) instead of upstream's Welford loop, one op chain per patch
  (``running_stats``);
* the left padding is known from the context length: at most the first patch is partly
  padded, never a whole patch, so attention is plain causal and positions are 0..N-1
  (no padding mask, no fully masked rows);
* with ``force_flip_invariance`` the decoder runs once on [x; -x] (batch 2B) instead of
  twice; the running statistics of -x are those of x with the mean negated;
* only the last patch position feeds the output heads, and the last layer computes its
  query, attention output and MLP for that position only;
* every Linear is a MatMul with a pre-transposed weight buffer, so the rollout steps
  share one initializer per weight;
* attention is ``F.scaled_dot_product_attention`` (ONNX ``Attention`` at opset 23);
* ``dtype=torch.float16`` runs the decoder and heads in half precision while the instance
  normalisation, running statistics and de-normalisation stay float32 (raw inputs may be
  far outside fp16's range; normalised tokens are not), and RMS norms compute in float32.

Tested against the family's forecast (tests/test_export_timesfm2_5.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.families.base import Constant

TOLERANCE = 1e-6  # upstream TimesFm2_5Model.tolerance


def running_stats(patches: torch.Tensor, valid: torch.Tensor | None = None):
    """Causal running mean and std over patches, in closed form.

    patches (B, N, P); valid (B, N, P) 1.0 for observed steps, 0.0 for padding (None: all
    observed). Returns (mu, sigma), each (B, N): the mean and population std of every
    observed value in patches 0..i. Equal, up to rounding, to upstream's Welford updates
    (TimesFm2_5Model._update_running_stats): with n_j, m_j, M2_j the count, mean and sum
    of squared deviations of patch j and C_i = sum_{j<=i} n_j (the pooled statistics),

        mu_i  = sum_{j<=i} n_j m_j / C_i
        var_i = (sum_{j<=i} M2_j + sum_{j<=i} n_j (m_j - mu_i)^2) / C_i

    (0 where C_i == 0). Both sums are of non-negative terms, so no difference of large
    sums cancels; the second is an (N, N) lower-triangular reduction, N = patches (16 for
    a 512-step context): a few thousand multiply-adds per series.
    """
    b, n_patch, p = patches.shape
    if valid is None:
        n = torch.full_like(patches[..., 0], float(p))                        # (B, N)
        s = patches.sum(-1)
        m = s / n
        m2 = (patches - m[..., None]).pow(2).sum(-1)
    else:
        n = valid.sum(-1)
        s = (patches * valid).sum(-1)
        m = s / torch.where(n == 0, torch.ones_like(n), n)
        m2 = ((patches - m[..., None]) * valid).pow(2).sum(-1)
    c = n.cumsum(-1)                                                          # (B, N)
    c_safe = torch.where(c == 0, torch.ones_like(c), c)
    mu = s.cumsum(-1) / c_safe
    idx = torch.arange(n_patch, device=patches.device)
    causal = (idx[None, :] <= idx[:, None]).to(patches.dtype)                 # (N_i, N_j): j <= i
    dev = m[:, None, :] - mu[:, :, None]                                      # (B, N_i, N_j)
    between = (dev * dev * (n[:, None, :] * causal)).sum(-1)                  # (B, N_i)
    var = (m2.cumsum(-1) + between) / c_safe
    sigma = var.sqrt()
    if valid is not None:
        empty = c == 0
        mu = torch.where(empty, torch.zeros_like(mu), mu)
        sigma = torch.where(empty, torch.zeros_like(sigma), sigma)
    return mu, sigma


def running_stats_loop(patches: torch.Tensor, valid: torch.Tensor | None = None):
    """Upstream's loop (one Welford update per patch), for tests: same contract."""
    # lazy: transformers is heavy; only this test helper needs upstream's class
    from transformers.models.timesfm2_5.modeling_timesfm2_5 import TimesFm2_5Model

    b, n, _ = patches.shape
    mask = torch.zeros_like(patches, dtype=torch.bool) if valid is None else valid < 0.5
    count, mean, std = (patches.new_zeros(b) for _ in range(3))
    mus, sigmas = [], []
    for i in range(n):
        count, mean, std = TimesFm2_5Model._update_running_stats(count, mean, std, patches[:, i], mask[:, i])
        mus.append(mean)
        sigmas.append(std)
    return torch.stack(mus, 1), torch.stack(sigmas, 1)


def _safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale < TOLERANCE, torch.ones_like(scale), scale)


class _Lin(nn.Module):
    """y = x @ weight_t + bias with the weight stored transposed (in, out): one
    initializer per weight however often the graph uses it."""

    def __init__(self, *lins: nn.Linear):
        """One Linear, or several that read the same input concatenated on the output
        dim (q, k and v: one MatMul, then split)."""
        super().__init__()
        self.sizes = [int(lin.out_features) for lin in lins]
        # which Linears this product computes (ids, not modules: nothing more to export),
        # for FLOP profiles of the graph (tsprune.export.profile)
        self.tsprune_sources = tuple(id(lin) for lin in lins)
        w = torch.cat([lin.weight.detach() for lin in lins], 0)                  # (out, in)
        self.weight_t = nn.Parameter(w.t().contiguous(), requires_grad=False)    # (in, out)
        if all(lin.bias is None for lin in lins):
            self.bias = None
        else:
            b = [lin.bias.detach() if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
                 for lin in lins]
            self.bias = nn.Parameter(torch.cat(b), requires_grad=False)

    def forward(self, x):
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias

    def split(self, x):
        return self(x).split(self.sizes, dim=-1)


class _Residual(nn.Module):
    """TimesFm2_5ResidualBlock: output(act(input(x))) + residual(x)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.inp, self.out, self.res = _Lin(block.input_layer), _Lin(block.output_layer), _Lin(block.residual_layer)
        self.act = block.activation

    def forward(self, x):
        return self.out(self.act(self.inp(x))) + self.res(x)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)  # like upstream


class _Layer(nn.Module):
    """One decoder layer (dense, pruned or with dead attention / MLP)."""

    def __init__(self, layer: nn.Module, config, last: bool = False):
        super().__init__()
        self.last = last
        att, mlp = layer.self_attn, layer.mlp
        self.eps = float(config.rms_norm_eps)
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            self.register_buffer(name, getattr(layer, name).weight.detach().clone())
        self.att_const = att.bias.detach().clone() if isinstance(att, Constant) and att.bias is not None else None
        self.att_dead = isinstance(att, Constant)
        if not self.att_dead:
            self.heads = int(getattr(att, "num_heads", config.num_attention_heads))
            self.kv_heads = int(getattr(att, "num_kv_heads", config.num_key_value_heads))
            self.head_dim = int(att.head_dim)
            self.v_dim = int(getattr(att, "v_head_dim", att.head_dim))
            if last:  # the query of the last position only: q apart from k and v
                self.q, self.kv = _Lin(att.q_proj), _Lin(att.k_proj, att.v_proj)
            else:
                self.qkv = _Lin(att.q_proj, att.k_proj, att.v_proj)
            self.o = _Lin(att.o_proj)
            # the per-dim query scale folds into the q norm's weight (both act on the head dim)
            scale = F.softplus(att.scaling.detach()) * (1.442695041 / math.sqrt(self.head_dim))
            self.register_buffer("q_norm", att.q_norm.weight.detach() * scale)
            self.register_buffer("k_norm", att.k_norm.weight.detach().clone())
            self.qk_eps = float(att.q_norm.variance_epsilon)
        self.mlp_dead = isinstance(mlp, Constant)
        if self.mlp_dead:
            self.mlp_const = None if mlp.bias is None else mlp.bias.detach().clone()
        else:
            self.fc1, self.fc2, self.act = _Lin(mlp.fc1), _Lin(mlp.fc2), mlp.activation_fn
        self.d = int(layer.input_layernorm.weight.shape[0])

    def _const(self, bias, like):
        if bias is None:
            return like.new_zeros((*like.shape[:-1], self.d))
        return bias.to(like.dtype).expand(*like.shape[:-1], self.d)

    def _attention(self, h, cos, sin):
        """h (B, T, D) normed; cos/sin (T, head_dim). Returns (B, T', D), T' = 1 if last."""
        b, t, _ = h.shape
        last_only = self.last
        if last_only:
            q = self.q(h[:, -1:])
            k, v = self.kv.split(h)
        else:
            q, k, v = self.qkv.split(h)
        tq = q.shape[1]
        q = q.view(b, tq, self.heads, self.head_dim).transpose(1, 2)              # (B, h, Tq, d)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)            # (B, kv, T, d)
        v = v.view(b, t, self.kv_heads, self.v_dim).transpose(1, 2)               # (B, kv, T, dv)
        cq, sq = (cos[-1:], sin[-1:]) if last_only else (cos, sin)
        q = q * cq + _rotate_half(q) * sq
        k = k * cos + _rotate_half(k) * sin
        q = _rms(q, self.q_norm, self.qk_eps)
        k = _rms(k, self.k_norm, self.qk_eps)
        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            k = k[:, :, None].expand(b, self.kv_heads, rep, t, self.head_dim).reshape(b, self.heads, t, self.head_dim)
            v = v[:, :, None].expand(b, self.kv_heads, rep, t, self.v_dim).reshape(b, self.heads, t, self.v_dim)
        # the last query sees every key: no mask; otherwise plain causal (no padded patches)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only, scale=1.0)
        out = out.transpose(1, 2).reshape(b, tq, self.heads * self.v_dim)        # (B, Tq, h*dv)
        return self.o(out)

    def forward(self, x, cos, sin):
        """x (B, T, D) -> (B, T, D); the last layer returns (B, 1, D), the last position."""
        res = x[:, -1:] if self.last else x
        if self.att_dead:
            a = self._const(self.att_const, res)
        else:
            a = self._attention(_rms(x, self.input_layernorm, self.eps), cos, sin)
        x = _rms(a, self.post_attention_layernorm, self.eps) + res
        if self.mlp_dead:
            f = self._const(self.mlp_const, x)
        else:
            f = self.fc2(self.act(self.fc1(_rms(x, self.pre_feedforward_layernorm, self.eps))))
        return _rms(f, self.post_feedforward_layernorm, self.eps) + x


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TimesFm25Export(nn.Module):
    """forward(context (B, L) float32) -> (point (B, H), quantiles (B, H, Q)).

    ``model`` is a TimesFm2_5ModelForPrediction, dense or pruned (PrunedAttention and
    Constant modules); its weights are copied (transposed) at construction.
    """

    def __init__(self, model: nn.Module, horizon: int, *, dynamic_context: bool = False,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        cfg = model.config
        self.dynamic_context = bool(dynamic_context)
        self.dtype = dtype
        self.patch = int(cfg.patch_length)
        self.horizon = int(horizon)
        self.out_len = int(cfg.horizon_length)
        self.q_len = int(cfg.output_quantile_len)
        self.n_q = len(cfg.quantiles)
        self.median = int(cfg.decode_index)
        self.flip = bool(cfg.force_flip_invariance)
        self.continuous = bool(cfg.use_continuous_quantile_head)
        self.positive = bool(cfg.infer_is_positive)
        self.tokenizer = _Residual(model.model.input_ff_layer)
        n_layers = len(model.model.layers)
        self.layers = nn.ModuleList(_Layer(layer, cfg, last=i == n_layers - 1)
                                    for i, layer in enumerate(model.model.layers))
        self.head_point = _Residual(model.output_projection_point)
        self.head_quantiles = _Residual(model.output_projection_quantiles) if self.continuous else None
        self.register_buffer("inv_freq", model.model.rotary_emb.inv_freq.detach().clone(), persistent=False)
        self.rope_scale = float(model.model.rotary_emb.attention_scaling)
        if dtype != torch.float32:  # weights of the decoder and heads; inv_freq stays float32
            for mod in (self.tokenizer, self.layers, self.head_point, self.head_quantiles):
                if mod is not None:
                    mod.to(dtype)

    def _rope(self, n: int, like: torch.Tensor):
        pos = torch.arange(n, dtype=torch.float32, device=like.device)
        freqs = pos[:, None] * self.inv_freq[None]                                # (N, d/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.rope_scale, emb.sin() * self.rope_scale

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L) raw context -> full forecast (B, out_len, Q+1), de-normalised."""
        b, L = x.shape
        p = self.patch
        pad = (-L) % p
        padded = self.dynamic_context or pad > 0
        if padded:  # at most the first patch is partly padded (pad < P), never a whole one
            x = torch.cat([x.new_zeros(b, pad), x], dim=1)
        n = (L + pad) // p
        mu_g = x.mean(dim=1, keepdim=True)                                        # (B, 1)
        sigma_g = x.std(dim=1, keepdim=True)
        xn = (x - mu_g) / _safe(sigma_g)
        patches = xn.view(b, n, p)                                                # (B, N, P)
        valid = None
        if padded:
            steps = torch.arange(n * p, device=x.device).view(n, p)
            valid = (steps >= pad).to(x.dtype).expand(b, n, p)                   # 1 = observed
        mu, sigma = running_stats(patches, valid)                                 # (B, N)
        normed = (patches - mu[..., None]) / _safe(sigma)[..., None]
        mask = torch.zeros_like(patches) if valid is None else 1.0 - valid
        if valid is not None:
            normed = normed * valid
        tokens = torch.cat([normed, mask], dim=-1)                                # (B, N, 2P)
        mu_last, sigma_last = mu[:, -1:], sigma[:, -1:]                           # (B, 1)
        if self.flip:  # -x has the same sigma and the negated mean: normed and mu flip sign
            tokens = torch.cat([tokens, torch.cat([-normed, mask], dim=-1)], dim=0)
            mu_last = torch.cat([mu_last, -mu_last], dim=0)
            sigma_last = torch.cat([sigma_last, sigma_last], dim=0)
        h = self.tokenizer(tokens.to(self.dtype))                                 # (B', N, D)
        cos, sin = (t.to(self.dtype) for t in self._rope(n, h))
        for layer in self.layers:
            h = layer(h, cos, sin)
        h = h[:, -1]                                                              # (B', D)
        k = self.n_q + 1
        pf = (self.head_point(h).float() * sigma_last + mu_last).view(-1, self.out_len, k)
        qs = None
        if self.continuous:
            qs = (self.head_quantiles(h).float() * sigma_last + mu_last).view(-1, self.q_len, k)
        if self.flip:
            def flip(t):
                return torch.cat([t[..., :1], torch.flip(t[..., 1:], dims=(-1,))], dim=-1)

            pf = (pf[:b] - flip(pf[b:])) / 2
            if qs is not None:
                qs = (qs[:b] - flip(qs[b:])) / 2
        full = pf
        if self.continuous:
            med = self.median
            hq = min(self.out_len, self.q_len)
            adj = qs[:, :hq] - qs[:, :hq, med: med + 1] + full[:, :hq, med: med + 1]
            keep = torch.zeros(k, dtype=torch.bool)
            keep[1: self.n_q + 1] = True
            keep[med] = False
            head = torch.where(keep.to(full.device), adj, full[:, :hq])
            full = torch.cat([head, full[:, hq:]], dim=1)
        return full * sigma_g[..., None] + mu_g[..., None]

    def forward(self, context: torch.Tensor):
        ctx = context.float()
        n_ctx = ctx.shape[1]
        points, quants = [], []
        done = 0
        while done < self.horizon:
            full = self._step(ctx)
            if self.positive:
                pos = (context.amin(dim=1) >= 0)[:, None, None]
                full = torch.where(pos, full.clamp_min(0.0), full)
            step = min(self.out_len, self.horizon - done)
            points.append(full[:, :step, self.median])
            quants.append(full[:, :step, 1: self.n_q + 1])
            done += step
            if done < self.horizon:
                ctx = torch.cat([ctx, full[:, :, self.median]], dim=1)[:, -n_ctx:]
        return torch.cat(points, 1), torch.cat(quants, 1)


def build(model: nn.Module, context: int, horizon: int, dynamic_context: bool,
          dtype: torch.dtype) -> nn.Module:
    """The optimized graph's module (named by the family's ExportSpec)."""
    return TimesFm25Export(model, horizon, dynamic_context=dynamic_context, dtype=dtype)
