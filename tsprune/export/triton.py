"""Triton Inference Server model repositories for exported graphs.

    REPO/<name>/config.pbtxt        platform onnxruntime_onnx, inputs/outputs from the graph
    REPO/<name>/1/model.onnx        the graph (any variant: fp32, fp16, int8)
    REPO/<name>/model.onnx.json     the variant's sidecar (parity, accuracy, FLOPs)

The model directory is written atomically (tsprune.atomic.atomic_dir): other models in
REPO are left as they are. With ``max_batch_size > 0`` Triton's dims omit the batch axis;
a dynamic context axis is ``-1``. The config is parsed with the ModelConfig protobuf that
ships in ``tritonclient`` when it is installed, and its names, types and dims are checked
against the ONNX graph.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from tsprune.atomic import atomic_dir
from tsprune.errors import bad_arg

PLATFORM = "onnxruntime_onnx"
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "cuda": "KIND_GPU"}
_DTYPES = {"FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "DOUBLE": "TYPE_FP64", "INT64": "TYPE_INT64",
           "INT32": "TYPE_INT32", "BFLOAT16": "TYPE_BF16", "BOOL": "TYPE_BOOL"}


def model_config_pb2():
    """tritonclient's generated model_config_pb2 module, loaded from its file (importing
    it as ``tritonclient.grpc.model_config_pb2`` needs grpcio, which parsing does not)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tritonclient is not installed; install it with: pip install tritonclient")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise ImportError(f"tritonclient has no {path.name} at {path.parent}; pip install -U tritonclient")
    mod_spec = importlib.util.spec_from_file_location("_tsprune_triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def _dims(dims: list, batched: bool) -> list[int]:
    """ONNX dims -> Triton dims: drop the batch axis when batched; symbolic -> -1."""
    out = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
    return out[1:] if batched else out


def config_text(name: str, io: dict, *, max_batch_size: int = 64, instances: int = 1,
                device: str = "auto", queue_delay_us: int = 100) -> str:
    """config.pbtxt for an ONNX graph whose inputs/outputs are ``io`` (graph.io_spec)."""
    if max_batch_size < 0:
        raise bad_arg("--max-batch-size", max_batch_size, "an integer >= 0 (0: no batching)")
    if instances < 1:
        raise bad_arg("--instances", instances, "an integer >= 1")
    if device not in KINDS:
        raise bad_arg("--device", device, " or ".join(KINDS))
    batched = max_batch_size > 0

    def tensors(items):
        blocks = []
        for tname, dtype, dims in items:
            if dtype not in _DTYPES:
                raise ValueError(f"triton: tensor {tname!r} has type {dtype}, which has no Triton type here")
            d = ", ".join(str(x) for x in _dims(dims, batched))
            blocks.append(f'  {{\n    name: "{tname}"\n    data_type: {_DTYPES[dtype]}\n    dims: [ {d} ]\n  }}')
        return ",\n".join(blocks)

    lines = [f'name: "{name}"', f'platform: "{PLATFORM}"', f"max_batch_size: {max_batch_size}",
             "input [", tensors(io["inputs"]), "]", "output [", tensors(io["outputs"]), "]"]
    if batched:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {int(queue_delay_us)}", "}"]
    lines += ["instance_group [", f"  {{\n    count: {instances}\n    kind: {KINDS[device]}\n  }}", "]"]
    return "\n".join(lines) + "\n"


def parse_config(text: str):
    """The ModelConfig message of a config.pbtxt (needs tritonclient)."""
    from google.protobuf import text_format  # lazy: needed only with tritonclient, an optional dependency
    pb2 = model_config_pb2()
    return text_format.Parse(text, pb2.ModelConfig())


def check_config(config, onnx_path) -> list[str]:
    """Problems between a parsed ModelConfig and the ONNX graph at ``onnx_path``: names,
    data types and dims of every input and output, batch axis. [] when they agree."""
    # lazy (here and in write_repo): onnx is heavy (.graph imports it too); config_text needs neither
    import onnx

    from .graph import io_spec

    pb2 = model_config_pb2()
    io = io_spec(onnx.load(str(onnx_path), load_external_data=False))
    problems = []
    if config.platform != PLATFORM:
        problems.append(f"platform {config.platform!r} is not {PLATFORM!r}")
    batched = config.max_batch_size > 0
    for kind, cfg_items, graph_items in (("input", config.input, io["inputs"]),
                                         ("output", config.output, io["outputs"])):
        graph = {n: (t, d) for n, t, d in graph_items}
        names = [c.name for c in cfg_items]
        if sorted(names) != sorted(graph):
            problems.append(f"{kind} names {sorted(names)} != graph {sorted(graph)}")
            continue
        for c in cfg_items:
            dtype, dims = graph[c.name]
            want_type = _DTYPES.get(dtype)
            got_type = pb2.DataType.Name(c.data_type)
            if got_type != want_type:
                problems.append(f"{kind} {c.name}: data_type {got_type} != graph {want_type}")
            if batched and (not dims or isinstance(dims[0], int) and dims[0] > 0):
                problems.append(f"{kind} {c.name}: max_batch_size > 0 but the graph's first axis is fixed")
            if list(c.dims) != _dims(dims, batched):
                problems.append(f"{kind} {c.name}: dims {list(c.dims)} != graph {_dims(dims, batched)}")
    return problems


def write_repo(onnx_path, repo, name: str, *, sidecar=None, max_batch_size: int = 64,
               instances: int = 1, device: str = "auto", validate: bool = True) -> dict:
    """Write REPO/<name> (config.pbtxt, 1/model.onnx[, model.onnx.json]) atomically from an
    exported graph. validate: parse the config with tritonclient's protobuf and check it
    against the graph (skipped, and said so, without tritonclient)."""
    import onnx  # lazy: onnx is heavy (see check_config)

    from .graph import io_spec

    if not name or "/" in name or name in (".", ".."):
        raise bad_arg("--name", name, "a model name without '/'")
    io = io_spec(onnx.load(str(onnx_path), load_external_data=False))
    text = config_text(name, io, max_batch_size=max_batch_size, instances=instances, device=device)
    validated = "skipped: tritonclient is not installed (pip install tritonclient)"
    if validate:
        try:
            config = parse_config(text)
        except ImportError:
            config = None
        if config is not None:
            problems = check_config(config, onnx_path)
            if problems:
                raise ValueError("triton: config.pbtxt does not match the graph: " + "; ".join(problems))
            validated = "parsed with tritonclient model_config_pb2; names, types and dims match the graph"
    repo = Path(repo)
    with atomic_dir(repo / name, arg="--out", command="export") as tmp:
        (tmp / "1").mkdir()
        shutil.copyfile(onnx_path, tmp / "1" / "model.onnx")
        (tmp / "config.pbtxt").write_text(text)
        if sidecar is not None and os.path.exists(sidecar):
            shutil.copyfile(sidecar, tmp / "model.onnx.json")
    return {"repo": str(repo), "name": name, "config": str(repo / name / "config.pbtxt"),
            "model": str(repo / name / "1" / "model.onnx"), "validated": validated, "config_text": text}
