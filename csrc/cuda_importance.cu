// CUDA fused importance (METHOD.md section 2), deterministic:
//   1. partial: grid (ceil(d / 32), nsplit). A block of 32 x 8 threads owns
//      32 channels and a range of samples; for each sample the 8 thread rows
//      stride over tokens, reduce gb through shared memory, and row 0 adds
//      -gb + gb^2 / 2 to its register. Writes workspace[split, channel].
//   2. finish: sums the nsplit partial rows in order, EMA in place, |imp|.
// One read of x and g; no (B, T, d) temporary.
#include <algorithm>

#include "cuda_common.cuh"
#include "ops.h"

namespace tsprune {
namespace {

constexpr int kTX = 32;  // channels per block
constexpr int kTY = 8;   // token (or sample) lanes per block

struct Str3 {
  int64_t b, t, d;
};

template <int XC, int GC>
__global__ void __launch_bounds__(kTX* kTY)
    importance_partial(const void* __restrict__ xv, Str3 xs, const void* __restrict__ gv, Str3 gs,
                       int64_t B, int64_t T, int64_t d, int64_t per_split, float* __restrict__ ws) {
  using XT = typename DevIO<XC>::T;
  using GT = typename DevIO<GC>::T;
  const XT* x = static_cast<const XT*>(xv);
  const GT* g = static_cast<const GT*>(gv);
  __shared__ float red[kTY][kTX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTX + tx;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * per_split;
  const int64_t b1 = min(B, b0 + per_split);
  float s = 0.f;
  for (int64_t b = b0; b < b1; ++b) {
    float acc = 0.f;
    if (j < d) {
      for (int64_t t = ty; t < T; t += kTY) {
        acc += DevIO<XC>::load(x[b * xs.b + t * xs.t + j * xs.d]) *
               DevIO<GC>::load(g[b * gs.b + t * gs.t + j * gs.d]);
      }
    }
    red[ty][tx] = acc;
    __syncthreads();
    if (ty == 0) {
      float gb = 0.f;
#pragma unroll
      for (int k = 0; k < kTY; ++k) gb += red[k][tx];
      s += -gb + 0.5f * gb * gb;
    }
    __syncthreads();
  }
  if (ty == 0 && j < d) ws[static_cast<int64_t>(blockIdx.y) * d + j] = s;
}

template <int XC>
__global__ void __launch_bounds__(kTX* kTY)
    importance_grad_partial(const void* __restrict__ xv, int64_t sb, int64_t sd, int64_t B,
                            int64_t d, int64_t per_split, float* __restrict__ ws) {
  using XT = typename DevIO<XC>::T;
  const XT* x = static_cast<const XT*>(xv);
  __shared__ float red[kTY][kTX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTX + tx;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * per_split;
  const int64_t b1 = min(B, b0 + per_split);
  float s = 0.f;
  if (j < d) {
    for (int64_t b = b0 + ty; b < b1; b += kTY) {
      const float v = DevIO<XC>::load(x[b * sb + j * sd]);
      s += -v + 0.5f * v * v;
    }
  }
  red[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && j < d) {
    float tot = 0.f;
#pragma unroll
    for (int k = 0; k < kTY; ++k) tot += red[k][tx];
    ws[static_cast<int64_t>(blockIdx.y) * d + j] = tot;
  }
}

__global__ void importance_finish(const float* __restrict__ ws, int64_t nsplit, int64_t d,
                                  float* __restrict__ imp, float* __restrict__ out, float a,
                                  float keep, bool first) {
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < d;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int64_t k = 0; k < nsplit; ++k) s += ws[k * d + j];
    const float v = first ? s : a * s + keep * imp[j];
    imp[j] = v;
    out[j] = fabsf(v);
  }
}

template <int XC>
void launch_partial_g(int g_code, dim3 grid, dim3 block, cudaStream_t s, const void* x, Str3 xs,
                      const void* g, Str3 gs, int64_t B, int64_t T, int64_t d, int64_t per,
                      float* ws) {
  switch (g_code) {
    case kF32: importance_partial<XC, kF32><<<grid, block, 0, s>>>(x, xs, g, gs, B, T, d, per, ws); break;
    case kF16: importance_partial<XC, kF16><<<grid, block, 0, s>>>(x, xs, g, gs, B, T, d, per, ws); break;
    case kBF16: importance_partial<XC, kBF16><<<grid, block, 0, s>>>(x, xs, g, gs, B, T, d, per, ws); break;
    case kF64: importance_partial<XC, kF64><<<grid, block, 0, s>>>(x, xs, g, gs, B, T, d, per, ws); break;
    default: throw std::invalid_argument("importance_cuda: unsupported dtype code for g");
  }
}

void launch_finish(const float* ws, int64_t nsplit, int64_t d, float* imp, float* out,
                   double alpha, bool first, cudaStream_t s) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((d + threads - 1) / threads, 4096);
  importance_finish<<<static_cast<unsigned int>(blocks), threads, 0, s>>>(
      ws, nsplit, d, imp, out, static_cast<float>(alpha), static_cast<float>(1.0 - alpha), first);
  check_launch("importance_cuda (finish)");
}

int64_t clamp_split(int64_t nsplit, int64_t B) {
  return std::max<int64_t>(1, std::min<int64_t>({nsplit, B, 65535}));
}

}  // namespace

