"""Supervised PatchTST (Nie et al., ICLR 2023) trained from scratch: the paper's specialised
baseline, as transformers' PatchTSTForPrediction.

    x (B, L) --instance norm--> patches (16, stride 8) --Linear--> + positions
      --> 3 x [attention, BatchNorm, FFN, BatchNorm] (post-norm) --> flatten --> Linear --> (B, H)

Channel independence: one set of weights for every channel; windows are univariate, so
channels are simply items of the batch (as DLinear). Defaults follow the paper's ETTh1
setting (d_model 16, 4 heads, FFN 128, 3 layers, dropout 0.3) with a short schedule: Adam
with a one-cycle learning rate, early stopping on the validation MSE.

Measured (ETTh1, context 336, horizon 96, seed 0, 1 thread): test MSE 0.373, MAE 0.396
(the paper's PatchTST/42: 0.375 / 0.400) after 10 epochs, 126 s of CPU time.

The trained network is a regular `patchtst` family model: ``model.tsmodel()`` gives a
TSModel that tsprune can prune, save and export.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tsprune.baselines.training import check, fit, val_mse
from tsprune.errors import bad_arg


class SupervisedPatchTST(nn.Module):
    """x (B, L) float32 -> forecast (B, H); wraps a PatchTSTForPrediction (``.model``)."""

    def __init__(self, model: nn.Module, horizon: int):
        super().__init__()
        # lazy: tsprune.families loads tsprune.prune (~0.1 s), which
        # `import tsprune.baselines` (DLinear, seasonal naive) does not need
        from tsprune.families import get
        self.family = get("patchtst")
        self.model = model
        self.horizon = int(horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.family.forecast(self.model, x, self.horizon).point

    def tsmodel(self):
        """The network as a tsprune TSModel (family ``patchtst``)."""
        from tsprune.model import TSModel  # lazy: as tsprune.families in __init__
        return TSModel(self.family, self.model.eval(), source="train_patchtst")


def patchtst_config(context: int, horizon: int, *, d_model: int = 16, heads: int = 4,
                    ffn_dim: int = 128, layers: int = 3, patch_length: int = 16,
                    patch_stride: int = 8, dropout: float = 0.3) -> dict:
    """config.json fields of the supervised PatchTST (transformers PatchTSTConfig)."""
    return dict(model_type="patchtst", architectures=["PatchTSTForPrediction"],
                num_input_channels=1, context_length=context, prediction_length=horizon,
                patch_length=patch_length, patch_stride=patch_stride, d_model=d_model,
                num_attention_heads=heads, ffn_dim=ffn_dim, num_hidden_layers=layers,
                norm_type="batchnorm", pre_norm=False, pooling_type=None, head_dropout=0.0,
                ff_dropout=dropout, path_dropout=dropout, positional_dropout=dropout,
                attention_dropout=0.0, positional_encoding_type="sincos", scaling="std",
                share_embedding=True, share_projection=True, loss="mse")


def train_patchtst(prepared, context: int | None = None, horizon: int | None = None, *,
                   epochs: int = 10, lr: float = 2e-3, batch_size: int = 128, patience: int = 3,
                   windows_per_epoch: int | None = 16384, d_model: int = 16, heads: int = 4,
                   ffn_dim: int = 128, layers: int = 3, patch_length: int = 16,
                   patch_stride: int = 8, dropout: float = 0.3,
                   max_train_windows: int | None = None, max_val_windows: int | None = 8192,
                   threads: int | None = None, seed: int = 0,
                   progress: bool = True) -> SupervisedPatchTST:
    """Train PatchTST on the train windows of `prepared` (a tsprune.data.Prepared).

    Adam (no weight decay) on MSE; every epoch draws a fresh random ``windows_per_epoch``
    of the stride-1 train windows (None: all of them; max_train_windows first restricts the
    pool to a seeded subset); one-cycle learning rate (30% linear warm-up to ``lr``, cosine
    down); early stopping on the validation MSE (a seeded subset of max_val_windows) with
    ``patience``; the best weights are restored. context/horizon default to the config.
    threads: torch threads while training (None: unchanged; 1 is fastest for this small
    model on a busy machine). About 2 CPU-minutes on ETTh1 with the defaults.
    Returns a SupervisedPatchTST in eval mode with ``history``: one dict per epoch.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience),
                        ("d_model", d_model), ("heads", heads), ("ffn_dim", ffn_dim),
                        ("layers", layers), ("patch_length", patch_length),
                        ("patch_stride", patch_stride)):
        check(name, value, lambda v: isinstance(v, int) and v >= 1, "a positive integer")
    for name, value in (("windows_per_epoch", windows_per_epoch), ("threads", threads)):
        check(name, value, lambda v: v is None or (isinstance(v, int) and v >= 1),
              "a positive integer or None")
    check("lr", lr, lambda v: isinstance(v, (int, float)) and v > 0, "a positive number")
    check("dropout", dropout, lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)")
    if d_model % heads:
        raise bad_arg("heads", heads, f"a divisor of d_model ({d_model})")
    train = prepared.windows("train", context=context, horizon=horizon)
    val = prepared.windows("val", context=context, horizon=horizon)
    if train.context <= patch_length:
        raise bad_arg("context", train.context, f"more than patch_length ({patch_length})")
    if max_train_windows is not None:
        train = train.subset(max_train_windows, seed)
    if max_val_windows is not None:
        val = val.subset(max_val_windows, seed + 1)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(train, val, epochs, lr, batch_size, patience, windows_per_epoch,
                      dict(d_model=d_model, heads=heads, ffn_dim=ffn_dim, layers=layers,
                           patch_length=patch_length, patch_stride=patch_stride, dropout=dropout),
                      seed, progress)
    finally:
        torch.set_num_threads(old_threads)


def _train(train, val, epochs, lr, batch_size, patience, per_epoch, arch, seed,
           progress) -> SupervisedPatchTST:
    from tsprune.families import get  # lazy: as in SupervisedPatchTST.__init__
    fam = get("patchtst")
    torch.manual_seed(seed)
    net = fam.build(patchtst_config(train.context, train.horizon, **arch))
    model = SupervisedPatchTST(net, train.horizon)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(train) if per_epoch is None else min(per_epoch, len(train))
    steps = epochs * -(-n // batch_size)
    warm = max(1, int(0.3 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    model.history = fit(net, train, lambda x, y: fam.loss(net, x, y), lambda: val_mse(model, val, 2048), opt,
                        epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
                        label="PatchTST", progress=progress, windows_per_epoch=per_epoch,
                        after_step=sched.step)
    model.eval()
    return model

