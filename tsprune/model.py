"""TSModel: a model of a supported family, dense or pruned, with one forecasting API.

    m = tsprune.load("nano")                 # bundled checkpoint, or a local HF directory
    f = m.forecast(context, horizon=96)      # context (B, L) -> f.point (B, 96)
    m.save("out/model")                      # safetensors + config.json + tsprune.json
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import torch
from torch import nn

from tsprune import __version__, resources
from tsprune.checkpoint import MANIFEST, check_weights, read_config, read_json, read_state_dict, write_model_dir
from tsprune.errors import UserError, bad_arg
from tsprune.families import Family, Forecast, detect, get
from tsprune.hfutil import config_errors
from tsprune.prune.structure import AttentionGroup, FFNGroup
from tsprune.prune.surgery import AttentionShape
from tsprune.prune.width import slice_hidden
from tsprune.resources import BUNDLED_MODELS, available_models
from tsprune.sizecheck import check_fits

MANIFEST_FORMAT = "tsprune-model/1"


class TSModel:
    """A family adapter plus its nn.Module. ``manifest`` is None for a dense model."""

    def __init__(self, family: Family, module: nn.Module, *, source: str | None = None,
                 manifest: dict | None = None):
        self.family = family
        self.module = module
        self.source = source
        self.manifest = manifest

    # ---- info -------------------------------------------------------------------------
    @property
    def pruned(self) -> bool:
        return self.manifest is not None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def clone(self) -> "TSModel":
        return TSModel(self.family, copy.deepcopy(self.module), source=self.source,
                       manifest=copy.deepcopy(self.manifest))

    def describe(self) -> list[dict]:
        return self.family.describe(self.module)

    def check_context(self, context: int, arg: str = "--context") -> None:
        """UserError when ``context`` exceeds what this model can read (its position table)."""
        max_ctx = self.family.max_context(self.module)
        if max_ctx is not None and context > max_ctx:
            raise bad_arg(arg, context, f"at most {max_ctx} for this {self.family.name} model")

    # ---- forecasting ------------------------------------------------------------------
    @torch.no_grad()
    def forecast(self, context: torch.Tensor, horizon: int, *, batch_size: int = 512) -> Forecast:
        """context (B, L) float -> Forecast(point (B, horizon), quantiles (B, horizon, Q))."""
        was = self.module.training
        self.module.eval()
        p = next(self.module.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
        try:
            parts = []
            for c in torch.as_tensor(context, dtype=torch.float32).split(batch_size):
                f = self.family.forecast(self.module, c.to(dev), horizon)
                parts.append(Forecast(f.point.cpu(), None if f.quantiles is None else f.quantiles.cpu(),
                                      f.levels))
        finally:
            self.module.train(was)
        q = [p.quantiles for p in parts]
        return Forecast(torch.cat([p.point for p in parts]),
                        None if q[0] is None else torch.cat(q), parts[0].levels)

    # ---- persistence ------------------------------------------------------------------
    def build_manifest(self, extra: dict | None = None) -> dict:
        """Per-layer shapes of every masked Linear and every resized module."""
        struct = self.family.structure(self.module)
        linears, attention, ffn = {}, {}, {}
        for b in struct.blocks:
            for p in b.linears():
                lin = self.module.get_submodule(p)
                linears[p] = [lin.out_features, lin.in_features, lin.bias is not None]
            for a in b.attention:
                att = self.module.get_submodule(a.owner)
                attention[a.owner] = getattr(att, "tsprune_shape", None) or AttentionShape(
                    a.num_heads, a.num_kv_heads, a.qk_head_dim, a.v_head_dim,
                    list(range(a.num_kv_heads))).to_json()
            for f in b.ffn:
                ffn[f.owner] = self.module.get_submodule(f.output).in_features  # = neurons
        # dead groups were removed from the structure: record them from the manifest we had
        old = self.manifest or {}
        for owner, shape in (old.get("attention") or {}).items():
            attention.setdefault(owner, shape)
        for owner, width in (old.get("ffn") or {}).items():
            ffn.setdefault(owner, width)
        m = {"format": MANIFEST_FORMAT, "tsprune_version": __version__, "family": self.family.name,
             "linears": linears, "attention": attention, "ffn": ffn,
             "params": self.num_params()}
        for k, v in old.items():  # e.g. "plan" and the family's "extra" units survive a save
            m.setdefault(k, v)
        if extra:
            m.update(extra)
        return m

    def save(self, path: str | os.PathLike, *, extra: dict | None = None) -> None:
        manifest = self.build_manifest(extra) if self.pruned else None
        if manifest is not None:
            self.manifest = manifest
        write_model_dir(path, self.family.config_dict(self.module), self.module.state_dict(), manifest)


def bundled_path(name: str) -> Path | None:
    """Path of a checkpoint shipped inside tsprune (tsprune/resources/<name>)."""
    return resources.bundled_path(name)


_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def _section(manifest: dict, key: str) -> dict:
    """manifest[key] (default {}), which must map module paths to shapes."""
    v = manifest.get(key, {})
    if not isinstance(v, dict):
        raise UserError(f"manifest: {key!r}: got a {type(v).__name__}; expected an object mapping "
                        f"module paths to shapes")
    bad = [k for k in v if not _MODULE_PATH.fullmatch(k)]
    if bad:
        raise UserError(f"manifest: {key!r}: {bad[0]!r} is not a module path (expected dotted "
                        f"names such as 'model.layers.0.mlp')")
    return v


def _count(what: str, value, most: int, least: int = 0) -> int:
    """A manifest size: an int in [least, most] (pruning only ever shrinks a module)."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise UserError(f"manifest: {what}: got {value!r}; expected an integer from {least} to {most}")
    return value


