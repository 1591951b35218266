"""`PretrainConfig`: every knob of `tsprune pretrain`, one field per CLI flag.

The model itself is a `transformers` ``TimesFm2_5Config``: by default one of the
:data:`MODEL_PRESETS`, else the JSON file named by ``model_config`` (a ``config.json``
of any TimesFM 2.5 checkpoint works; its ``context_length``/``horizon_length`` are kept).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from tsprune.errors import bad_arg

#: Architectures, as ``TimesFm2_5Config`` overrides. ``nano`` is the shipped checkpoint,
#: ``small`` the second one (issue 19).
#: Common to all: patch 32, context 512, horizon 128, 9 quantiles, no bias, the
#: continuous quantile head off (``output_quantile_len`` 1 keeps it tiny and unused),
#: ``infer_is_positive`` off.
MODEL_PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
                 intermediate_size=64),
    "micro": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, head_dim=32,
                  intermediate_size=512),
    "nano": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, head_dim=64,
                 intermediate_size=1024),
    "nano6": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, head_dim=64,
                  intermediate_size=1024),
    # 27.36M parameters (issue 19: 20-50M). d512 x 8 layers (64 heads, 8 FFNs to prune)
    # was faster than d768 x 4 (32.2M) on the 2-core AMX CPU: see docs/pretraining.md.
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, head_dim=64,
                  intermediate_size=2048),
}

_COMMON = dict(
    patch_length=32, context_length=512, horizon_length=128, output_quantile_len=1,
    use_continuous_quantile_head=False, force_flip_invariance=False, infer_is_positive=False,
    max_position_embeddings=1024, decode_index=5,
)

_CHOICES = {"corpus": ("v1", "v2"), "schedule": ("wsd", "cosine"), "precision": ("auto", "bf16", "fp32"), "device": ("auto", "cpu", "cuda"),
            "save_dtype": ("float32", "bfloat16")}


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining settings; validated on construction (raises `UserError`)."""

    model: str = "nano"  #: a preset of MODEL_PRESETS
    model_config: str | None = None  #: path to a TimesFm2_5Config JSON; overrides ``model``
    context_length: int = 512  #: training context (a multiple of the patch, 32)
    steps: int = 20_000  #: optimizer steps
    batch_size: int = 128  #: series per step (each gives context/32 supervised positions)
    lr: float = 1e-3  #: peak AdamW learning rate
    schedule: str = "wsd"  #: wsd (warm-up, stable, decay) or cosine (warm-up, cosine decay)
    decay_frac: float = 0.2  #: wsd: fraction of ``steps`` spent decaying (cosine) to the floor
    min_lr_ratio: float = 0.05  #: final learning rate as a fraction of ``lr``
    warmup_steps: int = 200  #: linear warm-up steps
    weight_decay: float = 0.01  #: AdamW weight decay on matrices (not norms or scales)
    grad_clip: float = 1.0  #: global gradient-norm clip (0 disables)
    seed: int = 0  #: seeds the model init and the corpus (batch k is a function of seed, k)
    p_kernel: float = 0.3  #: fraction of KernelSynth series (the rest: structural)
    p_mixup: float = 0.15  #: fraction of rows replaced by a TSMixup
    p_flip: float = 0.5  #: sign-flip augmentation probability
    corpus: str = "v1"  #: corpus version (tsprune.pretrain.corpus.CORPORA): v1 (nano's) or v2 (wider)
    flip_invariance: bool = False  #: config.force_flip_invariance of the saved model
    precision: str = "auto"  #: auto (bf16 autocast on CUDA and on CPUs with AMX), bf16, fp32
    device: str = "auto"  #: auto, cpu, cuda
    threads: int = 0  #: torch CPU threads (0: torch default)
    workers: int = 1  #: data-generating worker processes (0: in the training process)
    checkpoint_every: int = 500  #: steps between checkpoints (0: only at the end)
    log_every: int = 50  #: steps between lines of train_log.jsonl
    save_dtype: str = "float32"  #: dtype of the saved model.safetensors
    extra_overrides: tuple = field(default=(), repr=False)  #: (key, value) config overrides

    def __post_init__(self):
        if self.model_config is None and self.model not in MODEL_PRESETS:
            raise bad_arg("--model", self.model, f"one of {', '.join(MODEL_PRESETS)}")
        if self.model_config is not None and not Path(self.model_config).is_file():
            raise bad_arg("--model-config", self.model_config, "a TimesFm2_5Config JSON file")
        positive = ("steps", "batch_size", "warmup_steps", "log_every", "context_length")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "warmup_steps" else 1):
                raise bad_arg(f"--{name.replace('_', '-')}", v, "a positive integer")
        for name in ("checkpoint_every", "threads", "workers", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad_arg(f"--{name.replace('_', '-')}", v, "a non-negative integer")
        if self.context_length % 32:
            raise bad_arg("--context-length", self.context_length, "a multiple of the patch length 32")
        if not (0 < self.lr < 1):
            raise bad_arg("--lr", self.lr, "a number in (0, 1)")
        for name in ("min_lr_ratio", "decay_frac", "p_kernel", "p_mixup", "p_flip"):
            v = getattr(self, name)
            if not (0 <= v <= 1):
                raise bad_arg(f"--{name.replace('_', '-')}", v, "a number in [0, 1]")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise bad_arg("--weight-decay/--grad-clip", (self.weight_decay, self.grad_clip),
                          "non-negative numbers")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise bad_arg(f"--{name.replace('_', '-')}", getattr(self, name), f"one of {', '.join(allowed)}")

    def model_overrides(self) -> dict:
        """The ``TimesFm2_5Config`` keyword arguments of this run."""
        if self.model_config is not None:
            try:
                kw = json.loads(Path(self.model_config).read_text())
            except (OSError, ValueError) as e:
                raise bad_arg("--model-config", self.model_config, f"a readable JSON file ({e})") from e
            if kw.get("model_type", "timesfm2_5") != "timesfm2_5":
                raise bad_arg("--model-config", kw.get("model_type"), "model_type 'timesfm2_5'")
            kw = {k: v for k, v in kw.items() if k not in ("model_type", "transformers_version",
                                                           "architectures", "dtype", "torch_dtype")}
        else:
            kw = {**_COMMON, **MODEL_PRESETS[self.model]}
        kw["num_key_value_heads"] = kw.get("num_key_value_heads", kw.get("num_attention_heads"))
        kw["force_flip_invariance"] = self.flip_invariance
        kw.update(dict(self.extra_overrides))
        return kw

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["extra_overrides"] = [list(kv) for kv in self.extra_overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        d = dict(d)
        d["extra_overrides"] = tuple(tuple(kv) for kv in d.get("extra_overrides", ()))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one ``--flag`` per `PretrainConfig` field (defaults from the dataclass)."""
    for f in dataclasses.fields(PretrainConfig):
        if f.name == "extra_overrides":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
            continue
        typ = {"int": int, "float": float}.get(str(f.type), str)
        kw = dict(type=typ, default=f.default, dest=f.name)
        if f.name in _CHOICES:
            kw["choices"] = _CHOICES[f.name]
        if f.name == "model":
            kw["choices"] = tuple(MODEL_PRESETS)
        parser.add_argument(flag, **kw)
    return parser


def from_args(ns: argparse.Namespace) -> PretrainConfig:
    """Build a `PretrainConfig` from a namespace filled by :func:`add_cli_arguments`."""
    names = {f.name for f in dataclasses.fields(PretrainConfig)} - {"extra_overrides"}
    return PretrainConfig(**{k: getattr(ns, k) for k in names if hasattr(ns, k)})
