"""The triton backend: torch.library glue around the kernels in kernels/.

The kernels live in the top-level kernels/ folder. A regular install ships
them as ``tsprune._kernels`` (CMake installs the folder there). When tsprune
is imported from a source checkout (an editable install, or the tree on
PYTHONPATH), the source folder is loaded instead, as the private package
``tsprune._kernels_src``, so edits to kernels/ are picked up without
reinstalling (the editable finder would otherwise serve the copy made at
install time). Never a top-level ``kernels`` module: the Hugging Face kernel
hub owns that name. They are imported on first use only, since importing
them imports triton and decorates the kernels: set TRITON_INTERPRET=1 before
that to run them on CPU tensors.

    tsprune::pack_triton, tsprune::fused_importance_triton,
    tsprune::fused_importance_from_grad_triton
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ._common import as_btd, gather_shape, index_in_range


def importable() -> bool:
    """triton is installed (not imported: that is slow)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_SRC_PACKAGE = "tsprune._kernels_src"


def source_kernels_dir() -> Optional[Path]:
    """<checkout>/kernels if tsprune is imported from a source checkout, else None."""
    root = Path(__file__).resolve().parents[2]
    src = root / "kernels"
    if (src / "configs.py").is_file() and (root / "csrc" / "bindings.cpp").is_file():
        return src
    return None


def kernels_package() -> str:
    """Name of the package holding the Triton kernels (loads the source one on first call)."""
    if _SRC_PACKAGE in sys.modules:
        return _SRC_PACKAGE
    src = source_kernels_dir()
    if src is None:
        return "tsprune._kernels"
    # kernels/ has no __init__.py (so that it never shadows Hugging Face's `kernels`):
    # the package object is made here, and its submodules load from its __path__.
    spec = importlib.machinery.ModuleSpec(_SRC_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(src)]
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_SRC_PACKAGE] = mod
    return _SRC_PACKAGE


def kernels(name: str):
    """The kernel module <package>.<name> (imports triton)."""
    return importlib.import_module(f"{kernels_package()}.{name}")


def _device_ctx(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def pack_impl(tensors: list[Tensor], rows: list[Optional[Tensor]], cols: list[Optional[Tensor]],
              dtype: Optional[torch.dtype]) -> list[Tensor]:
    """Body of tsprune::pack_triton (tsprune.ops calls it directly in plain eager mode)."""
    for i, (w, r, c) in enumerate(zip(tensors, rows, cols)):
        index_in_range(r, w.shape[0], f"rows for tensors[{i}]")
        if w.dim() == 2:
            index_in_range(c, w.shape[1], f"cols for tensors[{i}]")
    if not tensors:
        return []
    with _device_ctx(tensors[0].device):
        return kernels("gather").pack(tensors, rows, cols, dtype)


def importance_impl(x: Tensor, g: Optional[Tensor], imp: Tensor, out_abs: Tensor, alpha: float,
                    first: bool) -> None:
    """Body of the fused_importance_*triton ops (g None: x is gb (B, d))."""
    with _device_ctx(x.device):
        kernels("importance").launch(x if g is None else as_btd(x), None if g is None else as_btd(g),
                                     imp, out_abs, alpha, first)


@torch.library.custom_op("tsprune::pack_triton", mutates_args=())
def pack_triton(tensors: list[Tensor], rows: list[Optional[Tensor]], cols: list[Optional[Tensor]],
                dtype: Optional[torch.dtype]) -> list[Tensor]:
    """Gather every entry with one Triton launch per (source, target) dtype pair."""
    return pack_impl(tensors, rows, cols, dtype)


@pack_triton.register_fake
def _(tensors, rows, cols, dtype):
    return [torch.empty(gather_shape(w, r, c), dtype=dtype or w.dtype, device=w.device)
            for w, r, c in zip(tensors, rows, cols)]


@torch.library.custom_op("tsprune::fused_importance_triton", mutates_args=("imp", "out_abs"))
def fused_importance_triton(x: Tensor, g: Tensor, imp: Tensor, out_abs: Tensor, alpha: float, first: bool) -> None:
    """EMA of the Taylor score from x and g (B, *, d) into imp; |imp| into out_abs."""
    importance_impl(x, g, imp, out_abs, alpha, first)


@torch.library.custom_op("tsprune::fused_importance_from_grad_triton", mutates_args=("imp", "out_abs"))
def fused_importance_from_grad_triton(gb: Tensor, imp: Tensor, out_abs: Tensor, alpha: float, first: bool) -> None:
    """EMA of the Taylor score from per-sample gradients gb (B, d)."""
    importance_impl(gb, None, imp, out_abs, alpha, first)


fused_importance_triton.register_fake(lambda x, g, imp, out_abs, alpha, first: None)
fused_importance_from_grad_triton.register_fake(lambda gb, imp, out_abs, alpha, first: None)
