// Host entry points of tsprune._C (CPU always, CUDA when TSPRUNE_WITH_CUDA).
// All pointers are raw device or host addresses; all strides are in elements.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace tsprune {

// Gather every job (checks the indices first; throws std::out_of_range).
// One OpenMP parallel region for the whole list. nthreads <= 0: OpenMP's default.
void gather_cpu(const std::vector<GatherJob>& jobs, int nthreads);

// Fused importance (METHOD.md section 2), one pass over x and g:
//   gb[b, :] = sum_t x[b, t, :] * g[b, t, :]        (fp32 accumulation)
//   s        = sum_b (-gb[b, :] + gb[b, :]^2 / 2)
//   imp      = s if first else alpha * s + (1 - alpha) * imp   (in place, fp32)
//   out      = |imp|
// x strides xs = (b, t, d), g strides gs = (b, t, d). imp and out: fp32, contiguous, d.
void importance_cpu(const void* x, int x_code, const int64_t* xs, const void* g, int g_code,
                    const int64_t* gs, int64_t B, int64_t T, int64_t d, float* imp, float* out,
                    double alpha, bool first, int nthreads);

// Same with the per-sample gradients given: gb (B, d) with strides gbs = (b, d).
void importance_from_grad_cpu(const void* gb, int code, const int64_t* gbs, int64_t B, int64_t d,
                              float* imp, float* out, double alpha, bool first, int nthreads);

#ifdef TSPRUNE_WITH_CUDA
// CUDA versions: launched on `stream` (a cudaStream_t passed as an integer),
// asynchronous. Indices are not checked here (tsprune.ops checks them).
// Jobs are launched in groups of kMaxCudaJobs per kernel launch.
constexpr int kMaxCudaJobs = 32;

// "" if the CUDA kernels can run here, else why not (no driver, a driver
// older than the CUDA major version this module was built with, no device).
std::string cuda_check();

void gather_cuda(const std::vector<GatherJob>& jobs, uintptr_t stream);

// workspace: fp32, nsplit * d elements (partial sums over sample blocks).
void importance_cuda(const void* x, int x_code, const int64_t* xs, const void* g, int g_code,
                     const int64_t* gs, int64_t B, int64_t T, int64_t d, float* imp, float* out,
                     double alpha, bool first, int64_t nsplit, float* workspace,
                     uintptr_t stream);
void importance_from_grad_cuda(const void* gb, int code, const int64_t* gbs, int64_t B,
                               int64_t d, float* imp, float* out, double alpha, bool first,
                               int64_t nsplit, float* workspace, uintptr_t stream);
#endif

}  // namespace tsprune
