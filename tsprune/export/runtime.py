"""The one place that picks an ONNX Runtime execution provider.

    sess = make_session("model.onnx")            # CUDA when it really runs, else CPU
    used = sess.get_providers()[0]               # what the session actually uses

Choice, at call time: the ``device`` argument ("cuda" or "cpu"), else the environment
variable ``TSPRUNE_ORT_DEVICE``, else "auto" (CUDA when onnxruntime-gpu offers it, else
CPU). ``onnxruntime-gpu`` falls back to CPU silently when the CUDA libraries cannot be
loaded, so the providers of the created session are checked: an explicit "cuda" that did
not take raises; "auto" logs a warning and runs on CPU.

Install one of the two packages, never both (they share the ``onnxruntime`` module and
the second overwrites the first): ``pip install 'tsprune[onnxruntime]'`` or
``pip install 'tsprune[onnxruntime-gpu]'``.
"""
from __future__ import annotations

import logging
import os

from tsprune.errors import missing_extra

log = logging.getLogger("tsprune")

DEVICES = ("auto", "cpu", "cuda")
ENV = "TSPRUNE_ORT_DEVICE"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def requested_device(device: str | None = None) -> str:
    """The device asked for: the argument, else $TSPRUNE_ORT_DEVICE, else "auto"."""
    d = device if device is not None else os.environ.get(ENV) or "auto"
    d = str(d).lower()
    if d not in DEVICES:
        src = "device" if device is not None else ENV
        raise ValueError(f"{src}: got {d!r}; expected one of {', '.join(DEVICES)}")
    return d


def import_ort():
    """The onnxruntime module, or an ImportError naming the install command. onnxruntime
    (CPU) and onnxruntime-gpu are alternative extras: both install the same package."""
    try:  # lazy: optional dependency (onnxruntime or onnxruntime-gpu)
        import onnxruntime as ort
    except ImportError as e:
        err = missing_extra("onnxruntime", "onnxruntime", e)
        if "not installed" not in str(err):
            raise err from e
        raise ImportError(f"{err} (or 'tsprune[onnxruntime-gpu]' for CUDA, never both)") from e
    return ort


def make_session(path, device: str | None = None, *, threads: int | None = None,
                 options=None, profile_prefix: str | None = None):
    """An onnxruntime.InferenceSession on the chosen provider (see the module docstring).

    threads: intra-op threads (default: onnxruntime's); options: a SessionOptions to start
    from; profile_prefix: enable ORT's profiler, writing <prefix>_<date>.json."""
    ort = import_ort()
    d = requested_device(device)
    available = ort.get_available_providers()
    if d == "cuda" and CUDA not in available:
        raise RuntimeError(f"device 'cuda': onnxruntime {ort.__version__} offers {available}; "
                           f"install onnxruntime-gpu instead of onnxruntime (not both)")
    providers = [CUDA, CPU] if d in ("cuda", "auto") and CUDA in available else [CPU]
    so = options if options is not None else ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    sess = ort.InferenceSession(str(path), so, providers=providers)
    used = sess.get_providers()
    if providers[0] == CUDA and CUDA not in used:
        if d == "cuda":
            raise RuntimeError(f"device 'cuda': the session fell back to {used} (CUDA/cuDNN libraries "
                               f"missing or incompatible with onnxruntime-gpu {ort.__version__})")
        log.warning("onnxruntime-gpu could not use CUDA; running on %s", used[0])
    return sess


def provider(sess) -> str:
    """The provider that runs the session's nodes first (what the session really uses)."""
    return sess.get_providers()[0]