void importance_cuda(const void* x, int x_code, const int64_t* xs, const void* g, int g_code,
                     const int64_t* gs, int64_t B, int64_t T, int64_t d, float* imp, float* out,
                     double alpha, bool first, int64_t nsplit, float* workspace,
                     uintptr_t stream) {
  if (d == 0) return;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  int64_t used = 0;
  if (B > 0) {
    used = clamp_split(nsplit, B);
    const int64_t per = (B + used - 1) / used;
    used = (B + per - 1) / per;
    const dim3 grid(static_cast<unsigned int>((d + kTX - 1) / kTX), static_cast<unsigned int>(used));
    const dim3 block(kTX, kTY);
    const Str3 xs3{xs[0], xs[1], xs[2]}, gs3{gs[0], gs[1], gs[2]};
    switch (x_code) {
      case kF32: launch_partial_g<kF32>(g_code, grid, block, s, x, xs3, g, gs3, B, T, d, per, workspace); break;
      case kF16: launch_partial_g<kF16>(g_code, grid, block, s, x, xs3, g, gs3, B, T, d, per, workspace); break;
      case kBF16: launch_partial_g<kBF16>(g_code, grid, block, s, x, xs3, g, gs3, B, T, d, per, workspace); break;
      case kF64: launch_partial_g<kF64>(g_code, grid, block, s, x, xs3, g, gs3, B, T, d, per, workspace); break;
      default: throw std::invalid_argument("importance_cuda: unsupported dtype code for x");
    }
    check_launch("importance_cuda (partial)");
  }
  launch_finish(workspace, used, d, imp, out, alpha, first, s);
}

void importance_from_grad_cuda(const void* gb, int code, const int64_t* gbs, int64_t B,
                               int64_t d, float* imp, float* out, double alpha, bool first,
                               int64_t nsplit, float* workspace, uintptr_t stream) {
  if (d == 0) return;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  int64_t used = 0;
  if (B > 0) {
    used = clamp_split(nsplit, B);
    const int64_t per = (B + used - 1) / used;
    used = (B + per - 1) / per;
    const dim3 grid(static_cast<unsigned int>((d + kTX - 1) / kTX), static_cast<unsigned int>(used));
    const dim3 block(kTX, kTY);
    switch (code) {
      case kF32: importance_grad_partial<kF32><<<grid, block, 0, s>>>(gb, gbs[0], gbs[1], B, d, per, workspace); break;
      case kF16: importance_grad_partial<kF16><<<grid, block, 0, s>>>(gb, gbs[0], gbs[1], B, d, per, workspace); break;
      case kBF16: importance_grad_partial<kBF16><<<grid, block, 0, s>>>(gb, gbs[0], gbs[1], B, d, per, workspace); break;
      case kF64: importance_grad_partial<kF64><<<grid, block, 0, s>>>(gb, gbs[0], gbs[1], B, d, per, workspace); break;
      default: throw std::invalid_argument("importance_from_grad_cuda: unsupported dtype code");
    }
    check_launch("importance_from_grad_cuda (partial)");
  }
  launch_finish(workspace, used, d, imp, out, alpha, first, s);
}

}  // namespace tsprune
