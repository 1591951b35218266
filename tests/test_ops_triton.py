"""The triton backend vs the reference.

Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when the kernel
module is first imported, and the flag is process-wide. So the CPU run never
happens in the pytest process itself: test_interpreter_subprocess reruns this
file in a fresh interpreter with TRITON_INTERPRET=1, where the parametrized
tests below run on CPU tensors (small shapes: the interpreter is slow). In the
parent process they run on CUDA tensors, or skip when there is no GPU. Nothing
here sets TRITON_INTERPRET in the parent, so other tests are unaffected.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import tsprune.ops as ops

CHILD = os.environ.get("_TSPRUNE_TRITON_CHILD") == "1" and os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None
DEVICE = "cpu" if CHILD else ("cuda" if torch.cuda.is_available() else None)

pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
needs_device = pytest.mark.skipif(
    DEVICE is None, reason="no GPU: these run on CPU in the TRITON_INTERPRET=1 subprocess of test_interpreter_subprocess")
TOL = {torch.float32: (1e-5, 1e-6), torch.float16: (1e-5, 1e-6), torch.bfloat16: (1e-5, 1e-6)}


@pytest.mark.skipif(CHILD, reason="this is the interpreter subprocess")
def test_interpreter_subprocess():
    env = {**os.environ, "TRITON_INTERPRET": "1", "_TSPRUNE_TRITON_CHILD": "1", "TSPRUNE_BACKEND": ""}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", __file__],
        capture_output=True, text=True, env=env, timeout=300)
    tail = res.stdout[-6000:] + res.stderr[-2000:]
    assert res.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail


def _load_kernels_privately(name):
    """Import kernels/ under a throwaway package name: tsprune's own cached modules stay untouched."""
    src = ops._triton.source_kernels_dir()
    if src is None:
        return importlib.import_module(f"tsprune._kernels.{name}")
    pkg = "_tsprune_kernels_compile_check"
    if pkg not in sys.modules:
        # kernels/ has no __init__.py (it must never shadow Hugging Face's `kernels`)
        spec = importlib.machinery.ModuleSpec(pkg, None, is_package=True)
        spec.submodule_search_locations = [str(src)]
        sys.modules[pkg] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{pkg}.{name}")


