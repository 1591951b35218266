"""Pruning to a budget: what a budget is, what every mask unit costs, and what a masked
model costs now.

A budget is the fraction of the dense model's parameters or forward FLOPs that is KEPT
(``params=0.4``, ``flops=0.33``), or a speedup (``speedup=3``, counted as ``flops=1/3``).

FLOPs are those of one deployed forecast of one series: every matrix product of the
forward pass, 2 per multiply-add (tsprune.export.flops counts the same in an ONNX graph).
A ``FlopProfile`` records them once for the dense model (``profile_forward``): the
total, the rows every masked Linear multiplies (tokens) and, per attention module, the
sum over its calls of batch x T_q x T_k. What the deployed forecast is depends on the
graph: tsprune.export.profile profiles the exported graph (TimesFM 2.5's optimized graph
runs the output heads on the last patch only, and its last layer computes Q, the
attention output, O and the MLP for the last patch only); without it the engine profiles
the family's own forecast (``forecast_profile``).

Costs follow what surgery removes (tsprune.prune.surgery), never a naive per-Linear count:
  * FFN neuron j (row j of every input Linear, column j of the output Linear): one unit
    of any of them removes the whole neuron, so each such unit costs the whole neuron;
  * V dim i of KV head g (row of V, columns of O for the G query heads of the group, and
    2 x T_q x T_k FLOPs per query head of the attention-times-V product): a V unit costs
    that slice, an O unit 1/G of it (all G must go). Heads go when all their V dims go,
    so where Q/K dims are not sliced (q/k norms) a head's Q/K rows and its score FLOPs are
    shared out over its V dims;
  * Q/K dim i (qk_reducible groups): G rows of Q, a row of K, 2 x T_q x T_k score FLOPs per
    query head; a K unit costs that slice, a Q unit 1/G of it;
  * every other unit (residual-stream channels: inputs of Q/K/V/FFN, outputs of O and of
    the FFN, masked-only Linears, any unit of a ``constant`` attention, which surgery folds
    into one vector whatever the masks, and the Q/K units of a ``single_query`` one, which
    surgery removes whatever the masks) removes nothing: cost 0.
Surgery reduces V (and Q/K) dims uniformly over the heads of a group, so zeroing a V unit
saves its nominal cost only once every kept head has lost a dim: nominal costs rank units,
``CostModel.measure`` (from ``analyze``) is the truth the budget is met against.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from tsprune.errors import bad_arg

from .masks import HIDDEN, MaskSet, get_module
from .structure import AttentionGroup, FFNGroup, HiddenWidth, ModelStructure
from .surgery import Cut, _analyze_attention, _analyze_ffn, analyze, analyze_hidden, count_params
from .width import fixed_per_channel

ALLOWED = "params=F, flops=F (0<F<1, the fraction kept) or speedup=S (S>1)"
KINDS = ("params", "flops", "speedup")


@dataclass(frozen=True)
class Budget:
    """kind: "params" or "flops" (value = the fraction kept, 0 < value < 1) or "speedup"
    (value > 1; pruned to flops = 1 / value; the measured speedup of the exported graph is
    the caller's check)."""

    kind: str
    value: float

    def __post_init__(self):
        v = self.value
        ok = (self.kind in KINDS and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v) and ((1.0 < v) if self.kind == "speedup" else (0.0 < v < 1.0)))
        if not ok:
            raise bad_arg("--budget", f"{self.kind}={v}", ALLOWED)

    @classmethod
    def parse(cls, text: "str | Budget") -> "Budget":
        if isinstance(text, Budget):
            return text
        kind, sep, num = str(text).strip().partition("=")
        try:
            value = float(num)
        except ValueError:
            value = None
        if not sep or value is None or kind.strip() not in KINDS:
            raise bad_arg("--budget", text, ALLOWED)
        return cls(kind.strip(), value)

    @property
    def measure(self) -> str:
        """What is counted: "params" or "flops"."""
        return "params" if self.kind == "params" else "flops"

    @property
    def fraction(self) -> float:
        """The fraction of the measure that is kept."""
        return self.value if self.kind != "speedup" else 1.0 / self.value

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


