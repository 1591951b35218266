"""ONNX export: graphs (onnx_export), per-family adapters, variants (fp16, int8,
simplified) with parity and accuracy sidecars, FLOPs, runtime sessions, Triton.

The public names load on first use: `tsprune --help` imports tsprune.export.args, which
must not pull in torch and onnx through this package's __init__ (seconds on a busy CPU).
"""
import importlib

_LAZY = {name: "onnx_export" for name in ("ExportError", "check_parity", "export_onnx", "onnx_parity")}
_LAZY["deployed_profile"] = "profile"
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
