// CPU fused importance (METHOD.md section 2): one pass over x and g, fp32
// accumulation, no (B, T, d) temporary.
//
// Work is cut into tiles of (a block of samples) x (kDC channels). Each tile
// keeps gb and its partial score in registers / L1, and writes one partial
// row; the partial rows are summed in a fixed order. The cut depends on the
// shape only, never on the number of threads, so results are deterministic.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "ops.h"

namespace tsprune {
namespace {

constexpr int64_t kDC = 64;           // channels per tile
constexpr int64_t kTargetTiles = 64;  // enough tiles to feed the threads
// Up to this many multiply-adds (about 0.1 ms on one core) one thread does it all:
// a parallel region costs more than it saves, and much more on a loaded machine.
constexpr int64_t kSerialWork = 1 << 19;

struct Plan {
  int64_t nd, nb, bb;  // channel tiles, sample blocks, samples per block
};

Plan make_plan(int64_t B, int64_t d) {
  Plan p{(d + kDC - 1) / kDC, 0, 0};
  if (B == 0 || d == 0) return p;
  int64_t nb = std::min<int64_t>(B, std::max<int64_t>(1, (kTargetTiles + p.nd - 1) / p.nd));
  p.bb = (B + nb - 1) / nb;
  p.nb = (B + p.bb - 1) / p.bb;
  return p;
}

// Partial score of samples [b0, b1) for channels [j0, j0 + n), into part[0..n).
template <int XC, int GC>
TSPRUNE_CPU_CLONES void tile(const void* xv, const int64_t* xs, const void* gv, const int64_t* gs, int64_t b0,
          int64_t b1, int64_t T, int64_t j0, int64_t n, float* part) {
  using XT = typename FloatIO<XC>::T;
  using GT = typename FloatIO<GC>::T;
  const XT* x = static_cast<const XT*>(xv);
  const GT* g = static_cast<const GT*>(gv);
  float s[kDC];
  float gb[kDC];
  for (int64_t j = 0; j < n; ++j) s[j] = 0.f;
  const bool unit = xs[2] == 1 && gs[2] == 1;
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t j = 0; j < n; ++j) gb[j] = 0.f;
    for (int64_t t = 0; t < T; ++t) {
      const XT* xr = x + b * xs[0] + t * xs[1] + j0 * xs[2];
      const GT* gr = g + b * gs[0] + t * gs[1] + j0 * gs[2];
      if (unit) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) gb[j] += FloatIO<XC>::load(xr, j) * FloatIO<GC>::load(gr, j);
      } else {
        for (int64_t j = 0; j < n; ++j)
          gb[j] += FloatIO<XC>::load(xr, j * xs[2]) * FloatIO<GC>::load(gr, j * gs[2]);
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) s[j] += -gb[j] + 0.5f * gb[j] * gb[j];
  }
  for (int64_t j = 0; j < n; ++j) part[j] = s[j];
}

// Per-sample gradients given: gb = x[b, :], no token axis.
template <int XC>
TSPRUNE_CPU_CLONES void tile_grad(const void* xv, const int64_t* xs, int64_t b0, int64_t b1, int64_t j0, int64_t n,
               float* part) {
  using XT = typename FloatIO<XC>::T;
  const XT* x = static_cast<const XT*>(xv);
  float s[kDC];
  for (int64_t j = 0; j < n; ++j) s[j] = 0.f;
  for (int64_t b = b0; b < b1; ++b) {
    const XT* xr = x + b * xs[0] + j0 * xs[1];
    if (xs[1] == 1) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float v = FloatIO<XC>::load(xr, j);
        s[j] += -v + 0.5f * v * v;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const float v = FloatIO<XC>::load(xr, j * xs[1]);
        s[j] += -v + 0.5f * v * v;
      }
    }
  }
  for (int64_t j = 0; j < n; ++j) part[j] = s[j];
}

using TileFn = void (*)(const void*, const int64_t*, const void*, const int64_t*, int64_t, int64_t,
                        int64_t, int64_t, int64_t, float*);

