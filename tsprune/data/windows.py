"""Channel-independent forecasting windows over a (C, N) series, without copies.

Window k of channel c has its target at rows [t, t + H) and its context at
rows [t - L, t), with t = first_target + k * stride. Order is channel-major:
item i is channel i // per_channel, window i % per_channel, so all windows of
the first column come first, in time order.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from tsprune.errors import bad_arg


def count_windows(first_target: int, end: int, horizon: int, stride: int) -> int:
    """Windows per channel whose targets start at first_target + k*stride and end by `end`."""
    span = end - first_target - horizon
    return span // stride + 1 if span >= 0 else 0


class WindowDataset(Dataset):
    """(context float32 (L,), target float32 (H,)) items; see the module docstring.

    series: (C, N) float32 tensor, shared (never copied); first_target: row of
    the first target; end: rows >= end are not used; first_target >= context.
    """

    def __init__(self, series: torch.Tensor, first_target: int, end: int, context: int,
                 horizon: int, stride: int = 1, columns=None, index: torch.Tensor | None = None):
        if first_target < context:
            raise ValueError(f"first_target {first_target} < context {context}")
        self.context, self.horizon, self.stride = int(context), int(horizon), int(stride)
        self.first_target, self.end = int(first_target), int(end)
        self.columns = tuple(columns) if columns is not None else tuple(range(series.shape[0]))
        self.series = series
        self.per_channel = count_windows(first_target, end, horizon, stride)
        lo = first_target - context
        # (C, per_channel, L + H): a strided view of `series`; a step beyond the rows gives
        # the same single window as the stride itself and never overflows int64
        step = min(stride, max(1, end - lo))
        self.view = series[:, lo:end].unfold(1, context + horizon, step)[:, : self.per_channel]
        self.index = index  # sorted flat item ids of a subset, or None for all

    @property
    def n_channels(self) -> int:
        return self.view.shape[0]

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else self.n_channels * self.per_channel

    def _flat(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        i %= n
        return int(self.index[i]) if self.index is not None else i

    def locate(self, i: int) -> tuple[int, int]:
        """(channel, row of the first target) of item i."""
        c, k = divmod(self._flat(i), self.per_channel)
        return c, self.first_target + k * self.stride

    def __getitem__(self, i):
        c, k = divmod(self._flat(int(i)), self.per_channel)
        window = self.view[c, k]
        return window[: self.context], window[self.context:]

    def subset(self, n: int, seed: int = 0) -> "WindowDataset":
        """n items drawn without replacement (seeded), kept in dataset order; all if n >= len."""
        if n < 1:
            raise bad_arg("n", n, "a positive number of windows")
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self), generator=g)[:n].sort().values
        flat = self.index[pick] if self.index is not None else pick
        out = WindowDataset.__new__(WindowDataset)
        out.__dict__.update(self.__dict__, index=flat)
        return out

    def _ids(self) -> torch.Tensor:
        return self.index if self.index is not None else torch.arange(len(self))

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items `ids` as (context (B, L), target (B, H)) contiguous tensors (one copy)."""
        flat = self.index[ids] if self.index is not None else ids
        c, k = flat // self.per_channel, flat % self.per_channel
        return self.view[c, k, : self.context], self.view[c, k, self.context:]

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, with_ids: bool = False):
        """Yield (context (B, L), target (B, H)) batches; order as the dataset unless shuffle.
        with_ids: yield (window ids (B,) int64, context, target) instead, where a window id
        is the item's flat index in the full dataset (channel * per_channel + k), the same in
        every subset (what a per-window cache is keyed by)."""
        if batch_size < 1:
            raise bad_arg("batch_size", batch_size, "a positive integer")
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle \
            else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for s in range(0, stop, batch_size):
            items = order[s: s + batch_size]
            if with_ids:
                yield (self.window_ids(items), *self.gather(items))
            else:
                yield self.gather(items)

    def window_ids(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) int64 window ids (see ``batches``) of items ``items`` (default: every item)."""
        ids = self._ids()
        return ids if items is None else ids[items]

    def n_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item as (context (n, L), target (n, H)); copies n*(L+H) floats."""
        return self.gather(torch.arange(len(self)))

    def channels(self) -> torch.Tensor:
        """(n,) int64 channel of each item."""
        flat = self._ids()
        return flat // self.per_channel

    def __repr__(self) -> str:
        return (f"WindowDataset({len(self)} windows = {self.n_channels} channels x "
                f"{self.per_channel}{' (subset)' if self.index is not None else ''}, "
                f"context={self.context}, horizon={self.horizon}, stride={self.stride}, "
                f"targets from row {self.first_target})")
