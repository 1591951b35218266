"""Benchmarks of tsprune.ops, side by side; ratios print at the end (bench/conftest.py).

    pytest bench/bench_ops.py                    # CPU rows; CUDA rows need a GPU
    pytest bench/bench_ops.py -k importance      # one family

Fused importance (METHOD.md section 2), samples/s: the C++ kernel vs the
pure-torch reference in eager mode and under torch.compile, on shapes of a
small transformer layer (B=64 windows, T=16 tokens, d=256 and 1024).
Packing (section 4): one pack() call for a block's weights vs index_select
per tensor vs a plain copy of the same bytes into a preallocated buffer
(memcpy bandwidth, the baseline) and into a fresh one (clone: pays the page
faults of a new allocation, as pack and index_select do). GB/s counts the
bytes read plus written (2 x output bytes) for every row.

On a shared machine, multi-threaded rows wait for busy cores; compare with
OMP_NUM_THREADS=1 too (torch and tsprune._C then both use one thread).

Model-level scoring (masked-Linear path, Torch-Pruning) belongs in its own
file, e.g. bench/bench_scoring.py, using the same ``measure`` fixture with
groups named "scoring ..." so that its rows join the summary table.
"""
from __future__ import annotations

import pytest
import torch

import tsprune.ops as ops
from tsprune.ops import _ext

HAS_CPP = _ext.has_cpp()
CUDA = torch.cuda.is_available()
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason=f"tsprune._C not built: {_ext.load_error()}")
needs_gpu = pytest.mark.skipif(not CUDA, reason="no GPU")

IMP_SHAPES = [(64, 16, 256), (64, 16, 1024)]


def _xg(shape, dtype, device="cpu"):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype).to(device)
    return x, (torch.randn(shape, generator=gen) * 0.05).to(dtype).to(device)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _reference_step(x, g, imp):
    return ops.torch_fused_importance(x, g, imp, alpha=0.5, first=False)


_compiled_step = torch.compile(_reference_step, dynamic=False)


# ---- fused importance: CPU ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", IMP_SHAPES, ids=lambda s: "B{}xT{}xd{}".format(*s))
@pytest.mark.parametrize("impl", ["torch eager", "torch.compile", "cpp"])
def test_importance_cpu(measure, impl, shape, dtype):
    if impl == "cpp" and not HAS_CPP:
        pytest.skip(f"tsprune._C not built: {_ext.load_error()}")
    x, g = _xg(shape, dtype)
    imp = torch.zeros(shape[-1])
    if impl == "cpp":
        fn = lambda: ops.fused_importance(x, g, imp, alpha=0.5, first=False, backend="cpp")  # noqa: E731
    elif impl == "torch eager":
        fn = lambda: _reference_step(x, g, imp)  # noqa: E731
    else:
        _compiled_step(x, g, imp)  # compile outside the timing
        fn = lambda: _compiled_step(x, g, imp)  # noqa: E731
    before = imp.clone()
    torch.testing.assert_close(fn(), _reference_step(x, g, before), rtol=1e-4, atol=1e-5)  # same result
    group = "importance cpu B{}xT{}xd{} {}".format(*shape, str(dtype).split(".")[-1])
    measure(fn, group=group, name=impl, work=shape[0], unit="samples", baseline=impl == "torch eager")


# ---- packing: CPU ----------------------------------------------------------------------