def _attention_shape(owner: str, shape, g) -> AttentionShape:
    """A manifest attention entry, checked against the dense group ``g``."""
    try:
        s = AttentionShape.from_json(shape)
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"manifest: attention {owner!r}: got {shape!r}; expected num_heads, "
                        f"num_kv_heads, qk_head_dim, v_head_dim and kv_heads") from None
    if _count(f"num_heads of {owner!r}", s.num_heads, g.num_heads) == 0:
        return s  # dead attention: a constant
    kv = _count(f"num_kv_heads of {owner!r}", s.num_kv_heads, g.num_kv_heads, 1)
    if s.num_heads % kv:
        raise UserError(f"manifest: attention {owner!r}: num_heads {s.num_heads} is not a multiple "
                        f"of num_kv_heads {kv}")
    # 0 is legal where Q/K dims are reducible: every RoPE pair pruned, uniform causal weights
    _count(f"qk_head_dim of {owner!r}", s.qk_head_dim, g.qk_head_dim, 0 if g.qk_reducible else 1)
    _count(f"v_head_dim of {owner!r}", s.v_head_dim, g.v_head_dim, 1)
    heads = s.kv_heads
    if heads and (len(heads) != kv or len(set(map(str, heads))) != kv
                  or any(isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < g.num_kv_heads
                         for h in heads)):
        raise UserError(f"manifest: kv_heads of {owner!r}: got {heads!r}; expected {kv} distinct "
                        f"indices below {g.num_kv_heads}")
    if s.qk_dims is not None and not isinstance(s.qk_dims, list):
        raise UserError(f"manifest: qk_dims of {owner!r}: got {s.qk_dims!r}; expected a list or null")
    return s


def _apply_manifest(family: Family, module: nn.Module, manifest: dict) -> None:
    """Shrink a freshly built dense ``module`` to the manifest's shapes. Each entry is
    checked before it is applied (a module path that exists, sizes no larger than the dense
    ones), so that a malformed or hostile tsprune.json is a one-line UserError."""
    dense = family.structure(module)
    linears, attention, ffn = (_section(manifest, k) for k in ("linears", "attention", "ffn"))
    groups_f = {f.owner: f for b in dense.blocks for f in b.ffn}
    widths = {o: module.get_submodule(g.output).in_features for o, g in groups_f.items()
              if o in ffn}  # dense widths, before the Linears are replaced
    for path, spec in linears.items():
        try:
            old = module.get_submodule(path)
        except AttributeError:
            raise UserError(f"manifest: Linear {path!r} does not exist in a {family.name} model") from None
        if not isinstance(old, nn.Linear):
            raise UserError(f"manifest: {path!r} is a {type(old).__name__}, not a Linear, in a "
                            f"{family.name} model")
        if not isinstance(spec, list) or len(spec) != 3 or not isinstance(spec[2], bool):
            raise UserError(f"manifest: Linear {path!r}: got {spec!r}; expected [out_features, "
                            f"in_features, has_bias]")
        rows = _count(f"out_features of {path!r}", spec[0], old.out_features)
        cols = _count(f"in_features of {path!r}", spec[1], old.in_features)
        bias = spec[2]
        new = nn.Linear(int(cols), int(rows), bias=bool(bias), device="meta")
        new = new.to_empty(device="cpu")
        module.set_submodule(path, new)
    groups_a = {a.owner: a for b in dense.blocks for a in b.attention}
    for owner, shape in attention.items():
        if owner not in groups_a:
            raise UserError(f"manifest: attention {owner!r} does not exist in the model")
        family.resize_attention(module, groups_a[owner], _attention_shape(owner, shape, groups_a[owner]))
    for owner, width in ffn.items():
        if owner not in groups_f:
            raise UserError(f"manifest: FFN {owner!r} does not exist in the model")
        g: FFNGroup = groups_f[owner]
        width = _count(f"FFN width of {owner!r}", width, widths[owner])
        if width == 0:
            # a dead FFN collapses to its output bias: give the output Linear its shape
            pass
        family.resize_ffn(module, g, int(width))
    _ = AttentionGroup  # typing only


