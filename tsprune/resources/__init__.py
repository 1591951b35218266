"""Package data shipped with tsprune: the pretrained checkpoint and a demo dataset.

* ``nano/``: tsprune's own TimesFM 2.5 checkpoint (``config.json``, ``model.safetensors``,
  ``MODEL_CARD.md``), loadable offline with
  ``TimesFm2_5ModelForPrediction.from_pretrained(default_model_dir())``.
* ``small/`` (issue 19): a 27.36M-parameter checkpoint of the same format (bf16 shards,
  computed in float32; ``MODEL_CARD.md``), ``tsprune.load("small")`` / ``--model small``;
  :func:`available_models` lists the names whose directory is present.
* ``data/greensboro_tmy3_hourly.csv.gz``: a real hourly weather/solar dataset (see
  ``data/DATA_CARD.md``), the default ``--data`` of ``tsprune prune``.
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: Name of the shipped checkpoint directory.
DEFAULT_MODEL = "nano"
#: Names of the bundled checkpoints (``tsprune.load(name)``, ``--model name``).
BUNDLED_MODELS = ("nano", "small")
#: File name of the bundled demo dataset.
DEMO_DATASET = "greensboro_tmy3_hourly.csv.gz"


def default_model_dir() -> Path:
    """Directory of the shipped pretrained checkpoint (a Hugging Face model directory)."""
    return _HERE / DEFAULT_MODEL


def available_models() -> tuple[str, ...]:
    """The bundled names whose checkpoint directory (with ``config.json``) is installed."""
    return tuple(n for n in BUNDLED_MODELS if (_HERE / n / "config.json").exists())


def bundled_path(name: str) -> Path | None:
    """Path of a checkpoint shipped inside tsprune (tsprune/resources/<name>), None if absent."""
    p = _HERE / name
    return p if (p / "config.json").exists() else None


def demo_dataset_path() -> Path:
    """Path of the bundled demo dataset: gzip CSV, a ``date`` column + 7 numeric channels, hourly."""
    return _HERE / "data" / DEMO_DATASET


__all__ = ["default_model_dir", "demo_dataset_path", "available_models", "DEFAULT_MODEL", "BUNDLED_MODELS",
           "DEMO_DATASET"]
