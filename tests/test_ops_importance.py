"""fused_importance / fused_importance_from_grad: every compiled backend here vs the reference."""
from __future__ import annotations

import pytest
import torch

import tsprune.ops as ops
from tsprune.ops import _ext

CUDA = torch.cuda.is_available()
CASES = [
    pytest.param("cpu", "cpp", id="cpu-cpp",
                 marks=pytest.mark.skipif(not _ext.has_cpp(), reason=f"tsprune._C not built: {_ext.load_error()}")),
    pytest.param("cuda", "cuda", id="cuda-cuda",
                 marks=pytest.mark.skipif(not (CUDA and _ext.has_cuda_kernels()),
                                          reason="needs a GPU and tsprune._C built with CUDA")),
]
# Inputs are upcast to fp32 exactly on every backend, so the only difference
# from the reference is the fp32 summation order: (rtol, atol) per input dtype.
TOL = {torch.float32: (1e-5, 1e-6), torch.float16: (1e-5, 1e-6), torch.bfloat16: (1e-5, 1e-6),
       torch.float64: (1e-5, 1e-6)}


def _xg(shape, dtype, device, seed=0, g_dtype=None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    g = torch.randn(shape, generator=gen) * 0.05  # gradients are small
    return x.to(dtype).to(device), g.to(g_dtype or dtype).to(device)


def _close(a, b, dtype):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def test_reference_formula_by_hand():
    # B=2, T=2, d=1: gb = [1*2 + 3*4, 0.5*(-2) + 1*1] = [14, 0]; s = (-14 + 98) + 0 = 84
    x = torch.tensor([[[1.0], [3.0]], [[0.5], [1.0]]])
    g = torch.tensor([[[2.0], [4.0]], [[-2.0], [1.0]]])
    imp = torch.zeros(1)
    out = ops.fused_importance(x, g, imp, alpha=0.25, first=True, backend="reference")
    assert imp.item() == 84.0 and out.item() == 84.0
    imp.fill_(-200.0)  # later step: 0.25 * 84 + 0.75 * -200 = -129, |.| = 129
    out = ops.fused_importance(x, g, imp, alpha=0.25, first=False, backend="reference")
    assert imp.item() == -129.0 and out.item() == 129.0


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_ema_steps_match_reference(device, backend, dtype):
    d = 781
    imp, imp_ref = torch.zeros(d, device=device), torch.zeros(d, device=device)
    imp_ptr = imp.data_ptr()
    for step in range(3):
        x, g = _xg((3, 37, d), dtype, device, seed=step)
        out = ops.fused_importance(x, g, imp, alpha=0.4, first=step == 0, backend=backend)
        ref = ops.fused_importance(x, g, imp_ref, alpha=0.4, first=step == 0, backend="reference")
        _close(imp, imp_ref, dtype)
        _close(out, ref, dtype)
        assert torch.equal(out, imp.abs())
        assert imp.data_ptr() == imp_ptr  # updated in place
    assert (imp < 0).any()  # the abs matters on this data


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("shape", [(5, 781), (3, 37, 781), (2, 3, 5, 130), (70, 2, 17), (1, 1, 1)], ids=str)
def test_shapes(device, backend, shape):
    x, g = _xg(shape, torch.float32, device, seed=3)
    d = shape[-1]
    imp, imp_ref = torch.full((d,), 0.5, device=device), torch.full((d,), 0.5, device=device)
    out = ops.fused_importance(x, g, imp, alpha=0.9, first=False, backend=backend)
    ref = ops.fused_importance(x, g, imp_ref, alpha=0.9, first=False, backend="reference")
    _close(out, ref, torch.float32)
    _close(imp, imp_ref, torch.float32)


@pytest.mark.parametrize("device,backend", CASES)
def test_strided_mixed_dtypes_and_out_abs(device, backend):
    x, _ = _xg((3, 781, 37), torch.bfloat16, device)
    _, g = _xg((3, 781, 37), torch.float32, device, seed=5)
    x, g = x.transpose(1, 2), g.transpose(1, 2)  # (3, 37, 781), channels not contiguous
    imp, imp_ref = torch.zeros(781, device=device), torch.zeros(781, device=device)
    out_abs = torch.empty(781, device=device)
    out = ops.fused_importance(x, g, imp, alpha=0.1, first=True, out_abs=out_abs, backend=backend)
    assert out is out_abs
    ref = ops.fused_importance(x, g, imp_ref, alpha=0.1, first=True, backend="reference")
    _close(out, ref, torch.bfloat16)


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_from_grad(device, backend, dtype):
    gen = torch.Generator().manual_seed(7)
    gb = (torch.randn(67, 781, generator=gen) * 0.3).to(dtype).to(device)
    imp, imp_ref = torch.zeros(781, device=device), torch.zeros(781, device=device)
    for first in (True, False):
        out = ops.fused_importance_from_grad(gb, imp, alpha=0.6, first=first, backend=backend)
        ref = ops.fused_importance_from_grad(gb, imp_ref, alpha=0.6, first=first, backend="reference")
        _close(out, ref, dtype)
        _close(imp, imp_ref, dtype)
    # the same scores as fused_importance with T = 1 and g = 1
    imp2 = torch.zeros(781, device=device)
    ops.fused_importance(gb, torch.ones_like(gb), imp2, alpha=0.6, first=True, backend=backend)
    imp3 = torch.zeros(781, device=device)
    ops.fused_importance_from_grad(gb, imp3, alpha=0.6, first=True, backend=backend)
    _close(imp2, imp3, dtype)


@pytest.mark.parametrize("device,backend", CASES)
def test_empty_batch(device, backend):
    x = torch.empty(0, 4, 9, device=device)
    imp = torch.ones(9, device=device)
    out = ops.fused_importance(x, x, imp, alpha=0.5, first=False, backend=backend)
    assert torch.equal(imp, torch.full((9,), 0.5, device=device)) and torch.equal(out, imp)


def test_argument_errors():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="g: got shape"):
        ops.fused_importance(x, torch.zeros(2, 3, 5), torch.zeros(4), alpha=0.5, first=True)
    with pytest.raises(ValueError, match="imp: got a torch.float16"):
        ops.fused_importance(x, x, torch.zeros(4, dtype=torch.float16), alpha=0.5, first=True)
    with pytest.raises(ValueError, match="alpha: got 1.5"):
        ops.fused_importance(x, x, torch.zeros(4), alpha=1.5, first=True)
    with pytest.raises(TypeError, match="x: got dtype torch.int64"):
        ops.fused_importance(x.long(), x, torch.zeros(4), alpha=0.5, first=True)
    imp = torch.zeros(4)
    with pytest.raises(ValueError, match="out_abs: got the imp tensor"):
        ops.fused_importance(x, x, imp, alpha=0.5, first=True, out_abs=imp)
    with pytest.raises(ValueError, match="gb: got shape"):
        ops.fused_importance_from_grad(x, imp, alpha=0.5, first=True)