@dataclass
class FlopProfile:
    """FLOPs of one deployed forecast of the dense model (batch 1).

    total: every matrix product (2 FLOPs per multiply-add); tokens: masked Linear path ->
    rows it multiplies (summed over calls); attention: attention owner -> sum over calls of
    batch x T_q x T_k (the score and value products cost 2 x that x heads x (d_qk + d_v))."""

    total: int
    tokens: dict[str, int] = field(default_factory=dict)
    attention: dict[str, int] = field(default_factory=dict)
    context: int | None = None
    horizon: int | None = None
    source: str = "forecast"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FlopProfile":
        return cls(**d)


def profile_forward(module: torch.nn.Module, structure: ModelStructure, run, *,
                    aliases: dict | None = None, context: int | None = None,
                    horizon: int | None = None, source: str = "forecast",
                    hidden_paths: tuple[str, ...] = ()) -> FlopProfile:
    """Profile one call of ``run()`` (one deployed forecast) of the dense ``module``.

    hidden_paths: Linears beside the structure's whose rows are counted too (those that
    read or write the residual stream: ``stream_linears``).

    aliases: {module: [paths]} for modules that compute the product of masked Linears but
    are not those Linears (an export graph's fused copies); their inputs count for every
    path named. Attention calls pair the i-th call of Q with the i-th call of K (no KV cache)."""
    # lazy: torch.utils.flop_counter imports triton when it is installed (~0.3 s measured)
    from torch.utils.flop_counter import FlopCounterMode

    shapes: dict[str, list[tuple]] = {p: [] for p in [*structure.linears(), *hidden_paths]}
    targets: list[tuple[torch.nn.Module, list[str]]] = [(get_module(module, p), [p]) for p in shapes]
    targets += [(m, list(ps)) for m, ps in (aliases or {}).items()]
    handles = []
    for mod, paths in targets:
        def pre(_m, args, paths=paths):
            for p in paths:
                shapes[p].append(tuple(args[0].shape))
        handles.append(mod.register_forward_pre_hook(pre))
    try:
        # the math backend: fused CPU/GPU attention kernels are not all known to the counter
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            run()
    finally:
        for h in handles:
            h.remove()
    tokens = {p: sum(math.prod(s[:-1]) for s in ss) for p, ss in shapes.items()}
    attention = {}
    for b in structure.blocks:
        for a in b.attention:
            attention[a.owner] = sum(math.prod(q[:-2]) * q[-2] * k[-2]
                                     for q, k in zip(shapes[a.q], shapes[a.k]) if len(q) >= 3 and len(k) >= 3)
    return FlopProfile(int(fc.get_total_flops()), tokens, attention, context, horizon, source)


def stream_linears(family, module: torch.nn.Module) -> tuple[str, ...]:
    """The Linears that write or read the residual stream when the family can prune the
    hidden width (profiles count their rows, so a hidden channel's FLOPs are known); ()."""
    if family.hidden_unsupported is not None:
        return ()
    hw = family.hidden_width(module)
    return hw.linears()


