"""Pretraining of tsprune's own small TimesFM 2.5 checkpoint on a synthetic corpus.

The CLI wires ``tsprune pretrain`` with::

    add_cli_arguments(subparser)            # one flag per PretrainConfig field
    run(from_args(ns), ns.out, resume=ns.resume)

See docs/pretraining.md. ``run`` loads on first use (it imports torch and transformers;
`tsprune --help` only needs the config's flags).
"""
from tsprune.pretrain.config import MODEL_PRESETS, PretrainConfig, add_cli_arguments, from_args

__all__ = ["PretrainConfig", "MODEL_PRESETS", "add_cli_arguments", "from_args", "run"]


def __getattr__(name):
    if name == "run":
        from tsprune.pretrain.train import run  # lazy: torch and transformers (see above)
        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