def _block(d, f, dtype, device="cpu"):
    """Weights of one transformer block and the indices of a 50% head / FFN prune."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(d, d)] * 4 + [(f, d), (f, d), (d, f), (d,), (f,)]
    tensors = [torch.randn(s, generator=gen).to(dtype).to(device) for s in shapes]
    keep_d = torch.randperm(d, generator=gen)[: d // 2].sort().values.to(device)
    keep_f = torch.randperm(f, generator=gen)[: f // 2].sort().values.to(device)
    rows = [keep_d, keep_d, keep_d, None, keep_f, keep_f, None, keep_d, keep_f]
    cols = [None, None, None, keep_d, None, None, keep_f, None, None]
    return tensors, rows, cols


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", ["memcpy same bytes", "clone same bytes", "index_select per tensor", "cpp pack"])
def test_pack_cpu(measure, impl, dtype):
    d, f = 1024, 4096
    tensors, rows, cols = _block(d, f, dtype)
    out_bytes = sum(o.numel() * o.element_size() for o in ops.torch_pack(tensors, rows, cols))
    group = f"pack cpu block d={d} f={f} {str(dtype).split('.')[-1]} (50% kept)"
    if impl == "memcpy same bytes":
        src = torch.empty(out_bytes, dtype=torch.uint8).fill_(1)
        dst = torch.empty_like(src)
        fn = lambda: dst.copy_(src)  # noqa: E731
    elif impl == "clone same bytes":  # a fresh output each call, as pack() allocates
        src = torch.empty(out_bytes, dtype=torch.uint8).fill_(1)
        fn = lambda: src.clone()  # noqa: E731
    elif impl == "index_select per tensor":
        fn = lambda: ops.torch_pack(tensors, rows, cols)  # noqa: E731
    else:
        if not HAS_CPP:
            pytest.skip(f"tsprune._C not built: {_ext.load_error()}")
        fn = lambda: ops.pack(tensors, rows, cols, backend="cpp")  # noqa: E731
        assert all(torch.equal(a, b) for a, b in zip(fn(), ops.torch_pack(tensors, rows, cols)))
    measure(fn, group=group, name=impl, work=2 * out_bytes, unit="bytes", baseline=impl == "memcpy same bytes",
            rounds=30)


@needs_cpp
@pytest.mark.parametrize("impl", ["index_select", "cpp"])
def test_gather_irregular_cpu(measure, impl):
    w = torch.randn(1823, 781)
    gen = torch.Generator().manual_seed(1)
    r = torch.randperm(1823, generator=gen)[:1201]
    c = torch.randperm(781, generator=gen)[:333]
    if impl == "cpp":
        fn = lambda: ops.gather_rows_cols(w, r, c, backend="cpp")  # noqa: E731
    else:
        fn = lambda: ops.torch_gather_rows_cols(w, r, c)  # noqa: E731
    measure(fn, group="gather cpu 1823x781 fp32 -> 1201x333", name=impl, work=2 * 1201 * 333 * 4,
            unit="bytes", baseline=impl == "index_select", rounds=50)


# ---- CUDA (skipped without a GPU) ---------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("shape", IMP_SHAPES, ids=lambda s: "B{}xT{}xd{}".format(*s))
@pytest.mark.parametrize("impl", ["reference", "cuda", "triton"])
def test_importance_cuda(measure, impl, shape):
    if impl not in ops.available_backends("cuda"):
        pytest.skip(f"backend {impl} not available on CUDA")
    x, g = _xg(shape, torch.bfloat16, "cuda")
    imp = torch.zeros(shape[-1], device="cuda")

    def fn():
        ops.fused_importance(x, g, imp, alpha=0.5, first=False, backend=impl)
        torch.cuda.synchronize()

    fn()  # compile / autotune outside the timing
    measure(fn, group="importance cuda B{}xT{}xd{} bf16".format(*shape), name=impl, work=shape[0],
            unit="samples", baseline=impl == "reference", rounds=50)


@needs_gpu
@pytest.mark.parametrize("impl", ["memcpy same bytes", "reference", "cuda", "triton"])
def test_pack_cuda(measure, impl):
    tensors, rows, cols = _block(1024, 4096, torch.bfloat16, "cuda")
    out_bytes = sum(o.numel() * o.element_size() for o in ops.torch_pack(tensors, rows, cols))
    if impl == "memcpy same bytes":
        src = torch.ones(out_bytes, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        body = lambda: dst.copy_(src)  # noqa: E731
    elif impl not in ops.available_backends("cuda"):
        pytest.skip(f"backend {impl} not available on CUDA")
    else:
        body = lambda: ops.pack(tensors, rows, cols, backend=impl)  # noqa: E731

    def fn():
        body()
        torch.cuda.synchronize()

    fn()
    measure(fn, group="pack cuda block d=1024 f=4096 bf16 (50% kept)", name=impl, work=2 * out_bytes,
            unit="bytes", baseline=impl == "memcpy same bytes", rounds=50)