def _apply_hidden(family: Family, module: nn.Module, spec) -> None:
    """Slice a freshly built ``module`` to the manifest's residual width (its first
    ``size`` channels: the weights loaded next are the kept ones, in order)."""
    hw = family.hidden_width(module)
    if not isinstance(spec, dict):
        raise UserError(f"manifest: 'hidden': got {spec!r}; expected {{\"size\": N, \"dense\": D}}")
    size = _count("hidden size", spec.get("size"), hw.size, 1)
    if size < hw.size:
        slice_hidden(module, family, hw, torch.arange(size))


def _brief(e: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
    return " ".join(str(e).split())[:300]


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, dict]:
    """(directory, config.json) of a bundled name or a local model directory; checks that
    the family is supported. Cheap: reads only config.json."""
    p = Path(name_or_path)
    if not p.exists():
        b = bundled_path(str(name_or_path))
        if b is None:
            name, avail = str(name_or_path), ", ".join(available_models())
            if name in BUNDLED_MODELS:
                raise UserError(f"--model: {name!r} is a bundled model whose weights are not in this "
                                f"install (tsprune/resources/{name}/ is missing); available: {avail}")
            raise UserError(f"--model: {name!r} is neither a directory nor a bundled model (bundled: {avail})")
        p = b
    config = read_config(p)
    detect(config)
    check_fits(config, p / "config.json")  # before anything is built
    return p, config


def load(name_or_path: str | os.PathLike = "nano") -> TSModel:
    """Load a bundled checkpoint by name, or a local model directory (dense HF or pruned)."""
    p, config = resolve(name_or_path)
    family = detect(config)
    manifest = None
    if (p / MANIFEST).exists():
        manifest = read_json(p / MANIFEST, "manifest")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise UserError(f"manifest: {p / MANIFEST} has format {manifest.get('format')!r}, "
                            f"expected {MANIFEST_FORMAT!r}")
        if manifest.get("family") != family.name:
            raise UserError(f"manifest: family {manifest.get('family')!r} does not match config.json "
                            f"({family.name!r})")
    check_weights(p)
    if manifest is None:
        try:
            module = family.load_dense(p, config)
        except config_errors() as e:  # a config.json the family's loader cannot build
            raise UserError(f"--model: cannot load {p} as {family.name} ({type(e).__name__}: "
                            f"{_brief(e)})") from None
    else:
        state = read_state_dict(p)
        try:
            module = family.build(config)
        except config_errors() as e:
            raise UserError(f"config.json: cannot build a {family.name} model from "
                            f"{p / 'config.json'} ({type(e).__name__}: {_brief(e)})") from None
        if manifest.get("extra"):  # family units removed before channel pruning (MoE experts)
            try:
                family.apply_extra(module, manifest["extra"])
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                raise UserError(f"manifest: 'extra' does not fit this {family.name} model "
                                f"({type(e).__name__}: {_brief(e)})") from None
        if manifest.get("hidden") is not None:  # the residual width, before the per-Linear shapes
            _apply_hidden(family, module, manifest["hidden"])
        _apply_manifest(family, module, manifest)
        try:
            missing, unexpected = module.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise UserError(f"weights: {p} does not match its manifest "
                            f"({str(e).splitlines()[1 if len(str(e).splitlines()) > 1 else 0].strip()})") from None
        if missing or unexpected:
            raise UserError(f"weights: {p} does not match the {family.name} architecture "
                            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    _to_float32(module)
    module.eval()
    return TSModel(family, module, source=str(p), manifest=manifest)


def _to_float32(module) -> None:
    """Weights stored in half precision (bf16/fp16 checkpoints, as many published ones and
    the bundled ``small`` are) are computed in float32: scoring, surgery, fine-tuning and
    export all work in float32 (the GPU path adds autocast itself). Other dtypes are kept."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.dtype in (torch.bfloat16, torch.float16):
            t.data = t.data.float()


def from_config(config: dict) -> TSModel:
    """A randomly initialised dense model of the family that ``config`` names."""
    family = detect(config)
    return TSModel(family, family.build(config).eval(), source="config")


__all__ = ["TSModel", "load", "from_config", "bundled_path", "get"]
