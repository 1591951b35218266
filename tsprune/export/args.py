"""The `tsprune export` flags. Light on purpose: `tsprune --help` builds every
subcommand's parser, so nothing here may import torch or onnx."""
from __future__ import annotations

from tsprune.table_flags import add_table_flags

FORMATS = ("onnx", "triton")
PRECISIONS = ("fp32", "fp16")
QUANTIZE = ("int8",)


def add_arguments(x) -> None:
    """The `tsprune export` flags, on the subparser ``x``."""
    x.add_argument("--model", default="nano", help="bundled model name or model directory (default: nano)")
    x.add_argument("--format", default="onnx", choices=FORMATS,
                   help="onnx: one .onnx file (+ .onnx.json sidecar); triton: a model repository")
    x.add_argument("--out", required=True, help="the .onnx file, or the Triton repository directory")
    x.add_argument("--context", type=int, default=512, help="context length (default: 512)")
    x.add_argument("--horizon", type=int, default=96, help="forecast horizon (default: 96)")
    x.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default) or fp16 (decoder in half precision, normalisation in fp32)")
    x.add_argument("--quantize", choices=QUANTIZE, help="int8: dynamic quantization of the MatMul weights")
    x.add_argument("--simplify", action="store_true", help="run onnxslim; kept only if fp32 parity holds")
    x.add_argument("--opset", type=int, default=18,
                   help="ONNX opset, 18-23 (default: 18; 23 emits native Attention/RMSNormalization)")
    x.add_argument("--static-context", action="store_true",
                   help="fix the context axis to --context (default: dynamic where the family allows it)")
    x.add_argument("--graph", choices=("optimized", "reference"), default="optimized",
                   help="optimized (the family's export adapter, default) or reference (its torch code as is)")
    add_table_flags(x, data_help="CSV/parquet file: measure the accuracy delta on its test windows "
                                 "(default: synthetic windows)", of=" of --data")
    x.add_argument("--stride", type=int, default=1, help="test window stride (default: 1)")
    x.add_argument("--eval-samples", type=int, default=2048,
                   help="test windows for the accuracy check, a seeded subsample (default: 2048; 0: all)")
    x.add_argument("--name", help="Triton model name (default: from the model directory)")
    x.add_argument("--max-batch-size", type=int, default=64, help="Triton max_batch_size (default: 64)")
    x.add_argument("--instances", type=int, default=1, help="Triton instance count (default: 1)")
    x.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="Triton instance kind: auto, cpu or cuda (default: auto)")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(season=None)