@pytest.mark.skipif(not _ext.has_cpp(), reason=f"tsprune._C not built: {_ext.load_error()}")
def test_importance_cpp_opcheck():
    x, g = _xg((3, 5, 33), torch.bfloat16, "cpu")
    torch.library.opcheck(_ext.fused_importance_cpp, (x, g, torch.rand(33), torch.empty(33), 0.3, False))
    torch.library.opcheck(_ext.fused_importance_from_grad_cpp, (x[:, 0], torch.rand(33), torch.empty(33), 0.3, True))


@pytest.mark.skipif(not _ext.has_cpp(), reason=f"tsprune._C not built: {_ext.load_error()}")
def test_torch_compile_fullgraph():
    """The public entry point compiles without a graph break: it goes through tsprune::fused_importance_cpp."""

    def step(x, g, imp, out):
        ops.fused_importance(x * 2.0, g, imp, alpha=0.5, first=False, out_abs=out, backend="cpp")
        return out + 1.0

    x, g = _xg((4, 6, 40), torch.float32, "cpu")
    imp_c, out_c = torch.ones(40), torch.empty(40)
    res = torch.compile(step, fullgraph=True, backend="aot_eager")(x, g, imp_c, out_c)
    imp_r = torch.ones(40)
    ref = ops.fused_importance(x * 2.0, g, imp_r, alpha=0.5, first=False, backend="reference") + 1.0
    _close(res, ref, torch.float32)
    _close(imp_c, imp_r, torch.float32)
