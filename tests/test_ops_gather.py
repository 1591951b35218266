"""gather_rows_cols / pack: every compiled backend on this machine vs the reference, bit-exact."""
from __future__ import annotations

import pytest
import torch

import tsprune.ops as ops
from tsprune.errors import UserError
from tsprune.ops import _ext

CUDA = torch.cuda.is_available()
# (device, backend) pairs; triton has its own module (interpreter subprocess).
CASES = [
    pytest.param("cpu", "reference", id="cpu-reference"),
    pytest.param("cpu", "cpp", id="cpu-cpp",
                 marks=pytest.mark.skipif(not _ext.has_cpp(), reason=f"tsprune._C not built: {_ext.load_error()}")),
    pytest.param("cuda", "cuda", id="cuda-cuda",
                 marks=pytest.mark.skipif(not (CUDA and _ext.has_cuda_kernels()),
                                          reason="needs a GPU and tsprune._C built with CUDA")),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.bool]


def _weights(shape, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen) * 10
    if dtype == torch.bool:
        return (w > 0).to(device)
    return w.to(dtype).to(device)


def _idx(n, k, device, seed=1):
    """k indices in [0, n): unsorted, with repeats when k > n // 2 (index_select allows both)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[:k]
    if k > n // 2:
        idx[-3:] = idx[0]
    return idx.to(device)


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gather_irregular_exact(device, backend, dtype):
    w = _weights((1823, 781), dtype, device)
    rows, cols = _idx(1823, 1201, device), _idx(781, 333, device, seed=2)
    for r, c in ((rows, cols), (rows, None), (None, cols)):
        out = ops.gather_rows_cols(w, r, c, backend=backend)
        assert out.is_contiguous()
        assert torch.equal(out, ops.torch_gather_rows_cols(w, r, c))


@pytest.mark.parametrize("device,backend", CASES)
def test_gather_keep_all_is_a_new_tensor(device, backend):
    w = _weights((37, 13), torch.float32, device)
    out = ops.gather_rows_cols(w, backend=backend)
    assert torch.equal(out, w) and out.data_ptr() != w.data_ptr()


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("src,dst", [
    (torch.float32, torch.float16), (torch.float32, torch.bfloat16), (torch.float16, torch.float32),
    (torch.bfloat16, torch.float16), (torch.float64, torch.float16), (torch.float64, torch.bfloat16),
    (torch.float32, torch.float64),
], ids=str)
def test_gather_cast_exact(device, backend, src, dst):
    w = _weights((301, 257), src, device)
    w.view(-1)[:4] = torch.tensor([70000.0, -1e-7, 65519.0, 3e-5], dtype=torch.float64).to(src)  # overflow, subnormals
    r, c = _idx(301, 100, device), _idx(257, 200, device)
    out = ops.gather_rows_cols(w, r, c, dtype=dst, backend=backend)
    assert out.dtype == dst
    assert torch.equal(out, w.index_select(0, r).index_select(1, c).to(dst))


@pytest.mark.parametrize("device,backend", CASES)
def test_gather_strided_and_bias(device, backend):
    base = _weights((781, 1823), torch.float32, device)
    w = base.t()  # (1823, 781), non-contiguous
    rows, cols = _idx(1823, 600, device), _idx(781, 100, device)
    assert torch.equal(ops.gather_rows_cols(w, rows, cols, backend=backend), w[rows][:, cols])
    bias = base[:, 5]  # 1-D, stride 1823
    r = _idx(781, 300, device)
    assert torch.equal(ops.gather_rows_cols(bias, r, backend=backend), bias[r])
    assert torch.equal(ops.gather_rows_cols(bias, backend=backend), bias)


@pytest.mark.parametrize("device,backend", CASES)
def test_pack_transformer_block(device, backend):
    """q, k, v, o, gate, up, down (+ biases) of one block, each with its own indices."""
    d, f = 96, 260
    names = ["q", "k", "v", "o", "gate", "up", "down"]
    shapes = [(d, d)] * 4 + [(f, d), (f, d), (d, f)]
    tensors = [_weights(s, torch.bfloat16, device, seed=i) for i, s in enumerate(shapes)]
    tensors += [_weights((d,), torch.bfloat16, device, seed=10), _weights((f,), torch.bfloat16, device, seed=11)]
    heads = _idx(d, 64, device, seed=3).sort().values
    neurons = _idx(f, 131, device, seed=4).sort().values
    rows = [heads, heads, heads, None, neurons, neurons, None, heads, neurons]
    cols = [None, None, None, heads, None, None, neurons, None, None]
    assert len(tensors) == len(names) + 2
    outs = ops.pack(tensors, rows, cols, backend=backend)
    ref = ops.torch_pack(tensors, rows, cols)
    assert [o.shape for o in outs] == [r.shape for r in ref]
    assert all(torch.equal(o, r) for o, r in zip(outs, ref))
    outs = ops.pack(tensors, rows, cols, dtype=torch.float32, backend=backend)
    assert all(o.dtype == torch.float32 and torch.equal(o, r.float()) for o, r in zip(outs, ref))


@pytest.mark.parametrize("device,backend", CASES)
def test_gather_edge_cases(device, backend):
    w = _weights((50, 40), torch.float32, device)
    empty = torch.empty(0, dtype=torch.int64, device=device)
    assert ops.gather_rows_cols(w, empty, None, backend=backend).shape == (0, 40)
    assert ops.gather_rows_cols(w, None, empty, backend=backend).shape == (50, 0)
    r32 = torch.tensor([3, 1, 39], dtype=torch.int32, device=device)
    assert torch.equal(ops.gather_rows_cols(w, r32, r32, backend=backend), w[r32.long()][:, r32.long()])
    assert ops.pack([], [], [], backend=backend) == []
    with pytest.raises(IndexError):
        ops.gather_rows_cols(w, torch.tensor([0, 50], device=device), backend=backend)
    with pytest.raises(IndexError):
        ops.gather_rows_cols(w, None, torch.tensor([-1], device=device), backend=backend)


def test_gather_argument_errors():
    w = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        ops.gather_rows_cols(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="cols for w"):
        ops.gather_rows_cols(torch.zeros(4), None, torch.tensor([0]))
    with pytest.raises(ValueError, match="rows for w"):
        ops.gather_rows_cols(w, torch.tensor([[0]]))
    with pytest.raises(ValueError, match="lengths"):
        ops.pack([w, w], [None], [None, None])
    with pytest.raises(UserError, match="available there: reference"):
        ops.gather_rows_cols(w, backend="cuda")


@pytest.mark.skipif(not _ext.has_cpp(), reason=f"tsprune._C not built: {_ext.load_error()}")
def test_pack_cpp_opcheck():
    w = _weights((37, 23), torch.float32, "cpu")
    b = _weights((37,), torch.float16, "cpu")
    r, c = torch.tensor([4, 0, 36]), torch.tensor([22, 1])
    torch.library.opcheck(_ext.pack_cpp, ([w, b], [r, r], [c, None], None))
    torch.library.opcheck(_ext.pack_cpp, ([w], [None], [c], torch.bfloat16))


@pytest.mark.parametrize("device,backend", CASES[1:])
def test_casts_every_half_and_bfloat16_bit_pattern(device, backend):
    """Exhaustive: all 65536 fp16 / bf16 values, and 2^20 random fp32 bit patterns (every range).

    Bit-exact for every non-NaN value; a NaN stays a NaN (its payload may differ:
    torch's own scalar and vector paths differ there too).
    """
    def bits(t):
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])

    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).reshape(256, 256).to(device)
    gen = torch.Generator().manual_seed(0)
    rand32 = torch.randint(-2**31, 2**31 - 1, (1024, 1024), generator=gen).to(torch.int32).to(device)
    cases = [(every.view(s), d) for s, d in ((torch.float16, torch.float32), (torch.float16, torch.bfloat16),
                                             (torch.bfloat16, torch.float32), (torch.bfloat16, torch.float16))]
    cases += [(rand32.view(torch.float32), torch.float16), (rand32.view(torch.float32), torch.bfloat16)]
    for w, dst in cases:
        out, ref = ops.gather_rows_cols(w, dtype=dst, backend=backend), w.to(dst)
        nan = w.isnan()
        assert torch.equal(bits(out)[~nan], bits(ref)[~nan]), (w.dtype, dst)
        assert out[nan].isnan().all()
