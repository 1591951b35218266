"""Small helpers around `transformers` shared by the family adapters that use it."""
from __future__ import annotations

import contextlib

from tsprune.errors import UserError


@contextlib.contextmanager
def hf_quiet():
    """Silence transformers' progress bars and info/warning logs for the duration (our own
    progress and errors are what a person should see); restores the previous state."""
    try:  # lazy: transformers is heavy; tsprune.model imports this module without loading it
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def config_errors() -> tuple[type[BaseException], ...]:
    """What building a model from a bad config.json raises: the usual Python errors and
    huggingface_hub's strict-dataclass validation errors (a field of the wrong type), which
    derive from Exception only."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, TypeError, KeyError)
    try:  # lazy: huggingface_hub takes ~0.2 s to import; only a model load asks for this
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # pragma: no cover - older huggingface_hub
        return errors
    return errors + (StrictDataclassError,)


# config.json keys that transformers writes itself, never arguments of a Config class
_WRITTEN_KEYS = ("architectures", "transformers_version", "model_type", "dtype", "torch_dtype")


def config_kwargs(config: dict) -> dict:
    """A config.json dict without the keys transformers writes itself: the keyword
    arguments of the model's Config class."""
    return {k: v for k, v in config.items() if k not in _WRITTEN_KEYS}


def from_pretrained_local(cls, path, family: str, extra_errors: tuple[type[BaseException], ...] = ()):
    """transformers' loader (it applies the v5 checkpoint-name conversions) restricted to
    local safetensors and no remote code; errors (config_errors() and ``extra_errors``, e.g.
    an upstream class's AssertionError on a bad config) become one-line UserErrors."""
    try:
        with hf_quiet():
            model = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                        trust_remote_code=False)
    except config_errors() + tuple(extra_errors) as e:
        raise UserError(f"--model: cannot load {path} as {family} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:300]})") from None
    return model.eval()


@contextlib.contextmanager
def eager_attention(module):
    """Run ``module`` with transformers' eager attention (plain matmuls) instead of SDPA,
    whose output reshape the ONNX decomposition cannot view; restores every config's
    ``_attn_implementation`` afterwards."""
    cfgs = {id(m.config): m.config for m in module.modules()
            if hasattr(getattr(m, "config", None), "_attn_implementation")}
    old = {k: c._attn_implementation for k, c in cfgs.items()}
    try:
        for c in cfgs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in cfgs.items():
            c._attn_implementation = old[k]
