// Device-side dtype helpers shared by the CUDA kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common.h"

namespace tsprune {

template <int C> struct DevIO;
template <> struct DevIO<kF32> {
  using T = float;
  __device__ static float load(T v) { return v; }
  __device__ static T store(float v) { return v; }
};
template <> struct DevIO<kF64> {
  using T = double;
  __device__ static float load(T v) { return static_cast<float>(v); }
  __device__ static T store(float v) { return static_cast<double>(v); }
};
template <> struct DevIO<kF16> {
  using T = unsigned short;
  __device__ static float load(T v) { return __half2float(__ushort_as_half(v)); }
  __device__ static T store(float v) { return __half_as_ushort(__float2half_rn(v)); }
};
template <> struct DevIO<kBF16> {
  using T = unsigned short;
  __device__ static float load(T v) { return __bfloat162float(__ushort_as_bfloat16(v)); }
  __device__ static T store(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};

inline void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": CUDA launch failed: " + cudaGetErrorString(e));
  }
}

}  // namespace tsprune
