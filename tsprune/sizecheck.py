"""Refuse a config.json whose sizes cannot fit in memory, before anything is built.

The parameter count is estimated from the usual size fields of transformer configs
(layers x (attention 4 d^2 + FFN 3 d f per expert)), searching nested sub-configs too;
a lower bound, so a refusal is never a false alarm about an ordinary model. It is
compared, as float32 bytes, with the memory available now (MemAvailable).
"""
from __future__ import annotations

import os

from tsprune.errors import UserError

_LAYERS = ("num_hidden_layers", "num_layers", "n_layers", "n_layer", "e_layers", "num_decoder_layers",
           "num_encoder_layers", "encoder_layers", "decoder_layers")
_WIDTH = ("hidden_size", "d_model", "n_embd", "hidden_dim")
_FFN = ("intermediate_size", "d_ff", "ffn_dim", "ffn_hidden_size", "moe_intermediate_size",
        "encoder_ffn_dim", "decoder_ffn_dim")
_EXPERTS = ("num_experts", "n_experts", "num_local_experts", "n_routed_experts")


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v) if v > 0 else None


def _dicts(config: dict, depth: int = 0):
    yield config
    if depth < 4:
        for v in config.values():
            if isinstance(v, dict):
                yield from _dicts(v, depth + 1)


def estimate_params(config: dict) -> tuple[float, dict]:
    """(estimated parameter count, the fields it used) of the largest (sub-)config."""
    best, used = 0.0, {}
    for c in _dicts(config):
        pick = lambda keys: {k: _num(c.get(k)) for k in keys if _num(c.get(k))}  # noqa: E731
        layers, width, ffn, experts = pick(_LAYERS), pick(_WIDTH), pick(_FFN), pick(_EXPERTS)
        if not width:
            continue
        L = max(sum(layers.values()), 1.0)
        d = max(width.values())
        f = max(ffn.values(), default=0.0)
        e = max(experts.values(), default=1.0)
        n = L * (4 * d * d + 3 * d * f * e)
        if n > best:
            best, used = n, {**layers, **width, **ffn, **experts}
    return best, used


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(config: dict, where) -> None:
    """UserError when ``config`` asks for more float32 parameters than memory can hold."""
    n, used = estimate_params(config)
    avail = available_bytes()
    if avail is None or n * 4 <= avail:
        return
    fields = ", ".join(f"{k} {v:g}" for k, v in used.items())
    raise UserError(f"config.json: {where} asks for about {n:.2g} parameters ({fields}): "
                    f"{n * 4 / 1e9:,.1f} GB as float32, more than the {avail / 1e9:,.1f} GB of "
                    "memory available; refusing to build it")
