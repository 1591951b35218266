"""ONNX export: graphs (onnx_export), per-family adapters, variants (fp16, int8,
simplified) with parity and accuracy sidecars, FLOPs, runtime sessions, Triton."""
from .onnx_export import ExportError, check_parity, export_onnx, onnx_parity  # noqa: F401