template <int XC> TileFn pick_g(int g_code) {
  switch (g_code) {
    case kF32: return &tile<XC, kF32>;
    case kF16: return &tile<XC, kF16>;
    case kBF16: return &tile<XC, kBF16>;
    case kF64: return &tile<XC, kF64>;
  }
  throw std::invalid_argument("importance: unsupported dtype code for g");
}

TileFn pick(int x_code, int g_code) {
  switch (x_code) {
    case kF32: return pick_g<kF32>(g_code);
    case kF16: return pick_g<kF16>(g_code);
    case kBF16: return pick_g<kBF16>(g_code);
    case kF64: return pick_g<kF64>(g_code);
  }
  throw std::invalid_argument("importance: unsupported dtype code for x");
}

using GradTileFn = void (*)(const void*, const int64_t*, int64_t, int64_t, int64_t, int64_t, float*);

GradTileFn pick_grad(int code) {
  switch (code) {
    case kF32: return &tile_grad<kF32>;
    case kF16: return &tile_grad<kF16>;
    case kBF16: return &tile_grad<kBF16>;
    case kF64: return &tile_grad<kF64>;
  }
  throw std::invalid_argument("importance_from_grad: unsupported dtype code");
}

// Sum the partial rows in order, update the EMA in place, write |imp|.
void finish(const std::vector<float>& part, int64_t nb, int64_t d, float* imp, float* out,
            double alpha, bool first, int nt) {
  (void)nt;
  const float a = static_cast<float>(alpha);
  const float keep = static_cast<float>(1.0 - alpha);
#pragma omp parallel for num_threads(nt) if (d * nb > kSerialWork)
  for (int64_t j = 0; j < d; ++j) {
    float s = 0.f;
    for (int64_t k = 0; k < nb; ++k) s += part[k * d + j];
    const float v = first ? s : a * s + keep * imp[j];
    imp[j] = v;
    out[j] = std::fabs(v);
  }
}

}  // namespace

void importance_cpu(const void* x, int x_code, const int64_t* xs, const void* g, int g_code,
                    const int64_t* gs, int64_t B, int64_t T, int64_t d, float* imp, float* out,
                    double alpha, bool first, int nthreads) {
  const int nt = resolve_threads(nthreads);
  const TileFn fn = pick(x_code, g_code);
  const Plan p = make_plan(B, d);
  std::vector<float> part(static_cast<size_t>(p.nb * d));
  const int64_t tiles = p.nb * p.nd;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (B * T * d > kSerialWork && tiles > 1)
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t kb = i / p.nd, kd = i % p.nd;
    const int64_t b0 = kb * p.bb, b1 = std::min(B, b0 + p.bb);
    const int64_t j0 = kd * kDC, n = std::min(kDC, d - j0);
    fn(x, xs, g, gs, b0, b1, T, j0, n, part.data() + kb * d + j0);
  }
  finish(part, p.nb, d, imp, out, alpha, first, nt);
}

void importance_from_grad_cpu(const void* gb, int code, const int64_t* gbs, int64_t B, int64_t d,
                              float* imp, float* out, double alpha, bool first, int nthreads) {
  const int nt = resolve_threads(nthreads);
  const GradTileFn fn = pick_grad(code);
  const Plan p = make_plan(B, d);
  std::vector<float> part(static_cast<size_t>(p.nb * d));
  const int64_t tiles = p.nb * p.nd;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (B * d > kSerialWork && tiles > 1)
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t kb = i / p.nd, kd = i % p.nd;
    const int64_t b0 = kb * p.bb, b1 = std::min(B, b0 + p.bb);
    const int64_t j0 = kd * kDC, n = std::min(kDC, d - j0);
    fn(gb, gbs, b0, b1, j0, n, part.data() + kb * d + j0);
  }
  finish(part, p.nb, d, imp, out, alpha, first, nt);
}

}  // namespace tsprune
