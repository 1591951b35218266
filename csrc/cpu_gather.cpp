// CPU row/column gather for weight packing (METHOD.md section 4).
// dst[i, j] = cast(src[rows[i], cols[j]]), bit-exact with torch's
// index_select followed by .to(dtype).
#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ops.h"

namespace tsprune {
namespace {

// Elements per parallel work item (about 128 KiB of fp32 output).
constexpr int64_t kItemElems = 32768;
// Below this many output elements in total (about 1 MiB of fp32), one thread
// does everything: a parallel region would cost more than it saves.
constexpr int64_t kSerialElems = 1 << 18;

struct Item {
  int32_t job;
  int64_t r0, r1, c0, c1;
};

struct Identity {
  template <class T> T operator()(T v) const { return v; }
};

// Float conversions through float (torch casts half / bfloat16 through float too).
template <int SC> inline float load_f(const void* p, int64_t i) {
  return FloatIO<SC>::load(static_cast<const typename FloatIO<SC>::T*>(p), i);
}
template <int DC> struct Store;
template <> struct Store<kF32> { using T = float; static T cvt(float v) { return v; } };
template <> struct Store<kF64> { using T = double; static T cvt(float v) { return v; } };
template <> struct Store<kF16> { using T = uint16_t; static T cvt(float v) { return f32_to_f16(v); } };
template <> struct Store<kBF16> { using T = uint16_t; static T cvt(float v) { return f32_to_bf16(v); } };

template <class S, class D, class F>
void run_item(const GatherJob& job, const Item& it, F conv) {
  const S* src = static_cast<const S*>(job.src);
  D* dst = static_cast<D*>(job.dst);
  const int64_t s1 = job.s1;
  for (int64_t i = it.r0; i < it.r1; ++i) {
    const int64_t sr = job.rows ? job.rows[i] : i;
    const S* srow = src + sr * job.s0;
    D* drow = dst + i * job.C;
    if (job.cols) {
      const int64_t* cols = job.cols;
      if (s1 == 1) {
        for (int64_t j = it.c0; j < it.c1; ++j) drow[j] = conv(srow[cols[j]]);
      } else {
        for (int64_t j = it.c0; j < it.c1; ++j) drow[j] = conv(srow[cols[j] * s1]);
      }
    } else if (s1 == 1) {
      if constexpr (std::is_same_v<S, D> && std::is_same_v<F, Identity>) {
        std::memcpy(drow + it.c0, srow + it.c0, sizeof(S) * (it.c1 - it.c0));
      } else {
#pragma omp simd
        for (int64_t j = it.c0; j < it.c1; ++j) drow[j] = conv(srow[j]);
      }
    } else {
      for (int64_t j = it.c0; j < it.c1; ++j) drow[j] = conv(srow[j * s1]);
    }
  }
}

template <int SC, int DC> void run_cast(const GatherJob& job, const Item& it) {
  using S = typename FloatIO<SC>::T;
  using D = typename Store<DC>::T;
  // S values are loaded through FloatIO so that the stored bits of half /
  // bfloat16 sources are interpreted, then rounded once to the target.
  auto conv = [](S v) -> D { return Store<DC>::cvt(FloatIO<SC>::load(&v, 0)); };
  run_item<S, D>(job, it, conv);
}

template <int SC> void run_cast_from(const GatherJob& job, const Item& it) {
  switch (job.dst_code) {
    case kF32: return run_cast<SC, kF32>(job, it);
    case kF16: return run_cast<SC, kF16>(job, it);
    case kBF16: return run_cast<SC, kBF16>(job, it);
    case kF64: return run_cast<SC, kF64>(job, it);
  }
}

int elem_size(int code) {
  switch (code) {
    case kF32: return 4;
    case kF16: case kBF16: return 2;
    case kF64: return 8;
    case kRaw1: return 1;
    case kRaw2: return 2;
    case kRaw4: return 4;
    case kRaw8: return 8;
  }
  return 0;
}

void run(const GatherJob& job, const Item& it) {
  if (job.src_code == job.dst_code) {  // bit copy, whatever the dtype
    switch (elem_size(job.src_code)) {
      case 1: return run_item<uint8_t, uint8_t>(job, it, Identity{});
      case 2: return run_item<uint16_t, uint16_t>(job, it, Identity{});
      case 4: return run_item<uint32_t, uint32_t>(job, it, Identity{});
      case 8: return run_item<uint64_t, uint64_t>(job, it, Identity{});
    }
    return;
  }
  switch (job.src_code) {
    case kF32: return run_cast_from<kF32>(job, it);
    case kF16: return run_cast_from<kF16>(job, it);
    case kBF16: return run_cast_from<kBF16>(job, it);
    case kF64: return run_cast_from<kF64>(job, it);
  }
}

void check_index(const int64_t* idx, int64_t n, int64_t size, size_t job, int dim) {
  if (!idx) return;
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] < 0 || idx[i] >= size) {
      throw std::out_of_range("gather: tensor " + std::to_string(job) + ": index " +
                              std::to_string(idx[i]) + " is out of range for dimension " +
                              std::to_string(dim) + " of size " + std::to_string(size));
    }
  }
}

void check_job(const GatherJob& job, size_t k) {
  const bool same = job.src_code == job.dst_code;
  const bool cast = is_float_code(job.src_code) && is_float_code(job.dst_code);
  if (!(same && elem_size(job.src_code) > 0) && !cast) {
    throw std::invalid_argument("gather: tensor " + std::to_string(k) +
                                ": unsupported dtype codes " + std::to_string(job.src_code) +
                                " -> " + std::to_string(job.dst_code));
  }
  if (job.R < 0 || job.C < 0) throw std::invalid_argument("gather: negative output shape");
  // A 1-D tensor is passed as one row (R = 1, no row index) with its index in cols.
  check_index(job.rows, job.R, job.src_rows, k, 0);
  check_index(job.cols, job.C, job.src_cols, k, job.src_rows == 1 && !job.rows ? 0 : 1);
}

}  // namespace

void gather_cpu(const std::vector<GatherJob>& jobs, int nthreads) {
  std::vector<Item> items;
  int64_t total = 0;
  for (size_t k = 0; k < jobs.size(); ++k) {
    const GatherJob& job = jobs[k];
    check_job(job, k);
    if (job.R == 0 || job.C == 0) continue;
    total += job.R * job.C;
    if (job.C >= kItemElems) {  // wide rows (and 1-D tensors): split the columns
      for (int64_t r = 0; r < job.R; ++r)
        for (int64_t c = 0; c < job.C; c += kItemElems)
          items.push_back({static_cast<int32_t>(k), r, r + 1, c, std::min(job.C, c + kItemElems)});
    } else {
      const int64_t rows_per = std::max<int64_t>(1, kItemElems / job.C);
      for (int64_t r = 0; r < job.R; r += rows_per)
        items.push_back({static_cast<int32_t>(k), r, std::min(job.R, r + rows_per), 0, job.C});
    }
  }
  const int64_t n = static_cast<int64_t>(items.size());
  const int nt = resolve_threads(nthreads);
  (void)nt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (total > kSerialElems && n > 1)
  for (int64_t i = 0; i < n; ++i) run(jobs[items[i].job], items[i]);
}

}  // namespace tsprune
