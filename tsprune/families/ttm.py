"""TTM r2 / TinyTimeMixer (granite-tsfm ``tsfm_public`` TinyTimeMixerForPrediction,
model_type ``tinytimemixer``; checked against granite-tsfm 0.3.11).

An MLP-mixer, no attention: the context (fixed length ``context_length``) is standardised
(std scaler over observed steps), cut into patches, embedded, mixed by TinyTimeMixerLayers
(patch mixer over the patch axis, feature mixer over the hidden axis, each an MLP
fc1 -> GELU -> fc2 with a softmax gate and a residual; optionally at several adaptive
patching levels), adapted to the decoder width, mixed again by the decoder, flattened and
mapped by the forecast head's final Linear ``head.base_forecast_block``
(num_patches * decoder_d_model -> prediction_length), then de-standardised. One forward
predicts ``prediction_length`` steps (or ``prediction_filter_length``): one pruned model
per horizon, no roll-out. Univariate windows go in as one channel (channel-independent,
``common_channel`` mode).

Masked Linears (METHOD.md s.7): only the forecast head's final Linear (the paper's
choice, the default). Its pruned input features (flattened decoder outputs) are removed
physically: the head then gathers the kept features (``FeatureSelect``, a saved index
buffer) and its Linear has fewer columns; its pruned outputs (forecast steps) are zeroed,
not removed. Option: set ``tsprune_mask_mixers: true`` in the model's config.json (or
``model.config.tsprune_mask_mixers = True`` before scoring) to also mask fc1/fc2 of every
mixer MLP of encoder and decoder; their hidden neurons are sliced (GELU(0) = 0), an MLP
with no neuron left becomes its output bias; residual channels stay dense.

Context: longer contexts keep the last ``context_length`` steps; shorter ones are
left-padded with zeros marked unobserved (``past_observed_mask``), so the scaler ignores
the padding. Horizons longer than the checkpoint's prediction length are refused (pick a
checkpoint with a longer one); shorter ones read the first steps. Checkpoints with
resolution prefix tuning get the frequency token ``tsprune_freq_token`` from the config
(default 0, granite-tsfm's "oov").

Native loss: MSE of the de-standardised forecast against the target (granite-tsfm's own
``loss="mse"``), over the first H steps.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.errors import UserError, bad_arg, missing_extra
from tsprune.hfutil import from_pretrained_local
from tsprune.prune.structure import BlockStructure, FFNGroup, ModelStructure

from .base import Constant, Export, Family, Forecast
from .common import last_window

GRANITE_PIN = "granite-tsfm==0.3.11"
HEAD = "head.base_forecast_block"


def _upstream():
    """(TinyTimeMixerConfig, TinyTimeMixerForPrediction), imported on first use.

    granite-tsfm configures the root logger on import (basicConfig at INFO); that is
    undone when the application had not configured logging itself."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # lazy: optional dependency (granite-tsfm, tsprune[ttm])
        from tsfm_public.models.tinytimemixer import TinyTimeMixerConfig, TinyTimeMixerForPrediction
    except ImportError as e:
        base = missing_extra("granite-tsfm (tsfm_public)", "ttm", e, module="tsfm_public")
        if "not installed" not in str(base):
            raise base from e
        raise ImportError(f"{base} && pip install --no-deps '{GRANITE_PIN}' (granite-tsfm pins "
                          f"torch<2.12; --no-deps keeps your torch)") from e
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    return TinyTimeMixerConfig, TinyTimeMixerForPrediction


class FeatureSelect(nn.Module):
    """Flatten (B, C, P, d) -> (B, C, P*d) and keep the features ``index`` (a saved
    buffer): the input of a head Linear whose pruned columns were removed."""

    def __init__(self, index: torch.Tensor):
        super().__init__()
        self.register_buffer("index", index.to(torch.long).clone())

    def forward(self, x):
        return x.flatten(start_dim=-2).index_select(-1, self.index)


def _check_supported(cfg) -> None:
    """Refuse the TinyTimeMixer variants whose inputs tsprune cannot give (exogenous
    channels, categorical inputs, channel mixing over several channels) or whose output is
    not one point forecast."""
    bad = []
    if getattr(cfg, "enable_forecast_channel_mixing", False):
        bad.append("enable_forecast_channel_mixing")
    if getattr(cfg, "exogenous_channel_indices", None):
        bad.append("exogenous_channel_indices")
    if getattr(cfg, "prediction_channel_indices", None) not in (None, [0]):
        bad.append("prediction_channel_indices")
    if getattr(cfg, "categorical_vocab_size_list", None):
        bad.append("categorical_vocab_size_list")
    if getattr(cfg, "multi_quantile_head", False):
        bad.append("multi_quantile_head")
    if getattr(cfg, "decompose", False):
        bad.append("decompose")
    if getattr(cfg, "loss", "mse") == "nll":
        bad.append("loss=nll")
    mixing = "mix_channel" in (cfg.mode, getattr(cfg, "decoder_mode", "common_channel"))
    if mixing and cfg.num_input_channels != 1:
        bad.append(f"mix_channel with num_input_channels={cfg.num_input_channels}")
    if bad:
        raise UserError(f"--model: this TinyTimeMixer checkpoint uses {', '.join(bad)}; tsprune "
                        f"supports channel-independent point forecasters (TTM r1/r2 zero-shot "
                        f"checkpoints)")


