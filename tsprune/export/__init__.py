from .onnx_export import ExportError, export_onnx, onnx_parity  # noqa: F401