@pytest.mark.skipif(CHILD, reason="the interpreter does not compile")
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
def test_kernels_compile_for_sm90():
    """Compile-only check of the GPU path, no GPU needed: Triton -> PTX -> cubin for sm_90 (H100)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 in this process: kernels decorate as interpreted functions")
    gather, importance = _load_kernels_privately("gather"), _load_kernels_privately("importance")

    def compile_(kernel, signature, constexprs):
        while not isinstance(kernel, triton.runtime.JITFunction):  # unwrap autotune / heuristics
            kernel = kernel.fn
        src = ASTSource(fn=kernel, signature={**signature, **{k: "constexpr" for k in constexprs}},
                        constexprs=constexprs)
        try:
            return triton.compile(src, target=GPUTarget("cuda", 90, 32))
        except FileNotFoundError as exc:  # no ptxas in this triton install
            pytest.skip(f"triton cannot compile for CUDA here: {exc}")

    i32 = "i32"
    pack = compile_(gather._pack_kernel,
                    {"meta": "*i64", "n_jobs": i32, "max_c": i32, "src_anchor": "*fp32", "dst_anchor": "*bf16"},
                    {"CAST_VIA_F32": True, "BLOCK_R": 16, "BLOCK_C": 128})
    part = compile_(importance._importance_partial,
                    {"x": "*bf16", "g": "*bf16", "ws": "*fp32", **{k: i32 for k in (
                        "B", "T", "d", "sxb", "sxt", "sxd", "sgb", "sgt", "sgd", "per_split")}},
                    {"FROM_GRAD": False, "BLOCK_T": 16, "BLOCK_D": 128})
    fin = compile_(importance._importance_finish,
                   {"ws": "*fp32", "nsplit": i32, "d": i32, "imp": "*fp32", "out": "*fp32", "alpha": "fp32"},
                   {"FIRST": False, "BLOCK": 256})
    assert all(len(k.asm["cubin"]) > 0 for k in (pack, part, fin))


def _w(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 10).to(dtype).to(DEVICE)


def _idx(n, k, seed=1):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[:k]
    idx[-1] = idx[0]  # a repeat
    return idx.to(DEVICE)


@needs_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8], ids=str)
def test_gather_exact(dtype):
    shape = (67, 45) if DEVICE == "cpu" else (1823, 781)
    w = _w(shape, dtype)
    r, c = _idx(shape[0], shape[0] // 2), _idx(shape[1], shape[1] // 3, seed=2)
    for rr, cc in ((r, c), (None, c), (r, None)):
        assert torch.equal(ops.gather_rows_cols(w, rr, cc, backend="triton"), ops.torch_gather_rows_cols(w, rr, cc))
    assert torch.equal(ops.gather_rows_cols(w.t(), c, r, backend="triton"), w.t()[c][:, r])  # strided source


@needs_device
@pytest.mark.parametrize("src,dst", [(torch.float32, torch.float16), (torch.float16, torch.float32),
                                     (torch.float64, torch.float32), (torch.float32, torch.bfloat16)], ids=str)
def test_gather_cast_exact(src, dst):
    if DEVICE == "cpu" and torch.bfloat16 in (src, dst):
        pytest.skip("the Triton interpreter does not round fp32 -> bf16 like torch (numpy has no bf16)")
    w = _w((41, 23), src)
    r = _idx(41, 30)
    assert torch.equal(ops.gather_rows_cols(w, r, None, dtype=dst, backend="triton"), w[r].to(dst))


@needs_device
def test_pack_block_one_call():
    d, f = 24, 40
    tensors = [_w((d, d), torch.float16, i) for i in range(4)] + [_w((f, d), torch.float16, 5),
                                                                  _w((d, f), torch.float16, 6), _w((f,), torch.float16, 7)]
    heads, neurons = _idx(d, 16).sort().values, _idx(f, 21, seed=3).sort().values
    rows = [heads, heads, heads, None, neurons, None, neurons]
    cols = [None, None, None, heads, None, neurons, None]
    outs = ops.pack(tensors, rows, cols, backend="triton")
    assert all(torch.equal(o, r) for o, r in zip(outs, ops.torch_pack(tensors, rows, cols)))
    with pytest.raises(IndexError):
        ops.pack(tensors[:1], [torch.tensor([d], device=DEVICE)], [None], backend="triton")


@needs_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_importance_ema(dtype):
    shape = (3, 7, 70) if DEVICE == "cpu" else (3, 37, 781)  # d and T off the block sizes
    d = shape[-1]
    imp, imp_ref = torch.zeros(d, device=DEVICE), torch.zeros(d, device=DEVICE)
    ptr = imp.data_ptr()
    rtol, atol = TOL[dtype]
    for step in range(2):
        gen = torch.Generator().manual_seed(step)
        x = torch.randn(shape, generator=gen).to(dtype).to(DEVICE)
        g = (torch.randn(shape, generator=gen) * 0.05).to(dtype).to(DEVICE)
        out = ops.fused_importance(x, g, imp, alpha=0.4, first=step == 0, backend="triton")
        ref = ops.fused_importance(x, g, imp_ref, alpha=0.4, first=step == 0, backend="reference")
        torch.testing.assert_close(imp, imp_ref, rtol=rtol, atol=atol)
        torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    assert imp.data_ptr() == ptr


@needs_device
def test_importance_from_grad_and_2d():
    gen = torch.Generator().manual_seed(3)
    gb = torch.randn(9, 70, generator=gen).to(DEVICE)
    imp, imp_ref = torch.ones(70, device=DEVICE), torch.ones(70, device=DEVICE)
    out = ops.fused_importance_from_grad(gb, imp, alpha=0.2, first=False, backend="triton")
    ref = ops.fused_importance_from_grad(gb, imp_ref, alpha=0.2, first=False, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    x = gb.t().contiguous().t()  # (9, 70) with channel stride 9
    imp2, imp2_ref = torch.zeros(70, device=DEVICE), torch.zeros(70, device=DEVICE)
    ops.fused_importance(x, x, imp2, alpha=0.2, first=True, backend="triton")
    ops.fused_importance(x, x, imp2_ref, alpha=0.2, first=True, backend="reference")
    torch.testing.assert_close(imp2, imp2_ref, rtol=1e-5, atol=1e-6)


@needs_device
def test_opcheck():
    w = _w((13, 9), torch.float32)
    torch.library.opcheck(ops._triton.pack_triton, ([w], [_idx(13, 5)], [None], None))
    x = _w((2, 3, 17), torch.float32)
    torch.library.opcheck(ops._triton.fused_importance_triton,
                          (x, x * 0.01, torch.zeros(17, device=DEVICE), torch.empty(17, device=DEVICE), 0.5, True))
