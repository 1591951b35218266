// Shared definitions of the tsprune._C kernels: dtype codes, the scalar
// conversions used on the CPU, and the job descriptors passed from Python.
//
// The extension never links libtorch. Python (tsprune/ops/_ext.py) checks the
// tensors, allocates the outputs with torch and passes data_ptr() values,
// sizes, strides (in elements) and the dtype codes below.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tsprune {

// Dtype codes. Float codes can be converted into each other; RAW codes copy
// elements of that many bytes bit for bit (any dtype of that size, and every
// copy whose source and destination dtypes agree).
enum DType : int {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kF64 = 3,
  kRaw1 = 11,
  kRaw2 = 12,
  kRaw4 = 14,
  kRaw8 = 18,
};

inline bool is_float_code(int c) { return c == kF32 || c == kF16 || c == kBF16 || c == kF64; }
inline bool is_raw_code(int c) { return c == kRaw1 || c == kRaw2 || c == kRaw4 || c == kRaw8; }

// One gather: dst[i, j] = src[rows[i] * s0 + cols[j] * s1] for i < R, j < C,
// written row-major and contiguous into dst. rows / cols may be null (identity).
// A 1-D tensor is passed as R = 1 with its index in `cols`.
struct GatherJob {
  const void* src;
  void* dst;
  const int64_t* rows;  // length R or null
  const int64_t* cols;  // length C or null
  int64_t R, C;         // output shape
  int64_t s0, s1;       // source strides, elements
  int64_t src_rows;     // source extent along dim 0 (for index checks)
  int64_t src_cols;     // source extent along dim 1
  int32_t src_code, dst_code;
};

// Number of OpenMP threads for a parallel region: the caller's request
// (tsprune.ops passes torch.get_num_threads()) or OpenMP's default.
inline int resolve_threads(int requested) {
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

// Hot CPU loops are compiled three times (AVX-512, AVX2+FMA, baseline SSE2)
// and the best one for the running CPU is picked at load time (GCC function
// multi-versioning; needs glibc ifunc). Portable wheels stay fast without
// -march=native. Define TSPRUNE_NO_CLONES to turn it off.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(TSPRUNE_NO_CLONES)
#define TSPRUNE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TSPRUNE_CPU_CLONES
#endif

// ---- scalar conversions (CPU) ----------------------------------------------
// Round to nearest even, as torch's casts do. NaN becomes a quiet NaN.

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE half -> float, exact. Branch-free (integer selects only) so that loops
// over half arrays vectorize.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const int32_t em = h & 0x7fff;  // exponent and mantissa
  const uint32_t shifted = static_cast<uint32_t>(em) << 13;
  // Normal numbers: rebias the exponent (127 - 15 = 112); Inf / NaN: all ones.
  const uint32_t normal = shifted + (112u << 23);
  const uint32_t infnan = shifted | 0x7f800000u;
  // Subnormals and zero: value = mantissa * 2^-24, exact in float.
  const uint32_t sub = f32_bits(static_cast<float>(em) * 5.9604644775390625e-08f);
  const uint32_t is_inf = 0u - static_cast<uint32_t>(em >= 0x7c00);  // all ones or zero
  const uint32_t is_norm = 0u - static_cast<uint32_t>(em >= 0x0400);
  const uint32_t mag = (infnan & is_inf) | (normal & is_norm & ~is_inf) | (sub & ~is_norm);
  return bits_f32(sign | mag);
}

// float -> IEEE half, round to nearest even.
inline uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {  // Inf or NaN
    return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);
  }
  if (x >= 0x477ff000u) {  // >= 65520 rounds to Inf
    return sign | 0x7c00u;
  }
  if (x < 0x38800000u) {  // |f| < 2^-14: half subnormal (or zero)
    // Adding 0.5 puts the value's 2^-24 units into the low mantissa bits of a
    // float whose ulp is 2^-24; the FPU rounds to nearest even for us.
    const float t = bits_f32(x) + 0.5f;
    return sign | static_cast<uint16_t>(f32_bits(t) - 0x3f000000u);
  }
  const uint32_t odd = (x >> 13) & 1u;
  x += 0xc8000fffu + odd;  // rebias exponent by -112, add the rounding bias
  return sign | static_cast<uint16_t>(x >> 13);
}

inline float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;  // NaN
  const uint32_t bias = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + bias) >> 16);
}

// Load element i of a float array of code C as float / store a float.
template <int C> struct FloatIO;
template <> struct FloatIO<kF32> {
  using T = float;
  static inline float load(const T* p, int64_t i) { return p[i]; }
};
template <> struct FloatIO<kF16> {
  using T = uint16_t;
  static inline float load(const T* p, int64_t i) { return f16_to_f32(p[i]); }
};
template <> struct FloatIO<kBF16> {
  using T = uint16_t;
  static inline float load(const T* p, int64_t i) { return bf16_to_f32(p[i]); }
};
template <> struct FloatIO<kF64> {
  using T = double;
  static inline float load(const T* p, int64_t i) { return static_cast<float>(p[i]); }
};

}  // namespace tsprune