def forecast_profile(model, context: int, horizon: int) -> FlopProfile:
    """The profile of the family's own forecast (TSModel ``model``) of one series of
    ``context`` steps, ``horizon`` steps ahead: what the family's reference graph computes."""
    module = model.module
    p = next(module.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    t = torch.arange(context, dtype=torch.float32, device=dev)
    x = (torch.sin(t / 7.0) + 0.01 * t)[None]                                  # (1, L)
    was = module.training
    module.eval()
    try:
        return profile_forward(module, model.family.structure(module),
                               lambda: model.family.forecast(module, x, horizon),
                               context=context, horizon=horizon, source="forecast",
                               hidden_paths=stream_linears(model.family, module))
    finally:
        module.train(was)


@dataclass
class Cost:
    params: int
    flops: int | None

    def get(self, kind: str) -> int:
        v = self.params if kind == "params" else self.flops
        if v is None:
            raise ValueError("FLOPs need a FlopProfile")
        return v


class CostModel:
    """Parameters and FLOPs of ``module`` (dense shapes, as the structure describes it)
    under any masks, and the nominal cost of every mask unit (see the module docstring).

    measure(masks) is exact: the parameters of the model surgery makes from ``masks``
    (count_params(module, analyze(...)), less what a dead group's owner loses beside its
    Linears, with Q/K head-dim vectors of the owner resized as surgery resizes them); its FLOPs, the profile's total with every group's dense products replaced
    by its kept ones."""

    def __init__(self, module: torch.nn.Module, structure: ModelStructure,
                 profile: FlopProfile | None = None, hidden: HiddenWidth | None = None,
                 reference: "Cost | None" = None):
        self.module, self.structure, self.profile, self.hidden = module, structure, profile, hidden
        self.shape = {}
        for p in structure.linears():
            lin = get_module(module, p)
            self.shape[p] = (int(lin.out_features), int(lin.in_features), lin.bias is not None)
        self.groups: list[AttentionGroup | FFNGroup] = [g for b in structure.blocks
                                                         for g in (*b.attention, *b.ffn)]
        self.group_of: dict[tuple[str, str], int] = {}
        for i, g in enumerate(self.groups):
            sides = ([(g.q, "out"), (g.k, "out"), (g.v, "out"), (g.o, "in")] if isinstance(g, AttentionGroup)
                     else [(p, "out") for p in g.inputs] + [(g.output, "in")])
            for s in sides:
                self.group_of.setdefault(s, i)
        self.params_dense = count_params(module)
        # what a dead group's owner loses beside its Linears (surgery replaces it by a
        # Constant of the output bias: q/k norms, scalings, ...)
        # Q/K head-dim vectors of a group whose Q/K dims are sliced (TimesFM 2.0's query
        # scaling): (qk_head_dim,) dense, (heads, kept dims) once Q/K dims are cut
        self.owner_extra, self.qk_vectors = [], []
        lin_ids = {id(x) for p in self.shape for x in get_module(module, p).parameters()}
        for g in self.groups:
            rest = [x for x in get_module(module, g.owner).parameters() if id(x) not in lin_ids]
            vec = [x for x in rest if isinstance(g, AttentionGroup) and g.qk_reducible
                   and x.dim() == 1 and x.numel() == g.qk_head_dim]
            self.qk_vectors.append(len(vec))
            self.owner_extra.append(sum(x.numel() for x in rest) - sum(x.numel() for x in vec))
        dense = [self._kept(i, Cut()) for i in range(len(self.groups))]
        self.params_fixed = self.params_dense - sum(c.params for c in dense)
        self.flops_dense = profile.total if profile is not None else None
        self.flops_fixed = (self.flops_dense - sum(c.flops for c in dense)) if profile is not None else None
        # what budget fractions are fractions of: the model the user gave, which is larger
        # than ``module`` when units were removed before scoring (Time-MoE's experts)
        self.reference = reference if reference is not None else Cost(self.params_dense, self.flops_dense)
        self._hidden_costs()

    def _hidden_costs(self) -> None:
        """Per residual channel: ``channel_fixed`` (params, FLOPs) held outside the groups
        (the embedding's rows, the output heads' columns, norms, Constants: all linear in
        the width) and ``channel_nominal`` (params, FLOPs), every tensor's share at the
        dense shapes (the unit cost of a hidden channel)."""
        self.channel_fixed = self.channel_nominal = (0.0, 0.0)
        hw = self.hidden
        if hw is None:
            return
        in_groups = {p for g in self.groups
                     for p in ([g.q, g.k, g.v, g.o] if isinstance(g, AttentionGroup) else [*g.inputs, g.output])}
        if self.profile is not None:
            missing = [p for p in hw.linears() if p not in self.profile.tokens]
            if missing:
                raise ValueError(f"the FLOPs profile does not count the residual stream's Linears "
                                 f"({missing[0]}, ...): profile the model with its hidden width")
        fixed = [float(fixed_per_channel(self.module, hw)), 0.0]
        nominal = list(fixed)
        readers = hw.readers()
        for p in hw.linears():
            lin = get_module(self.module, p)
            other = lin.in_features if p in hw.writes else lin.out_features * readers[p]
            par = other + (1 if p in hw.writes and lin.bias is not None else 0)
            fl = 2.0 * self._tokens(p) * other
            nominal[0] += par
            nominal[1] += fl
            if p not in in_groups:
                fixed[0] += par
                fixed[1] += fl
        self.channel_fixed, self.channel_nominal = tuple(fixed), tuple(nominal)

    # ---- what a group keeps ---------------------------------------------------------
    def _tokens(self, p: str) -> int:
        return self.profile.tokens.get(p, 0) if self.profile is not None else 0

    def _kept(self, i: int, cut: Cut) -> Cost:
        """Parameters and FLOPs of group i's Linears (+ its attention products, + its
        owner's other parameters unless the group is dead) as ``cut`` keeps them (paths
        absent from the cut: dense)."""
        g = self.groups[i]
        if isinstance(g, AttentionGroup) and g.constant and g.owner in cut.attention:
            # after surgery (any masks): one vector of the model width, no product
            return Cost(self.shape[g.o][0], 0 if self.profile is not None else None)
        folded = isinstance(g, AttentionGroup) and g.single_query and g.owner in cut.attention
        paths = ([g.v, g.o] if folded else [g.q, g.k, g.v, g.o]) if isinstance(g, AttentionGroup) \
            else [*g.inputs, g.output]
        params = flops = 0
        for p in dict.fromkeys(paths):
            out, inp, bias = self.shape[p]
            r, c = cut.kept_dims(p, out, inp)
            params += r * c + (r if bias else 0)
            flops += 2 * self._tokens(p) * r * c
        if isinstance(g, AttentionGroup) and self.profile is not None and not folded:
            s = cut.attention.get(g.owner)
            h, dqk, dv = ((g.num_heads, g.qk_head_dim, g.v_head_dim) if s is None
                          else (s.num_heads, s.qk_head_dim, s.v_head_dim))
            # no Q/K dim left: the scores are constant. RoPE attention (tsprune.nn's
            # CausalRopeAttention: Timer-XL, Time-MoE) then takes a running mean of V (no
            # product); the others (PatchTST, Chronos-Bolt) still multiply softmax(bias) by V
            if dqk > 0 or not g.rope:
                flops += 2 * self.profile.attention.get(g.owner, 0) * h * (dqk + dv)
        dead = (cut.attention[g.owner].num_heads == 0 if g.owner in cut.attention else False) \
            if isinstance(g, AttentionGroup) else cut.ffn.get(g.owner, 1) == 0
        if not dead:
            params += self.owner_extra[i]
            if self.qk_vectors[i]:
                s = cut.attention.get(g.owner)
                size = g.qk_head_dim if s is None or s.qk_dims is None else s.num_heads * s.qk_head_dim
                params += self.qk_vectors[i] * size
        return Cost(params, flops if self.profile is not None else None)

    def group_kept(self, i: int, masks_cpu: MaskSet) -> Cost:
        """Group i's kept cost under ``masks_cpu`` (a MaskSet on the CPU)."""
        g, cut = self.groups[i], Cut()
        analyze_hidden(masks_cpu, cut)
        if isinstance(g, AttentionGroup):
            _analyze_attention(g, masks_cpu, cut)
        else:
            _analyze_ffn(g, masks_cpu, cut)
        return self._kept(i, cut)

    def measure(self, masks: MaskSet) -> Cost:
        """What the model costs after surgery with ``masks`` (exact: the parameters of
        apply(model, plan); count_params(module, analyze(...)) minus what dead groups'
        owners lose beside their Linears)."""
        cut = analyze(self.structure, masks)
        kept = [self._kept(i, cut) for i in range(len(self.groups))]
        params = self.params_fixed + sum(c.params for c in kept)
        flops = None if self.profile is None else self.flops_fixed + sum(c.flops for c in kept)
        if cut.hidden is not None:  # the residual channels gone, outside the groups
            if self.hidden is None:
                raise ValueError("masks prune the hidden width: build the CostModel with hidden=")
            gone = self.hidden.size - int(cut.hidden.numel())
            params -= gone * int(self.channel_fixed[0])
            flops = None if flops is None else flops - gone * int(self.channel_fixed[1])
        return Cost(params, flops)

    def dense(self) -> Cost:
        """The cost budgets are fractions of (``reference``; by default ``module``'s)."""
        return self.reference

    def fraction(self, cost: Cost) -> dict:
        ref = self.reference
        return {"params": cost.params / ref.params,
                "flops": None if cost.flops is None or ref.flops is None else cost.flops / ref.flops}

    # ---- nominal unit costs -----------------------------------------------------------
    def _slice(self, g, kind: str) -> dict[str, float]:
        """Cost of the smallest slice of group ``g`` surgery can remove: "neuron" (FFN), or
        "v_dim" and "qk_dim" (one dim of one KV group: V row + G O columns + the
        attention-times-V FLOPs of G heads; G Q rows + a K row + the score FLOPs)."""
        flops = kind == "flops"
        if flops and self.profile is None:
            raise ValueError("FLOP costs need a FlopProfile")

        def row(p):  # one output row of Linear p
            _, i, b = self.shape[p]
            return 2.0 * self._tokens(p) * i if flops else float(i + (1 if b else 0))

        def col(p):  # one input column of Linear p
            o, _, _ = self.shape[p]
            return 2.0 * self._tokens(p) * o if flops else float(o)

        if isinstance(g, FFNGroup):
            return {"neuron": sum(row(p) for p in g.inputs) + col(g.output)}
        G = g.group_size
        if g.single_query:  # Q, K and the attention products go whatever the masks
            return {"v_dim": row(g.v) + G * col(g.o), "qk_dim": 0.0}
        att = 2.0 * self.profile.attention.get(g.owner, 0) * G if flops else 0.0
        return {"v_dim": row(g.v) + G * col(g.o) + att, "qk_dim": G * row(g.q) + row(g.k) + att}

    def unit_costs(self, kind: str) -> dict[tuple[str, str], torch.Tensor]:
        """(path, side) -> nominal cost (float64, per unit) of zeroing each unit, in
        parameters or FLOPs; 0 for units whose removal slices nothing."""
        out: dict[tuple[str, str], torch.Tensor] = {}
        for p, (o, i, _) in self.shape.items():
            out[(p, "in")] = torch.zeros(i, dtype=torch.float64)
            out[(p, "out")] = torch.zeros(o, dtype=torch.float64)
        for g in self.groups:
            if isinstance(g, AttentionGroup) and g.constant:
                continue  # its units remove nothing more: the group folds whatever they are
            s = self._slice(g, kind)
            if isinstance(g, FFNGroup):
                for p in g.inputs:
                    out[(p, "out")].fill_(s["neuron"])
                out[(g.output, "in")].fill_(s["neuron"])
                continue
            G, v_dim = g.group_size, s["v_dim"]
            if g.qk_reducible:
                out[(g.k, "out")].fill_(s["qk_dim"])
                out[(g.q, "out")].fill_(s["qk_dim"] / G)
            else:  # a head's Q/K rows go with its last V dim: shared out over its V dims
                v_dim += s["qk_dim"] * g.qk_head_dim / g.v_head_dim
            out[(g.v, "out")].fill_(v_dim)
            out[(g.o, "in")].fill_(v_dim / G)
        if self.hidden is not None:
            if kind == "flops" and self.profile is None:
                raise ValueError("FLOP costs need a FlopProfile")
            out[(HIDDEN, "out")] = torch.full((self.hidden.size,), self.channel_nominal[kind == "flops"],
                                              dtype=torch.float64)
        return out

    def least_restore(self, kind: str) -> list[float]:
        """Per group, the least that restoring one zeroed unit adds back when it adds
        anything: one neuron, or one V (Q/K) dim of one KV group."""
        if self.hidden is not None:  # a narrower stream makes every slice cheaper: no bound
            return [0.0] * len(self.groups)
        return [0.0 if isinstance(g, AttentionGroup) and g.constant
                else min(self._slice(g, kind).values()) if isinstance(g, FFNGroup) or g.qk_reducible
                else self._slice(g, kind)["v_dim"] for g in self.groups]
