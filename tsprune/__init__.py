"""tsprune: structured pruning of time-series foundation models (prune-then-finetune)."""
__version__ = "0.1.0"