class TTM(Family):
    name = "ttm"
    extra = "ttm"
    autoregressive = False
    prune_epochs = 10             # validation-driven, patience 1 (METHOD.md s.3)
    finetune_epochs = 10          # METHOD.md s.5: up to 10 with patience 1
    default_ratio = 0.03
    ratio_grid = (0.01, 0.02, 0.03, 0.04, 0.05)
    default_lr = 1e-4
    lr_grid = (1e-3, 1e-4, 1e-5)
    depth_unsupported = ("its mixer layers sit in nested per-level stacks (adaptive patching) and the "
                         "encoder and decoder widths differ: not a single plain stack of blocks")

    # ---- loading --------------------------------------------------------------------
    def build(self, config: dict) -> nn.Module:
        cfg_cls, model_cls = _upstream()
        cfg = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version",
                                                             "model_type", "dtype", "torch_dtype")}
        c = cfg_cls(**cfg)
        _check_supported(c)
        return model_cls(c).eval()

    def load_dense(self, path, config: dict) -> nn.Module:
        _, model_cls = _upstream()
        model = from_pretrained_local(model_cls, path, self.name)
        _check_supported(model.config)
        return model

    def config_dict(self, model: nn.Module) -> dict:
        return model.config.to_dict()

    def max_context(self, model) -> int:
        return int(model.config.context_length)

    def output_horizon(self, model) -> int:
        cfg = model.config
        return int(cfg.prediction_filter_length or cfg.prediction_length)

    # ---- structure --------------------------------------------------------------------
    @staticmethod
    def masks_mixers(model) -> bool:
        return bool(getattr(model.config, "tsprune_mask_mixers", False))

    def prune_scope(self, model: nn.Module) -> str:
        if self.masks_mixers(model):
            n = sum(len(b.ffn) for b in self.structure(model).blocks) - 1
            return f"the forecast head's input features and the neurons of {n} mixer MLP(s) (tsprune_mask_mixers)"
        return ("the forecast head's input features only (the paper's mode; set tsprune_mask_mixers: true "
                "in config.json to prune the mixer MLPs too)")

    def structure(self, model: nn.Module) -> ModelStructure:
        """One block per TinyTimeMixerLayer (encoder then decoder) when mixers are masked,
        then a last block for the head. The head is an FFN group without input Linears:
        its neurons are the flattened decoder features it reads."""
        blocks = []
        if self.masks_mixers(model):
            for name, layer in model.named_modules():
                if type(layer).__name__ != "TinyTimeMixerLayer":
                    continue
                ffn, dead = [], []
                for part in ("channel_feature_mixer", "patch_mixer", "feature_mixer"):
                    if not hasattr(layer, part):
                        continue
                    owner = f"{name}.{part}.mlp"
                    if isinstance(getattr(layer, part).mlp, Constant):
                        dead.append(owner)
                    else:
                        ffn.append(FFNGroup(owner=owner, inputs=(f"{owner}.fc1",), output=f"{owner}.fc2"))
                blocks.append(BlockStructure(index=len(blocks), ffn=tuple(ffn), dead_ffn=tuple(dead)))
        blocks.append(BlockStructure(index=len(blocks), ffn=(FFNGroup(owner="head", inputs=(), output=HEAD),)))
        return ModelStructure(blocks)

    def resize_attention(self, model, group, shape) -> None:
        raise TypeError("TinyTimeMixer has no attention to resize")

    def resize_ffn(self, model, group: FFNGroup, width: int) -> None:
        if group.owner == "head":
            head = model.head
            lin = model.get_submodule(HEAD)
            kept = getattr(lin, "tsprune_kept_cols", None)   # set by surgery; None on reload
            if kept is None:
                kept = torch.arange(width)
            if isinstance(head.flatten, FeatureSelect):      # pruned again: compose
                kept = head.flatten.index[kept.to(head.flatten.index.device)]
            head.flatten = FeatureSelect(kept.to(lin.weight.device))
            return
        if width == 0:
            fc2 = model.get_submodule(group.output)
            model.set_submodule(group.owner, Constant(fc2.out_features, fc2.bias))

    # ---- forecasting --------------------------------------------------------------------
    def _predict(self, model, context: torch.Tensor) -> torch.Tensor:
        """context (B, L) -> de-standardised forecast (B, output_horizon)."""
        cfg = model.config
        x, obs = last_window(context.float(), int(cfg.context_length))  # padding unobserved
        kw = {}
        if cfg.resolution_prefix_tuning:
            kw["freq_token"] = torch.full((x.shape[0],), int(getattr(cfg, "tsprune_freq_token", 0)),
                                          dtype=torch.long, device=x.device)
        out = model(past_values=x[..., None], past_observed_mask=obs[..., None], return_loss=False,
                    return_dict=True, **kw)
        return out.prediction_outputs[..., 0]

    def _check_horizon(self, model, horizon: int) -> None:
        h_max = self.output_horizon(model)
        if horizon > h_max:
            raise bad_arg("--horizon", horizon, f"at most {h_max}, this TTM checkpoint's prediction "
                          f"length (TTM predicts one fixed horizon; use a checkpoint with a longer "
                          f"one, e.g. ttm-r2 512-192/336/720)")

    def forecast(self, model, context: torch.Tensor, horizon: int) -> Forecast:
        self._check_horizon(model, horizon)
        return Forecast(self._predict(model, context)[:, :horizon])

    def loss(self, model, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h = target.shape[1]
        self._check_horizon(model, h)
        return F.mse_loss(self._predict(model, context)[:, :h], target.float())

    def export_module(self, model, context: int, horizon: int) -> nn.Module:
        self._check_horizon(model, horizon)
        return Export(self, model, horizon)


FAMILY = TTM()
