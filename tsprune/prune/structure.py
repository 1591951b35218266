"""Which slices of a transformer block are coupled (dependency groups).

A family adapter describes each block of its model with these records; the pruning
engine masks every Linear named here, and the surgery cuts the coupled slices
together. Paths are dotted module names relative to the model root.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AttentionGroup:
    """One multi-head attention: Q, K, V and O projections.

    Shapes (rows are outputs, as in nn.Linear):
      q: (num_heads * qk_head_dim, d_model)     k: (num_kv_heads * qk_head_dim, d_kv_in)
      v: (num_kv_heads * v_head_dim, d_kv_in)   o: (d_model, num_heads * v_head_dim)
    Head h of Q uses KV head h // (num_heads // num_kv_heads).

    qk_reducible: whether Q/K head dims may be sliced (False when per-head q/k norms
      act over the head dim, as in TimesFM 2.5 and Moirai).
    rope: Q/K dims i and i + d/2 are rotated together and removed together.
    owner: path of the attention module, handed back to the family to update its shapes.
    constant: surgery always replaces this attention by one learned vector of the model
      width, whatever the masks (Chronos-Bolt's decoder layer 0 self-attention, whose input
      is always the start token): its Linears and the owner's other parameters all go.
    single_query: one query over one key, so the softmax is 1 and the output is o(v(x)):
      surgery always removes Q and K and computes no attention product (Chronos-Bolt's
      other decoder self-attentions).
    """

    owner: str
    q: str
    k: str
    v: str
    o: str
    num_heads: int
    num_kv_heads: int
    qk_head_dim: int
    v_head_dim: int
    qk_reducible: bool = False
    rope: bool = False
    constant: bool = False
    single_query: bool = False

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class FFNGroup:
    """One feed-forward network: neuron j is row j of every input Linear
    (up, gate) and column j of the output Linear (down).

    ``inputs`` may be empty: the neurons are then input features of the output Linear
    that no masked Linear produces (a head reading a flattened hidden state); surgery
    slices its columns and the family's resize_ffn gathers the kept features (the new
    Linear's ``tsprune_kept_cols``)."""

    owner: str
    inputs: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class BlockStructure:
    """All prunable groups of one transformer block.

    extra: Linears that are masked (scored, zeroed) but never sliced, e.g. a fused
      qkv projection whose layout the family does not slice.
    dead: owners of attention/FFN modules that surgery collapsed to constants (reported by
      `inspect` as zero heads / zero width; nothing left to prune there).
    """

    index: int
    attention: tuple[AttentionGroup, ...] = ()
    ffn: tuple[FFNGroup, ...] = ()
    extra: tuple[str, ...] = ()
    dead_attention: tuple[str, ...] = ()
    dead_ffn: tuple[str, ...] = ()

    def linears(self) -> list[str]:
        """Every masked Linear of the block, in a stable order."""
        out: list[str] = []
        for a in self.attention:
            out += [a.q, a.k, a.v, a.o]
        for f in self.ffn:
            out += [*f.inputs, f.output]
        out += list(self.extra)
        seen: set[str] = set()
        return [p for p in out if not (p in seen or seen.add(p))]


@dataclass(frozen=True)
class HiddenWidth:
    """The residual stream's ``size`` channels (d_model): one keep-mask shared by every
    tensor that writes or reads them, so a channel is removed everywhere at once.

    writes: Linears whose output rows are residual channels (the input embedding, every
      block's O and FFN output projections); the shared mask gates their outputs while
      scoring, and their rows (and biases) are sliced.
    reads: Linears whose input columns are residual channels (Q, K, V, FFN inputs, the
      output heads); their columns are sliced.
    norms: normalisation modules over the residual channels (RMSNorm or LayerNorm: weight
      and bias sliced, statistics over the kept channels; BatchNorm: weight, bias and
      running statistics sliced, per channel, so exact and never rescaled).
    constants: tsprune Constant modules whose output is a residual vector (attention or FFN
      collapsed by surgery): their width and bias are sliced.
    norm_scale: what a norm does with fewer channels, the family's choice (docs/families.md):
      "kept" -- plain slicing: statistics over the kept channels, weights unchanged;
      "dense" -- weights times sqrt(size / kept), so the sliced RMSNorm computes what the
      dense-width norm computed with the pruned channels at zero (the masked model); a
      LayerNorm's weights are multiplied the same way (BatchNorms never).
    gates: the modules whose outputs the mask gates while scoring (None: ``writes``). A
      family lists others where the stream is written by more than Linears (an embedding
      plus a positional table: the positional encoder's output) or where a norm maps a zero
      channel to a non-zero one (BatchNorm's shift).
    vectors: parameters or buffers ("module.name") whose last dimension is the channel
      (positional tables, class tokens): sliced there.
    flat_reads: (Linear, repeats) pairs for heads reading ``repeats`` positions of the
      stream flattened: input column r * size + c is channel c of position r.
    """

    size: int
    writes: tuple[str, ...]
    reads: tuple[str, ...]
    norms: tuple[str, ...]
    constants: tuple[str, ...] = ()
    norm_scale: str = "kept"
    gates: tuple[str, ...] | None = None
    vectors: tuple[str, ...] = ()
    flat_reads: tuple[tuple[str, int], ...] = ()

    def gate_points(self) -> tuple[str, ...]:
        return self.writes if self.gates is None else self.gates

    def readers(self) -> dict[str, int]:
        """Every Linear reading the stream -> how many positions its columns hold."""
        return {**{p: 1 for p in self.reads}, **dict(self.flat_reads)}

    def linears(self) -> tuple[str, ...]:
        """Every Linear whose shape depends on the width (writers, then readers)."""
        return (*self.writes, *self.readers())


@dataclass
class ModelStructure:
    blocks: list[BlockStructure] = field(default_factory=list)

    def linears(self) -> list[str]:
        return [p for b in self.blocks for p in b.linears()]
