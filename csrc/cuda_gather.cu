// CUDA row/column gather for packing a list of weights in one launch.
//
// The job table travels by value as a __grid_constant__ kernel parameter
// (no device allocation, no host-device copy). Each job is cut into blocks of
// one output row by kCols columns; block_start[k] is the first block of job k.
#include <algorithm>
#include <string>
#include <vector>

#include "cuda_common.cuh"
#include "ops.h"

namespace tsprune {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kCols = 4 * kThreads;

struct JobBatch {
  int n;
  int64_t block_start[kMaxCudaJobs + 1];
  GatherJob jobs[kMaxCudaJobs];
};
static_assert(sizeof(JobBatch) <= 4000, "kernel parameters are limited to 4 KiB");

template <class S, class D, class F>
__device__ void copy_row(const GatherJob& job, int64_t r, int64_t c0, int64_t c1, F conv) {
  const S* src = static_cast<const S*>(job.src);
  D* dst = static_cast<D*>(job.dst) + r * job.C;
  const int64_t sr = job.rows ? job.rows[r] : r;
  const S* srow = src + sr * job.s0;
  for (int64_t j = c0 + threadIdx.x; j < c1; j += blockDim.x) {
    const int64_t sc = job.cols ? job.cols[j] : j;
    dst[j] = conv(srow[sc * job.s1]);
  }
}

struct Ident {
  template <class T> __device__ T operator()(T v) const { return v; }
};

template <int SC, int DC> struct Cast {
  __device__ typename DevIO<DC>::T operator()(typename DevIO<SC>::T v) const {
    return DevIO<DC>::store(DevIO<SC>::load(v));
  }
};

template <int SC>
__device__ void cast_from(const GatherJob& job, int64_t r, int64_t c0, int64_t c1) {
  using S = typename DevIO<SC>::T;
  switch (job.dst_code) {
    case kF32: copy_row<S, float>(job, r, c0, c1, Cast<SC, kF32>{}); break;
    case kF16: copy_row<S, unsigned short>(job, r, c0, c1, Cast<SC, kF16>{}); break;
    case kBF16: copy_row<S, unsigned short>(job, r, c0, c1, Cast<SC, kBF16>{}); break;
    case kF64: copy_row<S, double>(job, r, c0, c1, Cast<SC, kF64>{}); break;
    default: break;
  }
}

__device__ int raw_size(int code) {
  switch (code) {
    case kF32: case kRaw4: return 4;
    case kF16: case kBF16: case kRaw2: return 2;
    case kF64: case kRaw8: return 8;
    case kRaw1: return 1;
    default: return 0;
  }
}

__global__ void __launch_bounds__(kThreads) gather_kernel(const __grid_constant__ JobBatch batch) {
  const int64_t blk = blockIdx.x;
  int k = 0;
  while (k + 1 < batch.n && blk >= batch.block_start[k + 1]) ++k;
  const GatherJob& job = batch.jobs[k];
  const int64_t local = blk - batch.block_start[k];
  const int64_t ncb = (job.C + kCols - 1) / kCols;
  const int64_t r = local / ncb;
  const int64_t c0 = (local % ncb) * kCols;
  const int64_t c1 = min(job.C, c0 + kCols);
  if (job.src_code == job.dst_code) {
    switch (raw_size(job.src_code)) {
      case 1: copy_row<unsigned char, unsigned char>(job, r, c0, c1, Ident{}); break;
      case 2: copy_row<unsigned short, unsigned short>(job, r, c0, c1, Ident{}); break;
      case 4: copy_row<unsigned int, unsigned int>(job, r, c0, c1, Ident{}); break;
      case 8: copy_row<unsigned long long, unsigned long long>(job, r, c0, c1, Ident{}); break;
      default: break;
    }
    return;
  }
  switch (job.src_code) {
    case kF32: cast_from<kF32>(job, r, c0, c1); break;
    case kF16: cast_from<kF16>(job, r, c0, c1); break;
    case kBF16: cast_from<kBF16>(job, r, c0, c1); break;
    case kF64: cast_from<kF64>(job, r, c0, c1); break;
    default: break;
  }
}

}  // namespace

std::string cuda_check() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) return "no CUDA driver";
  if (driver / 1000 < CUDART_VERSION / 1000) {
    return "the CUDA driver supports CUDA " + std::to_string(driver / 1000) + "." +
           std::to_string(driver % 1000 / 10) + " but tsprune._C was built with CUDA " +
           std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) +
           " (rebuild with an older nvcc, or TSPRUNE_CUDA=OFF)";
  }
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
  if (n == 0) return "no CUDA device";
  return "";
}

void gather_cuda(const std::vector<GatherJob>& jobs, uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  JobBatch batch;
  batch.n = 0;
  int64_t blocks = 0;
  auto flush = [&]() {
    if (batch.n == 0) return;
    batch.block_start[batch.n] = blocks;
    if (blocks > 0) {
      gather_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, s>>>(batch);
      check_launch("gather_cuda");
    }
    batch.n = 0;
    blocks = 0;
  };
  for (const GatherJob& job : jobs) {
    if (job.R == 0 || job.C == 0) continue;
    const int64_t nb = job.R * ((job.C + kCols - 1) / kCols);
    if (batch.n == kMaxCudaJobs || blocks + nb > 0x7fffffffLL) flush();
    batch.block_start[batch.n] = blocks;
    batch.jobs[batch.n++] = job;
    blocks += nb;
  }
  flush();
}

}  // namespace tsprune
